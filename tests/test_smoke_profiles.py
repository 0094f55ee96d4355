"""The studies' own profiles, ``gtex.yaml`` and ``tcga.yaml``, run as they are with ``--smoke``, on folders in the
real downloads' layouts written **without** ``truth/`` (as every real download comes).

Only three things of the profile files are changed, the ones a user changes: the paths (``data_dir``,
``median_tpm``, the GMT, ``tumour_dir``) point at the test folders, and ``workers`` is this machine's two cores.
Every method key is the profile's: Badea's 13 networks at 224 px (Inception v3 at 299 px in 08), SGD, the
detailed tissues (``SMTSD``) with ``merge: badea_33``, the two-class Otsu, Jones' nine confounders, E_T 10,
five splits with a top-3 ensemble. ``--smoke`` scales only the size keys of :data:`histo_utils.run.SMOKE_SCALE`.

The GTEx folder holds two synthetic tissues, one written as Badea's merged Heart pair, with enough samples in a
tissue for the nine confounders (``formats.MIN_SAMPLES_NINE_CONFOUNDERS``).
"""
import json
import shutil

import numpy as np
import pytest
import yaml

from histo_utils import io, run
from histo_utils.synthetic import CohortParams, make_cohort
from histo_utils.synthetic.formats import (GTEX_V8_MERGED, MIN_SAMPLES_NINE_CONFOUNDERS, write_gtex_v8_download,
                                           write_tcga_download)

pytestmark = pytest.mark.slow

#: the keys a user sets to run a profile on their machine: paths and the number of local processes
USER_KEYS = {"data_dir", "median_tpm", "gmt_path", "gmt", "tumour_dir", "workers"}
#: method keys of the two profiles that a smoke run must leave as the profile has them
METHOD_KEYS = {"archs", "input_px", "train_tile_px", "feature_tile_px", "target_mpp",
               "threshold", "optimizer", "lr", "lr_step", "batch_size", "merge", "label_column", "r_threshold",
               "e_threshold", "confounders", "min_level_size", "mask_fill", "hidden", "arch", "tile_px", "n_splits",
               "ensemble_top", "ood_low", "ood_high", "ood_near", "denoise_sigma", "slide_aggregation",
               "split_fractions", "test_fraction", "val_fraction", "var_fractions", "top_genes", "top_features"}
BADEA_13 = ["vgg16", "alexnet", "vgg11", "vgg13", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
            "resnet34", "inception_v3", "vgg16_1fc", "vgg16_avg1fc"]
NINE = ["log_ischemic_time", "RIN", "centre", "age", "sex", "SMATSSCR", "DTHHRDY", "SMNABTCH", "SMGEBTCH"]


def point_profile_at(name: str, folder, tmp_path):
    """``params/<name>.yaml`` as it is, its paths pointed at ``folder`` and ``workers`` set to 2; returns the file."""
    prof = yaml.safe_load((run.PARAMS_DIR / f"{name}.yaml").read_text())
    gmt = next(folder.glob("*.gmt"), None)
    median = next(folder.glob("*median_tpm.gct.gz"), None)
    prof["common"]["workers"] = 2
    if "data_dir" in prof["common"]:
        prof["common"]["data_dir"] = str(folder)
    for sec in prof["notebooks"].values():
        for key, value in {"median_tpm": median, "gmt_path": gmt, "gmt": gmt, "tumour_dir": folder}.items():
            if key in sec:
                sec[key] = str(value)
    path = tmp_path / f"{name}_here.yaml"
    path.write_text(yaml.safe_dump(prof, sort_keys=False))
    return path


def _changed_keys(name: str, path) -> set:
    a = yaml.safe_load((run.PARAMS_DIR / f"{name}.yaml").read_text())
    b = yaml.safe_load(path.read_text())
    out = {k for k in a["common"] if a["common"][k] != b["common"][k]}
    for nb, sec in a["notebooks"].items():
        out |= {k for k in sec if sec[k] != b["notebooks"][nb][k]}
    return out


@pytest.fixture(scope="module")
def gtex_smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gtex_smoke")
    params = CohortParams(seed=5, tissues=("Thyroid", "Muscle"), samples_per_tissue=26, tissues_per_donor=2,
                          n_genes=400, module_size=15, tissue_genes=15, slide_width_um=1200.0,
                          slide_height_um=1200.0)
    make_cohort(tmp / "cohort", params, workers=2, progress=False)
    folder = write_gtex_v8_download(tmp / "cohort", tmp / "gtex", seed=3, merged=GTEX_V8_MERGED)  # Muscle -> Heart pair
    shutil.rmtree(folder["truth"])  # as downloaded: no planted truth
    path = point_profile_at("gtex", folder["data_dir"], tmp)
    prof = run.load_profile(path)
    out = tmp / "run"
    records = run.run_profile(prof, out, smoke=True)
    yield out, path, records, folder
    shutil.rmtree(tmp, ignore_errors=True)  # 13 networks' checkpoints at 224 px: about 20 GB


def test_gtex_smoke_runs_the_profile_as_it_is(gtex_smoke):
    out, path, records, folder = gtex_smoke
    assert not (folder["data_dir"] / "truth").exists()
    assert [r["notebook"][:2] for r in records] == ["01", "02", "03", "04", "05", "06", "07", "09"]
    assert {r["status"] for r in records} == {"ran"}
    assert _changed_keys("gtex", path) <= USER_KEYS
    smoke = json.loads((out / "smoke.json").read_text())
    scaled = {c["key"] for c in smoke["scaled"]}
    assert scaled and not scaled & METHOD_KEYS
    assert {(c["notebook"], c["key"]) for c in smoke["scaled"]} <= {
        (nb, k) for nb, keys in run.SMOKE_SCALE.items() for k in keys}
    stamp = json.loads((out / ".runner" / "02_training.json").read_text())
    assert stamp["parameters"]["archs"] == BADEA_13 and stamp["parameters"]["input_px"] == 224
    assert {c["key"] for c in stamp["smoke"]} >= {"epochs", "max_feature_tiles_per_slide"}


def test_gtex_smoke_trains_and_quantifies_badeas_13_networks(gtex_smoke):
    out = gtex_smoke[0]
    d = out / "02_training"
    hist = io.read_table(d / "history.tsv")
    assert set(hist.arch) == set(BADEA_13) and (hist.groupby("arch").epoch.max() >= 1).all()
    assert np.isfinite(hist.train_loss).all()
    prov = json.loads((d / "features_provenance.json").read_text())
    assert prov["input_px"] == 224 and prov["archs"] == BADEA_13
    nets = {(t["network"], t["tile_px"]) for t in prov["tables"].values()}
    assert nets >= {(n, px) for n in ["trained", "untrained", *[f"{a}-trained" for a in BADEA_13[1:]]]
                    for px in (256, 512, 1024)}
    # Badea's merge: the two heart tissues are scored apart and as one class
    acc = io.read_table(d / "accuracy.tsv")
    assert {"slide", "slide (merged)"} <= set(acc.level)
    assert "Heart" in set(acc[acc.level == "slide (merged)"]["class"])
    comparison = io.read_table(out / "03_feature_correlation" / "network_comparison.tsv")
    trained = comparison[comparison.weights == "trained"]
    assert set(trained.arch) == set(BADEA_13) and trained.groupby("tile_px").size().eq(13).all()


def test_gtex_smoke_fits_jones_nine_confounders(gtex_smoke):
    out = gtex_smoke[0]
    notes = io.read_table(out / "05_confounder_regression" / "designs.tsv").set_index("tissue")
    # Thyroid has the samples nine confounders need; each heart tissue (half of the muscle slides) has too few
    # and is skipped with its reason, not a crash
    assert notes.loc["Thyroid", "status"] == "fitted" and notes.loc["Thyroid", "resid_df"] >= 1
    assert notes.loc["Thyroid", "samples"] >= MIN_SAMPLES_NINE_CONFOUNDERS
    fitted_terms = set(json.loads(notes.loc["Thyroid", "terms"])) if notes.loc["Thyroid", "terms"].startswith(
        ("[", "{")) else set(notes.loc["Thyroid", "terms"].split(", "))
    left_out = str(notes.loc["Thyroid", "left_out_terms"])
    assert all(c in fitted_terms or c in left_out for c in NINE)
    assert {"log_ischemic_time", "RIN", "age", "DTHHRDY"} <= fitted_terms
    skipped = notes[notes.status == "skipped"]
    assert (skipped.note.str.contains("residual degrees of freedom")).all()
    levels = io.read_table(out / "05_confounder_regression" / "confounder_levels.tsv")
    assert set(NINE) <= set(levels.term)


def test_gtex_smoke_one_tissue_grouping_across_the_run(gtex_smoke):
    """``label_column: SMTSD`` reaches 04-07 and 09: their tissues are the detailed tissues of 01-03."""
    out = gtex_smoke[0]
    samples = io.read_table(out / "01_tiling" / "samples.tsv")
    detailed = set(samples.SMTSD)
    assert {"Heart - Atrial Appendage", "Heart - Left Ventricle"} <= detailed  # not the coarse "Heart"
    assert json.loads((out / "01_tiling" / "tissue_grouping.json").read_text())["label_column"] == "SMTSD"
    grid = io.read_table(out / "04_pca_cross_variance" / "shared_variance.tsv")
    assert set(grid.tissue) <= detailed and set(grid.tissue) & {"Heart - Atrial Appendage", "Heart - Left Ventricle"}
    assert set(io.read_table(out / "05_confounder_regression" / "designs.tsv").tissue) <= detailed
    counts = io.read_table(out / "06_gsea" / "association_counts.tsv")
    assert set(counts.scope) - {"pooled"} <= detailed and "Heart - Left Ventricle" in set(counts.scope)
    feats = io.read_table(out / "07_visualization" / "features.tsv")
    assert set(feats.tissue) <= detailed


def test_gtex_smoke_reads_without_planted_truth(gtex_smoke):
    out = gtex_smoke[0]
    assert not (out / "09_radiogenomic_network" / "masking_truth.tsv").exists()
    assert not (out / "06_gsea" / "planted_recovery.tsv").exists()
    import nbformat

    nb = nbformat.read(str(out / "notebooks" / "09_radiogenomic_network.ipynb"), as_version=4)
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "no planted truth" in text


@pytest.fixture(scope="module")
def tcga_smoke(tmp_path_factory):
    from histo_utils.synthetic.tumour import TumourParams, make_tumour_cohort

    tmp = tmp_path_factory.mktemp("tcga_smoke")
    make_tumour_cohort(tmp / "tumour", TumourParams(seed=1, n_patients=40, slide_width_um=800.0,
                                                    slide_height_um=800.0, mpp=0.5), workers=2)
    folder = write_tcga_download(tmp / "tumour", tmp / "tcga", seed=1, slides_layout="gdc", clinical="both")
    shutil.rmtree(folder["truth"])
    path = point_profile_at("tcga", folder["data_dir"], tmp)
    out = tmp / "run"
    records = run.run_profile(run.load_profile(path), out, smoke=True)
    yield out, path, records
    shutil.rmtree(tmp, ignore_errors=True)  # ten Inception v3 checkpoints


def test_tcga_smoke_runs_inception_at_299_with_five_splits_and_a_top3_ensemble(tcga_smoke):
    out, path, records = tcga_smoke
    assert [(r["notebook"], r["status"]) for r in records] == [("08_hti_survival", "ran")]
    assert _changed_keys("tcga", path) <= USER_KEYS
    stamp = json.loads((out / ".runner" / "08_hti_survival.json").read_text())
    p = stamp["parameters"]
    assert (p["arch"], p["input_px"], p["tile_px"], p["target_mpp"], p["n_splits"], p["ensemble_top"]) == (
        "inception_v3", 299, 512, 0.5, 5, 3)
    d = out / "08_hti_survival"
    assert len(json.loads((d / "splits.json").read_text())["splits"]) == 5
    hist = io.read_table(d / "history.tsv")
    assert hist.groupby("trait").split.nunique().eq(5).all()
    members = io.read_table(d / "ensemble_members.tsv")
    assert members.groupby("trait").size().eq(3).all()
    t1 = io.read_table(d / "table1.tsv")
    assert set(t1.trait) == {"MKI67", "miR-17-5p"}
    hti = io.read_table(d / "slide_hti.tsv")
    assert "true_hti" not in hti and hti.hti.between(0, 1).any()
    assert len(io.read_table(d / "logrank.tsv")) >= 1
    # the folder holds the TCGA-CDR and cBioPortal's table: the CDR is read, the choice kept with the run
    files = json.loads((d / "tumour_files.json").read_text())
    assert "TCGA-CDR" in str(files["clinical"]) and "data_clinical_patient" in str(files["clinical_ignored"])
