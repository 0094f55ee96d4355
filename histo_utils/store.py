"""One joined store per run: every sample's slide, image features, expression, covariates and split (B3).

Notebooks 03–09 start from the same join: notebook 01's slide–sample table, notebook 02's feature tables
(re-indexed by RNA sample) and the log expression of the samples that have a slide. The store is that
join written once, as one AnnData file, ``<out_dir>/store/joined.h5ad``:

``X``
    log2(1 + TPM), float32, shape (n_samples, n_genes); NaN rows for samples absent from the expression
    file (``obs["expression_rank"] == -1``).
``obs``
    indexed by RNA sample ID (``SAMPID``): notebook 01's ``samples.tsv`` as it is (``image_id``, slide
    ``path``, subject, tissue ``SMTS``, ``split``, the confounders), plus ``expression_rank`` (column
    position in the expression file, the order :func:`histo_utils.data.joined_log_expression` returns).
``var``
    indexed by gene ``Name``, column ``Description`` (symbol).
``obsm["<feature key>"]``
    one float32 matrix per feature table of notebook 02 (``trained_256px``, ...), NaN rows for slides
    whose features failed; its feature names and row order in ``uns["features"]``.
``uns["provenance_json"]``
    JSON text: the inputs' fingerprints, the expression file, notebook 02's feature provenance and the
    runner's parameters of notebooks 00–02 (``.runner/*.json``) that made them.

**Why AnnData** (argued in the README): one file (HDF5) that scanpy/anndata users open as it is
(``adata.obsm["trained_256px"]``), whose parts are read alone (:func:`histo_utils.store.JoinedStore`
reads one feature matrix without the expression), with the float32 values bit for bit; MuData would give
each feature table its own ``var`` but adds a dependency for no gain here, and a parquet folder is not one file.

The store is rebuilt when an input's fingerprint changes: content SHA-256 of ``samples.tsv``,
``features_provenance.json`` and every listed feature table; path, size and modification time of the
expression file (a GTEx GCT is 3 GB: hashing it on every read would cost more than the join), as the
expression cache does (:func:`histo_utils.data.expression_cache_key`).

The expression of the same samples is also written as ``<out_dir>/store/expression.h5ad``, indexed by
image ID with the ``obs`` columns of notebook 02's feature ``.h5ad`` files, for scanpy users.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import io, products
from .errors import InputError, InputKeyError, MissingInputError

log = logging.getLogger(__name__)

__all__ = ["STORE_DIR", "STORE_FILE", "EXPRESSION_FILE", "store_path", "input_fingerprints", 
           "fresh_store", "JoinedStore", "write_expression_h5ad"]

STORE_DIR = "store"
STORE_FILE = "joined.h5ad"
EXPRESSION_FILE = "expression.h5ad"
STORE_VERSION = 1
#: sample-table columns that go to ``obs`` of the AnnData feature and expression tables when present (GTEx names)
OBS_COLUMNS = ("SAMPID", "subject_id", "SMTS", "SMTSD", "split", "SMCENTER", "SMRIN", "SMTSISCH", "SMATSSCR",
               "SMNABTCH", "SMGEBTCH", "SMUBRID", "SMAFRZE")
_HASH_LIMIT = 512 * 2**20  # files up to this size are fingerprinted by content, larger ones by size and time


@products.reads()  # the run's store, not a notebook's product
def store_path(out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/store/joined.h5ad``."""
    return Path(out_dir) / STORE_DIR / STORE_FILE


def _file_print(path: Path) -> dict:
    st = path.stat()
    if st.st_size <= _HASH_LIMIT:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        return {"size": st.st_size, "sha256": h.hexdigest()}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@products.reads("01_tiling:samples", "02_training:provenance", "02_training:features")
def input_fingerprints(out_dir: str | os.PathLike, expression_path: str | os.PathLike | None, *,
                       notebook: str = "02_training") -> dict[str, dict]:
    """Fingerprints of the files the store joins.

    Parameters
    ----------
    out_dir : output directory of the run (notebooks 01 and 02 done)
    expression_path : GCT file of TPM values, or None to leave it out (checks of the image side only)
    notebook : the notebook that wrote the feature tables

    Returns
    -------
    dict, path relative to ``out_dir`` (the expression file: absolute) -> ``{"size", "sha256"}`` or
    ``{"size", "mtime_ns"}`` (expression file and files over 512 MB)
    """
    out = Path(out_dir)
    prov_path = out / notebook / products.file_name("02_training", "provenance")
    files = [products.outputs(out, "01_tiling").samples, prov_path]
    for p in files:
        if not p.exists():
            raise MissingInputError(f"Store input '{p}' does not exist: run notebooks 01 and 02 first.")
    files += [out / notebook / name for name in json.loads(prov_path.read_text())["tables"]]
    prints = {str(p.relative_to(out)): _file_print(p) for p in files}
    if expression_path is not None:
        e = Path(expression_path).resolve()
        st = e.stat()
        prints[str(e)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return prints



def write_expression_h5ad(expression: pd.DataFrame, samples: pd.DataFrame, dest: str | os.PathLike, *,
                          symbols: pd.Series, provenance: dict | None = None) -> Path:
    """Expression of the samples that have a slide as AnnData, indexed like notebook 02's feature ``.h5ad``.

    Parameters
    ----------
    expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM), index SAMPID
    samples : notebook 01's ``samples.tsv`` (``image_id``, ``SAMPID``, tissue, split, confounders)
    dest : the ``.h5ad`` file
    symbols : Series, gene Name -> symbol
    provenance : stored as JSON text in ``uns["provenance_json"]``

    Returns
    -------
    Path; its ``obs`` is indexed by image ID (sorted, as the feature tables) with
    :data:`histo_utils.features.OBS_COLUMNS`, ``var`` by gene Name with ``symbol``, ``X`` float32.
    """
    import anndata as ad

    s = samples.drop_duplicates("image_id").set_index("image_id")
    s = s[s.SAMPID.isin(expression.index)].sort_index()
    obs = s[[c for c in OBS_COLUMNS if c in s.columns]].copy()
    obs.index = obs.index.astype(str).rename("image_id")
    for c in obs.columns:
        if obs[c].dtype == object:
            obs[c] = obs[c].astype(str)
    var = pd.DataFrame({"symbol": symbols.reindex(expression.columns).astype(str).to_numpy()},
                       index=pd.Index(expression.columns.astype(str), name="Name"))
    adata = ad.AnnData(X=expression.loc[s.SAMPID].to_numpy(np.float32), obs=obs, var=var,
                       uns={"values": "log2(1 + TPM)",
                            "provenance_json": json.dumps(provenance or {}, sort_keys=True, default=str)})
    dest = Path(dest)
    with io.atomic_path(dest) as tmp:
        adata.write_h5ad(tmp)
    return dest


class JoinedStore:
    """Read access to a run's joined store; each part read on demand (the expression only when asked).

    Attributes
    ----------
    path : Path of ``joined.h5ad``
    samples : DataFrame indexed by SAMPID (notebook 01's columns and ``expression_rank``)
    provenance : dict (fingerprints, expression file, feature provenance, runner parameters)
    keys : list of str, the feature tables (``trained_256px``, ...)
    """

    def __init__(self, path: str | os.PathLike):
        import h5py
        from anndata.io import read_elem

        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            self.samples = read_elem(f["obs"])
            self.provenance = json.loads(read_elem(f["uns/provenance_json"]))
            self._features = read_elem(f["uns/features"])
        self.keys = list(self._features)

    def features(self, key: str) -> pd.DataFrame:
        """One feature table as :func:`histo_utils.data.feature_tables` returns it.

        Returns
        -------
        DataFrame, shape (n_slides, n_features), float32, index SAMPID (rows in notebook 02's table order:
        image ID sorted), columns ``layer_channel``
        """
        import h5py
        from anndata.io import read_elem

        if key not in self._features:
            raise InputKeyError(f"Feature table {key!r} not in the store {self.path}. Available: {self.keys}.")
        meta = self._features[key]
        with h5py.File(self.path, "r") as f:
            m = read_elem(f["obsm"][key])
        row = pd.Series(np.arange(len(self.samples)), index=self.samples["image_id"].to_numpy())
        idx = row.loc[np.asarray(meta["image_ids"], dtype=str)].to_numpy()
        return pd.DataFrame(m[idx], index=pd.Index(self.samples.index[idx], name="SAMPID"),
                            columns=pd.Index(np.asarray(meta["names"], dtype=str)))

    def expression(self) -> tuple[pd.DataFrame, pd.Series]:
        """log2(1 + TPM) of the samples with a slide, as :func:`histo_utils.data.joined_log_expression`.

        Returns
        -------
        log_expression : DataFrame, shape (n_samples, n_genes), float32, rows in the expression file's order
        symbols : Series, Name -> symbol
        """
        import h5py
        from anndata.io import read_elem

        with h5py.File(self.path, "r") as f:
            var = read_elem(f["var"])
            X = f["X"][()]
        rank = self.samples["expression_rank"].to_numpy()
        rows = np.flatnonzero(rank >= 0)
        rows = rows[np.argsort(rank[rows])]  # the expression file's column order
        X = X[rows]
        genes = pd.Index(var.index.to_numpy(), name="Name")
        return (pd.DataFrame(X, index=pd.Index(self.samples.index[rows].to_numpy()), columns=genes),
                pd.Series(var["Description"].to_numpy(), index=genes, name="Description"))


@products.reads("01_tiling:samples", "02_training:provenance", "02_training:features")
def fresh_store(out_dir: str | os.PathLike, expression_path: str | os.PathLike | None = None, *,
                notebook: str = "02_training") -> JoinedStore | None:
    """The run's store when it exists and its inputs' fingerprints are unchanged, else None.

    With ``expression_path`` None the image side is checked and the expression file recorded in the store
    is checked at its recorded path.
    """
    path = store_path(out_dir)
    if not path.exists():
        return None
    try:
        st = JoinedStore(path)
    except Exception as e:  # unreadable (truncated, older layout): rebuilt
        log.warning("Joined store %s unreadable (%s): it will be rebuilt", path, e)
        return None
    recorded = st.provenance.get("expression_path")
    if st.provenance.get("version") != STORE_VERSION or st.provenance.get("notebook") != notebook:
        return None
    want = expression_path if expression_path is not None else recorded
    if want is None or not Path(want).exists() or Path(want).resolve() != Path(recorded).resolve():
        return None
    if input_fingerprints(out_dir, want, notebook=notebook) != st.provenance.get("fingerprints"):
        log.info("Joined store %s is out of date (an input changed): rebuilding", path)
        return None
    return st


