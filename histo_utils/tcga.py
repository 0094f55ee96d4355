"""TCGA identifiers, diagnostic-slide and aliquot choice, and the files of a tumour cohort as downloaded.

TCGA names things by dash-separated barcode parts::

    TCGA-A1-A0SB                         patient (participant): first three parts
    TCGA-A1-A0SB-01A                     sample: type ``01`` (primary solid tumour; ``06`` metastatic,
                                         ``11`` solid tissue normal) and vial ``A``
    TCGA-A1-A0SB-01A-11R-A144-07         aliquot: portion ``11``, analyte ``R`` (RNA), plate ``A144``, centre ``07``
    TCGA-A1-A0SB-01Z-00-DX1              diagnostic slide (``DX``, FFPE) number 1 of the sample
                                         (``TS``/``BS``: frozen top/bottom sections)
    TCGA-A1-A0SB-01Z-00-DX1.B34C267B-... the slide file (``<slide barcode>.<uuid>.svs``)

Rules applied here (Levy-Jurgenson et al. 2020 used one diagnostic slide per patient):

* **Slides**: primary tumour (sample type ``01``) only; per patient DX1, else the lowest DX number
  (:func:`choose_diagnostic_slides`).
* **Aliquots** (:func:`choose_aliquots`): primary tumour (``01``) only; when a patient has several aliquots in
  an expression table, the one with the lowest vial letter (``A`` before ``B``), then the lowest portion
  number, then the lowest plate, then the lowest full barcode is kept; an exact repeat of a column keeps its
  first copy. Every dropped aliquot is listed with the reason (normal tissue, another aliquot, repeat).

Two folder layouts are read (:func:`locate_tcga_files` tells them apart; both need ``slides/``)::

    project layout (written by the synthetic tumour cohort)
      <cohort>.expression.tsv.gz      genes x samples, log2(normalised count + 1); first column 'gene'
      <cohort>.clinical.tsv           bcr_patient_barcode, age, stage, subtype, OS, OS.time (days)
      slides/<slide barcode>.<uuid>.svs

    download layout (the files as the GDC, the PanCanAtlas and cBioPortal ship them)
      EBPlusPlusAdjustPANCAN_IlluminaHiSeq_RNASeqV2.geneExp.tsv   mRNA: 'gene_id' SYMBOL|ENTREZ, one column
                                      per aliquot (tumour and normal side by side), RSEM values, not logged
      pancanMiRs_EBadjOnProtocolPlatformWithoutRepsWithUnCorrectMiRs_08_04_16.csv
                                      miRNA: 'Genes,Correction,<aliquots>' (optional; one of the two tables
                                      is enough)
      TCGA-CDR-SupplementalTableS1.xlsx    survival (sheet 'TCGA-CDR'), or cBioPortal's
                                           data_clinical_patient.txt; with both, the TCGA-CDR is used
                                           (the curated survival resource; logged, in TCGAFiles)
      *subtype*.tsv / .csv / .txt          molecular subtypes keyed by sample or patient (optional)
      slides/<uuid>/<slide barcode>.<uuid>.svs (+ <uuid>/logs/) as gdc-client downloads them, or flat
      slides/gdc_manifest*.txt             the manifest (ignored when listing slides)

The readers give both layouts the same outputs: :func:`read_expression_matrix` a traits x columns matrix
of log2 values (columns: the project file's sample barcodes; the download layout's patient barcodes, one
chosen aliquot each, listed in ``df.attrs["aliquots"]``), :func:`read_clinical` one row per patient with
``OS`` (0/1), ``OS.time`` (days), ``age_at_initial_pathologic_diagnosis``, ``ajcc_pathologic_tumor_stage``
(``Stage I`` ... ``Stage IV`` or missing) and ``subtype`` (missing when no subtype table is given).
"""
from __future__ import annotations

import gzip
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .io import read_table
from .errors import InputError, InputKeyError, MissingInputError
from .slides import SLIDE_SUFFIXES

log = logging.getLogger(__name__)

__all__ = ["patient_barcode", "sample_barcode", "sample_type", "slide_number", "parse_aliquot",
           "choose_diagnostic_slides", "choose_aliquots", "list_tumour_slides", "TCGAFiles", "locate_tcga_files",
           "read_expression_matrix", "read_pancan_mrna", "read_pancan_mirna", "read_clinical", "read_cdr",
           "read_cbioportal_patients", "read_subtypes", "stage_group", "DAYS_PER_MONTH", "MRNA_FILE", "MIRNA_FILE",
           "CDR_FILE", "CBIOPORTAL_FILE", "CLINICAL_CHOICES", "TumourCohort", "load_tumour_cohort"]

_BARCODE = re.compile(r"^TCGA-[0-9A-Z]{2}-[0-9A-Z]{4}(-[0-9A-Z]+)*$")
_DX = re.compile(r"-DX(\d+)$")
_ALIQUOT = re.compile(r"^(TCGA-[0-9A-Z]{2}-[0-9A-Z]{4})-(\d{2})([A-Z])?"
                      r"(?:-(\d{2})([A-Z])(?:-([0-9A-Z]{4})(?:-([0-9A-Z]{2}))?)?)?$")

#: file names as the PanCanAtlas, TCGA-CDR and cBioPortal releases ship them
MRNA_FILE = "EBPlusPlusAdjustPANCAN_IlluminaHiSeq_RNASeqV2.geneExp.tsv"
MIRNA_FILE = "pancanMiRs_EBadjOnProtocolPlatformWithoutRepsWithUnCorrectMiRs_08_04_16.csv"
CDR_FILE = "TCGA-CDR-SupplementalTableS1.xlsx"
CBIOPORTAL_FILE = "data_clinical_patient.txt"
#: days per month used to turn cBioPortal's OS_MONTHS back into days (a mean Gregorian month, 365.25 / 12)
DAYS_PER_MONTH = 365.25 / 12
#: cells that mean "no value" in TCGA-CDR and cBioPortal tables
NA_CELLS = ["[Not Available]", "[Discrepancy]", "[Not Applicable]", "[Unknown]", "[Not Evaluated]",
            "[Completed]", "#N/A", "NA", ""]
_MISSING_TOKENS = {"", "NA", "NaN", "nan", "null", "NULL"}


def _check(barcode: str) -> list[str]:
    if not isinstance(barcode, str) or not _BARCODE.match(barcode.split(".")[0]):
        raise InputError(f"'{barcode}' is not a TCGA barcode (expected e.g. TCGA-A1-A0SB-01Z-00-DX1).")
    return barcode.split(".")[0].split("-")


def patient_barcode(barcode: str) -> str:
    """Patient of any TCGA barcode (sample, slide, slide file name): its first three parts."""
    return "-".join(_check(barcode)[:3])


def sample_barcode(barcode: str) -> str:
    """Sample of a slide barcode (``TCGA-A1-A0SB-01Z-00-DX1`` -> ``TCGA-A1-A0SB-01``), two-digit type only."""
    parts = _check(barcode)
    if len(parts) < 4:
        raise InputError(f"'{barcode}' names a patient, not a sample or slide.")
    return "-".join(parts[:3] + [parts[3][:2]])


def sample_type(barcode: str) -> str:
    """Two-digit sample type of a sample, aliquot or slide barcode (``01`` primary tumour, ``11`` normal)."""
    return sample_barcode(barcode)[-2:]


def slide_number(barcode: str) -> int | None:
    """The diagnostic-slide number of a slide barcode (``...-DX2`` -> 2); None if it is not a DX slide."""
    m = _DX.search(barcode.split(".")[0])
    return int(m.group(1)) if m else None


def parse_aliquot(barcode: str) -> dict:
    """Parts of a full aliquot barcode (``TCGA-A1-A0SB-01A-11R-A144-07``).

    Shorter sample barcodes (``TCGA-A1-A0SB-01A``, ``TCGA-A1-A0SB-01``, as some derived tables have) are
    accepted; their missing parts are empty text (and sort first in :func:`choose_aliquots`).

    Returns
    -------
    dict with ``patient, sample_type, vial, portion, analyte, plate, centre`` (text).
    """
    m = _ALIQUOT.match(barcode) if isinstance(barcode, str) else None
    if m is None:
        raise InputError(f"'{barcode}' is not a TCGA aliquot or sample barcode (expected e.g. "
                         "TCGA-A1-A0SB-01A-11R-A144-07, as in the columns of the PanCanAtlas tables).")
    keys = ("patient", "sample_type", "vial", "portion", "analyte", "plate", "centre")
    return {k: v or "" for k, v in zip(keys, m.groups())}


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


def choose_aliquots(barcodes: Sequence[str], *, sample_types: Sequence[str] = ("01",)) -> pd.DataFrame:
    """One aliquot per patient among the columns of an expression table (rule in the module docstring).

    Parameters
    ----------
    barcodes : aliquot barcodes in column order (repeats allowed)
    sample_types : sample types that may be chosen (default primary tumour only)

    Returns
    -------
    DataFrame, one row per column (``position`` = its column index): ``barcode, patient, sample_type, vial,
    portion, plate, chosen, reason`` (``reason`` says why a column was dropped; empty when chosen).
    """
    rows = []
    for pos, b in enumerate(barcodes):
        rows.append({"position": pos, "barcode": b, **parse_aliquot(b)})
    df = pd.DataFrame(rows, columns=["position", "barcode", "patient", "sample_type", "vial", "portion", "analyte",
                                     "plate", "centre"])
    df["chosen"] = False
    df["reason"] = ""
    repeat = df.duplicated("barcode", keep="first")
    df.loc[repeat, "reason"] = "repeated column (first copy kept)"
    wrong = ~df.sample_type.isin(list(sample_types)) & ~repeat
    df.loc[wrong, "reason"] = "sample type " + df.loc[wrong, "sample_type"] + " (not " + "/".join(sample_types) + ")"
    ok = df[df.reason == ""].sort_values(["patient", "vial", "portion", "plate", "barcode"])
    first = ok.drop_duplicates("patient")
    df.loc[first.index, "chosen"] = True
    winner = first.set_index("patient").barcode
    other = ok.index.difference(first.index)
    df.loc[other, "reason"] = "another aliquot of the patient kept: " + df.loc[other, "patient"].map(winner)
    return df


# --------------------------------------------------------------------------
# slides
# --------------------------------------------------------------------------
def list_tumour_slides(slides_dir: str | os.PathLike, *, sample_types: Sequence[str] | None = ("01",),
                       suffixes: Sequence[str] | None = None) -> pd.DataFrame:
    """Slide files of a tumour cohort, flat or in GDC's UUID folders (``<uuid>/<barcode>.<uuid>.svs``).

    ``logs/`` folders (gdc-client's) and hidden folders are skipped; manifests and other non-slide files are
    ignored.

    Parameters
    ----------
    slides_dir : the folder gdc-client downloaded into (or a flat folder of slide files)
    sample_types : keep slides of these sample types (default primary tumour ``01``); None keeps all
    suffixes : slide file suffixes (default: those of :func:`histo_utils.tiling.list_slides`, :data:`histo_utils.slides.SLIDE_SUFFIXES`)

    Returns
    -------
    DataFrame, one row per slide: ``image_id`` (slide barcode), ``path``, ``patient``, ``sample_type``,
    ``dx`` (DX number, missing for frozen sections), ``uuid`` (the GDC folder name; empty when flat).
    """
    suffixes = tuple(s.lower() for s in (suffixes or SLIDE_SUFFIXES))
    root = Path(slides_dir)
    if not root.is_dir():
        raise MissingInputError(f"Slide folder '{root}' does not exist. Download the slides into it with "
                                "gdc-client (gdc-client download -m <manifest> -d <folder>) or copy them there.")
    paths = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "logs" and not x.startswith("."))
        paths += [Path(d) / f for f in sorted(files) if Path(f).suffix.lower() in suffixes and not f.startswith(".")]
    if not paths:
        raise MissingInputError(f"No slide files ({', '.join(suffixes)}) in '{root}' or its GDC folders.")
    rows, foreign = [], []
    for p in paths:
        iid = p.name.split(".")[0]
        try:
            patient = patient_barcode(iid)
            stype = sample_type(iid)
        except ValueError:
            foreign.append(str(p))
            continue
        rel = p.parent.relative_to(root)
        rows.append({"image_id": iid, "path": str(p), "patient": patient, "sample_type": stype,
                     "dx": slide_number(iid), "uuid": rel.parts[0] if rel.parts else ""})
    if foreign:
        raise InputError(f"{len(foreign)} slide files in '{root}' are not named by a TCGA slide barcode "
                         f"(e.g. {foreign[:2]}); GDC names them <barcode>.<uuid>.svs. Move them out.")
    df = pd.DataFrame(rows)
    df["dx"] = df["dx"].astype("Int64")
    dup = df[df.image_id.duplicated(keep=False)]
    if len(dup):
        raise InputError(f"Several slide files share a slide barcode in '{root}': {sorted(dup.path)[:4]}. "
                         "Keep one file per slide (a file downloaded twice?).")
    if sample_types is not None:
        drop = ~df.sample_type.isin(list(sample_types))
        if drop.any():
            log.info("%d slides of other sample types than %s left out (e.g. %s)", int(drop.sum()),
                     list(sample_types), df.image_id[drop].tolist()[:3])
        df = df[~drop]
    return df.sort_values("image_id").reset_index(drop=True)


# --------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class TCGAFiles:
    """Paths of a tumour cohort in either layout (see the module docstring).

    ``expression`` is one path (project layout) or a tuple of the PanCanAtlas mRNA and/or miRNA tables
    (download layout); :func:`read_expression_matrix` takes either. ``clinical`` is the project clinical
    table, the TCGA-CDR xlsx or the cBioPortal patient table; :func:`read_clinical` takes any of them.
    ``clinical_ignored`` lists the clinical tables of the folder that are not read (the cBioPortal table
    beside a TCGA-CDR xlsx) and ``clinical_reason`` says why ``clinical`` was chosen;
    :meth:`provenance` gives all of it as JSON-ready text.
    """

    data_dir: Path
    expression: Path | tuple[Path, ...]
    clinical: Path
    slides_dir: Path
    truth_dir: Path | None
    layout: str = "project"
    subtypes: Path | None = None
    clinical_ignored: tuple[Path, ...] = ()
    clinical_reason: str = "the only clinical table"

    def provenance(self) -> dict:
        """The located files by name, for a run's provenance (JSON-ready).

        Returns
        -------
        dict with ``data_dir``, ``layout``, ``expression`` (file names), ``clinical`` (the file read),
        ``clinical_ignored`` (file names), ``clinical_reason``, ``subtypes`` (or None), ``slides_dir`` and
        ``truth_dir`` (or None)
        """
        expr = self.expression if isinstance(self.expression, tuple) else (self.expression,)
        return {"data_dir": str(self.data_dir), "layout": self.layout, "expression": [p.name for p in expr],
                "clinical": self.clinical.name, "clinical_ignored": [p.name for p in self.clinical_ignored],
                "clinical_reason": self.clinical_reason,
                "subtypes": self.subtypes.name if self.subtypes else None, "slides_dir": str(self.slides_dir),
                "truth_dir": str(self.truth_dir) if self.truth_dir else None}


def _one(data_dir: Path, pattern: str, what: str) -> Path:
    hits = sorted(data_dir.glob(pattern))
    if len(hits) != 1:
        found = "none" if not hits else ", ".join(h.name for h in hits)
        raise MissingInputError(f"Need exactly one {what} file '{pattern}' in '{data_dir}', found {found}. "
                                "See the layout in histo_utils.tcga.")
    return hits[0]


def _at_most_one(data_dir: Path, patterns: Sequence[str], what: str) -> Path | None:
    hits = sorted({h for p in patterns for h in data_dir.glob(p) if h.is_file()})
    if len(hits) > 1:
        raise InputError(f"'{data_dir}' holds several {what} files: {[h.name for h in hits]}. Keep one.")
    return hits[0] if hits else None


_MRNA_PATTERNS = ("*geneExp*.tsv", "*geneExp*.tsv.gz")
_MIRNA_PATTERNS = ("pancanMiRs*.csv", "pancanMiRs*.csv.gz")
_CDR_PATTERNS = ("TCGA-CDR*.xlsx",)
_CBIO_PATTERNS = ("*data_clinical_patient.txt",)
_SUBTYPE_PATTERNS = ("*ubtype*.tsv", "*ubtype*.txt", "*ubtype*.csv")


#: values of ``clinical`` in :func:`locate_tcga_files` (which survival table a folder with both is read by)
CLINICAL_CHOICES = ("auto", "cdr", "cbioportal")


def _choose_clinical(d: Path, cdr: Path | None, cbio: Path | None, clinical: str
                     ) -> tuple[Path | None, tuple[Path, ...], str]:
    """The survival table to read among a TCGA-CDR xlsx and a cBioPortal patient table: (chosen, ignored, why)."""
    if clinical not in CLINICAL_CHOICES:
        raise InputError(f"clinical={clinical!r} is not one of {list(CLINICAL_CHOICES)}: 'auto' (the TCGA-CDR "
                         f"when present), 'cdr' ({CDR_FILE}) or 'cbioportal' ({CBIOPORTAL_FILE}).")
    if clinical == "cdr" and cdr is None:
        raise MissingInputError(f"clinical='cdr' but '{d}' has no TCGA-CDR table ({CDR_FILE}): download it "
                                "into the folder, or pass clinical='auto'.")
    if clinical == "cbioportal" and cbio is None:
        raise MissingInputError(f"clinical='cbioportal' but '{d}' has no cBioPortal patient table "
                                f"({CBIOPORTAL_FILE}): download it into the folder, or pass clinical='auto'.")
    if not (cdr and cbio):
        return cdr or cbio, (), "the only clinical table"
    if clinical == "cbioportal":
        chosen, ignored, why = cbio, cdr, "asked for by clinical='cbioportal'"
    else:
        chosen, ignored = cdr, cbio
        why = ("the curated survival resource (TCGA-CDR), "
               + ("preferred by clinical='auto'" if clinical == "auto" else "asked for by clinical='cdr'"))
    other = "cbioportal" if chosen is cdr else "cdr"
    log.info("'%s' holds two clinical tables, %s and %s: using %s, %s; %s is not read (clinical='%s' reads "
             "it instead)", d, cdr.name, cbio.name, chosen.name, why, ignored.name, other)
    return chosen, (ignored,), why


def locate_tcga_files(data_dir: str | os.PathLike, *, clinical: str = "auto") -> TCGAFiles:
    """Find the expression, clinical and slide files of a tumour cohort and tell which layout it has.

    The project layout has ``<cohort>.expression.tsv*`` and ``<cohort>.clinical.tsv``; the download layout
    the PanCanAtlas mRNA and/or miRNA tables and the TCGA-CDR xlsx and/or a cBioPortal patient table. When
    both of these are there (users often download both), the TCGA-CDR is read (Liu et al. 2018, the curated
    survival resource of the PanCanAtlas, times in days), the choice is logged and recorded in
    ``TCGAFiles.clinical_ignored`` / ``clinical_reason``; ``clinical`` picks one explicitly. The two kinds of
    expression file in one folder are refused, as are two files of one kind and a project clinical table
    beside a downloaded one.

    Parameters
    ----------
    data_dir : the cohort's folder (either layout)
    clinical : which survival table to read when the folder has both: ``auto`` (the TCGA-CDR), ``cdr`` or
        ``cbioportal`` (the named one must be present)

    Returns
    -------
    TCGAFiles with ``expression`` (a path, or a tuple of PanCanAtlas tables), ``clinical``, ``slides_dir``,
    ``truth_dir`` (None for real data), ``layout`` (``project`` or ``download``), ``subtypes`` (or None),
    ``clinical_ignored`` and ``clinical_reason``
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise MissingInputError(f"Tumour data directory '{d}' does not exist. Point tumour_dir at a folder laid "
                                "out as described in histo_utils.tcga, or set make_synthetic: true.")
    slides = d / "slides"
    if not slides.is_dir():
        raise MissingInputError(f"'{d}' has no 'slides/' folder with the diagnostic slides (*.svs): download "
                                "them into it with gdc-client (-d slides) or copy them there.")
    truth = d / "truth"
    truth = truth if truth.is_dir() else None
    project_expr = sorted(d.glob("*.expression.tsv*"))
    mrna = _at_most_one(d, _MRNA_PATTERNS, "PanCanAtlas mRNA")
    mirna = _at_most_one(d, _MIRNA_PATTERNS, "PanCanAtlas miRNA")
    if project_expr and (mrna or mirna):
        raise InputError(f"'{d}' holds both a project expression file ({project_expr[0].name}) and PanCanAtlas "
                         f"tables ({', '.join(p.name for p in (mrna, mirna) if p)}). Keep one kind.")
    cdr = _at_most_one(d, _CDR_PATTERNS, "TCGA-CDR")
    cbio = _at_most_one(d, _CBIO_PATTERNS, "cBioPortal patient")
    project_clin = sorted(d.glob("*.clinical.tsv"))
    if project_clin and (cdr or cbio):
        have = [p.name for p in (cdr, cbio, *project_clin) if p]
        raise InputError(f"'{d}' holds a project clinical table and a downloaded one: {have}. Keep the "
                         f"downloaded ones ({CDR_FILE} and/or {CBIOPORTAL_FILE}) or <cohort>.clinical.tsv.")
    chosen, ignored, why = _choose_clinical(d, cdr, cbio, clinical)
    subtypes = _at_most_one(d, _SUBTYPE_PATTERNS, "subtype")
    if mrna or mirna:
        if not (chosen or project_clin):
            raise MissingInputError(f"'{d}' has PanCanAtlas expression but no survival table: add {CDR_FILE} "
                                    f"(TCGA-CDR, sheet 'TCGA-CDR') or cBioPortal's {CBIOPORTAL_FILE}.")
        return TCGAFiles(d, tuple(p for p in (mrna, mirna) if p), chosen or project_clin[0], slides, truth,
                         "download", subtypes, ignored, why)
    expression = _one(d, "*.expression.tsv*", f"expression (or PanCanAtlas {MRNA_FILE} / {MIRNA_FILE})")
    chosen = chosen or _one(d, "*.clinical.tsv", f"clinical (or {CDR_FILE})")
    return TCGAFiles(d, expression, chosen, slides, truth, "project", subtypes, ignored, why)


# --------------------------------------------------------------------------
# expression
# --------------------------------------------------------------------------
def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _is_mirna_name(name: str) -> bool:
    return bool(re.match(r"^(hsa-)?(miR|let|mir)-", name))


def _parse_values(fields: list[str], path: Path, row: str) -> np.ndarray:
    out = np.empty(len(fields), np.float32)
    for i, f in enumerate(fields):
        f = f.strip().strip('"')
        if f in _MISSING_TOKENS:
            out[i] = np.nan
            continue
        try:
            out[i] = float(f)
        except ValueError:
            raise InputError(f"Expression table '{path}', row '{row}', column {i + 1}: '{f}' is not a number "
                             "(missing values must be NA or empty). Is the file truncated or edited?") from None
    return out


def _stream_rows(path: Path, sep: str, n_keys: int, match) -> tuple[list[str], dict[str, list]]:
    """Header and the rows whose first field ``match`` maps to a wanted name (others are not parsed)."""
    found: dict[str, list] = {}
    with _open_text(path) as fh:
        header = fh.readline().rstrip("\r\n").split(sep)
        header = [h.strip().strip('"') for h in header]
        width = len(header)
        for n, line in enumerate(fh, 2):
            cut = line.find(sep)
            key = line[:cut].strip().strip('"') if cut >= 0 else line.strip()
            want = match(key)
            if want is None:
                continue
            fields = line.rstrip("\r\n").split(sep)
            if len(fields) != width:
                raise InputError(f"Expression table '{path}' line {n} ('{key}') has {len(fields)} fields, the "
                                 f"header {width}. Is the file truncated? Download it again.")
            keys = [f.strip().strip('"') for f in fields[:n_keys]]
            found.setdefault(want, []).append((keys, _parse_values(fields[n_keys:], path, key)))
    return header, found


def _log_matrix(values: dict[str, np.ndarray], barcodes: list[str], path: Path, what: str, *,
                sample_types: Sequence[str]) -> pd.DataFrame:
    """Traits x chosen aliquots -> traits x patients, log2(x + 1), float32; aliquot choice in attrs."""
    choice = choose_aliquots(barcodes, sample_types=sample_types)
    kept = choice[choice.chosen]
    if kept.empty:
        raise InputError(f"{what} table '{path}' has no aliquot of sample type {list(sample_types)} "
                         f"(columns like {barcodes[:2]}).")
    dropped = choice[~choice.chosen]
    if len(dropped):
        log.info("%s '%s': %d aliquots of %d patients kept, %d dropped (%s)", what, path.name, len(kept),
                 kept.patient.nunique(), len(dropped), dropped.reason.str.split(":").str[0].value_counts().to_dict())
    mat = np.vstack([values[t] for t in values])[:, kept.position.to_numpy()]
    neg = mat < 0
    if neg.any():
        log.warning("%s '%s': %d negative values (batch-corrected counts) set to 0 before log2(x + 1)", what,
                    path.name, int(neg.sum()))
        mat = np.where(neg, 0, mat)
    df = pd.DataFrame(np.log2(mat + 1, dtype=np.float32), index=pd.Index(list(values), name="gene"),
                      columns=pd.Index(kept.patient.to_numpy(), name="patient"))
    df.attrs["aliquots"] = choice.assign(table=path.name)
    return df


def read_pancan_mrna(path: str | os.PathLike, *, genes: Sequence[str],
                     sample_types: Sequence[str] = ("01",)) -> pd.DataFrame:
    """Some genes of the PanCanAtlas mRNA table, log2(x + 1), one chosen aliquot per patient.

    The file (``gene_id`` then one column per aliquot; 20,531 genes x 11,069 aliquots, about 1.9 GB) is
    streamed: only the wanted rows are parsed, as float32.

    Parameters
    ----------
    path : ``EBPlusPlusAdjustPANCAN_IlluminaHiSeq_RNASeqV2.geneExp.tsv`` (optionally gzipped)
    genes : gene symbols (``MKI67``) or full ids (``MKI67|4288``, ``?|100130426``)
    sample_types : aliquot sample types to keep (default primary tumour)

    Returns
    -------
    DataFrame, shape (n_genes, n_patients), float32, index the names as asked, columns patient barcodes;
    ``attrs["aliquots"]``: :func:`choose_aliquots` of every column (chosen and dropped, with the reason).
    """
    path = Path(path)
    genes = list(genes)
    if not genes:
        raise InputError("read_pancan_mrna needs the genes to read (the whole table is many GB as numbers).")
    by_id = {g: g for g in genes if "|" in g}
    by_symbol = {g: g for g in genes if "|" not in g}

    def match(key):
        if key in by_id:
            return by_id[key]
        sym = key.split("|")[0]
        return by_symbol.get(sym) if sym != "?" else None

    header, found = _stream_rows(path, "\t", 1, match)
    if header[0] != "gene_id":
        raise InputError(f"'{path}' is not the PanCanAtlas mRNA table: its first column is '{header[0]}', "
                         "expected 'gene_id'.")
    missing = [g for g in genes if g not in found]
    if missing:
        raise InputKeyError(f"Genes {missing} are not rows of '{path}' (rows are SYMBOL|ENTREZ, e.g. MKI67|4288).")
    values = {}
    for g in genes:
        hits = found[g]
        if len(hits) > 1:
            raise InputError(f"Gene symbol '{g}' names {len(hits)} rows of '{path}': "
                             f"{[h[0][0] for h in hits]}. Ask for one by its full id (SYMBOL|ENTREZ).")
        values[g] = hits[0][1]
    return _log_matrix(values, header[1:], path, "mRNA", sample_types=sample_types)


def read_pancan_mirna(path: str | os.PathLike, *, mirnas: Sequence[str],
                      sample_types: Sequence[str] = ("01",)) -> pd.DataFrame:
    """Some miRNAs of the PanCanAtlas miRNA table (``Genes,Correction,<aliquots>``), log2(x + 1).

    ``miR-17-5p`` and ``hsa-miR-17-5p`` name the same row. A miRNA listed twice keeps its ``Corrected`` row.
    Returns the same form as :func:`read_pancan_mrna` (``attrs["correction"]``: the Correction of each row).
    """
    path = Path(path)
    mirnas = list(mirnas)
    if not mirnas:
        raise InputError("read_pancan_mirna needs the miRNAs to read.")
    wanted = {}
    for m in mirnas:
        wanted[m] = m
        wanted[m if m.startswith("hsa-") else f"hsa-{m}"] = m
    header, found = _stream_rows(path, ",", 2, wanted.get)
    if header[:2] != ["Genes", "Correction"]:
        raise InputError(f"'{path}' is not the PanCanAtlas miRNA table: it starts with {header[:2]}, expected "
                         "['Genes', 'Correction'].")
    missing = [m for m in mirnas if m not in found]
    if missing:
        raise InputKeyError(f"miRNAs {missing} are not rows of '{path}' (rows look like hsa-miR-17-5p).")
    values, correction = {}, {}
    for m in mirnas:
        hits = found[m]
        if len(hits) > 1:
            corrected = [h for h in hits if h[0][1] == "Corrected"]
            if len(corrected) != 1:
                raise InputError(f"miRNA '{m}' has {len(hits)} rows in '{path}' and not one 'Corrected' among them.")
            hits = corrected
        values[m], correction[m] = hits[0][1], hits[0][0][1]
    df = _log_matrix(values, header[2:], path, "miRNA", sample_types=sample_types)
    df.attrs["correction"] = correction
    return df


def _read_project_matrix(path: Path, genes: Iterable[str] | None) -> pd.DataFrame:
    df = read_table(path)
    first = df.columns[0]
    df = df.set_index(first)
    df.index.name = "gene"
    if genes is not None:
        genes = list(genes)
        missing = [g for g in genes if g not in df.index]
        if missing:
            raise InputKeyError(f"Traits {missing} are not rows of '{path}'. Rows include: {list(df.index[:5])} ...")
        df = df.loc[genes]
    for c in df.columns:
        _check(c)  # every column must be a TCGA barcode
    return df.astype(float)


def _kind(path: Path) -> str:
    with _open_text(path) as fh:
        head = fh.readline()
    if head.startswith("gene_id\t"):
        return "mrna"
    if head.replace('"', "").startswith("Genes,Correction,"):
        return "mirna"
    return "project"


def read_expression_matrix(path: str | os.PathLike | Sequence[str | os.PathLike], *,
                           genes: Iterable[str] | None = None,
                           sample_types: Sequence[str] = ("01",), complete: bool = True) -> pd.DataFrame:
    """Traits x samples matrix of log2 expression from either layout (``TCGAFiles.expression``).

    Project layout (one ``<cohort>.expression.tsv.gz``): the file as it is (genes x sample barcodes, first
    column the gene name), optionally only some genes (all must exist). Download layout (a PanCanAtlas mRNA
    and/or miRNA table, or a tuple of both): each trait is looked up in the table of its kind (names like
    ``miR-17-5p`` / ``hsa-...`` in the miRNA table, others in the mRNA table), log2(x + 1) applied, one
    primary-tumour aliquot per patient (:func:`choose_aliquots`); columns are patient barcodes;
    ``attrs["aliquots"]`` lists every column's fate. ``genes`` is required there (the tables are read for the
    named traits only). With ``complete`` (default) only patients with a value for every trait are kept
    (a patient missing from one table, or an ``NA`` cell, drops the patient; logged); otherwise they keep NaN.
    """
    paths = [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]
    for p in paths:
        if not p.exists():
            raise MissingInputError(f"Expression file '{p}' does not exist.")
    kinds = {p: _kind(p) for p in paths}
    if list(kinds.values()) == ["project"]:
        return _read_project_matrix(paths[0], genes)
    if "project" in kinds.values():
        raise InputError(f"Cannot mix a project expression file with PanCanAtlas tables: {[p.name for p in paths]}.")
    if genes is None:
        raise InputError("Name the traits to read (genes=[...]): the PanCanAtlas tables are read row by row for "
                         "the requested traits only.")
    genes = list(genes)
    by_kind = {k: p for p, k in kinds.items()}
    mirna = [g for g in genes if _is_mirna_name(g)]
    mrna = [g for g in genes if not _is_mirna_name(g)]
    parts = []
    for kind, names, reader, arg in (("mrna", mrna, read_pancan_mrna, "genes"),
                                     ("mirna", mirna, read_pancan_mirna, "mirnas")):
        if not names:
            continue
        if kind not in by_kind:
            want = MRNA_FILE if kind == "mrna" else MIRNA_FILE
            raise MissingInputError(f"Traits {names} need the PanCanAtlas {kind[:-3]}RNA table ({want}), which is "
                                    f"not among {[p.name for p in paths]}. Download it into the tumour folder.")
        parts.append(reader(by_kind[kind], **{arg: names}, sample_types=sample_types))
    out = pd.concat(parts, axis=0, join="outer") if len(parts) > 1 else parts[0]
    out = out.loc[genes].astype(np.float32)
    out.columns.name = "patient"
    aliquots = pd.concat([p.attrs["aliquots"] for p in parts], ignore_index=True)
    if complete:
        gap = out.columns[out.isna().any(axis=0)]
        if len(gap):
            log.warning("%d patients lack a value for some of the traits %s (not in every table, or NA cells) "
                        "and are left out (e.g. %s)", len(gap), genes, list(gap[:3]))
            out = out.drop(columns=gap)
    out.attrs["aliquots"] = aliquots
    return out


# --------------------------------------------------------------------------
# clinical
# --------------------------------------------------------------------------
_STAGE = re.compile(r"^\s*stage\s+(IV|III|II|I)(?:[ABC]\d?)?\s*$", re.IGNORECASE)


def stage_group(stage) -> str | None:
    """AJCC stage with its sub-level dropped: ``Stage IIA`` -> ``Stage II``; ``Stage X``, 0, blanks -> None."""
    if not isinstance(stage, str):
        return None
    m = _STAGE.match(stage)
    return f"Stage {m.group(1).upper()}" if m else None


def _strip_type_prefix(values: pd.Series) -> pd.Series:
    """``BRCA_LumA`` / ``BRCA.LumA`` -> ``LumA`` (cBioPortal and PanCanAtlas subtype labels)."""
    return values.astype("string").str.replace(r"^[A-Z]{2,8}[._]", "", regex=True)


def read_cdr(path: str | os.PathLike, *, cancer_type: str | None = None) -> pd.DataFrame:
    """The TCGA-CDR survival table (sheet ``TCGA-CDR``), one row per patient.

    ``[Not Available]``, ``[Discrepancy]`` and the other bracketed codes become missing; ``OS`` is the event
    (0/1), ``OS.time`` days. ``cancer_type`` (e.g. ``BRCA``) keeps the rows of one ``type``.
    """
    path = Path(path)
    try:
        df = pd.read_excel(path, sheet_name="TCGA-CDR", na_values=NA_CELLS, keep_default_na=True,
                           dtype={"bcr_patient_barcode": str})
    except ValueError as e:
        if "Worksheet" in str(e):
            raise InputError(f"'{path}' has no sheet 'TCGA-CDR'. Is it TCGA-CDR-SupplementalTableS1.xlsx?") from None
        raise
    df = df.loc[:, [not str(c).startswith("Unnamed") for c in df.columns]]
    need = {"bcr_patient_barcode", "OS", "OS.time"}
    if not need <= set(df.columns):
        raise InputError(f"TCGA-CDR table '{path}' lacks columns {sorted(need - set(df.columns))}.")
    if cancer_type is not None:
        if cancer_type not in set(df["type"]):
            raise InputError(f"No '{cancer_type}' rows in '{path}'. Types: {sorted(df['type'].dropna().unique())}.")
        df = df[df["type"] == cancer_type]
    return df


def read_cbioportal_patients(path: str | os.PathLike) -> pd.DataFrame:
    """cBioPortal's ``data_clinical_patient.txt`` in TCGA-CDR column names.

    The ``#`` header lines are skipped; ``OS_STATUS`` ``1:DECEASED`` -> ``OS`` 1, ``0:LIVING`` -> 0; ``OS_MONTHS``
    -> ``OS.time`` in days (x :data:`DAYS_PER_MONTH`); ``AGE``, ``SEX``, ``AJCC_PATHOLOGIC_TUMOR_STAGE``,
    ``SUBTYPE`` (cancer-type prefix removed) and ``CANCER_TYPE_ACRONYM`` renamed to their CDR names.
    """
    path = Path(path)
    with open(path) as fh:
        skip = 0
        for line in fh:
            if not line.startswith("#"):
                break
            skip += 1
    df = pd.read_csv(path, sep="\t", skiprows=skip, na_values=NA_CELLS, keep_default_na=True, dtype=str,
                     quoting=3)
    need = {"PATIENT_ID", "OS_STATUS", "OS_MONTHS"}
    if not need <= set(df.columns):
        raise InputError(f"cBioPortal patient table '{path}' lacks columns {sorted(need - set(df.columns))} "
                         f"(after {skip} '#' header lines; columns: {list(df.columns)[:6]} ...).")
    status = df["OS_STATUS"].str.split(":").str[0]
    bad = status.notna() & ~status.isin(["0", "1"])
    if bad.any():
        raise InputError(f"'{path}': OS_STATUS must be '0:LIVING' or '1:DECEASED', got "
                         f"{sorted(df.OS_STATUS[bad].unique())[:3]}.")
    out = pd.DataFrame({"bcr_patient_barcode": df["PATIENT_ID"]})
    for src, dst in (("CANCER_TYPE_ACRONYM", "type"), ("AGE", "age_at_initial_pathologic_diagnosis"),
                     ("SEX", "gender"), ("AJCC_PATHOLOGIC_TUMOR_STAGE", "ajcc_pathologic_tumor_stage")):
        if src in df:
            out[dst] = df[src]
    if "age_at_initial_pathologic_diagnosis" in out:
        out["age_at_initial_pathologic_diagnosis"] = _numeric(out["age_at_initial_pathologic_diagnosis"],
                                                              column="AGE", path=path)
    if "SUBTYPE" in df:
        out["subtype"] = _strip_type_prefix(df["SUBTYPE"])
    out["OS"] = pd.to_numeric(status)
    out["OS.time"] = _numeric(df["OS_MONTHS"], column="OS_MONTHS", path=path) * DAYS_PER_MONTH
    return out


_SUBTYPE_KEYS = ("pan.samplesID", "SAMPLE_BARCODE", "sampleID", "sample", "bcr_patient_barcode", "PATIENT_ID",
                 "patient")
_SUBTYPE_VALUES = ("Subtype_Selected", "Subtype_mRNA", "BRCA_Subtype_PAM50", "PAM50", "SUBTYPE", "subtype")


def read_subtypes(path: str | os.PathLike, *, column: str | None = None) -> pd.Series:
    """Molecular subtype per patient from a subtype table keyed by sample or patient barcode.

    The key column is the first of ``pan.samplesID, SAMPLE_BARCODE, sampleID, sample, bcr_patient_barcode,
    PATIENT_ID, patient``; the value column ``column`` or the first of ``Subtype_Selected, Subtype_mRNA,
    BRCA_Subtype_PAM50, PAM50, SUBTYPE, subtype``. Labels lose a cancer-type prefix (``BRCA.LumA`` -> ``LumA``).
    A patient with several samples takes its primary-tumour sample's label. Barcodes are stripped and
    upper-cased first.

    Returns
    -------
    Series, patient barcode -> subtype (name ``subtype``).
    """
    path = Path(path)
    df = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t", dtype=str, na_values=NA_CELLS,
                     keep_default_na=True)
    key = next((c for c in _SUBTYPE_KEYS if c in df.columns), None)
    value = column or next((c for c in _SUBTYPE_VALUES if c in df.columns), None)
    if key is None or value not in df.columns:
        raise InputError(f"Subtype table '{path}' needs a sample or patient column (one of {list(_SUBTYPE_KEYS)}) "
                         f"and a subtype column ({column or list(_SUBTYPE_VALUES)}); it has {list(df.columns)[:8]}.")
    df = df.dropna(subset=[key, value])
    df[key] = df[key].str.strip().str.upper()  # as read_clinical: barcodes a spreadsheet lower-cased still match
    df["patient"] = df[key].map(patient_barcode)
    df["_primary"] = [len(k.split("-")) > 3 and k.split("-")[3][:2] == "01" for k in df[key]]
    df = df.sort_values(["patient", "_primary"], ascending=[True, False]).drop_duplicates("patient")
    return _strip_type_prefix(df.set_index("patient")[value]).rename("subtype")


def _numeric(values: pd.Series, *, column: str, path: Path) -> pd.Series:
    """``values`` as numbers; text that is neither a number nor a missing-value code is refused, naming it."""
    out = pd.to_numeric(values, errors="coerce")
    bad = out.isna() & values.notna()
    if bad.any():
        raise InputError(f"Clinical table '{path}', column {column}: not a number in {int(bad.sum())} of "
                         f"{len(values)} rows (e.g. {sorted(map(str, values[bad].unique()))[:3]}). Write the numbers "
                         f"alone, or leave the cell empty (or one of {NA_CELLS[:2]}) when the value is not known.")
    return out


def _normalise_barcodes(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Patient barcodes stripped of spaces and upper-cased, as the slide and expression files write them."""
    raw = df["bcr_patient_barcode"]
    norm = raw.map(lambda b: b.strip().upper() if isinstance(b, str) else b)
    changed = raw.notna() & (raw != norm)
    if changed.any():
        log.info("Clinical table '%s': %d patient barcodes were lower-case or held spaces (e.g. %s); read "
                 "upper-case and stripped, as the slide and expression files write them", path.name,
                 int(changed.sum()), [str(b) for b in raw[changed].head(3)])
        df = df.assign(bcr_patient_barcode=norm)
    return df


def _drop_without_follow_up(df: pd.DataFrame, path: Path, *, source: str) -> pd.DataFrame:
    """Rows with a usable follow-up only: a barcode, an event and a time of at least 0 (the rest logged)."""
    cbio = source == "cBioPortal"
    time_col, event_col, unit = ("OS_MONTHS", "OS_STATUS", "months") if cbio else ("OS.time", "OS", "days")
    shown = df["OS.time"] / DAYS_PER_MONTH if cbio else df["OS.time"]
    no_id = df["bcr_patient_barcode"].isna()
    negative = ~no_id & (df["OS.time"] < 0)
    missing = ~no_id & (df["OS.time"].isna() | df["OS"].isna())

    def _patients(mask: pd.Series) -> str:
        n = int(mask.sum())
        return f"{n} patient{'s' if n != 1 else ''}"

    parts = []
    if negative.any():
        eg = ", ".join(f"{b} {v:g} {unit}" for b, v in zip(df.bcr_patient_barcode[negative][:3], shown[negative][:3]))
        parts.append(f"{_patients(negative)} with a negative {time_col} (e.g. {eg})")
    if missing.any():
        parts.append(f"{_patients(missing)} without {event_col} or {time_col} "
                     f"(e.g. {', '.join(df.bcr_patient_barcode[missing][:3])})")
    if no_id.any():
        parts.append(f"{int(no_id.sum())} rows without a patient barcode")
    if not parts:
        return df
    log.warning("Clinical table '%s': %s. These patients are left out of the survival analysis (Kaplan-Meier, "
                "log-rank, Cox); correct or fill in their survival values in the table to include them.",
                path, "; ".join(parts))
    return df[~(negative | missing | no_id)].copy()


def read_clinical(path: str | os.PathLike, *, subtypes: str | os.PathLike | None = None,
                  cancer_type: str | None = None) -> pd.DataFrame:
    """One row per patient with a usable follow-up, with survival, age, stage and subtype, from any clinical table.

    Values are checked where they are read, for every kind of table:

    * patient barcodes are stripped of spaces and upper-cased (a table saved from a spreadsheet may have
      ``tcga-a1-a0sb``), so they match the slide and expression barcodes; the change is logged (INFO);
    * ``OS`` must be 0/1 and ``OS.time`` (cBioPortal: ``OS_MONTHS``, ``AGE``) numbers or a missing-value code;
      other text is refused with the column and examples;
    * a patient whose time is negative (a data-entry error: no follow-up ends before the diagnosis) or
      missing, or whose event is missing, is **left out**, with one WARNING naming the count and example
      barcodes per cause. They are left out rather than refused: real TCGA-CDR and cBioPortal tables hold
      such rows, the table is the curated release the user cannot easily correct, and a single bad row
      should not stop the analysis of the other patients; entering Kaplan-Meier, log-rank and Cox silently
      would change their results (a negative time counts as an event before time 0). A time of 0 is kept.

    Parameters
    ----------
    path : ``<cohort>.clinical.tsv`` (project layout, its columns as they are), the TCGA-CDR xlsx or cBioPortal's
        ``data_clinical_patient.txt`` (``TCGAFiles.clinical``)
    subtypes : optional subtype table (``TCGAFiles.subtypes``, :func:`read_subtypes`); its labels replace any
        subtype column of the clinical table
    cancer_type : keep one ``type`` of a pan-cancer table (e.g. ``BRCA``)

    Returns
    -------
    DataFrame indexed by ``bcr_patient_barcode`` with ``OS`` (0/1), ``OS.time`` (days) and, for the xlsx and
    cBioPortal tables, ``ajcc_pathologic_tumor_stage`` mapped to ``Stage I``-``Stage IV`` (sub-levels dropped,
    ``Stage X`` and codes missing; the original in ``ajcc_pathologic_tumor_stage_raw``) and a ``subtype``
    column (missing when neither the table nor ``subtypes`` has one).
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"Clinical table '{path}' does not exist.")
    if path.suffix == ".xlsx":
        df = read_cdr(path, cancer_type=cancer_type)
        source = "TCGA-CDR"
    elif path.name.endswith(CBIOPORTAL_FILE):
        df = read_cbioportal_patients(path)
        source = "cBioPortal"
        if cancer_type is not None and "type" in df:
            df = df[df["type"] == cancer_type]
    else:
        df = read_table(path)
        source = "project"
        if cancer_type is not None and "type" in df:
            df = df[df["type"] == cancer_type]
    need = {"bcr_patient_barcode", "OS", "OS.time"}
    if not need <= set(df.columns):
        raise InputError(f"Clinical table '{path}' lacks columns {sorted(need - set(df.columns))} "
                         "(TCGA-CDR names: OS = event 0/1, OS.time = days).")
    df = _normalise_barcodes(df, path)
    df = df.assign(**{"OS.time": _numeric(df["OS.time"], column="OS.time", path=path)})
    bad = df["OS"].notna() & ~df["OS"].isin([0, 1])
    if bad.any():
        raise InputError(f"Clinical table '{path}': OS must be 0/1, got {sorted(df.loc[bad, 'OS'].unique())[:5]}.")
    dup = df["bcr_patient_barcode"].notna() & df["bcr_patient_barcode"].duplicated()
    if dup.any():
        raise InputError(f"Clinical table '{path}' has several rows for patients "
                         f"{df.bcr_patient_barcode[dup].tolist()[:3]} (barcodes compared upper-case, without "
                         "spaces); keep one per patient.")
    df = _drop_without_follow_up(df, path, source=source)
    if source != "project":
        if "ajcc_pathologic_tumor_stage" in df:
            df["ajcc_pathologic_tumor_stage_raw"] = df["ajcc_pathologic_tumor_stage"]
            df["ajcc_pathologic_tumor_stage"] = df["ajcc_pathologic_tumor_stage"].map(stage_group)
        df["OS"] = df["OS"].astype("float")
        if "subtype" not in df:
            df["subtype"] = pd.Series(pd.NA, index=df.index, dtype="string")
    df = df.set_index("bcr_patient_barcode")
    if subtypes is not None:
        st = read_subtypes(subtypes)
        if "subtype" in df and df["subtype"].notna().any():
            log.info("subtypes from '%s' replace the clinical table's subtype column", Path(subtypes).name)
        df["subtype"] = st.reindex(df.index)
        log.info("%d of %d patients have a subtype in '%s'", int(df.subtype.notna().sum()), len(df),
                 Path(subtypes).name)
    return df


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


def load_tumour_cohort(data_dir: str | os.PathLike, traits: Iterable[str], *,
                       clinical: str = "auto") -> TumourCohort:
    """Read a tumour cohort: trait expression by patient, clinical table, slides with the DX1 choice, truth.

    Parameters
    ----------
    data_dir : the cohort's folder (layout in this module's docstring)
    traits : rows of the expression matrix to read (all must exist)
    clinical : the survival table when the folder has both (:func:`locate_tcga_files`): ``auto`` (the
        TCGA-CDR), ``cdr`` or ``cbioportal``; the choice is in ``files.clinical_reason``

    Returns
    -------
    TumourCohort

    Raises
    ------
    ValueError
        when no patient has both a chosen slide and expression, or when no clinical barcode matches one of
        those patients (another cohort's table, or barcodes written another way): checked here, before any
        model is trained, with the count and examples of both sides. Patients with a slide and expression but
        no follow-up are kept for the tile models and named in a WARNING (they cannot enter the survival set).

    Examples
    --------
    >>> cohort = load_tumour_cohort("runs/tiny/tumour", ["MKI67", "miR-17-5p"])   # doctest: +SKIP
    >>> cohort.slides[cohort.slides.chosen].patient.is_unique                     # doctest: +SKIP
    True
    """
    files = locate_tcga_files(data_dir, clinical=clinical)
    expr = read_expression_matrix(files.expression, genes=traits)
    slides = list_tumour_slides(files.slides_dir)
    dx = choose_diagnostic_slides(slides.image_id)
    slides = slides.merge(dx[["image_id", "chosen"]], on="image_id")
    truth = None
    if files.truth_dir is not None:
        truth = read_table(files.truth_dir / "slides.tsv").set_index("image_id")
    values = expr.T.rename(index=patient_barcode)
    clin = read_clinical(files.clinical, subtypes=files.subtypes)
    _check_patients_match(files, values, slides, clin)
    return TumourCohort(files, values, clin, slides, truth)


def _check_patients_match(files: TCGAFiles, values: pd.DataFrame, slides: pd.DataFrame,
                          clinical: pd.DataFrame) -> None:
    """Refuse a cohort whose slides, expression and clinical table share no patient (see load_tumour_cohort)."""
    def eg(ids) -> list[str]:
        return [str(i) for i in sorted(ids)[:3]]

    expr = files.expression if isinstance(files.expression, tuple) else (files.expression,)
    expr_names = ", ".join(f"'{p.name}'" for p in expr)
    with_slide = set(slides.loc[slides["chosen"].astype(bool), "patient"])
    with_expr = set(values.index)
    both = with_slide & with_expr
    if not both:
        raise InputError(f"No patient of '{files.data_dir}' has both a diagnostic slide and expression: "
                         f"{len(with_slide)} patients with a DX slide in '{files.slides_dir}' (e.g. {eg(with_slide)}), "
                         f"{len(with_expr)} with expression in {expr_names} (e.g. {eg(with_expr)}). Download the "
                         "slides and the expression of the same patients (the same cancer type).")
    matched = both & set(clinical.index)
    if not matched:
        raise InputError(f"No patient barcode of the clinical table '{files.clinical}' matches the {len(both)} "
                         f"patients with a slide and expression: the clinical table has {len(clinical)} patients "
                         f"with follow-up (e.g. {eg(clinical.index)}), the slides and expression e.g. {eg(both)}. "
                         "The clinical table must list these patients by their TCGA patient barcode "
                         "(bcr_patient_barcode / PATIENT_ID, e.g. TCGA-A1-A0SB): is it another cohort's table, or "
                         "were its barcodes rewritten (e.g. by a spreadsheet)?")
    gap = both - matched
    if gap:
        log.warning("%d of %d patients with a slide and expression have no follow-up in '%s' (e.g. %s): they are "
                    "used for the tile models but cannot enter the survival analysis", len(gap), len(both),
                    files.clinical.name, eg(gap))
