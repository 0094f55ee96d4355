"""Format-faithful copies of the synthetic cohorts: the files exactly as users download the real ones.

The synthetic cohorts are written in the project's own layouts (:func:`~histo_utils.synthetic.cohort.make_cohort`,
:func:`~histo_utils.synthetic.tumour.make_tumour_cohort`). The writers here turn them into the layouts of the
real releases, with the awkward parts the real files have, so the readers can be tested on them against the
planted truth:

:func:`write_tcga_download` (from a synthetic tumour folder)
    ``slides/<gdc uuid>/<barcode>.<UUID>.svs`` with ``<gdc uuid>/logs/`` and a gdc-client manifest (or flat);
    one metastatic (``06``) slide; the PanCanAtlas mRNA table (``gene_id`` ``SYMBOL|ENTREZ``, ``?|id`` rows,
    one symbol on two rows, RSEM-like values ``2**v - 1``, ``NA`` cells, tumour and normal (``-11A-``)
    aliquots side by side, second aliquots and a repeated column for some patients); the miRNA CSV
    (``Genes,Correction,<aliquots>``); the TCGA-CDR xlsx (sheet ``TCGA-CDR``, an unnamed row-number column,
    ``[Not Available]``, ``[Discrepancy]``, ``Stage X``, stage sub-levels, other cancer types) or cBioPortal's
    ``data_clinical_patient.txt`` (four ``#`` lines, ``0:LIVING``/``1:DECEASED``, months); a subtype table
    keyed by sample barcode.
:func:`write_gtex_v8_download` (from a synthetic GTEx-like folder)
    every column of ``GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt`` (:data:`GTEX_V8_ATTRIBUTE_COLUMNS`)
    in the v8 order, pathology notes ``SMPTHNTS`` with commas, quotes and semicolons, empty cells, DNA rows
    (``WES``) without RNA metrics, six-part (brain-style) sample IDs, whole-blood and cultured-fibroblast
    RNA samples without slides, the read-count GCT beside the TPM GCT, the subject table in v8 coding; batches
    (``SMNABTCH``, ``SMGEBTCH``) shared by many samples of a tissue and some of one sample, blank ``SMATSSCR`` and
    ``DTHHRDY`` cells, and (opt-in) a tissue written as two of Badea's merged detailed tissues (heart).

Each writer also copies the cohort's ``truth/`` (slide paths and sample IDs updated) and adds what it planted
in the formats (``truth/download.json``, ``truth/aliquots.tsv``): which aliquot a correct reader keeps,
which stage cells were blanked, which IDs were renamed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..tcga import CBIOPORTAL_FILE, CDR_FILE, DAYS_PER_MONTH, MIRNA_FILE, MRNA_FILE
from ..errors import InputError, MissingInputError
from ..gtex import TISSUE_MERGES
from .cohort import FILE_NAMES

log = logging.getLogger(__name__)

__all__ = ["GTEX_V8_ATTRIBUTE_COLUMNS", "GTEX_V8_FILES", "GTEX_V8_MERGED", "MIN_SAMPLES_NINE_CONFOUNDERS",
           "write_tcga_download", "write_gtex_v8_download"]

#: the 63 columns of GTEx v8 ``SampleAttributesDS``, in the file's order
GTEX_V8_ATTRIBUTE_COLUMNS = (
    "SAMPID SMATSSCR SMCENTER SMPTHNTS SMRIN SMTS SMTSD SMUBRID SMTSISCH SMTSPAX SMNABTCH SMNABTCHT SMNABTCHD "
    "SMGEBTCH SMGEBTCHD SMGEBTCHT SMAFRZE SMGTC SME2MPRT SMCHMPRS SMNTRART SMNUMGPS SMMAPRT SMEXNCRT SM550NRM "
    "SMGNSDTC SMUNMPRT SM350NRM SMRDLGTH SMMNCPB SME1MMRT SMSFLGTH SMESTLBS SMMPPD SMNTERRT SMRRNANM SMRDTTL "
    "SMVQCFL SMMNCV SMTRSCPT SMMPPDPR SMCGLGTH SMGAPPCT SMUNPDRD SMNTRNRT SMMPUNRT SMEXPEFF SMMPPDUN SME2MMRT "
    "SME2ANTI SMALTALG SME2SNSE SMMFLGTH SME1ANTI SMSPLTRD SMBSMMRT SME1SNSE SME1PCTS SMRRNART SME1MPRT SMNUM5CD "
    "SMDPMPRT SME2PCTS"
).split()

#: file names of the GTEx v8 release
GTEX_V8_FILES = {
    "expression": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
    "reads": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_reads.gct.gz",
    "median_tpm": "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_median_tpm.gct.gz",
    "sample_attributes": "GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt",
    "subject_phenotypes": "GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt",
}

_CDR_COLUMNS = [
    "bcr_patient_barcode", "type", "age_at_initial_pathologic_diagnosis", "gender", "race",
    "ajcc_pathologic_tumor_stage", "clinical_stage", "histological_type", "histological_grade",
    "initial_pathologic_dx_year", "menopause_status", "birth_days_to", "vital_status", "tumor_status",
    "last_contact_days_to", "death_days_to", "cause_of_death", "new_tumor_event_type", "new_tumor_event_site",
    "new_tumor_event_site_other", "new_tumor_event_dx_days_to", "treatment_outcome_first_course", "margin_status",
    "residual_tumor", "OS", "OS.time", "DSS", "DSS.time", "DFI", "DFI.time", "PFI", "PFI.time", "Redaction",
]
_SUBLEVELS = {"Stage I": ["Stage I", "Stage IA", "Stage IB"], "Stage II": ["Stage II", "Stage IIA", "Stage IIB"],
              "Stage III": ["Stage III", "Stage IIIA", "Stage IIIB", "Stage IIIC"], "Stage IV": ["Stage IV"]}
_NA = "[Not Available]"


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy across file systems)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_truth(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=lambda a, b: _link(Path(a), Path(b)))


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(rng.choice(list("0123456789abcdef"), 32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _plate(rng: np.random.Generator) -> str:
    return "A" + "".join(rng.choice(list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"), 3))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_lines(path: Path, lines: list[str]) -> None:
    with io.atomic_open(path, "w", newline="") as fh:
        fh.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------
# TCGA
# --------------------------------------------------------------------------
def _aliquot_columns(patients: list[str], rng: np.random.Generator, *, centre: str, normal_fraction: float,
                     duplicate_fraction: float, n_repeats: int) -> pd.DataFrame:
    """Columns of one expression table: the primary aliquot of each patient plus normals, extras and repeats.

    ``role``: ``primary`` (what a correct reader keeps), ``second`` (a later vial or portion of the same
    tumour), ``normal`` (``11A``), ``repeat`` (the primary column once more).
    """
    rows = []
    for p in patients:
        plate = _plate(rng)
        rows.append({"barcode": f"{p}-01A-11R-{plate}-{centre}", "patient": p, "role": "primary"})
        if rng.random() < duplicate_fraction:
            extra = f"{p}-01B-11R-{_plate(rng)}-{centre}" if rng.random() < 0.5 else f"{p}-01A-21R-{plate}-{centre}"
            rows.append({"barcode": extra, "patient": p, "role": "second"})
        if rng.random() < normal_fraction:
            rows.append({"barcode": f"{p}-11A-01R-{_plate(rng)}-{centre}", "patient": p, "role": "normal"})
    cols = pd.DataFrame(rows)
    prim = cols[cols.role == "primary"]
    for i in rng.choice(len(prim), size=min(n_repeats, len(prim)), replace=False):
        cols = pd.concat([cols, prim.iloc[[i]].assign(role="repeat")], ignore_index=True)
    return cols.iloc[rng.permutation(len(cols))].reset_index(drop=True)


def _table_values(true_log: pd.DataFrame, cols: pd.DataFrame, rng: np.random.Generator, *,
                  na_fraction: float, trait_rows: list[str]) -> np.ndarray:
    """Raw (not logged) values rows x columns: 2**v - 1 for the primary aliquot, other numbers elsewhere.

    A repeated column copies its primary; second aliquots are shifted by +-1 log2 unit, normals by -2, so a
    reader that keeps the wrong column gets visibly wrong values. ``NA`` cells go into background rows of any
    column and into trait rows of dropped columns only (a trait must be known for every kept patient).
    """
    base = true_log[cols.patient.to_numpy()].to_numpy(float)
    role = cols.role.to_numpy()
    shift = np.select([role == "second", role == "normal"],
                      [rng.choice([-1.0, 1.0], len(cols)), np.full(len(cols), -2.0)], 0.0)
    v = np.clip(base + shift[None, :] + np.where(cols.role.isin(["second", "normal"]).to_numpy()[None, :],
                                                 rng.normal(0, 0.3, base.shape), 0.0), 0, None)
    raw = np.exp2(v) - 1
    na = rng.random(raw.shape) < na_fraction
    is_trait = true_log.index.isin(trait_rows)
    kept = cols.role.isin(["primary", "repeat"]).to_numpy()
    na[np.ix_(is_trait, kept)] = False
    na[:, (cols.role == "repeat").to_numpy()] = False
    raw[na] = np.nan
    rep = np.flatnonzero((cols.role == "repeat").to_numpy())
    for j in rep:  # a repeated column holds the same numbers as its first copy
        first = np.flatnonzero(((cols.barcode == cols.barcode[j]) & (cols.role == "primary")).to_numpy())[0]
        raw[:, j] = raw[:, first]
    return raw


def _fmt(x: float) -> str:
    return "NA" if np.isnan(x) else f"{x:.9g}"


def write_tcga_download(tumour_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 0,
                        slides_layout: str = "gdc", clinical: str = "cdr", subtype_table: bool = True,
                        normal_fraction: float = 0.25, duplicate_fraction: float = 0.15, n_repeats: int = 1,
                        na_fraction: float = 0.03, n_blank_stages: int = 3, n_other_cancer: int = 4
                        ) -> dict[str, Path]:
    """Write a synthetic tumour cohort as the GDC, the PanCanAtlas and TCGA-CDR/cBioPortal ship their files.

    Parameters
    ----------
    tumour_dir : a folder made by :func:`~histo_utils.synthetic.tumour.make_tumour_cohort`
    out_dir : the new folder (its previous content of the same names is replaced)
    seed : seed of the aliquot barcodes, UUIDs, extra columns, NA cells and blanked cells
    slides_layout : ``gdc`` (``slides/<uuid>/<file>`` + ``logs/`` + manifest) or ``flat``
    clinical : ``cdr`` (the TCGA-CDR xlsx), ``cbioportal`` (``data_clinical_patient.txt``) or ``both`` (the
        two files, same patients, as users often download them; ``clinical`` is then the xlsx and
        ``cbioportal`` the text file in the returned paths)
    subtype_table : write a subtype table keyed by sample barcode (``cdr``/``both``: cBioPortal's table has one)
    normal_fraction, duplicate_fraction : patients with a normal (``11A``) / a second tumour aliquot
    n_repeats : columns repeated verbatim in each expression table
    na_fraction : ``NA`` cells among background rows
    n_blank_stages : patients whose stage is ``[Not Available]``, ``Stage X`` or ``[Discrepancy]``
    n_other_cancer : rows of another cancer type in the pan-cancer clinical table

    Returns
    -------
    dict of the written paths (``data_dir, slides, mrna, mirna, clinical, subtypes, truth``; ``cbioportal``
    with ``both``).
    """
    if slides_layout not in ("gdc", "flat"):
        raise InputError(f"slides_layout must be 'gdc' or 'flat', got '{slides_layout}'.")
    if clinical not in ("cdr", "cbioportal", "both"):
        raise InputError(f"clinical must be 'cdr', 'cbioportal' or 'both', got '{clinical}'.")
    src = Path(tumour_dir)
    stamp = src / "truth" / "tumour.json"
    if not stamp.exists():
        raise MissingInputError(f"'{src}' is not a synthetic tumour folder (no truth/tumour.json). "
                                "Make one with histo_utils.synthetic.tumour.make_tumour_cohort.")
    meta = json.loads(stamp.read_text())
    traits = list(meta["params"]["traits"])
    cohort = meta["cohort"]
    expr = io.read_table(src / f"{cohort}.expression.tsv.gz").set_index("gene")
    clin = io.read_table(src / f"{cohort}.clinical.tsv")
    slides = io.read_table(src / "truth" / "slides.tsv")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 21]))
    expr.columns = [c[:12] for c in expr.columns]  # patient barcodes
    patients = list(expr.columns)

    # slides: GDC folders (file UUID, lower case) with logs, or flat; one metastatic slide; the manifest
    sdir = out / "slides"
    if sdir.exists():
        shutil.rmtree(sdir)
    rel_paths, manifest = {}, []
    items = [(r.image_id, r.file, r.file) for r in slides.itertuples()]
    first = slides[slides.dx == 1].iloc[0]  # a metastatic (06) slide of one patient: not primary tumour
    extra = [(first.image_id.replace("-01Z-", "-06Z-"), first.file.replace("-01Z-", "-06Z-"), first.file)]
    for image_id, file, source_file in items + extra:
        r = pd.Series({"image_id": image_id, "file": file})
        source = src / "slides" / source_file
        if slides_layout == "gdc":
            fid = _uuid(rng)
            rel = Path(fid) / r.file
            (sdir / fid / "logs").mkdir(parents=True, exist_ok=True)
            (sdir / fid / "logs" / f"{r.file}.parcel").write_text(
                f"{fid}\tdownload complete\tsegments 1\n")
            _link(source, sdir / rel)
            manifest.append(f"{fid}\t{r.file}\t{_md5(sdir / rel)}\t{(sdir / rel).stat().st_size}\treleased")
        else:
            rel = Path(r.file)
            _link(source, sdir / rel)
        rel_paths[r.image_id] = str(rel)
    if slides_layout == "gdc":
        _write_lines(sdir / "gdc_manifest.2024-01-15.txt", ["id\tfilename\tmd5\tsize\tstate", *manifest])

    # expression: mRNA rows SYMBOL|ENTREZ (plus ?|id rows and one symbol on two rows), miRNA rows hsa-...
    is_mir = [t.startswith(("miR-", "hsa-", "let-")) for t in expr.index]
    mir_log = expr[np.array(is_mir)].copy()
    mrna_log = expr[~np.array(is_mir)].copy()
    mir_log.index = [t if t.startswith("hsa-") else f"hsa-{t}" for t in mir_log.index]
    erng = np.random.default_rng(np.random.SeedSequence([seed, 22]))
    for i in range(3):  # background miRNAs, some uncorrected
        mir_log.loc[f"hsa-miR-{9000 + i}-3p"] = erng.normal(6, 1.5, len(patients)).clip(0)
    entrez = {g: str(10000 + 7 * i) for i, g in enumerate(mrna_log.index)}
    ids = [f"{g}|{entrez[g]}" for g in mrna_log.index]
    unknown = pd.DataFrame(erng.normal(3, 1, (2, len(patients))).clip(0), columns=patients)
    twin = mrna_log.iloc[[-1]] + erng.normal(0, 0.5, (1, len(patients)))  # the last symbol again, other Entrez id
    mrna_log = pd.concat([mrna_log, unknown, twin])
    ids += ["?|100130426", "?|100133144", f"{twin.index[0]}|{99000}"]
    mrna_log.index = ids
    trait_ids = [f"{t}|{entrez[t]}" for t in expr.index[~np.array(is_mir)] if t in traits]
    mir_traits = [t if t.startswith("hsa-") else f"hsa-{t}" for t, m in zip(expr.index, is_mir) if m and t in traits]

    cols_m = _aliquot_columns(patients, rng, centre="07", normal_fraction=normal_fraction,
                              duplicate_fraction=duplicate_fraction, n_repeats=n_repeats)
    cols_r = _aliquot_columns(patients, rng, centre="13", normal_fraction=normal_fraction,
                              duplicate_fraction=duplicate_fraction, n_repeats=n_repeats)
    raw_m = _table_values(mrna_log, cols_m, rng, na_fraction=na_fraction, trait_rows=trait_ids)
    raw_r = _table_values(mir_log, cols_r, rng, na_fraction=na_fraction, trait_rows=mir_traits)
    lines = ["\t".join(["gene_id", *cols_m.barcode])]
    lines += ["\t".join([g, *map(_fmt, row)]) for g, row in zip(mrna_log.index, raw_m)]
    _write_lines(out / MRNA_FILE, lines)
    corr = ["Corrected" if (i % 3 or g in mir_traits) else "Uncorrected" for i, g in enumerate(mir_log.index)]
    lines = [",".join(["Genes", "Correction", *cols_r.barcode])]
    lines += [",".join([g, c, *map(_fmt, row)]) for g, c, row in zip(mir_log.index, corr, raw_r)]
    _write_lines(out / MIRNA_FILE, lines)

    # clinical: stage sub-levels, blanked stages, other cancer types
    crng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    stage = np.array([crng.choice(_SUBLEVELS[s]) for s in clin.ajcc_pathologic_tumor_stage], dtype=object)
    blank = crng.choice(len(clin), size=min(n_blank_stages, len(clin)), replace=False)
    codes = ["[Not Available]", "Stage X", "[Discrepancy]"]
    for j, i in enumerate(blank):
        stage[i] = codes[j % len(codes)]
    dead = clin.OS.to_numpy() == 1
    days = clin["OS.time"].to_numpy()
    n = len(clin)
    cdr = pd.DataFrame({
        "bcr_patient_barcode": clin.bcr_patient_barcode, "type": clin["type"],
        "age_at_initial_pathologic_diagnosis": clin.age_at_initial_pathologic_diagnosis, "gender": clin.gender,
        "race": crng.choice(["WHITE", "BLACK OR AFRICAN AMERICAN", "ASIAN", _NA], n),
        "ajcc_pathologic_tumor_stage": stage, "clinical_stage": "[Not Applicable]",
        "histological_type": "Synthetic Ductal Carcinoma", "histological_grade": _NA,
        "initial_pathologic_dx_year": crng.integers(1995, 2013, n), "menopause_status": _NA,
        "birth_days_to": -(clin.age_at_initial_pathologic_diagnosis.to_numpy() * 365.25).round().astype(int),
        "vital_status": np.where(dead, "Dead", "Alive"), "tumor_status": np.where(dead, "WITH TUMOR", "TUMOR FREE"),
        "last_contact_days_to": np.where(dead, _NA, days.astype(object)),
        "death_days_to": np.where(dead, days.astype(object), "[Not Applicable]"),
        "cause_of_death": _NA, "new_tumor_event_type": "#N/A", "new_tumor_event_site": "#N/A",
        "new_tumor_event_site_other": "#N/A", "new_tumor_event_dx_days_to": "#N/A",
        "treatment_outcome_first_course": _NA, "margin_status": "#N/A", "residual_tumor": "#N/A",
        "OS": clin.OS, "OS.time": days, "DSS": clin.OS, "DSS.time": days, "DFI": np.nan, "DFI.time": np.nan,
        "PFI": clin.OS, "PFI.time": days, "Redaction": np.nan,
    })
    others = pd.DataFrame([{**{c: _NA for c in _CDR_COLUMNS}, "bcr_patient_barcode": f"TCGA-ZZ-{9000 + i}",
                            "type": "LUAD", "ajcc_pathologic_tumor_stage": "Stage IB", "OS": 0,
                            "OS.time": 400 + i, "Redaction": np.nan} for i in range(n_other_cancer)])
    cdr = pd.concat([cdr, others], ignore_index=True)[_CDR_COLUMNS]
    cdr.index = pd.RangeIndex(1, len(cdr) + 1)
    for old in (CDR_FILE, CBIOPORTAL_FILE, "TCGA_PanCanAtlas_subtypes.tsv"):
        (out / old).unlink(missing_ok=True)
    paths = {"data_dir": out, "slides": sdir, "mrna": out / MRNA_FILE, "mirna": out / MIRNA_FILE}
    if clinical in ("cdr", "both"):
        with io.atomic_path(out / CDR_FILE) as tmp:
            with pd.ExcelWriter(tmp, engine="openpyxl") as xl:
                cdr.to_excel(xl, sheet_name="TCGA-CDR", index=True)
        paths["clinical"] = out / CDR_FILE
    if clinical in ("cbioportal", "both"):
        cb = pd.DataFrame({
            "PATIENT_ID": cdr.bcr_patient_barcode, "SUBTYPE": np.where(
                cdr.type == "LUAD", "", "SYN_" + clin.subtype.reindex(range(len(cdr))).fillna("").astype(str)),
            "CANCER_TYPE_ACRONYM": cdr.type, "AGE": cdr.age_at_initial_pathologic_diagnosis.replace(_NA, ""),
            "SEX": cdr.gender.replace({"FEMALE": "Female", "MALE": "Male", _NA: ""}),
            "AJCC_PATHOLOGIC_TUMOR_STAGE": cdr.ajcc_pathologic_tumor_stage.str.upper().replace(
                {"[NOT AVAILABLE]": "", "[DISCREPANCY]": "[Discrepancy]"}),
            "OS_STATUS": np.where(cdr.OS.astype(int) == 1, "1:DECEASED", "0:LIVING"),
            "OS_MONTHS": [f"{float(d) / DAYS_PER_MONTH:.6f}" for d in cdr["OS.time"]],
        })
        cb.loc[cb.SUBTYPE == "SYN_", "SUBTYPE"] = ""
        heads = [["Patient Identifier", "Subtype", "TCGA PanCanAtlas Cancer Type Acronym",
                  "Diagnosis Age", "Sex", "Neoplasm Disease Stage American Joint Committee on Cancer Code",
                  "Overall Survival Status", "Overall Survival (Months)"],
                 ["Identifier to uniquely specify a patient.", "Subtype", "Text field to hold cancer type acronym.",
                  "Age at which a condition or disease was first diagnosed.", "Sex", "The extent of a cancer, "
                  "especially whether the disease has spread from the original site to other parts of the body.",
                  "Overall patient survival status.", "Overall survival in months since initial diagonosis."],
                 ["STRING", "STRING", "STRING", "NUMBER", "STRING", "STRING", "STRING", "NUMBER"],
                 ["1"] * 8]
        lines = ["#" + "\t".join(h) for h in heads] + ["\t".join(cb.columns)]
        lines += ["\t".join(map(str, r)) for r in cb.itertuples(index=False)]
        _write_lines(out / CBIOPORTAL_FILE, lines)
        paths["cbioportal" if clinical == "both" else "clinical"] = out / CBIOPORTAL_FILE
    if subtype_table and clinical in ("cdr", "both"):
        st = pd.DataFrame({"pan.samplesID": [f"{p}-01" for p in clin.bcr_patient_barcode], "cancer.type": "SYN",
                           "Subtype_mRNA": clin.subtype, "Subtype_Selected": "SYN." + clin.subtype})
        normals = cols_m[cols_m.role == "normal"].patient.head(2)
        st = pd.concat([pd.DataFrame({"pan.samplesID": [f"{p}-11" for p in normals], "cancer.type": "SYN",
                                      "Subtype_mRNA": "Normal", "Subtype_Selected": "SYN.Normal"}), st])
        io.write_table(st, out / "TCGA_PanCanAtlas_subtypes.tsv")
        paths["subtypes"] = out / "TCGA_PanCanAtlas_subtypes.tsv"

    # truth: the cohort's own, slide paths as laid out here, plus what the formats planted
    truth = out / "truth"
    _copy_truth(src / "truth", truth)
    ts = io.read_table(truth / "slides.tsv")
    ts["file"] = ts.image_id.map(rel_paths)
    io.write_table(ts, truth / "slides.tsv")
    io.write_table(pd.concat([cols_m.assign(table=MRNA_FILE), cols_r.assign(table=MIRNA_FILE)]),
                   truth / "aliquots.tsv")
    io.write_json({"cohort": cohort, "traits": traits, "mrna_traits": trait_ids, "mirna_traits": mir_traits,
                   "metastatic_slides": [e[0] for e in extra], "slides_layout": slides_layout,
                   "clinical": clinical, "blank_stages": {clin.bcr_patient_barcode[i]: stage[i] for i in blank},
                   "other_cancer_patients": others.bcr_patient_barcode.tolist(),
                   "days_per_month": DAYS_PER_MONTH}, truth / "download.json")
    paths["truth"] = truth
    return paths


# --------------------------------------------------------------------------
# GTEx v8
# --------------------------------------------------------------------------
_NOTES = [
    "2 pieces, ~15% fat; clean specimen",
    '"Mild" autolysis; 2 pieces, well trimmed',
    "6 pieces; 'minimal' fat, no abnormalities",
    'Nodular changes ("adenomatous"), 2 pieces, 1" x 0.5"',
    '"Clean" specimens; autolysis, mild',
    "1 piece; 10% mucosa, rep delineated",
]
_QC = [c for c in GTEX_V8_ATTRIBUTE_COLUMNS[17:]]

#: ``merged=GTEX_V8_MERGED``: the painted skeletal muscle written as GTEx's two heart tissues (``SMTS`` ``Heart``,
#: ``SMTSD`` ``Heart - Atrial Appendage`` / ``Heart - Left Ventricle``, donors alternately): one morphology under
#: two detailed labels, what Badea's ``badea_33`` merge exists for
GTEX_V8_MERGED = {"Muscle": "Heart"}
#: GTEx v8's coarse tissue (``SMTS``) of the members of each group of :data:`histo_utils.gtex.TISSUE_MERGES`
#: ``badea_33``, and the Uberon IDs (``SMUBRID``) of members (a member not listed keeps its source tissue's)
GTEX_V8_MERGED_SMTS = {"Artery": "Blood Vessel", "Colon": "Colon", "Esophagus - Muscularis / GE junction": "Esophagus",
                       "Heart": "Heart", "Skin": "Skin"}
GTEX_V8_UBERON = {"Artery - Aorta": "0001496", "Artery - Coronary": "0001621", "Artery - Tibial": "0007610",
                  "Colon - Sigmoid": "0001159", "Colon - Transverse": "0001157",
                  "Heart - Atrial Appendage": "0006631", "Heart - Left Ventricle": "0006566",
                  "Skin - Not Sun Exposed (Suprapubic)": "0036149", "Skin - Sun Exposed (Lower leg)": "0004264"}
#: Fewest samples per tissue, every one of the nine known (no blank), for which notebook 05's design of Jones' nine
#: confounders ``log_ischemic_time RIN centre age sex SMATSSCR DTHHRDY SMNABTCH SMGEBTCH`` keeps a residual degree
#: of freedom on a folder of :func:`write_gtex_v8_download` (default batch layout), counting design columns with
#: rare category levels (< ``min_level_size`` 5 samples) pooled into one level: intercept 1 + numeric terms
#: (log ischemic time, RIN, SMATSSCR) 3 + centre 3-1 + age brackets 6-1 + sex 2-1 + Hardy scale 0-4 5-1 + each batch
#: column 1 (one shared batch of >= 5 samples + the pooled singletons: 2 levels, in a tissue of fewer than 27
#: written samples) = 18 columns, so 19 samples. From 27 written samples on each batch column has a second shared
#: batch (+2 columns): still fewer columns than samples unless more than a fifth of them have a blank.
MIN_SAMPLES_NINE_CONFOUNDERS = 19


def _merge_tissues(attrs: pd.DataFrame, merged: dict) -> dict:
    """Relabel the samples of each source tissue (``SMTS``) as the members of a ``badea_33`` group, in place.

    Images (first three ID parts) of a source tissue, sorted (one per donor), take the group's detailed tissues
    in turn; a second RNA aliquot of an image keeps its image's. Returns ``{SMTS: {image_id: (SMTS, SMTSD,
    SMUBRID)}}`` of the relabelled images, for the truth table.
    """
    groups = TISSUE_MERGES["badea_33"]
    done = {}
    for source, group in merged.items():
        if group not in groups:
            raise InputError(f"merged: '{group}' is not a group of gtex.TISSUE_MERGES['badea_33'] ({sorted(groups)}).")
        rows = attrs.SMTS.eq(source).to_numpy()
        if not rows.any():
            raise InputError(f"merged: no sample of tissue '{source}' (SMTS) in the cohort (tissues: "
                             f"{sorted(attrs.SMTS.unique())}).")
        images = attrs.SAMPID[rows].map(lambda s: "-".join(s.split("-")[:3]))
        members = groups[group]
        label = {img: (GTEX_V8_MERGED_SMTS[group], members[i % len(members)])
                 for i, img in enumerate(sorted(images.unique()))}
        smtsd = images.map(lambda i: label[i][1])
        attrs.loc[rows, "SMTS"] = GTEX_V8_MERGED_SMTS[group]
        attrs.loc[rows, "SMTSD"] = smtsd.to_numpy()
        attrs.loc[rows, "SMUBRID"] = [GTEX_V8_UBERON.get(t, u) for t, u in zip(smtsd, attrs.SMUBRID[rows])]
        ubr = dict(zip(images, attrs.SMUBRID[rows]))
        done[source] = {img: (s, d, ubr[img]) for img, (s, d) in label.items()}
    return done


def _batch_layout(tissue: np.ndarray, rng: np.random.Generator, *, batch_size: int,
                  singleton_fraction: float) -> np.ndarray:
    """Batch number of each sample: within each tissue ``round(singleton_fraction * n)`` samples (at least one)
    alone, the others in ``max(1, rest // batch_size)`` shared batches of near-equal size (>= ``batch_size``
    each once ``rest >= batch_size``)."""
    out = np.full(len(tissue), -1, dtype=np.int64)
    nxt = 0
    for t in sorted(set(tissue)):
        idx = rng.permutation(np.flatnonzero(tissue == t))
        n_single = min(len(idx), max(1, int(singleton_fraction * len(idx) + 0.5)))
        out[idx[:n_single]] = np.arange(nxt, nxt + n_single)
        nxt += n_single
        rest = idx[n_single:]
        if len(rest):
            for part in np.array_split(rest, max(1, len(rest) // batch_size)):
                out[part] = nxt
                nxt += 1
    return out


def _batch_codes(n: int, rng: np.random.Generator, *, prefix: str, digits: int, used) -> list[str]:
    """``n`` distinct batch IDs ``<prefix><digits digits>`` not in ``used``."""
    used = set(used)
    codes = (f"{prefix}{v}" for v in rng.permutation(np.arange(10 ** (digits - 1), 10 ** digits)))
    out = []
    for c in codes:
        if c not in used:
            out.append(c)
            if len(out) == n:
                break
    return out


def _qc_values(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Plausible RNA-SeQC metrics (rates 0-1, counts, lengths), a few cells empty."""
    out = {}
    for c in _QC:
        if c in ("SMRDTTL", "SMMPPD", "SMMPPDUN", "SMMPPDPR", "SMUNPDRD", "SMTRSCPT", "SMSPLTRD", "SMESTLBS",
                 "SMCHMPRS", "SMGNSDTC", "SMNUMGPS", "SMNUM5CD", "SMALTALG", "SME1ANTI", "SME1SNSE", "SME2ANTI",
                 "SME2SNSE"):
            v = rng.integers(10_000, 90_000_000, n).astype(object)
        elif c in ("SMRDLGTH", "SMSFLGTH", "SMMFLGTH", "SMCGLGTH"):
            v = rng.choice([76, 101], n).astype(object)
        elif c == "SMGTC":
            v = np.full(n, "", dtype=object)
        else:
            v = np.round(rng.uniform(0, 1, n), 7).astype(object)
        v[rng.random(n) < 0.05] = ""
        out[c] = v
    return pd.DataFrame(out)


def _write_raw_tsv(df: pd.DataFrame, path: Path) -> None:
    """Tab-separated text with no quoting at all (as GTEx ships it); missing values as empty cells."""
    def cell(v) -> str:
        return "" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)

    lines = ["\t".join(df.columns)] + ["\t".join(cell(v) for v in row) for row in df.itertuples(index=False)]
    _write_lines(path, lines)


def write_gtex_v8_download(cohort_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 0,
                           n_six_part: int = 3, n_whole_blood: int = 3, n_cultured: int = 2, n_dna_rows: int = 3,
                           merged: dict | None = None, batch_size: int = 12, singleton_fraction: float = 0.1,
                           blank_fraction: float = 0.03) -> dict[str, Path]:
    """Write a synthetic GTEx-like cohort with the files, names and columns of the GTEx v8 release.

    Parameters
    ----------
    cohort_dir : a folder made by :func:`~histo_utils.synthetic.cohort.make_cohort`
    out_dir : the new folder
    seed : seed of the notes, QC metrics, renamed IDs, extra samples, batches and blanks
    n_six_part : RNA samples renamed to six-part, brain-style IDs (``GTEX-XXXXX-0126-R10a-SM-XXXXX``; the image
        is still the first three parts)
    n_whole_blood, n_cultured : RNA samples without a slide (``Whole Blood``; ``Cells - Cultured fibroblasts``)
    n_dna_rows : DNA rows (``SMAFRZE`` ``WES``, RNA metrics empty) in the attribute table
    merged : ``{source SMTS: group}`` (opt-in; default none): the samples of a cohort tissue written as the
        members of a group of Badea's merge (:data:`histo_utils.gtex.TISSUE_MERGES` ``badea_33``), named exactly
        as there, e.g. :data:`GTEX_V8_MERGED` ``{"Muscle": "Heart"}``: ``SMTS`` ``Heart``, ``SMTSD`` ``Heart -
        Atrial Appendage`` and ``Heart - Left Ventricle`` for alternate donors (images sorted by ID), ``SMUBRID``
        of :data:`GTEX_V8_UBERON`. Same slides painted, two detailed labels: a classifier cannot tell them apart
        and ``merge: badea_33`` scores them as one class. Sample and image IDs are unchanged (the site code of
        the third ID part stays the source tissue's; nothing reads it); the attribute table, the median-TPM
        columns and ``truth/samples.tsv`` carry the new labels. Off by default: it changes the tissue names
        and classes of every notebook.
    batch_size, singleton_fraction : the batches ``SMNABTCH`` (``BP-#####``) and ``SMGEBTCH`` (``LCSET-####``)
        of the RNA samples, drawn apart for each, within each detailed tissue: ``round(singleton_fraction * n)``
        samples (at least one) in a batch of their own, the others in ``max(1, rest // batch_size)`` shared
        batches of near-equal size (a tissue of 40: 4 singletons and 3 batches of 12); RNA-less and DNA rows keep
        batches of their own
    blank_fraction : blanks as real v8 has them: ``SMATSSCR`` (autolysis 0-3) empty for ``round(blank_fraction
        * n)`` samples of each tissue with slides, and ``DTHHRDY`` (Hardy scale 0-4) empty for more donors until
        ``round(blank_fraction * donors)`` are blank (the cohort's own blanks count); read back as missing (float
        NaN / ``Int64`` NA by :func:`histo_utils.gtex.read_sample_attributes` / ``read_subject_phenotypes``)

    The TPM file gets its read-count file beside it and GTEx's median TPM per detailed tissue
    (``*gene_median_tpm.gct.gz``, medians over every RNA sample of the tissue as written, 6 significant digits).

    Jones' nine confounders in notebook 05 need :data:`MIN_SAMPLES_NINE_CONFOUNDERS` (19) samples without a blank
    in every tissue the designs are built in (a merged tissue's detailed tissues get about half of its source's
    samples each). The writer only rewrites a cohort: choose ``samples_per_tissue`` of
    :class:`~histo_utils.synthetic.cohort.CohortParams` with room for the samples lost to blanks and to the
    cohort's planted file problems (slides without RNA, corrupt slides): 26 left at least 20 complete samples in
    every tissue for cohort seeds 0-11 (twice that for a merged source tissue when 05 groups by ``SMTSD``).

    Returns
    -------
    dict of the written paths (keys of :data:`GTEX_V8_FILES`, ``gene_sets``, ``slides``, ``truth``).
    """
    src = Path(cohort_dir)
    if not (src / "truth" / "cohort.json").exists():
        raise MissingInputError(f"'{src}' is not a synthetic GTEx-like folder (no truth/cohort.json). "
                                "Make one with histo_utils.synthetic.make_cohort.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    attrs = io.read_table(src / FILE_NAMES["sample_attributes"], dtype={"SMUBRID": str})
    subjects = io.read_table(src / FILE_NAMES["subject_phenotypes"])
    tpm = io.read_gct(src / FILE_NAMES["expression"])
    symbols = tpm.attrs.pop("description")
    tpm.attrs = {}
    truth_samples = io.read_table(src / "truth" / "samples.tsv", dtype={"SMUBRID": str, "duplicate_of": str})
    # Badea's merged tissues: a cohort tissue written as the detailed tissues of a badea_33 group (opt-in)
    relabelled = _merge_tissues(attrs, merged) if merged else {}

    # six-part IDs for a few RNA samples that have a slide (the image keeps the first three parts)
    cand = attrs[attrs.SAMPID.isin(tpm.columns)].SAMPID.tolist()
    rename = {}
    for s in rng.choice(cand, size=min(n_six_part, len(cand)), replace=False):
        parts = s.split("-")
        rename[s] = "-".join(parts[:3] + [f"R{rng.integers(1, 12)}{rng.choice(['a', 'b'])}"] + parts[3:])
    attrs["SAMPID"] = attrs.SAMPID.replace(rename)
    tpm = tpm.rename(columns=rename)

    # RNA samples without slides: whole blood and cultured fibroblasts of the same donors; DNA rows
    donors = subjects.SUBJID.tolist()
    extra, profiles = [], {}
    code = lambda: "".join(rng.choice(list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"), 5))  # noqa: E731
    for kind, n, site, smts, smtsd, uberon in (("blood", n_whole_blood, "0005", "Blood", "Whole Blood", "0013756"),
                                               ("cells", n_cultured, "0008", "Skin",
                                                "Cells - Cultured fibroblasts", "EFO_0002009")):
        for d in rng.choice(donors, size=min(n, len(donors)), replace=False):
            sid = f"{d}-{site}-SM-{code()}"
            extra.append({"SAMPID": sid, "SMTS": smts, "SMTSD": smtsd, "SMUBRID": uberon,
                          "SMCENTER": attrs.loc[attrs.SAMPID.str.startswith(d + "-"), "SMCENTER"].iloc[0],
                          "SMRIN": round(float(rng.uniform(6, 10)), 1), "SMTSISCH": int(rng.integers(-30, 60)),
                          "SMNABTCH": f"BP-{rng.integers(10000, 99999)}", "SMGEBTCH": f"LCSET-{rng.integers(1, 9)}",
                          "SMAFRZE": "RNASEQ", "SMATSSCR": np.nan})
            profiles[sid] = tpm.iloc[:, rng.integers(tpm.shape[1])].to_numpy() * rng.lognormal(0, 0.3, len(tpm))
    dna = [{"SAMPID": f"{d}-0003-SM-{code()}", "SMTS": "Blood", "SMTSD": "Whole Blood", "SMUBRID": "0013756",
            "SMCENTER": "B1", "SMTSISCH": int(rng.integers(100, 1500)), "SMNABTCH": f"BP-{rng.integers(10000, 99999)}",
            "SMGEBTCH": f"LCSET-{rng.integers(1000, 9999)}", "SMAFRZE": "WES", "SMRIN": np.nan, "SMATSSCR": np.nan}
           for d in rng.choice(donors, size=min(n_dna_rows, len(donors)), replace=False)]
    table = pd.concat([attrs, pd.DataFrame(extra), pd.DataFrame(dna)], ignore_index=True)
    n = len(table)
    # batches: within each detailed tissue a few shared by many RNA samples, some of one sample (own streams)
    brng = np.random.default_rng(np.random.SeedSequence([seed, 32]))
    in_batches = table.SMAFRZE.eq("RNASEQ").to_numpy()
    for col, prefix, digits in (("SMNABTCH", "BP-", 5), ("SMGEBTCH", "LCSET-", 4)):
        if in_batches.any():
            layout = _batch_layout(table.SMTSD.to_numpy()[in_batches], brng, batch_size=batch_size,
                                   singleton_fraction=singleton_fraction)
            codes = np.array(_batch_codes(int(layout.max()) + 1, brng, prefix=prefix, digits=digits,
                                          used=table.loc[~in_batches, col].dropna().astype(str)))
            table.loc[in_batches, col] = codes[layout]
    # blank autolysis scores: round(blank_fraction * n) samples of each tissue with slides
    krng = np.random.default_rng(np.random.SeedSequence([seed, 33]))
    table["SMATSSCR"] = table.SMATSSCR.astype(float)
    scored = np.flatnonzero((np.arange(n) < len(attrs)) & table.SMATSSCR.notna().to_numpy())
    blank_scores = []
    for t in sorted(table.SMTSD.iloc[scored].unique()):
        rows = scored[table.SMTSD.to_numpy()[scored] == t]
        pick = np.sort(krng.choice(rows, size=int(blank_fraction * len(rows) + 0.5), replace=False))
        blank_scores += table.SAMPID.iloc[pick].tolist()
        table.loc[table.index[pick], "SMATSSCR"] = np.nan
    rna = table.SMAFRZE.eq("RNASEQ").to_numpy()
    has_slide_tissue = ~table.SMTSD.isin(["Whole Blood", "Cells - Cultured fibroblasts"]).to_numpy()
    notes = np.array([_NOTES[i % len(_NOTES)] for i in rng.permutation(n)], dtype=object)
    notes[~has_slide_tissue | (rng.random(n) < 0.2)] = ""
    table["SMPTHNTS"] = notes
    table["SMTSPAX"] = np.where(has_slide_tissue, np.round(rng.uniform(300, 1400, n)).astype(int).astype(str), "")
    table["SMNABTCHT"] = np.where(table.SMAFRZE == "WES", "DNA isolation_Whole Blood_QIAGEN Puregene (Manual)",
                                  "RNA isolation_PAXgene Tissue miRNA")
    table["SMNABTCHD"] = [f"{m:02d}/{d:02d}/2013" for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n))]
    table["SMGEBTCHD"] = [f"{m:02d}/{d:02d}/2014" for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n))]
    table["SMGEBTCHT"] = np.where(table.SMAFRZE == "WES", "Standard Exome Sequencing v3 (ICE)", "TruSeq.v1")
    table["SMGEBTCH"] = table.SMGEBTCH.fillna("")
    qc = _qc_values(rng, n)
    qc.loc[~rna, :] = ""
    for c in _QC:
        table[c] = qc[c].to_numpy()
    for c in ("SMATSSCR", "SMTSISCH"):
        table[c] = table[c].astype("Int64")
    table = table[list(GTEX_V8_ATTRIBUTE_COLUMNS)]
    # GTEx writes raw tab-separated text: no quoting, notes as they are, empty cells empty
    _write_raw_tsv(table, out / GTEX_V8_FILES["sample_attributes"])
    sub = subjects[["SUBJID", "SEX", "AGE", "DTHHRDY"]].copy()
    sub["DTHHRDY"] = sub.DTHHRDY.astype("Int64")
    # blank Hardy scales: more donors until round(blank_fraction * donors) are blank (the cohort's own count)
    known = np.flatnonzero(sub.DTHHRDY.notna().to_numpy())
    n_more = min(len(known), max(0, int(blank_fraction * len(sub) + 0.5) - int(sub.DTHHRDY.isna().sum())))
    more = np.sort(krng.choice(known, size=n_more, replace=False))
    sub.loc[sub.index[more], "DTHHRDY"] = pd.NA
    _write_raw_tsv(sub, out / GTEX_V8_FILES["subject_phenotypes"])

    # TPM and read counts, the extra samples appended
    full = pd.concat([tpm, pd.DataFrame(profiles, index=tpm.index)], axis=1)
    io.write_gct(full, out / GTEX_V8_FILES["expression"], description=symbols)
    depth = rng.uniform(2e4, 8e4, full.shape[1])
    reads = pd.DataFrame(np.round(full.to_numpy() * depth[None, :] / 1e3 * rng.uniform(0.5, 2, (len(full), 1))),
                         index=full.index, columns=full.columns).astype(int)
    io.write_gct(reads, out / GTEX_V8_FILES["reads"], description=symbols, float_format="%d")
    # the median TPM per detailed tissue (SMTSD) over every RNA sample, as GTEx's *gene_median_tpm file
    tissue_of = table.drop_duplicates("SAMPID").set_index("SAMPID").SMTSD.reindex(full.columns)
    medians = full.T.groupby(tissue_of.to_numpy()).median().T
    io.write_gct(medians, out / GTEX_V8_FILES["median_tpm"], description=symbols, float_format="%.6g")
    gmt = src / FILE_NAMES["gene_sets"]
    _link(gmt, out / gmt.name)
    sdir = out / "slides"
    for p in sorted((src / "slides").glob("*.svs")):
        _link(p, sdir / p.name)

    truth = out / "truth"
    _copy_truth(src / "truth", truth)
    ts = truth_samples.copy()
    ts["SAMPID"] = ts.SAMPID.replace(rename)
    ts["duplicate_of"] = ts.duplicate_of.fillna("").replace(rename)
    for labels in relabelled.values():
        rows = ts.image_id.isin(labels).to_numpy()
        for j, c in enumerate(("SMTS", "SMTSD", "SMUBRID")):
            ts.loc[rows, c] = [labels[i][j] for i in ts.image_id[rows]]
    if "SMNABTCH" in ts:
        ts["SMNABTCH"] = ts.SAMPID.map(table.drop_duplicates("SAMPID").set_index("SAMPID").SMNABTCH).fillna(ts.SMNABTCH)
    io.write_table(ts, truth / "samples.tsv")
    io.write_json({"renamed_six_part": rename, "without_slide": [e["SAMPID"] for e in extra],
                   "dna_rows": [d["SAMPID"] for d in dna], "files": GTEX_V8_FILES,
                   "merged": {src_t: {"group": merged[src_t], "images": {i: lab[1] for i, lab in labels.items()}}
                              for src_t, labels in relabelled.items()},
                   "blank_SMATSSCR": blank_scores, "blank_DTHHRDY_added": sub.SUBJID.iloc[more].tolist(),
                   "batch_size": batch_size, "singleton_fraction": singleton_fraction}, truth / "download.json")
    return {**{k: out / v for k, v in GTEX_V8_FILES.items()}, "gene_sets": out / gmt.name, "slides": sdir,
            "truth": truth, "data_dir": out}
