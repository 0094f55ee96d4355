"""TCGA as downloaded: GDC slide folders, PanCanAtlas tables, TCGA-CDR / cBioPortal survival, subtypes.

The synthetic tumour cohort is written in the real layouts (histo_utils.synthetic.formats) and the readers
must give back its planted truth: the same patients, DX1 slides, trait values (up to the log transform),
survival times and events, stages and subtypes.
"""
import json
import logging

import numpy as np
import pandas as pd
import pytest

from histo_utils import trait_models
from histo_utils import io, tcga
from histo_utils.synthetic.formats import write_tcga_download
from histo_utils.synthetic.tumour import TumourParams, make_tumour_cohort


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("tumour_src")
    p = TumourParams(seed=5, n_patients=30, slide_width_um=512.0, slide_height_um=384.0, n_background_genes=4,
                     second_slide_fraction=0.2)
    make_tumour_cohort(out, p, workers=1, progress=False)
    return out, p


@pytest.fixture(scope="module")
def gdc(synthetic, tmp_path_factory):
    src, p = synthetic
    out = tmp_path_factory.mktemp("tcga_gdc")
    write_tcga_download(src, out, seed=1, slides_layout="gdc", clinical="cdr", normal_fraction=0.3,
                        duplicate_fraction=0.3, n_repeats=1)
    return out


@pytest.fixture(scope="module")
def cbio(synthetic, tmp_path_factory):
    src, p = synthetic
    out = tmp_path_factory.mktemp("tcga_flat")
    write_tcga_download(src, out, seed=2, slides_layout="flat", clinical="cbioportal")
    return out


@pytest.fixture(scope="module")
def both(synthetic, tmp_path_factory):
    """The gdc folder's download (same seed and options) with cBioPortal's patient table beside the TCGA-CDR."""
    src, p = synthetic
    out = tmp_path_factory.mktemp("tcga_both")
    paths = write_tcga_download(src, out, seed=1, slides_layout="gdc", clinical="both", normal_fraction=0.3,
                                duplicate_fraction=0.3, n_repeats=1)
    assert paths["clinical"] == out / tcga.CDR_FILE and paths["cbioportal"] == out / tcga.CBIOPORTAL_FILE
    return out


def _truth(src):
    clin = io.read_table(src / "TCGA-SYN.clinical.tsv").set_index("bcr_patient_barcode")
    expr = io.read_table(src / "TCGA-SYN.expression.tsv.gz").set_index("gene")
    expr.columns = [c[:12] for c in expr.columns]
    return clin, expr


def test_choose_aliquots_rule():
    cols = ["TCGA-AA-0001-01B-11R-A001-07", "TCGA-AA-0001-11A-01R-A002-07", "TCGA-AA-0001-01A-21R-A003-07",
            "TCGA-AA-0001-01A-11R-A009-07", "TCGA-AA-0002-01A-11R-A004-07", "TCGA-AA-0002-01A-11R-A004-07",
            "TCGA-AA-0003-06A-11R-A005-07"]
    ch = tcga.choose_aliquots(cols)
    assert ch[ch.chosen].barcode.tolist() == ["TCGA-AA-0001-01A-11R-A009-07", "TCGA-AA-0002-01A-11R-A004-07"]
    assert ch[ch.chosen].position.tolist() == [3, 4]
    reasons = dict(zip(ch.position, ch.reason))
    assert reasons[0].startswith("another aliquot") and reasons[2].startswith("another aliquot")
    assert "sample type 11" in reasons[1] and "sample type 06" in reasons[6] and "repeated" in reasons[5]
    with pytest.raises(ValueError, match="not a TCGA aliquot or sample barcode"):
        tcga.choose_aliquots(["TCGA-AA-0001"])
    short = tcga.choose_aliquots(["TCGA-AA-0001-01B", "TCGA-AA-0001-01A", "TCGA-AA-0002-11", "TCGA-AA-0003-01"])
    assert short[short.chosen].barcode.tolist() == ["TCGA-AA-0001-01A", "TCGA-AA-0003-01"]


def test_stage_groups():
    assert [tcga.stage_group(s) for s in ["Stage IIA", "Stage I", "STAGE IIIC", "Stage IV", "Stage X",
                                          "[Not Available]", None, "Stage 0", "I/II NOS"]] == \
        ["Stage II", "Stage I", "Stage III", "Stage IV", None, None, None, None, None]


def test_locate_tells_the_layouts_apart(synthetic, gdc, tmp_path):
    src, _ = synthetic
    old = tcga.locate_tcga_files(src)
    assert old.layout == "project" and old.expression.name == "TCGA-SYN.expression.tsv.gz"
    new = tcga.locate_tcga_files(gdc)
    assert new.layout == "download" and [p.name for p in new.expression] == [tcga.MRNA_FILE, tcga.MIRNA_FILE]
    assert new.clinical.name == tcga.CDR_FILE and new.subtypes.name == "TCGA_PanCanAtlas_subtypes.tsv"
    assert new.truth_dir == gdc / "truth"
    # missing survival table: the error names the files to download
    bare = tmp_path / "bare"
    (bare / "slides").mkdir(parents=True)
    (bare / tcga.MRNA_FILE).write_text("gene_id\tTCGA-AA-0001-01A-11R-A001-07\nMKI67|4288\t1\n")
    with pytest.raises(FileNotFoundError, match="TCGA-CDR-SupplementalTableS1.xlsx"):
        tcga.locate_tcga_files(bare)
    (bare / "TCGA-X.expression.tsv.gz").write_text("")
    with pytest.raises(ValueError, match="Keep one kind"):
        tcga.locate_tcga_files(bare)


def test_gdc_slides_listed_primary_dx1(synthetic, gdc):
    src, p = synthetic
    truth = io.read_table(src / "truth" / "slides.tsv")
    meta = json.loads((gdc / "truth" / "download.json").read_text())
    files = tcga.locate_tcga_files(gdc)
    assert (files.slides_dir / "gdc_manifest.2024-01-15.txt").exists()
    assert any((files.slides_dir / d / "logs").is_dir() for d in [x.name for x in files.slides_dir.iterdir()])
    slides = tcga.list_tumour_slides(files.slides_dir)
    assert set(slides.image_id) == set(truth.image_id)  # the metastatic (06) slide and the logs are left out
    assert (slides.uuid.str.len() == 36).all() and slides.path.map(lambda x: x.endswith(".svs")).all()
    every = tcga.list_tumour_slides(files.slides_dir, sample_types=None)
    assert set(every.image_id) - set(slides.image_id) == set(meta["metastatic_slides"])
    assert set(every.loc[every.image_id.isin(meta["metastatic_slides"]), "sample_type"]) == {"06"}
    chosen = tcga.choose_diagnostic_slides(slides.image_id)
    assert sorted(chosen[chosen.chosen].image_id) == sorted(truth[truth.dx == 1].image_id)
    assert (truth.dx > 1).any()
    # the truth's slide paths follow the layout (notebook 08 reads thumbnails at slides_dir / file)
    ts = io.read_table(gdc / "truth" / "slides.tsv")
    assert all((files.slides_dir / f).exists() for f in ts.file)


def test_pancan_expression_recovers_the_traits(synthetic, gdc):
    src, p = synthetic
    _, expr = _truth(src)
    files = tcga.locate_tcga_files(gdc)
    got = tcga.read_expression_matrix(files.expression, genes=list(p.traits))
    assert list(got.index) == list(p.traits) and got.dtypes.eq(np.float32).all()
    assert set(got.columns) == set(expr.columns)
    want = expr.loc[list(p.traits), got.columns]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-4)  # log2(x + 1) undoes 2**v - 1
    # every kept column is the planted primary aliquot; normals, second aliquots and repeats are dropped
    planted = io.read_table(gdc / "truth" / "aliquots.tsv")
    al = got.attrs["aliquots"]
    for table, g in al.groupby("table"):
        pl = planted[planted.table == table]
        assert set(g[g.chosen].barcode) == set(pl[pl.role == "primary"].barcode)
        roles = pl[pl.role != "repeat"].set_index("barcode").role
        dropped = g[~g.chosen]
        repeats = dropped.reason.str.startswith("repeated")
        assert repeats.sum() == (pl.role == "repeat").sum() == 1
        assert set(dropped.barcode[~repeats].map(roles)) == {"normal", "second"}
        assert dropped.reason.str.len().gt(0).all()
    # names: symbol, full id, hsa- prefix; ambiguous and unknown names are refused with the fix
    mk = tcga.read_pancan_mrna(files.expression[0], genes=["MKI67"])
    full = [i for i in json.loads((gdc / "truth" / "download.json").read_text())["mrna_traits"] if i.startswith("MKI67|")]
    pd.testing.assert_frame_equal(mk, tcga.read_pancan_mrna(files.expression[0], genes=full).rename(index={full[0]: "MKI67"}),
                                  check_like=True)
    mi = tcga.read_pancan_mirna(files.expression[1], mirnas=["hsa-miR-17-5p"])
    np.testing.assert_allclose(mi.loc["hsa-miR-17-5p", got.columns], got.loc["miR-17-5p"], atol=1e-6)
    assert mi.attrs["correction"] == {"hsa-miR-17-5p": "Corrected"}
    with pytest.raises(KeyError, match="SYMBOL\\|ENTREZ"):
        tcga.read_expression_matrix(files.expression, genes=["NOPE"])
    with pytest.raises(ValueError, match="full id"):
        tcga.read_pancan_mrna(files.expression[0], genes=["SYNG0003"])
    assert tcga.read_pancan_mrna(files.expression[0], genes=["?|100130426"]).shape == (1, p.n_patients)
    with pytest.raises(ValueError, match="Name the traits"):
        tcga.read_expression_matrix(files.expression)


def test_malformed_tables_are_named(tmp_path):
    bad = tmp_path / tcga.MRNA_FILE
    bad.write_text("gene_id\tTCGA-AA-0001-01A-11R-A001-07\tTCGA-AA-0002-01A-11R-A001-07\nMKI67|4288\t1.5\tabc\n")
    with pytest.raises(ValueError, match="'abc' is not a number"):
        tcga.read_pancan_mrna(bad, genes=["MKI67"])
    bad.write_text("gene_id\tTCGA-AA-0001-01A-11R-A001-07\tTCGA-AA-0002-01A-11R-A001-07\nMKI67|4288\t1.5\n")
    with pytest.raises(ValueError, match="truncated"):
        tcga.read_pancan_mrna(bad, genes=["MKI67"])
    bad.write_text("gene_id\tTCGA-AA-0001-01A-11R-A001-07\tTCGA-AA-0002-11A-11R-A001-07\nMKI67|4288\t-3\tNA\n")
    got = tcga.read_pancan_mrna(bad, genes=["MKI67"])  # negative batch-corrected counts clip to 0
    assert got.shape == (1, 1) and got.iloc[0, 0] == 0.0


def test_cdr_survival_stages_subtypes(synthetic, gdc):
    src, p = synthetic
    clin, _ = _truth(src)
    meta = json.loads((gdc / "truth" / "download.json").read_text())
    files = tcga.locate_tcga_files(gdc)
    got = tcga.read_clinical(files.clinical, subtypes=files.subtypes)
    assert set(meta["other_cancer_patients"]) <= set(got.index)
    got = got.loc[clin.index]
    assert (got.OS == clin.OS).all() and (got["OS.time"] == clin["OS.time"]).all()
    assert (got.age_at_initial_pathologic_diagnosis == clin.age_at_initial_pathologic_diagnosis).all()
    blank = set(meta["blank_stages"])
    assert got.loc[sorted(blank), "ajcc_pathologic_tumor_stage"].isna().all()
    keep = clin.index.difference(sorted(blank))
    assert (got.loc[keep, "ajcc_pathologic_tumor_stage"] == clin.loc[keep, "ajcc_pathologic_tumor_stage"]).all()
    assert got.ajcc_pathologic_tumor_stage_raw.str.contains(r"Stage I+[ABC]").any()  # sub-levels were there
    assert (got.subtype == clin.subtype).all()  # the primary sample's label, not the normal's
    only = tcga.read_clinical(files.clinical, cancer_type="SYN")
    assert set(only.index) == set(clin.index) and only.subtype.isna().all()
    with pytest.raises(ValueError, match="No 'BRCA' rows"):
        tcga.read_clinical(files.clinical, cancer_type="BRCA")


def test_cbioportal_patients_and_flat_slides(synthetic, cbio):
    src, p = synthetic
    clin, _ = _truth(src)
    files = tcga.locate_tcga_files(cbio)
    assert files.clinical.name == tcga.CBIOPORTAL_FILE and files.subtypes is None
    assert files.clinical.read_text().splitlines()[4].startswith("PATIENT_ID\t")
    got = tcga.read_clinical(files.clinical, cancer_type="SYN").loc[clin.index]
    assert (got.OS == clin.OS).all()
    np.testing.assert_allclose(got["OS.time"], clin["OS.time"], atol=0.01)  # months back to days
    assert (got.subtype == clin.subtype).all()
    blank = set(json.loads((cbio / "truth" / "download.json").read_text())["blank_stages"])
    keep = clin.index.difference(sorted(blank))
    assert (got.loc[keep, "ajcc_pathologic_tumor_stage"] == clin.loc[keep, "ajcc_pathologic_tumor_stage"]).all()
    assert got.loc[sorted(blank), "ajcc_pathologic_tumor_stage"].isna().all()
    slides = tcga.list_tumour_slides(files.slides_dir)
    assert (slides.uuid == "").all() and set(slides.image_id) == set(io.read_table(src / "truth" / "slides.tsv").image_id)


def test_both_clinical_tables_read_the_cdr(synthetic, gdc, both, caplog):
    """A folder with the TCGA-CDR xlsx and cBioPortal's table (users download both): the TCGA-CDR is read, the
    choice is logged once and kept in TCGAFiles, and notebook 08 gets the CDR-only folder's clinical table."""
    src, p = synthetic
    with caplog.at_level(logging.INFO, logger="histo_utils.tcga"):
        files = tcga.locate_tcga_files(both)
    assert files.clinical == both / tcga.CDR_FILE
    assert files.clinical_ignored == (both / tcga.CBIOPORTAL_FILE,)
    assert "curated survival resource" in files.clinical_reason
    said = [r.getMessage() for r in caplog.records if r.name == "histo_utils.tcga" and r.levelno == logging.INFO
            and tcga.CBIOPORTAL_FILE in r.getMessage()]
    assert len(said) == 1, said
    assert tcga.CDR_FILE in said[0] and f"using {tcga.CDR_FILE}" in said[0] and "curated" in said[0]
    prov = files.provenance()
    assert prov["clinical"] == tcga.CDR_FILE and prov["clinical_ignored"] == [tcga.CBIOPORTAL_FILE]
    assert json.loads(json.dumps(prov)) == prov
    only = tcga.locate_tcga_files(gdc)
    assert only.clinical_ignored == () and only.provenance()["clinical_ignored"] == []
    want = tcga.read_clinical(only.clinical, subtypes=only.subtypes)
    pd.testing.assert_frame_equal(tcga.read_clinical(files.clinical, subtypes=files.subtypes), want)
    # the ignored table is a real cBioPortal table of the same patients
    assert set(tcga.read_clinical(files.clinical_ignored[0]).index) == set(want.index)
    # notebook 08's data step
    cohort = tcga.load_tumour_cohort(both, list(p.traits))
    pd.testing.assert_frame_equal(cohort.clinical, tcga.load_tumour_cohort(gdc, list(p.traits)).clinical)
    assert cohort.files.clinical_ignored == (both / tcga.CBIOPORTAL_FILE,)


def test_clinical_table_chosen_by_name(both, cbio, tmp_path, caplog):
    """clinical='cdr' / 'cbioportal' picks one of two tables; a missing or unknown choice is refused with the fix."""
    with caplog.at_level(logging.INFO, logger="histo_utils.tcga"):
        files = tcga.locate_tcga_files(both, clinical="cbioportal")
    assert files.clinical.name == tcga.CBIOPORTAL_FILE and [p.name for p in files.clinical_ignored] == [tcga.CDR_FILE]
    assert f"using {tcga.CBIOPORTAL_FILE}" in caplog.text and "clinical='cbioportal'" in files.clinical_reason
    assert tcga.locate_tcga_files(both, clinical="cdr").clinical.name == tcga.CDR_FILE
    assert tcga.locate_tcga_files(cbio, clinical="cbioportal").clinical.name == tcga.CBIOPORTAL_FILE
    with pytest.raises(FileNotFoundError, match=f"clinical='cdr'.*{tcga.CDR_FILE}.*clinical='auto'"):
        tcga.locate_tcga_files(cbio, clinical="cdr")
    with pytest.raises(ValueError, match="'auto'.*'cdr'.*'cbioportal'"):
        tcga.locate_tcga_files(both, clinical="xlsx")
    # a project clinical table beside a downloaded one is still refused (two layouts mixed), naming both
    mixed = tmp_path / "mixed"
    (mixed / "slides").mkdir(parents=True)
    for name in ("TCGA-X.expression.tsv.gz", "TCGA-X.clinical.tsv", tcga.CDR_FILE):
        (mixed / name).write_text("")
    with pytest.raises(ValueError, match="project clinical table and a downloaded one.*TCGA-X.clinical.tsv"):
        tcga.locate_tcga_files(mixed)


def test_project_layout_outputs_unchanged(synthetic):
    src, p = synthetic
    files = tcga.locate_tcga_files(src)
    expr = tcga.read_expression_matrix(files.expression, genes=list(p.traits))
    raw = io.read_table(src / "TCGA-SYN.expression.tsv.gz").set_index("gene").loc[list(p.traits)]
    pd.testing.assert_frame_equal(expr, raw.astype(float), check_names=False)
    clin = tcga.read_clinical(files.clinical)
    pd.testing.assert_frame_equal(clin, io.read_table(files.clinical).set_index("bcr_patient_barcode"))


@pytest.mark.parametrize("layout", ["project", "download"])
def test_notebook_08_inputs_from_either_layout(synthetic, gdc, layout):
    """tcga.load_tumour_cohort (notebook 08's data step) on either layout: same patients, same labels."""
    src, p = synthetic
    cohort = tcga.load_tumour_cohort(src if layout == "project" else gdc, list(p.traits))
    lab = trait_models.label_slides(cohort.values, cohort.slides)
    assert len(lab) == len(cohort.slides) and lab.patient.nunique() == p.n_patients
    assert cohort.slides.groupby("patient").chosen.sum().eq(1).all()
    assert cohort.clinical.loc[lab.patient.unique(), ["OS", "OS.time"]].notna().all().all()
    if layout == "download":
        ref = trait_models.label_slides(tcga.load_tumour_cohort(src, list(p.traits)).values,
                                        cohort.slides.assign(path=""))
        for t in p.traits:
            assert (lab.set_index("image_id")[f"{t}:label"] == ref.set_index("image_id")[f"{t}:label"]).all()
        assert cohort.clinical.subtype.notna().any()


def test_mrna_table_streamed_not_loaded(tmp_path):
    """Reading two genes of a 4,000 x 300 table holds two rows, not the matrix (9.6 MB as float64)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    cols = [f"TCGA-AA-{i:04d}-01A-11R-A001-07" for i in range(300)]
    path = tmp_path / tcga.MRNA_FILE
    vals = rng.uniform(0, 500, (4000, 300))
    with open(path, "w") as fh:
        fh.write("\t".join(["gene_id", *cols]) + "\n")
        for i, row in enumerate(vals):
            fh.write("\t".join([f"G{i}|{i}", *(f"{v:.4f}" for v in row)]) + "\n")
    tracemalloc.start()
    got = tcga.read_pancan_mrna(path, genes=["G17", "G3999"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2e6, f"peak {peak / 1e6:.1f} MB"
    np.testing.assert_allclose(got.to_numpy(), np.log2(vals[[17, 3999]].round(4) + 1), rtol=1e-6)


def test_patients_without_every_trait(tmp_path):
    """A patient missing from the miRNA table, or with an NA cell, is left out unless complete=False."""
    mrna = tmp_path / tcga.MRNA_FILE
    mrna.write_text("gene_id\tTCGA-AA-0001-01A-11R-A001-07\tTCGA-AA-0002-01A-11R-A001-07\tTCGA-AA-0003-01A-11R-A001-07\n"
                    "MKI67|4288\t3\t7\tNA\n")
    mirna = tmp_path / tcga.MIRNA_FILE
    mirna.write_text("Genes,Correction,TCGA-AA-0001-01A-11R-A002-13,TCGA-AA-0003-01A-11R-A002-13\n"
                     "hsa-miR-17-5p,Corrected,1,15\n")
    got = tcga.read_expression_matrix((mrna, mirna), genes=["MKI67", "miR-17-5p"])
    assert list(got.columns) == ["TCGA-AA-0001"] and got.loc[:, "TCGA-AA-0001"].tolist() == [2.0, 1.0]
    every = tcga.read_expression_matrix((mrna, mirna), genes=["MKI67", "miR-17-5p"], complete=False)
    assert sorted(every.columns) == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]
    assert every.isna().sum().to_dict() == {"TCGA-AA-0001": 0, "TCGA-AA-0002": 1, "TCGA-AA-0003": 1}
    assert set(every.attrs["aliquots"].table) == {tcga.MRNA_FILE, tcga.MIRNA_FILE}
