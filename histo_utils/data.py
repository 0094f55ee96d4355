"""Image features and expression on the same samples: what notebooks 03–07 start from.

The **catalogue of feature tables**: notebook 02 writes one slide × feature
table per network and tile size (``features_<network>_<px>px.parquet``) and
lists them, with the tile-to-slide aggregation, in ``features_provenance.json``.
A table is named by a :class:`FeatureKey` (network, tile size, aggregation);
:func:`feature_keys` lists the keys a run has and :func:`feature_tables` loads
them, so no notebook reads the provenance file or splits a name by hand.

>>> key = FeatureKey.parse("trained_256px")
>>> key
FeatureKey(network='trained', tile_px=256, aggregation='sum')
>>> str(key), str(FeatureKey("untrained", 512, "mean"))
('trained_256px', 'untrained_512px_mean')
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import gtex, io, products, store
from .errors import InputError, InputKeyError, MissingInputError

log = logging.getLogger(__name__)

__all__ = ["FeatureKey", "AGGREGATIONS", "read_feature_provenance", "feature_keys", "find_key", "feature_tables",
           "load_log_expression", "joined_log_expression", "expression_cache_key", "load_features", "features_by_sample", "match_samples", "PairedData",
           "paired_tables", "feature_layer", "load_tiling", "select_grid", "EmptyGridError",
           "TILES_PER_SIZE", "build_store", "open_store", "tissue_of"]

AGGREGATIONS = ("sum", "mean", "median")  # tile-to-slide reductions of notebook 02 (features.reduce_tiles)
DEFAULT_AGGREGATION = "sum"
#: notebook 02's catalogue of feature tables (declared in :mod:`histo_utils.products`, with its keys)
PROVENANCE_FILE = products.file_name("02_training", "provenance")
#: what :func:`load_tiling` reads of notebook 01, and the catalogue of notebook 02 (with :func:`products.reads`,
#: on every function that reads them, also through another)
_TILING_READS = ("01_tiling:tiles", "01_tiling:samples", "01_tiling:tiles_per_size")
_FEATURE_READS = ("02_training:provenance", "02_training:features")
_KEY_PATTERN = re.compile(r"^(?P<network>[A-Za-z0-9][A-Za-z0-9_-]*?)_(?P<tile_px>\d+)px(?:_(?P<aggregation>[a-z]+))?$")


# --------------------------------------------------------------------------
# the catalogue of feature tables
# --------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class FeatureKey:
    """Names one feature table: the network, the tile size and the tile-to-slide aggregation.

    The text form is ``<network>_<px>px`` (the table's file stem, aggregation
    ``sum``) or ``<network>_<px>px_<aggregation>``; :meth:`parse` reads it and
    ``str`` writes it, so ``FeatureKey.parse(str(key)) == key``.

    Attributes
    ----------
    network : str
        ``trained`` or ``untrained`` (notebook 02), or any other network name (letters, digits, ``-``, ``_``).
    tile_px : int
        Tile size at the tiling resolution, > 0.
    aggregation : {"sum", "mean", "median"}
        How tile features were reduced to the slide.

    Examples
    --------
    >>> FeatureKey.parse("untrained_512px_mean")
    FeatureKey(network='untrained', tile_px=512, aggregation='mean')
    >>> FeatureKey("trained", 256).fields()
    {'network': 'trained', 'tile_px': 256, 'aggregation': 'sum'}
    """

    network: str
    tile_px: int
    aggregation: str = DEFAULT_AGGREGATION

    def __post_init__(self):
        if not isinstance(self.network, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.network):
            raise InputError(f"Network name {self.network!r} not valid: use letters, digits, '-' or '_' "
                             f"(e.g. 'trained').")
        if isinstance(self.tile_px, bool) or not isinstance(self.tile_px, (int, np.integer)) or self.tile_px <= 0:
            raise InputError(f"Tile size {self.tile_px!r} not valid: a positive whole number of pixels (e.g. 256).")
        object.__setattr__(self, "tile_px", int(self.tile_px))
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"Aggregation {self.aggregation!r} not available. Available: {list(AGGREGATIONS)}.")

    @classmethod
    def parse(cls, text: str, *, aggregation: str | None = None) -> "FeatureKey":
        """Read ``"<network>_<px>px"`` or ``"<network>_<px>px_<aggregation>"``.

        Parameters
        ----------
        text : str
            E.g. ``"trained_256px"`` (a notebook parameter such as ``heatmap_table``).
        aggregation : str, optional
            Aggregation to use when ``text`` has none (default ``"sum"``); an
            aggregation written in ``text`` must agree with it.

        Returns
        -------
        FeatureKey
        """
        m = _KEY_PATTERN.match(str(text))
        if m is None:
            raise InputError(f"Feature table name {text!r} not understood: expected '<network>_<px>px' "
                             f"(e.g. 'trained_256px') or '<network>_<px>px_<aggregation>' (e.g. 'trained_256px_mean').")
        written = m["aggregation"]
        if written is not None and aggregation is not None and written != aggregation:
            raise InputError(f"Feature table name {text!r} says aggregation {written!r} but {aggregation!r} was "
                             f"asked for; drop the suffix or make them agree.")
        return cls(m["network"], int(m["tile_px"]), written or aggregation or DEFAULT_AGGREGATION)

    @property
    def name(self) -> str:
        """``<network>_<px>px``: the stem of the table's file (``features_<name>.parquet``)."""
        return f"{self.network}_{self.tile_px}px"

    @property
    def file_name(self) -> str:
        """The file notebook 02 writes: ``features_<network>_<px>px.parquet`` (``02_training:features``)."""
        return products.file_name("02_training", "features", network=self.network, tile_px=self.tile_px)

    def fields(self) -> dict:
        """``{"network", "tile_px", "aggregation"}``: the columns a result table carries for this key."""
        return {"network": self.network, "tile_px": self.tile_px, "aggregation": self.aggregation}

    def __str__(self) -> str:
        return self.name if self.aggregation == DEFAULT_AGGREGATION else f"{self.name}_{self.aggregation}"


@products.reads("02_training:provenance")
def read_feature_provenance(out_dir: str | os.PathLike, *, notebook: str = "02_training",
                            keys: Sequence[str] = ()) -> dict:
    """The provenance notebook 02 wrote next to its feature tables (``features_provenance.json``).

    Its keys are declared in :data:`histo_utils.products.FEATURE_PROVENANCE`; ``aggregation`` and ``tables``
    (:data:`~histo_utils.products.FEATURE_PROVENANCE_REQUIRED`) are always checked, ``keys`` besides them.

    Parameters
    ----------
    out_dir : the run's output directory
    notebook : the notebook that wrote the feature tables
    keys : further keys the caller reads (e.g. ``["arch", "input_px", "classes"]``), each a declared one

    Returns
    -------
    dict with ``aggregation``, ``arch``, ``checkpoint``, ``classes``, ``input_px`` and ``tables``
    (file name -> ``network``, ``tile_px``, ``layers``, ``n_features``, ``n_slides``, ...).

    Raises
    ------
    MissingInputError
        No provenance: notebook 02 has not run.
    InputError
        A checked key is missing: the message names the file and the key, and says to rerun notebook 02.
    """
    unknown = [k for k in keys if k not in products.FEATURE_PROVENANCE]
    if unknown:
        raise InputKeyError(f"Feature provenance keys {unknown} are not declared (histo_utils.products."
                            f"FEATURE_PROVENANCE): {list(products.FEATURE_PROVENANCE)}.")
    path = Path(out_dir) / notebook / PROVENANCE_FILE
    if not path.exists():
        raise MissingInputError(f"Feature provenance '{path}' does not exist: run notebook {notebook} first "
                                f"(it writes the feature tables and this file).")
    provenance = json.loads(path.read_text())
    products.check_fields(provenance, [*products.FEATURE_PROVENANCE_REQUIRED, *keys],
                          what=f"Feature provenance '{path}'",
                          fix=f"rerun notebook {notebook} (it writes every key of this file).")
    return provenance


@products.reads("02_training:provenance")
def feature_keys(out_dir: str | os.PathLike, *, notebook: str = "02_training") -> list[FeatureKey]:
    """The feature tables a run has, in the order notebook 02 wrote them.

    Parameters
    ----------
    out_dir : path
        Output directory of the run.

    Returns
    -------
    list of FeatureKey, one per table listed in ``features_provenance.json``.
    """
    provenance = read_feature_provenance(out_dir, notebook=notebook)
    for name, meta in provenance["tables"].items():
        products.check_fields(meta, products.FEATURE_TABLE_ENTRY,
                              what=f"Table '{name}' of the feature provenance of '{Path(out_dir) / notebook}'",
                              fix=f"rerun notebook {notebook}.")
    return [FeatureKey(meta["network"], meta["tile_px"], provenance["aggregation"])
            for meta in provenance["tables"].values()]


def find_key(keys: Iterable[FeatureKey], name: str | FeatureKey, *, what: str = "feature table") -> FeatureKey:
    """The key among ``keys`` that ``name`` (e.g. the parameter ``"trained_256px"``) names.

    A name without an aggregation suffix matches on network and tile size alone.

    Parameters
    ----------
    keys : iterable of FeatureKey
        Available tables (e.g. the keys of :func:`feature_tables`).
    name : str or FeatureKey
    what : str
        How the input is called in the error message (e.g. the parameter name).

    Returns
    -------
    FeatureKey, one of ``keys``.
    """
    keys = list(keys)
    if isinstance(name, FeatureKey):
        hits = [k for k in keys if k == name]
    else:
        wanted = FeatureKey.parse(name)
        explicit = _KEY_PATTERN.match(name)["aggregation"] is not None
        hits = [k for k in keys if (k == wanted if explicit else k.name == wanted.name)]
    if len(hits) != 1:
        raise InputError(f"{what} {str(name)!r} not available. Available: {[str(k) for k in keys] or 'none'}.")
    return hits[0]


@products.reads(*_TILING_READS, *_FEATURE_READS)
def feature_tables(out_dir: str | os.PathLike, *, samples: pd.DataFrame | None = None,
                   keys: Iterable[FeatureKey | str] | None = None, notebook: str = "02_training"
                   ) -> dict[FeatureKey, pd.DataFrame]:
    """The feature tables of a run, by key, each re-indexed by RNA sample ID (SAMPID).

    Parameters
    ----------
    out_dir : path
        Output directory of the run (notebooks 01 and 02 done).
    samples : DataFrame, optional
        The slide-sample table of notebook 01 (``image_id``, ``SAMPID``); read from ``out_dir`` when omitted.
    keys : iterable of FeatureKey or str, optional
        Tables to load (default: all of :func:`feature_keys`, in their order).

    Returns
    -------
    dict, FeatureKey -> DataFrame, shape (n_samples, n_features), index SAMPID, columns ``layer_channel``.

    Examples
    --------
    >>> tables = feature_tables(out_dir)                          # doctest: +SKIP
    >>> trained = tables[find_key(tables, "trained_256px")]       # doctest: +SKIP
    """
    available = feature_keys(out_dir, notebook=notebook)
    wanted = available if keys is None else [find_key(available, k) for k in keys]
    st = _store_for(out_dir, samples, notebook)
    if st is not None:
        return {k: st.features(str(k)) for k in wanted}
    if samples is None:
        _, samples = load_tiling(out_dir)
    return {k: features_by_sample(load_features(out_dir, k, notebook=notebook), samples) for k in wanted}


def _has_features(out_dir) -> bool:
    return products.outputs(out_dir, "02_training").provenance.exists()


def _store_for(out_dir, samples: pd.DataFrame | None, notebook: str, expression_path=None):
    """The run's joined store when it holds what the caller asks for (the run's own samples), else None."""
    if notebook != "02_training" or not _has_features(out_dir):
        return None
    st = open_store(out_dir, expression_path, notebook=notebook)
    if st is None or samples is None:
        return st
    mine = st.samples["image_id"]
    theirs = samples.drop_duplicates("image_id").set_index("SAMPID")["image_id"]
    same = len(mine) == len(theirs) and theirs.reindex(mine.index).astype(str).equals(mine.astype(str))
    return st if same else None


def load_log_expression(path: str | os.PathLike, *, samples=None, cache_dir: str | os.PathLike | None = None,
                        dtype: str = "float32") -> tuple[pd.DataFrame, pd.Series]:
    """log2(1 + TPM) of a GCT file, samples as rows, read once per run when ``cache_dir`` is given.

    Parameters
    ----------
    path : GCT file of TPM values (e.g. ``GTExFiles.expression``)
    samples : sample IDs to read, in this order (default: all); only their columns are parsed
    cache_dir : directory of the run's cache (e.g. ``<out_dir>/cache``); the result is stored there as
        ``expression.<key>.npz``, keyed by the GCT file's path, size and modification time, the sample
        list and ``dtype``: a later call with the same key reads the cache instead of the GCT, and a
        changed GCT (or sample list) is a new key. None: no cache.
    dtype : value type (``"float32"``: half the memory; log2(1 + TPM) differs from float64 by about
        1e-7 relative, below the 4 significant digits GTEx's and the synthetic GCT files carry)

    Returns
    -------
    log_expression : DataFrame, shape (n_samples, n_genes), columns ``Name`` (Ensembl ID)
    symbols : Series, Name -> gene symbol (GCT ``Description``)
    """
    path = Path(path)
    samples = None if samples is None else list(samples)
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"expression.{expression_cache_key(path, samples, dtype)}.npz"
        if cached.exists():
            with np.load(cached, allow_pickle=False) as z:
                values, rows, genes, syms = z["values"], z["samples"], z["genes"], z["symbols"]
            log.info("Expression of %d samples read from the run's cache %s", len(rows), cached)
            genes = pd.Index(genes, name="Name")
            return (pd.DataFrame(values, index=pd.Index(rows), columns=genes),
                    pd.Series(syms, index=genes, name="Description"))
    tpm = io.read_gct(path, samples=samples, dtype=dtype)
    symbols = tpm.attrs.pop("description")
    tpm.attrs = {}
    values = tpm.to_numpy().T  # samples x genes, no copy of the float32 block beyond the transpose
    if (values < 0).any():
        raise InputError(f"Expression file '{path}' has negative values: expected TPM (>= 0), "
                         f"not log-transformed data.")
    if not values.flags.writeable:
        values = values.copy()
    np.add(values, 1, out=values)  # in place (tpm is dropped): no temporary of the table's size
    np.log2(values, out=values)
    out = pd.DataFrame(values, index=pd.Index(tpm.columns), columns=tpm.index)
    del tpm
    if cached is not None:
        with io.atomic_path(cached) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, values=values, samples=np.asarray(out.index, dtype=str),
                     genes=np.asarray(out.columns, dtype=str), symbols=np.asarray(symbols.astype(str), dtype=str))
        log.info("Expression of %d samples cached in %s", len(out), cached)
    return out, symbols


def expression_cache_key(path: str | os.PathLike, samples=None, dtype: str = "float32") -> str:
    """Cache key of :func:`load_log_expression`: GCT path, size, modification time, samples and dtype."""
    import hashlib

    path = Path(path)
    st = path.stat()
    text = "\n".join([str(path.resolve()), str(st.st_size), str(st.st_mtime_ns), str(dtype),
                      "<all>" if samples is None else "\t".join(map(str, samples))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@products.reads(*_TILING_READS, *_FEATURE_READS)
def joined_log_expression(out_dir: str | os.PathLike, path: str | os.PathLike, *, dtype: str = "float32",
                          cache: bool = True, use_store: bool = True) -> tuple[pd.DataFrame, pd.Series]:
    """log2(1 + TPM) of the samples that have a slide (notebook 01's join), read once per run.

    Only those columns of the GCT are parsed (1,000 of GTEx's 17,382 samples: under 1.5 GB), in the
    file's column order; the result is cached in ``<out_dir>/cache`` (:func:`load_log_expression`), so
    notebooks 04, 05 and 09 read the big file once per run. With ``use_store`` (and ``cache``, float32)
    it is read from the run's joined store (:mod:`histo_utils.store`, built first when missing or out of
    date; notebook 02 done): the same values.

    Parameters
    ----------
    out_dir : output directory of the run (notebook 01 done)
    path : GCT file of TPM values
    dtype, cache : value type; whether to use the run's cache
    use_store : read through the joined store when notebook 02's features exist

    Returns
    -------
    log_expression : DataFrame, shape (n_joined_samples, n_genes)
    symbols : Series, Name -> gene symbol
    """
    if use_store and cache and dtype == "float32" and _has_features(out_dir):
            return open_store(out_dir, path).expression()
    _, samples = load_tiling(out_dir)
    with_slide = set(samples.SAMPID)
    in_file = io.read_gct_samples(path, check=False)
    keep = [s for s in in_file if s in with_slide]
    if not keep:
        raise InputError(f"No sample of notebook 01's join ({len(with_slide)} samples) is a column of the expression "
                         f"file '{path}'. Rerun notebook 01 against this expression file.")
    return load_log_expression(path, samples=keep, dtype=dtype,
                               cache_dir=Path(out_dir) / "cache" if cache else None)


@products.reads("02_training:features")
def load_features(out_dir: str | os.PathLike, key: FeatureKey | str, *, notebook: str = "02_training"
                  ) -> pd.DataFrame:
    """A slide × feature table written by notebook 02.

    Parameters
    ----------
    out_dir : path
        Output directory of the run.
    key : FeatureKey or str
        The table, e.g. ``"trained_256px"``.

    Returns
    -------
    DataFrame, shape (n_slides, n_features), index image ID, columns ``layer_channel``.
    """
    key = key if isinstance(key, FeatureKey) else FeatureKey.parse(key)
    path = Path(out_dir) / notebook / key.file_name
    if not path.exists():
        pattern = products.product("02_training", "features").pattern()
        have = sorted(p.name for p in path.parent.iterdir() if pattern.match(p.name)) if path.parent.exists() else []
        raise MissingInputError(f"Feature table '{path}' does not exist. Available: {have or 'none'}; "
                                f"run notebook {notebook} with feature_tile_px including {key.tile_px}.")
    return io.read_table(path)


#: Where notebook 01 records the tissue grouping its split was stratified by (``{"label_column": "SMTSD"}``).
GROUPING_FILE = products.file_name("01_tiling", "tissue_grouping")


@products.reads()
def write_tissue_grouping(out_dir: str | os.PathLike, label_column: str, *, notebook: str = "01_tiling") -> Path:
    """Record the run's tissue grouping (notebook 01's ``label_column``) for the notebooks after it.

    Returns
    -------
    Path of ``<out_dir>/<notebook>/tissue_grouping.json``.
    """
    path = Path(out_dir) / notebook / GROUPING_FILE
    io.write_json({"label_column": label_column}, path)
    return path


@products.reads("01_tiling:tissue_grouping")
def tissue_of(samples: pd.DataFrame, label_column: str, *, out_dir: str | os.PathLike | None = None,
              notebook: str = "01_tiling") -> pd.Series:
    """Each RNA sample's tissue by ``label_column``, the grouping notebook 01 used for the run.

    One grouping across a run: a notebook that groups samples by tissue (04-07, 09) must use the column that
    notebook 01 stratified its split by, else its tissues are not those of 01-03 (on GTEx, ``SMTS`` gives ~30
    coarse tissues and ``SMTSD`` Badea's detailed ones).

    Parameters
    ----------
    samples : DataFrame, notebook 01's ``samples.tsv`` (``SAMPID`` and the label column), or indexed by
        SAMPID (:class:`PairedData` ``.samples``)
    label_column : ``SMTS`` or ``SMTSD`` (the notebook's parameter)
    out_dir : the run's output directory: when given, ``label_column`` is checked against notebook 01's
        (``<out_dir>/01_tiling/tissue_grouping.json``; a run made before that file existed is not checked)

    Returns
    -------
    Series of str, index SAMPID (one row per sample), name ``label_column``.

    Raises
    ------
    ValueError
        The column is missing or has empty labels, or notebook 01 grouped the run by another column.
    """
    gtex.check_label_column(samples, label_column, what="samples of notebook 01 (samples.tsv)")
    if out_dir is not None:
        path = Path(out_dir) / notebook / GROUPING_FILE
        used = json.loads(path.read_text()).get("label_column") if path.exists() else None
        if used is not None and used != label_column:
            raise InputError(f"Notebook {notebook} grouped this run's samples by '{used}' ({path}), but this "
                             f"notebook was given label_column '{label_column}': its tissues would not be those of "
                             f"notebooks 01-03. Set label_column once, under 'common:' of the profile (the gtex "
                             f"profile: SMTSD), or rerun {notebook} with '{label_column}'.")
    if "SAMPID" not in samples.columns:  # indexed by sample (PairedData.samples)
        samples = samples.rename_axis("SAMPID").reset_index()
    return samples.drop_duplicates("SAMPID").set_index("SAMPID")[label_column].astype(str)


def features_by_sample(features: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Re-index a slide × feature table from image ID to the RNA sample ID (SAMPID).

    Parameters
    ----------
    features : DataFrame, shape (n_slides, n_features), index image ID
    samples : DataFrame with columns ``image_id`` and ``SAMPID`` (notebook 01's ``samples.tsv``)

    Returns
    -------
    DataFrame, shape (n_slides, n_features), index SAMPID.
    """
    m = samples.drop_duplicates("image_id").set_index("image_id")["SAMPID"]
    missing = features.index.difference(m.index)
    if len(missing):
        raise InputError(f"{len(missing)} feature rows have no sample in the samples table "
                         f"(e.g. {list(missing[:3])}); use the samples.tsv of the same run.")
    out = features.copy()
    out.index = pd.Index(m.loc[features.index].to_numpy(), name="SAMPID")
    return out


def match_samples(features: pd.DataFrame, expression: pd.DataFrame, *, on_mismatch: str = "raise"
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Put a feature table and an expression table on the same samples, same order.

    Parameters
    ----------
    features : DataFrame, shape (n_samples_f, n_features)
        Rows are samples.
    expression : DataFrame, shape (n_samples_e, n_genes)
        Rows are samples (transpose a GCT table first), same kind of ID as ``features``.
    on_mismatch : {"raise", "intersect"}
        What to do when the two tables do not hold the same samples: raise a
        ``ValueError`` that lists them, or keep the shared ones (logged).

    Returns
    -------
    features, expression : DataFrames with identical indexes (sorted).
    """
    if on_mismatch not in ("raise", "intersect"):
        raise InputError(f"on_mismatch={on_mismatch!r} not available. Choose 'raise' or 'intersect'.")
    for name, df in (("feature", features), ("expression", expression)):
        dup = df.index[df.index.duplicated()]
        if len(dup):
            raise InputError(f"The {name} table has duplicated sample IDs (e.g. {list(dup[:3])}); "
                             f"aggregate or drop them first.")
    shared = features.index.intersection(expression.index).sort_values()
    only_f = features.index.difference(expression.index)
    only_e = expression.index.difference(features.index)
    if len(shared) == 0:
        raise InputError(f"The feature table ({len(features)} samples, e.g. {list(features.index[:2])}) and the "
                         f"expression table ({len(expression)} samples, e.g. {list(expression.index[:2])}) share "
                         f"no sample ID. Map image IDs to sample IDs (SAMPID) before correlating.")
    if len(only_f) or len(only_e):
        msg = (f"The feature table and the expression table share {len(shared)} sample IDs; "
               f"{len(only_f)} only in features (e.g. {list(only_f[:3])}), "
               f"{len(only_e)} only in expression (e.g. {list(only_e[:3])}).")
        if on_mismatch == "raise":
            raise InputError(msg + " Pass on_mismatch='intersect' to use the shared samples.")
        log.warning("%s Using the shared samples.", msg)
    return features.loc[shared], expression.loc[shared]


def feature_layer(names) -> np.ndarray:
    """The layer part of ``layer_channel`` feature names.

    Parameters
    ----------
    names : sequence of str, length n (e.g. ``["0_0", "0_1", "12_3"]``)

    Returns
    -------
    array of str, shape (n,) (e.g. ``["0", "0", "12"]``)
    """
    return np.array([str(n).rsplit("_", 1)[0] for n in names])


@dataclass
class PairedData:
    """Features and log expression of the samples that have both, with their annotation.

    Attributes
    ----------
    features : DataFrame, shape (n_samples, n_features), index SAMPID
    expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM), index SAMPID
    samples : DataFrame indexed by SAMPID (tissue ``SMTS``, ``split``, ``image_id``, ...)
    symbols : Series, gene Name -> symbol
    """

    features: pd.DataFrame
    expression: pd.DataFrame
    samples: pd.DataFrame
    symbols: pd.Series

    def split(self, name: str | list[str]) -> "PairedData":
        names = [name] if isinstance(name, str) else list(name)
        keep = self.samples.index[self.samples["split"].isin(names)]
        if len(keep) == 0:
            raise InputError(f"Split {name!r} has no samples. Available splits: "
                             f"{sorted(self.samples['split'].unique())}.")
        return PairedData(self.features.loc[keep], self.expression.loc[keep], self.samples.loc[keep],
                          self.symbols)


@products.reads(*_TILING_READS, *_FEATURE_READS)
def paired_tables(out_dir: str | os.PathLike, data_dir: str | os.PathLike, key: FeatureKey | str, *,
                  expression: pd.DataFrame | None = None, symbols: pd.Series | None = None) -> PairedData:
    """Features of notebook 02 and the expression of the same samples, in the same order.

    Slides without an RNA sample and RNA samples without a slide are left out
    (logged): only samples with both can be correlated.

    Parameters
    ----------
    out_dir : path
        Output directory of the run (notebooks 01 and 02 done).
    data_dir : path
        GTEx-layout data directory; its expression GCT is read unless ``expression`` is given.
    key : FeatureKey or str
        The feature table, e.g. ``"trained_256px"``.
    expression : DataFrame, shape (n_samples, n_genes), optional
        log2(1 + TPM) already read (:func:`load_log_expression`), with its ``symbols``.

    Returns
    -------
    PairedData

    Examples
    --------
    >>> paired = paired_tables(out_dir, data_dir, "trained_256px")   # doctest: +SKIP
    >>> test = paired.split("test")                                 # doctest: +SKIP
    """
    key = key if isinstance(key, FeatureKey) else FeatureKey.parse(key)
    _, samples = load_tiling(out_dir)
    if expression is None and symbols is not None:
        raise InputError("symbols were given without expression: pass both (from data.load_log_expression).")
    if expression is not None and symbols is None:
        raise InputError("expression was given without symbols: pass both (from data.load_log_expression).")
    try:
        gct = gtex.locate_gtex_files(data_dir).expression
    except (FileNotFoundError, ValueError):
        if expression is None:
            raise
        gct = None  # expression given and no GTEx layout: the store is used only if it exists
    st = _store_for(out_dir, samples, "02_training", gct)
    if st is not None:  # the run's joined store: features (and expression) joined once per run
        feats = st.features(str(key))
        if expression is None:
            expression, symbols = st.expression()
    else:
        feats = features_by_sample(load_features(out_dir, key), samples)
        if expression is None:
            files = gtex.locate_gtex_files(data_dir)
            expression, symbols = load_log_expression(files.expression)
    f, e = match_samples(feats, expression, on_mismatch="intersect")
    s = samples.drop_duplicates("SAMPID").set_index("SAMPID").loc[f.index]
    log.info("%d samples with image features (%s) and expression", len(f), key)
    return PairedData(f, e, s, symbols)


# --------------------------------------------------------------------------
# notebook 01's tiling, as later notebooks read it
# --------------------------------------------------------------------------
#: file (in ``cache_dir`` of :func:`tile_slides`) with the slides and tiles of each tile size
#: (``01_tiling:tiles_per_size`` is this file in notebook 01's ``per_slide`` folder)
TILES_PER_SIZE = Path(products.file_name("01_tiling", "tiles_per_size")).name


class EmptyGridError(InputError):
    """A notebook needs a tile grid that notebook 01 left empty."""


def select_grid(tiles: pd.DataFrame, tile_px: int, *, what: str = "this notebook") -> pd.DataFrame:
    """The tiles of one grid size; an empty grid stops with the size and the parameters to change.

    Parameters
    ----------
    tiles : DataFrame (:data:`TILE_COLUMNS`), the tile table of notebook 01
    tile_px : the grid size needed
    what : who needs it (for the message), e.g. ``"02_training's feature_tile_px"``

    Raises
    ------
    EmptyGridError
        No tile of that size (no slide holds such a square with enough tissue, or 01 did not tile it).
    """
    sel = tiles[tiles["tile_px"] == int(tile_px)]
    if sel.empty:
        have = sorted(int(v) for v in tiles["tile_px"].unique())
        raise EmptyGridError(
            f"Tile size {int(tile_px)} px has no tiles, but {what} needs it (sizes with tiles: {have}). Either no "
            f"slide holds a {int(tile_px)}-px square with at least min_tissue of tissue, or notebook 01 did not "
            f"cut that size. Change 01_tiling's tile_px (smaller), min_tissue (lower) or target_mpp (finer), "
            f"or use one of {have} "
            "in this notebook's tile-size parameters (train_tile_px, feature_tile_px, tile_px).")
    return sel


@products.reads(*_TILING_READS)
def load_tiling(out_dir: str | os.PathLike, notebook: str = "01_tiling", *,
                tile_sizes: Sequence[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tile table and the slide-sample table (with splits) that notebook 01 wrote.

    Parameters
    ----------
    out_dir : output directory of the run
    notebook : name of the tiling notebook
    tile_sizes : the grid sizes the caller needs: each must hold tiles, else :class:`EmptyGridError` names
        the size and the parameters to change. Without it, a size notebook 01 was asked for and left empty is
        logged as a warning.

    Returns
    -------
    tiles : DataFrame (:data:`TILE_COLUMNS`)
    samples : DataFrame, one row per usable image (``image_id, SAMPID, subject_id, SMTS, ..., split, path``)
    """
    d = Path(out_dir) / notebook
    tiles = io.read_table(d / products.file_name("01_tiling", "tiles"))
    samples = io.read_table(d / products.file_name("01_tiling", "samples"))
    per_size = d / products.file_name("01_tiling", "tiles_per_size")
    if per_size.exists():
        for r in io.read_table(per_size).itertuples():
            if r.tiles == 0:
                log.warning("Notebook 01 cut no tile of %d px: a notebook that uses that grid will stop", r.tile_px)
    for px in tile_sizes or []:
        select_grid(tiles, px, what=f"the caller of load_tiling (tile_sizes={list(tile_sizes)})")
    return tiles, samples


# --------------------------------------------------------------------------
# the run's joined store (the format lives in store.py)
# --------------------------------------------------------------------------
def _runner_parameters(out: Path) -> dict:
    params = {}
    for stem in ("00_synthetic_cohort", "01_tiling", "02_training"):
        stamp = out / ".runner" / f"{stem}.json"
        if stamp.exists():
            d = json.loads(stamp.read_text())
            params[stem] = {"parameters": d.get("parameters", {}), "fingerprint": d.get("fingerprint"),
                            "finished": d.get("finished")}
    return params


@products.reads(*_TILING_READS, *_FEATURE_READS)
def build_store(out_dir: str | os.PathLike, expression_path: str | os.PathLike, *,
                notebook: str = "02_training") -> Path:
    """Join samples, feature tables and expression of a run into ``<out_dir>/store/joined.h5ad``, atomically.

    Also writes ``<out_dir>/store/expression.h5ad`` (:func:`histo_utils.store.write_expression_h5ad`).

    Parameters
    ----------
    out_dir : output directory of the run (notebooks 01 and 02 done)
    expression_path : GCT file of TPM values (``GTExFiles.expression``)
    notebook : the notebook that wrote the feature tables

    Returns
    -------
    Path of the store
    """
    import anndata as ad

    t0 = time.perf_counter()
    out = Path(out_dir)
    prints = store.input_fingerprints(out, expression_path, notebook=notebook)
    _, samples = load_tiling(out)
    samples = samples.drop_duplicates("image_id")
    dup = samples.SAMPID[samples.SAMPID.duplicated()]
    if len(dup):
        raise InputError(f"samples.tsv of '{out}' has RNA samples with two slides (e.g. {list(dup[:3])}); "
                         f"rerun notebook 01 (it keeps one slide per sample).")
    obs = samples.set_index("SAMPID")
    obs.index = obs.index.astype(str)
    expr, symbols = joined_log_expression(out, expression_path, cache=True, use_store=False)
    rank = pd.Series(np.arange(len(expr)), index=expr.index)
    obs["expression_rank"] = rank.reindex(obs.index).fillna(-1).astype(np.int64).to_numpy()
    for c in obs.columns:
        if obs[c].dtype == object:
            obs[c] = obs[c].astype(str)
    X = np.full((len(obs), expr.shape[1]), np.nan, np.float32)
    have = obs["expression_rank"].to_numpy() >= 0
    X[have] = expr.loc[obs.index[have]].to_numpy(np.float32)
    var = pd.DataFrame({"Description": symbols.astype(str).to_numpy()}, index=pd.Index(expr.columns.astype(str),
                                                                                        name="Name"))
    obsm, feats_uns = {}, {}
    image_to_row = pd.Series(np.arange(len(obs)), index=obs["image_id"].to_numpy())
    for key in feature_keys(out, notebook=notebook):
        table = load_features(out, key, notebook=notebook)
        missing = table.index.difference(image_to_row.index)
        if len(missing):
            raise InputError(f"Feature table {key}: {len(missing)} slides are not in samples.tsv (e.g. "
                             f"{list(missing[:3])}); rerun notebook 02 after notebook 01.")
        m = np.full((len(obs), table.shape[1]), np.nan, np.float32)
        m[image_to_row.loc[table.index].to_numpy()] = table.to_numpy(np.float32)
        obsm[str(key)] = m
        feats_uns[str(key)] = {"names": np.asarray(table.columns.astype(str)),
                               "image_ids": np.asarray(table.index.astype(str)), **key.fields()}
    prov_path = out / notebook / PROVENANCE_FILE
    provenance = {"version": store.STORE_VERSION, "fingerprints": prints, "expression_path": str(Path(expression_path).resolve()),
                  "feature_provenance": json.loads(prov_path.read_text()), "runner": _runner_parameters(out),
                  "notebook": notebook}
    adata = ad.AnnData(X=X, obs=obs, var=var, obsm=obsm,
                       uns={"features": feats_uns, "provenance_json": json.dumps(provenance, sort_keys=True,
                                                                                 default=str)})
    dest = store.store_path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(dest) as tmp:
        adata.write_h5ad(tmp)
    store.write_expression_h5ad(expr, samples, dest.parent / store.EXPRESSION_FILE, symbols=symbols, provenance=provenance)
    log.info("Joined store of %d samples, %d genes, %d feature tables written to %s in %.1f s (%.1f MB)",
             len(obs), expr.shape[1], len(obsm), dest, time.perf_counter() - t0, dest.stat().st_size / 2**20)
    return dest


@products.reads(*_TILING_READS, *_FEATURE_READS)
def open_store(out_dir: str | os.PathLike, expression_path: str | os.PathLike | None = None, *,
               notebook: str = "02_training") -> store.JoinedStore | None:
    """The run's joined store, built first when missing or when an input's fingerprint changed.

    Parameters
    ----------
    out_dir : output directory of the run (notebooks 01 and 02 done)
    expression_path : GCT file of TPM values; None: the one recorded in an existing store (no store yet:
        None is returned, the caller joins the files itself)
    notebook : the notebook that wrote the feature tables

    Returns
    -------
    store.JoinedStore, or None (``expression_path`` None and no usable store)
    """
    st = store.fresh_store(out_dir, expression_path, notebook=notebook)
    if st is not None:
        return st
    if expression_path is None:
        try:
            expression_path = store.JoinedStore(store.store_path(out_dir)).provenance.get("expression_path")
        except Exception:
            return None
        if not expression_path or not Path(expression_path).exists():
            return None
    return store.JoinedStore(build_store(out_dir, expression_path, notebook=notebook))
