"""Bad input, third round (issue 28): clinical values read wrong without a word, and a script in the report.

* #2 negative or missing survival times (TCGA-CDR ``OS.time``, cBioPortal ``OS_MONTHS``): those patients are
  left out where the table is read, with a WARNING naming the count and barcodes;
* #10 lower-cased barcodes in the TCGA-CDR are read upper-case; a clinical table whose barcodes match no
  patient with a slide and expression is refused when the cohort is loaded, before any model is trained;
* #5 data values (tissue, set, trait, program names) in the readings reach the HTML report as text, never
  as live elements.
"""
from __future__ import annotations

import logging
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from histo_utils import hti, io, readings, report, tcga, text, truth
from histo_utils.synthetic.formats import write_tcga_download
from histo_utils.synthetic.tumour import TumourParams, make_tumour_cohort

TRAITS = ["MKI67", "miR-17-5p"]


# ------------------------------------------------------------------ a small tumour cohort as downloaded
@pytest.fixture(scope="module")
def tumour(tmp_path_factory):
    out = tmp_path_factory.mktemp("tumour_src")
    p = TumourParams(seed=3, n_patients=12, slide_width_um=384.0, slide_height_um=256.0, n_background_genes=2)
    make_tumour_cohort(out, p, workers=1, progress=False)
    return out


def _download(tumour: Path, out: Path, clinical: str) -> Path:
    write_tcga_download(tumour, out, seed=1, slides_layout="flat", clinical=clinical, subtype_table=False)
    return out


def _edit_cdr(folder: Path, edit) -> None:
    """Rewrite the TCGA-CDR sheet of ``folder`` after ``edit(DataFrame) -> DataFrame`` (cells kept as written)."""
    path = folder / tcga.CDR_FILE
    df = pd.read_excel(path, sheet_name="TCGA-CDR", index_col=0, dtype=object, keep_default_na=False)
    df = edit(df)
    with pd.ExcelWriter(path, engine="openpyxl") as xl:
        df.to_excel(xl, sheet_name="TCGA-CDR", index=True)


def _patients(folder: Path) -> list[str]:
    return sorted(tcga.list_tumour_slides(folder / "slides").patient.unique())


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ------------------------------------------------------------------ #2 negative or missing times
def test_negative_or_missing_survival_times_are_left_out_and_named(tumour, tmp_path, caplog):
    folder = _download(tumour, tmp_path / "cdr", "cdr")
    patients = _patients(folder)
    neg, gap = patients[:2], patients[2]

    def edit(df):
        df.loc[df.bcr_patient_barcode.isin(neg), "OS.time"] = -120
        df.loc[df.bcr_patient_barcode == gap, "OS.time"] = "[Not Available]"
        return df

    _edit_cdr(folder, edit)
    with caplog.at_level(logging.INFO, logger="histo_utils.tcga"):
        clin = tcga.read_clinical(folder / tcga.CDR_FILE)
    assert not set(neg + [gap]) & set(clin.index)  # not in Kaplan-Meier, log-rank or Cox
    assert (clin["OS.time"] >= 0).all() and clin[["OS", "OS.time"]].notna().all().all()
    said = _warnings(caplog)
    assert "2 patients with a negative OS.time" in said and all(b in said for b in neg) and "-120 days" in said
    assert f"1 patient without OS or OS.time (e.g. {gap})" in said and "left out of the survival analysis" in said
    # the cohort keeps them for the tile models and says they cannot enter the survival set
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="histo_utils.tcga"):
        cohort = tcga.load_tumour_cohort(folder, TRAITS)
    assert set(neg + [gap]) <= set(cohort.values.index) and not set(neg + [gap]) & set(cohort.clinical.index)
    assert f"3 of {len(patients)} patients with a slide and expression have no follow-up" in _warnings(caplog)


def test_negative_cbioportal_months_are_left_out_and_text_is_refused(tumour, tmp_path, caplog):
    folder = _download(tumour, tmp_path / "cbio", "cbioportal")
    path = folder / tcga.CBIOPORTAL_FILE
    lines = path.read_text().splitlines()
    head = lines[4].split("\t")
    months, pid = head.index("OS_MONTHS"), head.index("PATIENT_ID")
    first = lines[5].split("\t")
    first[months] = "-3.5"
    path.write_text("\n".join(lines[:5] + ["\t".join(first)] + lines[6:]) + "\n")
    with caplog.at_level(logging.INFO, logger="histo_utils.tcga"):
        clin = tcga.read_clinical(path)
    assert first[pid] not in clin.index and len(clin) == len(lines) - 6
    said = _warnings(caplog)
    assert f"1 patient with a negative OS_MONTHS (e.g. {first[pid]} -3.5 months)" in said
    first[months] = "12 months"
    path.write_text("\n".join(lines[:5] + ["\t".join(first)] + lines[6:]) + "\n")
    want = rf"column OS_MONTHS: not a number in 1 of {len(lines) - 5} rows \(e.g. \['12 months'\]\)"
    with pytest.raises(ValueError, match=want):
        tcga.read_clinical(path)


# ------------------------------------------------------------------ #10 barcodes
def test_lower_cased_cdr_barcodes_match_the_slides(tumour, tmp_path, caplog):
    folder = _download(tumour, tmp_path / "lower", "cdr")
    _edit_cdr(folder, lambda df: df.assign(bcr_patient_barcode=" " + df.bcr_patient_barcode.str.lower() + " "))
    with caplog.at_level(logging.INFO, logger="histo_utils.tcga"):
        cohort = tcga.load_tumour_cohort(folder, TRAITS)
    patients = _patients(folder)
    assert set(patients) <= set(cohort.clinical.index)  # every slide patient has its follow-up
    assert cohort.clinical.index.str.fullmatch(r"TCGA-[0-9A-Z]{2}-[0-9A-Z]{4}").all()
    assert "read upper-case and stripped" in caplog.text and not _warnings(caplog)


def test_clinical_table_matching_no_patient_is_refused_at_load_time(tumour, tmp_path):
    folder = _download(tumour, tmp_path / "other", "cdr")
    _edit_cdr(folder, lambda df: df.assign(bcr_patient_barcode=[f"TCGA-QQ-{i:04d}" for i in range(len(df))]))
    patients = _patients(folder)
    with pytest.raises(ValueError) as err:
        tcga.load_tumour_cohort(folder, TRAITS)
    msg = str(err.value)
    assert msg.startswith(f"No patient barcode of the clinical table '{folder / tcga.CDR_FILE}' matches the "
                          f"{len(patients)} patients with a slide and expression")
    assert "TCGA-QQ-0000" in msg and patients[0] in msg  # examples of both sides
    assert "another cohort's table, or were its barcodes rewritten" in msg


# ------------------------------------------------------------------ #5 data values in the HTML report
ATTACKS = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>", "[click](javascript:alert(3))"]


class _Live(HTMLParser):
    """Elements and attributes of a page that could run something a data value planted."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src") == "x":
            self.found.append(f"<img src={a['src']}>")
        self.found += [f"<{tag} {k}=...>" for k in a if k.lower().startswith("on")]
        if "javascript:" in (a.get("href") or "").lower():
            self.found.append(f"<{tag} href={a['href']}>")
        self._script = tag == "script"

    def handle_endtag(self, tag):
        self._script = False

    def handle_data(self, data):
        if self._script and "alert(" in data:
            self.found.append(f"<script>{data}</script>")


def _confounder_tables(out: Path) -> None:
    rows = []
    for i, tissue in enumerate(["Liver", ATTACKS[0]]):
        for table in ("expression", "image features"):
            for term, v in {"(all)": 0.4, ATTACKS[1]: 0.1 + i / 10, "centre": 0.3, "RIN": 0.02, "age": 0.0}.items():
                rows.append({"tissue": tissue, "table": table, "term": term, "fraction_of_variance": v + 0.1,
                             "fraction_adjusted": v})
    d = out / "05_confounder_regression"
    d.mkdir(parents=True)
    io.write_table(pd.DataFrame(rows), d / "variance_explained_overall.tsv")


def _radiogenomic_tables(out: Path) -> None:
    d = out / "09_radiogenomic_network"
    d.mkdir(parents=True)
    trait = f"{ATTACKS[0]}_feature"
    io.write_table(pd.DataFrame([{"trait": trait, "model": m, "fold": 0, "auc": a}
                                 for m, a in (("nn", 0.8), (ATTACKS[1], 0.7))]), d / "fold_auc.tsv")
    io.write_table(pd.DataFrame({"trait": [trait], "model": [ATTACKS[1]], "mean": [0.1], "low": [0.05],
                                 "high": [0.2]}), d / "bootstrap_summary.tsv")
    io.write_table(pd.DataFrame({"trait": [trait] * 2, "gene_set": [ATTACKS[2], ATTACKS[0]], "auc": [0.8, 0.6],
                                 "rank": [1, 2]}), d / "gene_masking.tsv")


def _hti_reading() -> str:
    t = ATTACKS[0]
    tab1 = pd.DataFrame({"trait": [t], "test_runs_mean": [0.9], "test_runs_min": [0.8], "test_runs_max": [0.95],
                         "test_ensemble": [0.9], "OOD-near_ensemble": [0.7], "OOD-all_ensemble": [0.8]})
    evaluation = pd.DataFrame({"trait": [t], "set": ["test"], "model": ["ensemble"], "n_slides": [10], "n_high": [5]})
    logrank = pd.DataFrame({"comparison": [ATTACKS[1]], "p": [0.04], "n_high": [5], "n_low": [5]})
    cox = pd.DataFrame({"covariate": ["HTI"], "fit": [ATTACKS[2]], "coef": [1.0], "coef lower 95%": [0.2],
                        "coef upper 95%": [1.8]})
    surv = pd.DataFrame({"OS": [1, 0, 1], "hti0": [0.1, 0.5, 0.9], "subtype": [ATTACKS[1], "A", ATTACKS[1]]})
    tile_acc = pd.DataFrame({"trait": [t], "set": ["test + OOD slides"], "tile_auc": [0.9], "tile_accuracy": [0.8],
                             "tile_accuracy_denoised": [0.85], "n_tiles": [100]})
    return hti.reading(tab1, evaluation, logrank, pd.DataFrame({"trait": [t], "p": [0.5]}), cox, surv,
                       tile_acc=tile_acc)


def _truth_readings() -> str:
    loc = {"structure": [ATTACKS[1]], "score": [ATTACKS[0]], "fires": ["on"], "r": [-0.5]}
    per_program = pd.DataFrame({"program": [ATTACKS[2]], "tracker": [ATTACKS[1]], "tracker_auroc": [0.9],
                                "n_tiles": [10], "rank_among_random": [1], "n_random": [5], "random_median": [0.5],
                                "random_max": [0.6], "gbp_rank": [2], **loc})
    per_tissue = pd.DataFrame({"program": [ATTACKS[2]], "tissue": [ATTACKS[0]], "tracker_auroc": [0.9],
                               "rank_among_random": [1], "n_random": [5], "gbp_tracker_auroc": [0.4],
                               "gbp_random_median": [0.5], "mean_mask_fraction": [0.3], **loc})
    gsea = pd.DataFrame({"ranking": [ATTACKS[0]] * 2, "expected": [ATTACKS[2]] * 2, "kind": ["planted", "decoy"],
                         "term": [ATTACKS[2], ATTACKS[1]], "rank": [2, 1], "nes": [1.5, 2.0], "fdr": [0.01, 0.02],
                         "n_sets": [2, 2], "decoys_above": [1, 1]})
    return truth.localisation_reading(per_program, per_tissue) + "\n" + truth.gsea_truth_reading(gsea)


def _executed_notebook(out: Path, stem: str, markdown: str) -> None:
    """``<out>/notebooks/<stem>.ipynb`` as the runner leaves it: a Reading cell that displayed ``markdown``."""
    cell = new_code_cell("Markdown(reading)", execution_count=1, outputs=[new_output(
        "execute_result", execution_count=1,
        data={"text/markdown": markdown, "text/plain": "<IPython.core.display.Markdown object>"})])
    nb = new_notebook(cells=[new_markdown_cell(f"# {stem}"), new_markdown_cell("## Reading"), cell],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out / "notebooks" / f"{stem}.ipynb"))


def test_md_text_escapes_html_and_markdown():
    assert text.md_text(ATTACKS[0]) == "&lt;img src=x onerror=alert(1)&gt;"
    assert text.md_text(ATTACKS[2]) == r"\[click\](javascript:alert(3))"
    assert text.md_text("a*b* `c` $x$ | ~~d~~") == r"a\*b\* \`c\` \$x\$ \| \~\~d\~\~"
    assert text.md_text("# one\ntwo") == r"\# one two" and text.md_text("10. x") == r"10\. x"
    assert text.md_text("PLANTED_PROGRAM_A") == "PLANTED_PROGRAM_A"  # intraword: never emphasis
    assert text.md_text("_x_") == r"\_x\_" and text.md_text("Skin - Sun Exposed (Lower leg)") == (
        "Skin - Sun Exposed (Lower leg)")


def test_data_values_reach_the_html_report_as_text(tmp_path):
    out = tmp_path / "run"
    _confounder_tables(out)
    _radiogenomic_tables(out)
    pages = {"05_confounder_regression": readings.confounder_reading(out, planted=False),
             "09_radiogenomic_network": readings.radiogenomic_reading(out),
             "08_hti_survival": _hti_reading(), "07_visualization": _truth_readings()}
    for stem, md in pages.items():
        _executed_notebook(out, stem, md)
    report.write_report(out, mathjax_url=None)
    for stem in pages:
        page = (out / "report" / "notebooks" / f"{stem}.html").read_text(encoding="utf-8")
        live = _Live()
        live.feed(page)
        assert not live.found, f"{stem}: live elements from data values: {live.found}"
        assert "&lt;img src=x onerror=alert(1)&gt;" in page, f"{stem}: the tissue/trait name is not shown as text"
    tissue_page = (out / "report" / "notebooks" / "05_confounder_regression.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in tissue_page
    assert "[click](javascript:alert(3))" in (out / "report" / "notebooks" / "09_radiogenomic_network.html"
                                              ).read_text(encoding="utf-8")
