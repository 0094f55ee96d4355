"""TCGA identifiers, diagnostic-slide choice and the files of a TCGA-style tumour cohort.

TCGA names things by dash-separated barcode parts::

    TCGA-A1-A0SB                         patient (participant): first three parts
    TCGA-A1-A0SB-01A                     sample: ``01`` primary tumour, ``A`` the vial
    TCGA-A1-A0SB-01Z-00-DX1              diagnostic slide (``DX``) number 1 of the sample
    TCGA-A1-A0SB-01Z-00-DX1.B34C267B-... the slide file (``<slide barcode>.<uuid>.svs``)

A patient can have several diagnostic slides; Levy-Jurgenson et al. used one per
patient, ``DX1`` (:func:`choose_diagnostic_slides`).

Files of a tumour cohort, laid out as users download them (GDC slides, a
UCSC-Xena-style expression matrix, a TCGA-CDR-style clinical table)::

    tcga/
      <cohort>.expression.tsv.gz      genes x samples, log2(normalised count + 1); first column 'gene'
      <cohort>.clinical.tsv           bcr_patient_barcode, age, stage, subtype, OS, OS.time (days)
      slides/<slide barcode>.<uuid>.svs
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from .io import read_table

log = logging.getLogger(__name__)

__all__ = ["patient_barcode", "sample_barcode", "slide_number", "choose_diagnostic_slides", "TCGAFiles",
           "locate_tcga_files", "read_expression_matrix", "read_clinical", "TumourCohort", "load_tumour_cohort"]

_BARCODE = re.compile(r"^TCGA-[0-9A-Z]{2}-[0-9A-Z]{4}(-[0-9A-Z]+)*$")
_DX = re.compile(r"-DX(\d+)$")


def _check(barcode: str) -> list[str]:
    if not isinstance(barcode, str) or not _BARCODE.match(barcode.split(".")[0]):
        raise ValueError(f"'{barcode}' is not a TCGA barcode (expected e.g. TCGA-A1-A0SB-01Z-00-DX1).")
    return barcode.split(".")[0].split("-")


def patient_barcode(barcode: str) -> str:
    """Patient of any TCGA barcode (sample, slide, slide file name): its first three parts."""
    return "-".join(_check(barcode)[:3])


def sample_barcode(barcode: str) -> str:
    """Sample of a slide barcode (``TCGA-A1-A0SB-01Z-00-DX1`` -> ``TCGA-A1-A0SB-01``), two-digit type only."""
    parts = _check(barcode)
    if len(parts) < 4:
        raise ValueError(f"'{barcode}' names a patient, not a sample or slide.")
    return "-".join(parts[:3] + [parts[3][:2]])


def slide_number(barcode: str) -> int | None:
    """The diagnostic-slide number of a slide barcode (``...-DX2`` -> 2); None if it is not a DX slide."""
    m = _DX.search(barcode.split(".")[0])
    return int(m.group(1)) if m else None


def choose_diagnostic_slides(image_ids: Iterable[str]) -> pd.DataFrame:
    """One diagnostic slide per patient: DX1 when present, else the lowest DX number (the paper's rule).

    Parameters
    ----------
    image_ids : slide IDs (TCGA barcodes with ``-DX<n>``, ``-TS<n>``, ...)

    Returns
    -------
    DataFrame, one row per slide: ``image_id, patient, dx, chosen``; non-DX slides (frozen sections,
    ``TS``/``BS``) are never chosen.
    """
    ids = list(image_ids)
    df = pd.DataFrame({"image_id": ids, "patient": [patient_barcode(i) for i in ids],
                       "dx": [slide_number(i) for i in ids]})
    df["chosen"] = False
    dx = df[df.dx.notna()].sort_values(["patient", "dx", "image_id"])
    df.loc[dx.drop_duplicates("patient").index, "chosen"] = True
    return df


@dataclass(frozen=True)
class TCGAFiles:
    """Paths of a TCGA-style tumour cohort."""

    data_dir: Path
    expression: Path
    clinical: Path
    slides_dir: Path
    truth_dir: Path | None


def _one(data_dir: Path, pattern: str, what: str) -> Path:
    hits = sorted(data_dir.glob(pattern))
    if len(hits) != 1:
        found = "none" if not hits else ", ".join(h.name for h in hits)
        raise FileNotFoundError(f"Need exactly one {what} file '{pattern}' in '{data_dir}', found {found}. "
                                "See the layout in histo_utils.tcga.")
    return hits[0]


def locate_tcga_files(data_dir: str | os.PathLike) -> TCGAFiles:
    """Find the expression matrix, the clinical table and the slide folder of a tumour cohort.

    Parameters
    ----------
    data_dir : the cohort's folder (layout in this module's docstring)

    Returns
    -------
    TCGAFiles with ``expression``, ``clinical``, ``slides_dir`` and ``truth_dir`` (None for real data)
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"Tumour data directory '{d}' does not exist. Point tumour_dir at a folder laid "
                                "out as described in histo_utils.tcga, or set make_synthetic: true.")
    slides = d / "slides"
    if not slides.is_dir():
        raise FileNotFoundError(f"'{d}' has no 'slides/' folder with the diagnostic slides (*.svs).")
    truth = d / "truth"
    return TCGAFiles(d, _one(d, "*.expression.tsv*", "expression"), _one(d, "*.clinical.tsv", "clinical"), slides,
                     truth if truth.is_dir() else None)


def read_expression_matrix(path: str | os.PathLike, *, genes: Iterable[str] | None = None) -> pd.DataFrame:
    """Genes x samples matrix (first column the gene name), optionally only some genes (all must exist).

    Parameters
    ----------
    path : the matrix (TSV, optionally gzipped)
    genes : the rows to keep (None: all)

    Returns
    -------
    DataFrame, shape (n_genes, n_samples), indexed by gene, columns sample barcodes
    """
    df = read_table(path)
    first = df.columns[0]
    df = df.set_index(first)
    df.index.name = "gene"
    if genes is not None:
        genes = list(genes)
        missing = [g for g in genes if g not in df.index]
        if missing:
            raise KeyError(f"Traits {missing} are not rows of '{path}'. Rows include: {list(df.index[:5])} ...")
        df = df.loc[genes]
    for c in df.columns:
        _check(c)  # every column must be a TCGA barcode
    return df.astype(float)


def read_clinical(path: str | os.PathLike) -> pd.DataFrame:
    """TCGA-CDR-style clinical table; checks the survival columns ``OS`` (event) and ``OS.time`` (days).

    Parameters
    ----------
    path : the clinical TSV

    Returns
    -------
    DataFrame indexed by patient barcode
    """
    df = read_table(path)
    need = {"bcr_patient_barcode", "OS", "OS.time"}
    if not need <= set(df.columns):
        raise ValueError(f"Clinical table '{path}' lacks columns {sorted(need - set(df.columns))} "
                         "(TCGA-CDR names: OS = event 0/1, OS.time = days).")
    bad = df["OS"].notna() & ~df["OS"].isin([0, 1])
    if bad.any():
        raise ValueError(f"Clinical table '{path}': OS must be 0/1, got {sorted(df.loc[bad, 'OS'].unique())[:5]}.")
    return df.set_index("bcr_patient_barcode")


@dataclass
class TumourCohort:
    """A tumour cohort read for the tile models and the survival analysis (notebook 08).

    Attributes
    ----------
    files : the cohort's :class:`TCGAFiles`
    values : DataFrame, patients x traits: bulk expression of each trait by patient barcode
    clinical : DataFrame indexed by patient barcode (:func:`read_clinical`)
    slides : DataFrame, one row per slide: the slide listing (``image_id, path, ...``) with ``patient``,
        ``dx`` and ``chosen`` (:func:`choose_diagnostic_slides`)
    truth : DataFrame indexed by ``image_id`` (``truth/slides.tsv``: clones, true HTI) or None for real data
    """

    files: TCGAFiles
    values: pd.DataFrame
    clinical: pd.DataFrame
    slides: pd.DataFrame
    truth: pd.DataFrame | None


def load_tumour_cohort(data_dir: str | os.PathLike, traits: Iterable[str]) -> TumourCohort:
    """Read a tumour cohort: trait expression by patient, clinical table, slides with the DX1 choice, truth.

    Parameters
    ----------
    data_dir : the cohort's folder (layout in this module's docstring)
    traits : rows of the expression matrix to read (all must exist)

    Returns
    -------
    TumourCohort

    Examples
    --------
    >>> cohort = load_tumour_cohort("runs/tiny/tumour", ["MKI67", "miR-17-5p"])   # doctest: +SKIP
    >>> cohort.slides[cohort.slides.chosen].patient.is_unique                     # doctest: +SKIP
    True
    """
    from .tiling import list_slides

    files = locate_tcga_files(data_dir)
    expr = read_expression_matrix(files.expression, genes=traits)
    slides = list_slides(files.slides_dir)
    slides["patient"] = slides.image_id.map(patient_barcode)
    dx = choose_diagnostic_slides(slides.image_id)
    slides = slides.merge(dx[["image_id", "dx", "chosen"]], on="image_id")
    truth = None
    if files.truth_dir is not None:
        truth = read_table(files.truth_dir / "slides.tsv").set_index("image_id")
    return TumourCohort(files, expr.T.rename(index=patient_barcode), read_clinical(files.clinical), slides, truth)
