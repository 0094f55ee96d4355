"""GTEx: the data folder, its annotation tables, identifiers and the join of images to RNA samples.

Folder layout (:func:`locate_gtex_files`, as GTEx v8 ships its files; the
synthetic cohort of notebook 00 writes the same)::

    data_dir/
      *gene_tpm.gct.gz                  expression, GCT v1.2 (TPM; read by io.read_gct)
      *SampleAttributesDS.txt           sample attributes, tab-separated, SAMPID first
      *SubjectPhenotypesDS.txt          subject phenotypes: SUBJID SEX AGE DTHHRDY
      *.gmt                             gene sets (optional; io.read_gmt)
      slides/<image id>.svs             one slide per histology image
      truth/                            planted truth (synthetic cohort only)

GTEx names things by dash-separated parts::

    GTEX-1117F                     subject (donor): first two parts
    GTEX-1117F-0226                histology image: first three parts (file GTEX-1117F-0226.svs)
    GTEX-1117F-0226-SM-5GZZ7       RNA sample (aliquot): the full ID

Some brain samples carry six parts (``GTEX-1117F-0011-R10a-SM-AS5GI``); the
image is still the first three. Several RNA samples can share one image
(Badea & Stanescu 2020 had 108 such images among 1,670): the join keeps one
RNA sample per image, chosen by :func:`join_images_to_samples`.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from .errors import InputError, MissingInputError
from . import io

log = logging.getLogger(__name__)

__all__ = ["GTExFiles", "locate_gtex_files", "read_sample_attributes", "read_subject_phenotypes",
           "subject_id", "image_id", "JoinReport", "join_images_to_samples", "LABEL_COLUMNS", "TISSUES_WITHOUT_SLIDES",
           "TISSUE_MERGES", "check_label_column", "tissue_merge", "read_median_tpm",
           "GTEX_V8_EXPRESSION_FILES", "expression_values_kind", "age_brackets"]

#: Sample-attribute columns that can label tissues: GTEx's ~30 coarse tissues (``SMTS``) or its 54 detailed
#: ones (``SMTSD``, of which 39 have histology slides in v8: Badea & Stanescu's classes).
LABEL_COLUMNS = ("SMTS", "SMTSD")

#: Detailed tissues (``SMTSD``) sampled for RNA only, without a histology slide in GTEx; with ``SMTS`` labels
#: they fall in ``Blood`` (whole blood, lymphocytes) and ``Skin`` (fibroblasts), and are dropped by the join
#: (no slide) just the same.
TISSUES_WITHOUT_SLIDES = ("Whole Blood", "Cells - Cultured fibroblasts", "Cells - EBV-transformed lymphocytes",
                          "Cells - Leukemia cell line (CML)")

#: Named groups of tissues scored as one class (:func:`tissue_merge`). ``badea_33``: Badea & Stanescu 2020
#: merged five groups of similar detailed tissues (``SMTSD``), 39 classes -> 33, for their merged-tissue
#: accuracy (97.9 %): arteries, colons, the oesophagus GE junction with the muscularis, heart, skin.
TISSUE_MERGES = {
    "badea_33": {
        "Artery": ["Artery - Aorta", "Artery - Coronary", "Artery - Tibial"],
        "Colon": ["Colon - Sigmoid", "Colon - Transverse"],
        "Esophagus - Muscularis / GE junction": ["Esophagus - Gastroesophageal Junction", "Esophagus - Muscularis"],
        "Heart": ["Heart - Atrial Appendage", "Heart - Left Ventricle"],
        "Skin": ["Skin - Not Sun Exposed (Suprapubic)", "Skin - Sun Exposed (Lower leg)"],
    },
}


def check_label_column(table: pd.DataFrame, label_column: str, *, what: str = "sample attributes") -> None:
    """Raise when ``label_column`` is not a column of ``table`` or has empty labels.

    Parameters
    ----------
    table : DataFrame with the tissue labels (sample attributes, notebook 01's ``samples.tsv``)
    label_column : ``SMTS`` (coarse tissue), ``SMTSD`` (detailed tissue) or another categorical column
    what : name of ``table`` in the message
    """
    if label_column not in table.columns:
        raise InputError(f"label_column '{label_column}' is not a column of the {what} (tissue columns present: "
                         f"{[c for c in LABEL_COLUMNS if c in table.columns]}). Set label_column to SMTS (GTEx's "
                         "coarse tissues) or SMTSD (detailed tissues, Badea's 39 classes).")
    n_missing = int(table[label_column].isna().sum())
    if n_missing:
        raise InputError(f"{n_missing} rows of the {what} have no {label_column} (e.g. "
                         f"{list(table.loc[table[label_column].isna()].iloc[:3, 0])}); every sample needs a tissue.")


def tissue_merge(name: str = "", groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Tissue groups scored as one class: a named merge of :data:`TISSUE_MERGES`, plus any ``groups`` given.

    Parameters
    ----------
    name : key of :data:`TISSUE_MERGES` (``"badea_33"``) or empty for none
    groups : further groups ``{"group": [tissue, ...]}`` (they win over the named merge's of the same name)

    Returns
    -------
    dict, group name -> member tissues (empty when neither is given)
    """
    if name and name not in TISSUE_MERGES:
        raise InputError(f"Unknown tissue merge '{name}'. Available: {sorted(TISSUE_MERGES)} (or empty for none).")
    out = {g: list(m) for g, m in TISSUE_MERGES.get(name, {}).items()} if name else {}
    out.update({g: list(m) for g, m in (groups or {}).items()})
    return out


def read_median_tpm(path: str | os.PathLike, tissues: Sequence[str] | None = None) -> pd.DataFrame:
    """GTEx's per-tissue median TPM table (``*gene_median_tpm.gct.gz``), as log2(1 + median TPM).

    The file is a GCT whose columns are the detailed tissues (``SMTSD``, 54 in v8) instead of samples:
    it gives Badea's expression floor without reading the 17,382-sample TPM table.

    Parameters
    ----------
    path : ``GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_median_tpm.gct.gz``
    tissues : keep only these tissue columns (e.g. the tissues with slides); default all

    Returns
    -------
    DataFrame, shape (n_tissues, n_genes), index tissue, columns ``Name`` (Ensembl ID), float32
    """
    med = io.read_gct(path, dtype="float32")
    med.attrs = {}
    if tissues is not None:
        absent = sorted(set(tissues) - set(med.columns))
        if absent:
            raise InputError(f"Median-TPM file '{path}' has no column for the tissues {absent[:5]} (its columns: "
                             f"{list(med.columns)[:5]} ...). It is keyed by detailed tissue: use label_column SMTSD "
                             "with it, or leave median_tpm empty to compute the floor from the samples.")
        med = med[list(dict.fromkeys(tissues))]
    return np.log2(1 + med.T)


_ID = re.compile(r"^[A-Z]+-[0-9A-Z]+(-[0-9A-Za-z]+)*$")


def _parts(sample_or_image: str, n: int, what: str) -> str:
    if not isinstance(sample_or_image, str) or not _ID.match(sample_or_image):
        raise InputError(
            f"'{sample_or_image}' is not a GTEx-style ID (expected e.g. GTEX-1117F-0226-SM-5GZZ7)."
        )
    parts = sample_or_image.split("-")
    if len(parts) < n:
        raise InputError(f"'{sample_or_image}' has {len(parts)} parts; a {what} ID needs at least {n}.")
    return "-".join(parts[:n])


def subject_id(sample_id: str) -> str:
    """Subject (donor) ID of a sample or image ID: its first two dash parts."""
    return _parts(sample_id, 2, "subject")


def image_id(sample_id: str) -> str:
    """Histology image ID of a sample ID: its first three dash parts."""
    return _parts(sample_id, 3, "image")


@dataclass
class JoinReport:
    """What the image-to-sample join could not pair, and what it chose."""

    images_without_expression: list[str] = field(default_factory=list)
    samples_without_image: list[str] = field(default_factory=list)
    duplicate_samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    tissues_without_slides: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> pd.DataFrame:
        """One row per problem kind with its count and a few example IDs."""
        rows = [
            ("slide without expression", self.images_without_expression),
            ("expression without slide", self.samples_without_image),
            ("extra RNA sample for one image (dropped)",
             list(self.duplicate_samples.get("SAMPID", pd.Series(dtype=str))[
                 ~self.duplicate_samples.get("kept", pd.Series(dtype=bool))])
             if len(self.duplicate_samples) else []),
            ("tissue without slides (left out)",
             list(self.tissues_without_slides.get("tissue", pd.Series(dtype=str)))),
        ]
        return pd.DataFrame(
            [(k, len(v), ", ".join(map(str, v[:5])) + (" ..." if len(v) > 5 else "")) for k, v in rows],
            columns=["problem", "count", "examples"],
        )


def join_images_to_samples(
    image_ids: Iterable[str],
    attributes: pd.DataFrame,
    expression_samples: Iterable[str],
    *,
    label_column: str = "SMTS",
) -> tuple[pd.DataFrame, JoinReport]:
    """Pair each histology image with one RNA-seq sample by GTEx ID.

    Parameters
    ----------
    image_ids
        Images that have a slide file (``GTEX-XXXXX-NNNN``).
    attributes
        Sample attributes (``SAMPID``, ``SMTS``, ``SMTSD``, ``SMRIN``, ...).
    expression_samples
        Sample IDs that are columns of the expression table.
    label_column
        Tissue label (``SMTS`` or ``SMTSD``): tissues with expression samples but no paired slide (whole
        blood, cultured cells) are left out, logged and listed in ``report.tissues_without_slides``; samples
        of :data:`TISSUES_WITHOUT_SLIDES` are never paired, even when an image ID happens to match.

    Returns
    -------
    joined : DataFrame, one row per paired image
        ``image_id, SAMPID, subject_id`` and the sample's attributes.
    report : JoinReport
        Images without an RNA sample, RNA samples without an image, and the
        images with several RNA samples.

    Notes
    -----
    Several RNA samples for one image: the sample with the highest RIN
    (``SMRIN``) is kept, ties broken by ``SAMPID``; the others are listed in
    ``report.duplicate_samples`` with ``kept=False``. Averaging the aliquots'
    expression instead would pair one expression profile with two different
    sets of technical covariates (RIN, ischemic time, batch), which the
    confounder regression of notebook 05 cannot then use.
    """
    images = pd.Index(sorted(set(image_ids)), name="image_id")
    expr = set(expression_samples)
    attrs = attributes.loc[attributes["SAMPID"].isin(expr)].copy()
    attrs["image_id"] = attrs["SAMPID"].map(image_id)
    attrs["subject_id"] = attrs["SAMPID"].map(subject_id)
    unknown = sorted(expr - set(attributes["SAMPID"]))
    if unknown:
        log.warning("%d expression samples have no row in the sample attributes (e.g. %s); they are ignored",
                    len(unknown), unknown[:3])
    check_label_column(attrs, label_column)
    with_image = attrs["image_id"].isin(images)
    if "SMTSD" in attrs:  # GTEx tissues sampled for RNA only (no slide) are left out
        with_image &= ~attrs["SMTSD"].isin(TISSUES_WITHOUT_SLIDES)
    report = JoinReport(
        images_without_expression=sorted(set(images) - set(attrs["image_id"])),
        samples_without_image=sorted(attrs.loc[~with_image, "SAMPID"]),
    )
    per_tissue = pd.DataFrame({"tissue": attrs[label_column], "paired": with_image}).groupby("tissue").paired
    counts = pd.DataFrame({"rna_samples": per_tissue.size(), "with_slide": per_tissue.sum()})
    report.tissues_without_slides = (counts[counts.with_slide == 0].rename_axis("tissue").reset_index()
                                     [["tissue", "rna_samples"]].assign(label_column=label_column,
                                                                        reason="no histology slide (left out)"))
    if len(report.tissues_without_slides):
        log.info("Left out %d %s tissues with RNA samples but no slide: %s", len(report.tissues_without_slides),
                 label_column, ", ".join(f"{r.tissue} ({r.rna_samples} samples)"
                                         for r in report.tissues_without_slides.itertuples()))
    attrs = attrs.loc[with_image]
    rin = attrs["SMRIN"] if "SMRIN" in attrs else pd.Series(0.0, index=attrs.index)
    attrs = attrs.assign(_rin=rin.fillna(-1.0)).sort_values(["image_id", "_rin", "SAMPID"],
                                                            ascending=[True, False, True])
    attrs["kept"] = ~attrs.duplicated("image_id", keep="first")
    dup_images = attrs.loc[attrs.duplicated("image_id", keep=False), "image_id"]
    report.duplicate_samples = attrs.loc[attrs["image_id"].isin(dup_images),
                                         ["image_id", "SAMPID", "_rin", "kept"]].rename(columns={"_rin": "SMRIN"})
    joined = attrs.loc[attrs["kept"]].drop(columns=["_rin", "kept"])
    if joined.empty:
        n_attr = int(attributes["SAMPID"].isin(expr).sum())
        raise InputError(
            f"No slide pairs with an RNA sample: {len(images)} slides (e.g. {list(images[:3])}), {len(expr)} "
            f"expression samples (e.g. {sorted(expr)[:3]}), {n_attr} of them in the sample attributes. A slide "
            "pairs with the samples whose first three dash parts are its image ID (GTEX-XXXXX-NNNN.svs with "
            "GTEX-XXXXX-NNNN-SM-...). Check that slides, expression and attributes come from the same cohort "
            "and that the slide files are named by image ID.")
    front = ["image_id", "SAMPID", "subject_id"]
    joined = joined[front + [c for c in joined.columns if c not in front]].reset_index(drop=True)
    for what, ids in (("slides without expression", report.images_without_expression),
                      ("expression samples without slide", report.samples_without_image)):
        if ids:
            log.warning("%d %s: %s%s", len(ids), what, ", ".join(ids[:5]), " ..." if len(ids) > 5 else "")
    if len(report.duplicate_samples):
        log.info("%d images have several RNA samples; kept the highest-RIN one each",
                 report.duplicate_samples["image_id"].nunique())
    return joined, report



# --------------------------------------------------------------------------
# annotation tables
# --------------------------------------------------------------------------
_ATTR_DTYPES = {"SAMPID": str, "SMTS": str, "SMTSD": str, "SMCENTER": str, "SMAFRZE": str,
                "SMUBRID": str, "SMNABTCH": str, "SMGEBTCH": str}


def read_sample_attributes(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GTEx ``SampleAttributesDS`` table; ``SAMPID`` must be present.

    ``SMUBRID`` and the other identifier columns are read as text (real files
    have leading zeros).

    Parameters
    ----------
    path : ``*SampleAttributesDS.txt``

    Returns
    -------
    DataFrame, one row per sample: ``SAMPID, SMTS, SMTSD, SMCENTER, SMRIN, SMTSISCH, ...``
    """
    path = Path(path)
    # GTEx writes plain tab-separated text: a pathology note (SMPTHNTS) may start with a quote
    # ('"Mild" autolysis; ...'), which CSV quoting would strip or run on into the next rows
    df = pd.read_csv(path, sep="\t", dtype=_ATTR_DTYPES, low_memory=False, quoting=csv.QUOTE_NONE)
    if "SAMPID" not in df.columns:
        raise InputError(
            f"Sample attributes '{path}' have no SAMPID column (columns: {list(df.columns)[:8]}...). "
            "Is this a GTEx SampleAttributesDS file?"
        )
    return df


_AGE_BRACKET = r"\d{1,3}-\d{1,3}"


def age_brackets(age: pd.Series, *, what: str = "AGE") -> pd.Series:
    """Ages as GTEx's 10-year brackets (``"60-69"``): brackets kept, ages in years converted, blanks kept.

    GTEx's open-access subject table gives ``AGE`` as brackets; its protected-access table (dbGaP) and
    hand-made tables give years. Years are *converted* (``63`` and ``63.5`` -> ``"60-69"``, with a logged
    warning saying how many) rather than refused: the age confounder of notebook 05 is then the same
    categorical term of six brackets as on open-access data, instead of one level per year (most of them
    rare, pooled or merged by the design), and exact ages are not needed by any notebook.

    Parameters
    ----------
    age : the ``AGE`` column (text or numbers)
    what : the table, for messages

    Returns
    -------
    Series of text brackets (object dtype), NaN where blank

    Raises
    ------
    ValueError
        A value that is neither a bracket nor a number of years in 0-120 (named, with the fix).
    """
    text = age.astype("string").str.strip()
    text = text.mask(text == "").str.replace(r"\s*-\s*", "-", regex=True)  # "60 - 69" -> "60-69"
    blank = text.isna().to_numpy(dtype=bool)
    bracket = text.str.fullmatch(_AGE_BRACKET).fillna(False).to_numpy(dtype=bool)
    years = pd.to_numeric(text.astype(object).where(~bracket & ~blank), errors="coerce").astype(float)
    bad = ~blank & ~bracket & ~years.between(0, 120).to_numpy(dtype=bool)
    if bad.any():
        raise InputError(f"{what}: AGE must be a GTEx bracket like '60-69' or an age in years (0-120); found "
                         f"{sorted(set(text[bad].astype(str)))[:5]} for {int(bad.sum())} subjects. Fix those cells "
                         "(or leave them blank to keep those subjects out of the age confounder).")
    out = text.astype(object).where(~blank, np.nan)
    conv = years.notna().to_numpy(dtype=bool) & ~bracket
    if conv.any():
        low = (np.floor(years[conv].astype(float) / 10) * 10).astype(int)
        out[conv] = [f"{lo}-{lo + 9}" for lo in low]
        log.warning("%s: AGE of %d of %d subjects is in years (e.g. %s), not GTEx's 10-year brackets; converted "
                    "to brackets (e.g. %s -> %s)", what, int(conv.sum()), int(text.notna().sum()),
                    list(text[conv][:3]), text[conv].iloc[0], out[conv].iloc[0])
    return out


def read_subject_phenotypes(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GTEx ``SubjectPhenotypesDS`` table (``SUBJID SEX AGE DTHHRDY``).

    ``SEX`` is 1 male / 2 female, ``AGE`` a text bracket (``"60-69"``; ages given in years are converted to
    these brackets with a logged warning, see :func:`age_brackets`), ``DTHHRDY`` the Hardy scale 0-4 with
    blanks (read as a nullable integer).

    Parameters
    ----------
    path : ``*SubjectPhenotypesDS.txt``

    Returns
    -------
    DataFrame, one row per donor: ``SUBJID, SEX, AGE, DTHHRDY``
    """
    path = Path(path)
    df = pd.read_csv(path, sep="\t", dtype={"SUBJID": str, "AGE": str})
    missing = {"SUBJID", "SEX", "AGE"} - set(df.columns)
    if missing:
        raise InputError(f"Subject phenotypes '{path}' lack columns {sorted(missing)}.")
    sex = pd.to_numeric(df["SEX"], errors="coerce")
    bad = df["SEX"].notna() & ~sex.isin([1, 2])
    if bad.any():
        codes = sorted(map(str, df.loc[bad, "SEX"].unique()))
        raise InputError(f"Subject phenotypes '{path}': SEX must be 1 (male) or 2 (female) as GTEx codes it; found "
                         f"{codes} for {int(bad.sum())} subjects (e.g. {list(df.loc[bad, 'SUBJID'][:3])}). Recode "
                         "them, or leave the cell blank to keep those subjects out of the confounder regression.")
    df["AGE"] = age_brackets(df["AGE"], what=f"Subject phenotypes '{path}'")
    if "DTHHRDY" in df.columns:
        df["DTHHRDY"] = df["DTHHRDY"].astype("Int64")
    return df


# --------------------------------------------------------------------------
# data-directory layout
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class GTExFiles:
    """Where the files of a GTEx-style data directory are.

    The synthetic cohort writes the same layout, so the real-data path and the
    default run read it with the same code.
    """

    data_dir: Path
    expression: Path
    sample_attributes: Path
    subject_phenotypes: Path
    slides_dir: Path
    gene_sets: Path | None
    truth_dir: Path | None


#: GTEx v8's expression tables (GCT v1.2, same layout): the gene TPM table is the one read; the read counts
#: and the per-tissue medians sit beside it and are never read in its place
GTEX_V8_EXPRESSION_FILES = {
    "tpm": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
    "reads": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_reads.gct.gz",
    "median_tpm": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_median_tpm.gct.gz",
}

_PATTERNS = {
    "expression": ("*gene_tpm.gct.gz", "*gene_tpm.gct"),
    "sample_attributes": ("*SampleAttributesDS.txt",),
    "subject_phenotypes": ("*SubjectPhenotypesDS.txt",),
    "gene_sets": ("*.gmt",),
}


def _find_one(data_dir: Path, key: str, required: bool) -> Path | None:
    for pattern in _PATTERNS[key]:
        hits = sorted(data_dir.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(
                f"Data directory '{data_dir}' holds several {key.replace('_', ' ')} files matching "
                f"'{pattern}': {[h.name for h in hits]}. Keep one, or name it in the parameter file."
            )
    if required:
        raise MissingInputError(
            f"Data directory '{data_dir}' has no {key.replace('_', ' ')} file (looked for "
            f"{' or '.join(_PATTERNS[key])}). Put the GTEx file there as downloaded, "
            "or run notebook 00 to make the synthetic cohort."
        )
    return None


def expression_values_kind(path: str | os.PathLike, *, rows: int = 500) -> str:
    """Whether a GCT holds read counts or TPM-like values, from its first ``rows`` genes.

    Read counts are whole numbers (GTEx writes them as integers); TPM values have decimals. The first
    ``rows`` genes of every sample are enough to tell, without reading GTEx's multi-gigabyte tables.

    Parameters
    ----------
    path : a ``.gct`` or ``.gct.gz`` file
    rows : genes read

    Returns
    -------
    ``"counts"`` (every value a whole number, some not zero), ``"tpm"`` (some value with decimals) or
    ``"unknown"`` (no non-zero value, or the file cannot be parsed: :func:`histo_utils.io.check_gct` then
    names what is wrong)
    """
    path = Path(path)
    try:
        head = pd.read_csv(path, sep="\t", skiprows=2, nrows=rows, index_col=0, dtype={"Name": str},
                           compression="gzip" if path.suffix == ".gz" else None, low_memory=False)
        values = head.drop(columns=["Description"], errors="ignore").apply(pd.to_numeric, errors="coerce")
        x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    except Exception as e:  # damaged or not GCT: the reader says what is wrong, here only the kind is asked
        log.debug("Expression file '%s': values not sniffed (%s: %s)", path, type(e).__name__, e)
        return "unknown"
    x = x[np.isfinite(x)]
    if not (x != 0).any():
        return "unknown"
    return "counts" if bool(np.all(x == np.round(x))) else "tpm"


def _counts_error(data_dir: Path, found: Path, why: str) -> MissingInputError:
    return MissingInputError(
        f"Data directory '{data_dir}' has no TPM expression file; '{found.name}' holds read counts ({why}), "
        "which are not TPM and are not read in their place. Download GTEx's gene TPM table, "
        f"{GTEX_V8_EXPRESSION_FILES['tpm']} (GTEx portal, v8 bulk tissue expression), into '{data_dir}'.")


def _find_expression(data_dir: Path) -> Path:
    """The TPM table of a data directory: by exact name (``*gene_tpm.gct[.gz]``), else by content.

    A GCT not named as GTEx's TPM is taken only when it is the only candidate and its values are not read
    counts (:func:`expression_values_kind`); GTEx's read counts (``*gene_reads.gct*``) and per-tissue medians
    (``*median_tpm.gct*``) are never taken.
    """
    named = _find_one(data_dir, "expression", False)
    if named is not None:
        return named
    gcts = sorted(p for p in data_dir.iterdir()
                  if p.name.endswith((".gct", ".gct.gz")) and not p.name.startswith(".") and p.is_file())
    reads = [p for p in gcts if "gene_reads" in p.name]
    medians = [p for p in gcts if "median_tpm" in p.name]
    others = [p for p in gcts if p not in reads and p not in medians]
    if len(others) > 1:
        raise InputError(
            f"Data directory '{data_dir}' has no *gene_tpm.gct.gz file and several other GCT files: "
            f"{[p.name for p in others]}; which one holds TPM is not guessed. Keep only the TPM table, "
            f"named as GTEx names it ({GTEX_V8_EXPRESSION_FILES['tpm']}).")
    if others:
        kind = expression_values_kind(others[0])
        if kind == "counts":
            raise _counts_error(data_dir, others[0], "every value of its first genes is a whole number")
        log.info("Expression file '%s' is not named *gene_tpm.gct.gz; it is the only GCT here and its values "
                 "have decimals (not read counts): read as TPM", others[0].name)
        return others[0]
    if reads:
        raise _counts_error(data_dir, reads[0], "GTEx's *gene_reads.gct.gz")
    if medians:
        raise MissingInputError(
            f"Data directory '{data_dir}' has no TPM expression file, only '{medians[0].name}', GTEx's median TPM "
            "per tissue (one column per tissue, not per sample). Download GTEx's gene TPM table, "
            f"{GTEX_V8_EXPRESSION_FILES['tpm']}, into '{data_dir}' (the median file can stay: notebook 03's "
            "median_tpm reads it).")
    raise MissingInputError(
        f"Data directory '{data_dir}' has no expression file (looked for "
        f"{' or '.join(_PATTERNS['expression'])}, or one GCT of TPM values). Put the GTEx file there as "
        f"downloaded ({GTEX_V8_EXPRESSION_FILES['tpm']}), or run notebook 00 to make the synthetic cohort.")


def locate_gtex_files(data_dir: str | os.PathLike, *, slides_subdir: str = "slides") -> GTExFiles:
    """Find the expression, annotation, gene-set files and slides of a data directory.

    Layout (as GTEx v8 ships its files; the synthetic cohort writes the same)::

        data_dir/
          *gene_tpm.gct.gz                  expression, GCT v1.2 (TPM)
          *SampleAttributesDS.txt           sample attributes
          *SubjectPhenotypesDS.txt          subject phenotypes
          *.gmt                             gene sets (optional)
          slides/<image id>.svs             one slide per histology image
          truth/                            planted truth (synthetic cohort only)

    The expression table is chosen by exact name (``*gene_tpm.gct.gz``, as GTEx names its TPM table) or,
    when no file is so named, by content: a single other GCT whose values are not read counts
    (:func:`expression_values_kind`). GTEx's read counts (``*gene_reads.gct.gz``) and median TPM per tissue
    (``*median_tpm.gct.gz``) are never read as the TPM table: a folder with only them is refused, naming the
    TPM file to download.

    Parameters
    ----------
    data_dir : path of the data directory
    slides_subdir : name of its folder of slides

    Returns
    -------
    GTExFiles, the paths (``gene_sets`` and ``truth_dir`` None when absent)

    Raises
    ------
    FileNotFoundError
        No data directory, slides folder, annotation table or TPM table (read counts or medians only: the
        message names them and the TPM file to download).
    ValueError
        Several files of one kind, or several unnamed GCT files.

    Examples
    --------
    >>> files = locate_gtex_files("runs/default/data")        # doctest: +SKIP
    >>> attributes = read_sample_attributes(files.sample_attributes)   # doctest: +SKIP
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingInputError(
            f"Data directory '{data_dir}' does not exist. Set data_dir in the parameter file "
            "to a folder with GTEx files, or run notebook 00 to make the synthetic cohort."
        )
    slides_dir = data_dir / slides_subdir
    if not slides_dir.is_dir():
        raise MissingInputError(
            f"Data directory '{data_dir}' has no '{slides_subdir}/' folder of slides. "
            "Put the .svs files there, named by histology image ID (GTEX-XXXXX-NNNN.svs)."
        )
    truth = data_dir / "truth"
    return GTExFiles(
        data_dir=data_dir,
        expression=_find_expression(data_dir),
        sample_attributes=_find_one(data_dir, "sample_attributes", True),
        subject_phenotypes=_find_one(data_dir, "subject_phenotypes", True),
        slides_dir=slides_dir,
        gene_sets=_find_one(data_dir, "gene_sets", False),
        truth_dir=truth if truth.is_dir() else None,
    )
