"""The gtex and tcga profiles end to end, through the runner, on files in the real downloads' layouts.

The tiny profile's synthetic cohorts (the session's ``tiny_profile_run``) are written as GTEx v8 and as
GDC / PanCanAtlas / TCGA-CDR ship their files (``histo_utils.synthetic.formats``); notebooks 01-07 and 09
run on the GTEx folder with the ``gtex`` profile's study keys (detailed tissues ``SMTSD``, Badea's merge,
the median-TPM floor, Jones' confounders, 09's pre-training from the join) and notebook 08 on the TCGA
folder with the ``tcga`` profile's (``make_synthetic: false``, its traits, the paper's HTI),
every size and speed setting from the tiny profile. The planted truth must come out as on the tiny run.
"""
import json

import numpy as np
import pytest
import yaml

from histo_utils import io, run
from histo_utils.synthetic.formats import GTEX_V8_FILES, write_gtex_v8_download, write_tcga_download

pytestmark = pytest.mark.slow

#: keys taken from the real profile (the study and the file formats); every other key is the tiny profile's.
#: Not ``confounders``: Jones' nine factors need more samples per tissue than the tiny cohort's four (05 refuses
#: a design without residual degrees of freedom); test_open_confounders fits them on a larger table.
STUDY_KEYS = {"label_column", "merge", "slide_aggregation", "split_fractions", "median_tpm",
              "min_level_size", "trait_features", "n_traits", "pretrain_source", "make_synthetic", "traits",
              "hti_split", "hti_extremes"}
#: sizes below the tiny profile's, to keep the test short (08 trains n_splits models per trait: 2, not 5)
SMALLER = {"08_hti_survival": {"n_splits": 2, "ensemble_top": 2, "n_boot": 10}}


def _profile(real_name: str, notebooks: list[str], tmp_path, paths: dict) -> run.Profile:
    """The real profile's study keys with the tiny profile's sizes, its paths pointed at the test folders."""
    real = yaml.safe_load((run.PARAMS_DIR / f"{real_name}.yaml").read_text())
    tiny = yaml.safe_load((run.PARAMS_DIR / "tiny.yaml").read_text())
    common = {k: v for k, v in real["common"].items() if k in STUDY_KEYS}
    common.update({k: v for k, v in tiny["common"].items() if k != "data_dir"})
    nbs = {}
    for nb in notebooks:
        sec = {k: v for k, v in (real["notebooks"].get(nb) or {}).items() if k in STUDY_KEYS}
        sec.update({k: v for k, v in (tiny["notebooks"].get(nb) or {}).items() if k not in STUDY_KEYS})
        sec.update(SMALLER.get(nb, {}))
        sec.update({k: v for k, v in paths.items() if k in sec or k in ("median_tpm", "tumour_dir")
                    and nb.startswith(("03", "08"))})
        nbs[nb] = sec
    if "data_dir" in paths:
        common["data_dir"] = paths["data_dir"]
    p = tmp_path / f"{real_name}_test.yaml"
    p.write_text(yaml.safe_dump({"description": f"{real_name} keys, tiny sizes (test)", "common": common,
                                 "notebooks": nbs}))
    return run.load_profile(p)


@pytest.fixture(scope="module")
def gtex_run(tiny_profile_run, tmp_path_factory):
    tiny_out, _, _ = tiny_profile_run
    tmp = tmp_path_factory.mktemp("gtex_profile")
    folder = write_gtex_v8_download(tiny_out / "data", tmp / "gtex", seed=3, n_whole_blood=3, n_cultured=2)
    nbs = ["01_tiling", "02_training", "03_feature_correlation", "04_pca_cross_variance",
           "05_confounder_regression", "06_gsea", "07_visualization", "09_radiogenomic_network"]
    prof = _profile("gtex", nbs, tmp, {"data_dir": str(folder["data_dir"]),
                                       "median_tpm": str(folder["median_tpm"])})
    out = tmp / "run"
    records = run.run_profile(prof, out, only=[n[:2] for n in nbs])
    return out, prof, records, tiny_out, folder


def test_gtex_profile_runs_on_the_v8_layout(gtex_run):
    out, prof, records, tiny_out, folder = gtex_run
    assert [r["status"] for r in records] == ["ran"] * 8
    assert prof.common["label_column"] == "SMTSD" and prof.notebooks["02_training"]["merge"] == "badea_33"
    # 01: whole blood and cultured fibroblasts have no slide: left out with a table row each
    left = io.read_table(out / "01_tiling" / "tissues_without_slides.tsv")
    assert set(left.tissue) == {"Whole Blood", "Cells - Cultured fibroblasts"}
    samples = io.read_table(out / "01_tiling" / "samples.tsv")
    tiny_samples = io.read_table(tiny_out / "01_tiling" / "samples.tsv")
    assert set(samples.image_id) == set(tiny_samples.image_id)  # the same slides paired (six-part IDs too)
    assert samples.groupby("SMTSD").SMTS.nunique().max() == 1
    # 02: detailed tissues are the classes; the merged accuracy is reported beside the per-tissue one
    prov = json.loads((out / "02_training" / "features_provenance.json").read_text())
    assert prov["classes"] == sorted(samples.SMTSD.unique())
    acc = io.read_table(out / "02_training" / "accuracy.tsv")
    assert {"slide", "slide (merged)"} <= set(acc.level)
    # same slides, same split, one tissue name per tissue: the features are the tiny run's
    f = io.read_table(out / "02_training" / "features_trained_256px.parquet")
    g = io.read_table(tiny_out / "02_training" / "features_trained_256px.parquet")
    np.testing.assert_allclose(f.loc[g.index, g.columns].to_numpy(), g.to_numpy(), rtol=1e-5, atol=1e-6)


def test_gtex_profile_recovers_the_planted_truth(gtex_run):
    out, _, _, tiny_out, _ = gtex_run
    # 03: the floor comes from the median-TPM file and picks the same tissue of maximal expression
    floor = io.read_table(out / "03_feature_correlation" / "expression_floor.tsv").set_index("Name")
    tiny_floor = io.read_table(tiny_out / "03_feature_correlation" / "expression_floor.tsv").set_index("Name")
    s = io.read_table(out / "01_tiling" / "samples.tsv").drop_duplicates("SMTS").set_index("SMTS").SMTSD
    same = floor.max_tissue.reindex(tiny_floor.index) == tiny_floor.max_tissue.map(s)
    assert same.mean() > 0.95
    rec = io.read_table(out / "03_feature_correlation" / "recovery_summary.tsv").set_index("method")
    tiny_rec = io.read_table(tiny_out / "03_feature_correlation" / "recovery_summary.tsv").set_index("method")
    assert rec.loc["pooled scan (Badea)", "tissue_recall"] >= tiny_rec.loc["pooled scan (Badea)", "tissue_recall"] - 0.1
    # 05: ischemic time and RIN read from the v8 attribute table (SMTSISCH, SMRIN) and fitted in every tissue
    vp = io.read_table(out / "05_confounder_regression" / "variance_by_confounder_genes.parquet")
    tiny_vp = io.read_table(tiny_out / "05_confounder_regression" / "variance_by_confounder_genes.parquet")
    assert set(vp.term) == set(tiny_vp.term) >= {"log_ischemic_time", "RIN"}
    # 06: the planted programs' features find their program's gene set as high as on the tiny run (at most
    # one place lower), and at least two of them in the first two places
    pr = io.read_table(out / "06_gsea" / "planted_recovery.tsv")
    tiny_pr = io.read_table(tiny_out / "06_gsea" / "planted_recovery.tsv")
    prog = pr[pr.why.str.startswith("tracks")].groupby("expected")["rank"].min()
    tiny_prog = tiny_pr[tiny_pr.why.str.startswith("tracks")].groupby("expected")["rank"].min()
    assert (prog <= tiny_prog.reindex(prog.index) + 1).all() and (prog <= 2).sum() >= 2
    # 09: the autoencoder saw the samples without a slide; masking ranks the planted sets high
    mt = io.read_table(out / "09_radiogenomic_network" / "masking_truth.tsv")
    assert (mt["rank"] <= 2).sum() >= 2
    print("\nplanted recovery, gtex keys on the v8 layout vs tiny:",
          f"03 pooled tissue recall {rec.loc['pooled scan (Badea)', 'tissue_recall']:.2f} vs "
          f"{tiny_rec.loc['pooled scan (Badea)', 'tissue_recall']:.2f};",
          f"06 program ranks {prog.tolist()} vs {tiny_prog.tolist()};",
          f"09 masking ranks {mt['rank'].tolist()} vs "
          f"{io.read_table(tiny_out / '09_radiogenomic_network' / 'masking_truth.tsv')['rank'].tolist()}")


def test_tcga_profile_runs_on_the_gdc_layout(tiny_profile_run, tmp_path):
    tiny_out, _, _ = tiny_profile_run
    folder = write_tcga_download(tiny_out / "tumour", tmp_path / "tcga", seed=1, slides_layout="gdc", clinical="cdr")
    prof = _profile("tcga", ["08_hti_survival"], tmp_path, {"tumour_dir": str(folder["data_dir"])})
    assert prof.notebooks["08_hti_survival"]["make_synthetic"] is False
    out = tmp_path / "run"
    assert [r["status"] for r in run.run_profile(prof, out, only=["08"])] == ["ran"]
    d, t = out / "08_hti_survival", tiny_out / "08_hti_survival"
    surv, tiny_surv = io.read_table(d / "survival.tsv"), io.read_table(t / "survival.tsv")
    assert surv.patient.is_unique and surv.image_id.str.endswith("DX1").all()  # GDC folders: DX1 per patient
    hti = io.read_table(d / "slide_hti.tsv").dropna(subset=["true_hti", "tile_truth_hti"])
    tiny_hti = io.read_table(t / "slide_hti.tsv").dropna(subset=["true_hti", "tile_truth_hti"])
    r = np.corrcoef(hti.true_hti, hti.tile_truth_hti)[0, 1]
    assert r > 0.9
    # the same slides as the tiny run's project layout (normals, duplicates and NA cells all set aside)
    assert set(hti.image_id.str[:23]) == set(tiny_hti.image_id.str[:23])
    t1, tiny_t1 = io.read_table(d / "table1.tsv"), io.read_table(t / "table1.tsv")
    assert set(t1.trait) == {"MKI67", "miR-17-5p"} and t1[["test_runs_mean", "OOD-all_ensemble"]].notna().all().all()
    assert len(io.read_table(d / "logrank.tsv")) == 4 and "planted_coef" in io.read_table(d / "cox.tsv")
    print(f"\nplanted recovery, tcga keys on the GDC layout vs tiny: tile-truth HTI r {r:.3f} vs "
          f"{np.corrcoef(tiny_hti.true_hti, tiny_hti.tile_truth_hti)[0, 1]:.3f}; {len(surv)} vs {len(tiny_surv)} "
          f"patients in the survival set; test AUC mean {t1.test_runs_mean.round(3).tolist()} vs "
          f"{tiny_t1.test_runs_mean.round(3).tolist()}")
