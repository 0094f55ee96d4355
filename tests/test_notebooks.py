"""End to end: the notebooks through papermill on the tiny profile."""
import numpy as np
import pandas as pd
import pytest
import torch

from histo_utils import data, features, io, models, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tiny_profile_run):
    return tiny_profile_run  # made once per session in conftest.py (test_faults compares with it too)


def test_figures_each_with_their_numbers(tiny_run):
    out, _, records = tiny_run
    assert [r["status"] for r in records] == ["ran"] * 10
    for nb, names in {"00_synthetic_cohort": ["tissue_gallery", "programs_low_high", "planted_expression_coupling",
                                              "confounders", "ischemia_fading", "planted_summary"],
                      "01_tiling": ["tiles_per_tissue_split", "masks_and_tiles", "mask_agreement"],
                      "02_training": ["training_curves", "confusion_test", "layer_program_correlation"],
                      "03_feature_correlation": ["expression_floor", "correlations_and_pvalues", "threshold_grid",
                                                 "genes_per_layer", "reproducibility", "within_tissue_power",
                                                 "programs_by_layer", "network_comparison"],
                      "04_pca_cross_variance": ["pc_cross_correlation", "shared_variance_by_tissue",
                                                "shared_variance_by_layer", "planted_vs_decoupled"],
                      "05_confounder_regression": ["variance_by_confounder", "confounder_scatter",
                                                   "residuals_vs_fitted", "model_choice",
                                                   "total_vs_technical_shared_variance", "planted_vs_recovered",
                                                   "confounder_only_control"],
                      "06_gsea": ["association_counts", "enrichment_plots", "enriched_overlap",
                                  "gsea_confounders", "planted_vs_decoys"],
                      "07_visualization": ["program_panels", "feature_panels", "linked_view_gene", "localisation"],
                      "08_hti_survival": ["planted_clones", "training_curves", "table1_auc", "score_distributions",
                                          "cartographies", "hti_vs_truth", "survival_hti", "survival_bulk",
                                          "hti_by_subtype", "cox_hazard_ratios"],
                      "09_radiogenomic_network": ["autoencoder_training", "model_comparison", "gene_masking",
                                                  "saliency_gsea_heatmap"]}.items():
        for n in names:
            png, csv = out / "figures" / nb / f"{n}.png", out / "figures" / nb / f"{n}.csv"
            assert png.stat().st_size > 5000 and len(pd.read_csv(csv)) > 0, f"{nb}/{n}"


def test_tiling_outputs_match_planted_truth(tiny_run):
    out, _, _ = tiny_run
    tiles, samples = data.load_tiling(out)
    truth = io.read_table(out / "data" / "truth" / "samples.tsv")
    slides = io.read_table(out / "01_tiling" / "slides.tsv")
    # the planted damaged slide is reported and skipped, all others tiled
    corrupt = set(truth.loc[truth.corrupt, "image_id"])
    assert set(slides.loc[slides.status == "error", "image_id"]) == corrupt
    # the join finds exactly the planted problems
    usable = truth[truth.has_slide & truth.has_rna & ~truth.corrupt & (truth.duplicate_of.fillna("") == "")]
    assert set(samples.image_id) == set(usable.image_id)
    dup = io.read_table(out / "01_tiling" / "duplicate_rna.tsv")
    assert set(dup.image_id) == set(truth.loc[truth.duplicate_of.fillna("") != "", "image_id"])
    # no subject in two splits; tiles only from usable slides; effective resolution recorded
    assert samples.groupby("subject_id").split.nunique().max() == 1
    assert set(tiles.image_id) >= set(samples.image_id)
    assert np.allclose(tiles.effective_mpp, 0.9884, rtol=0.01)
    agree = io.read_table(out / "01_tiling" / "mask_agreement.tsv")
    assert set(agree.threshold) == {"otsu", "multiotsu"}
    assert agree[agree.threshold == "multiotsu"].dice.min() > 0.8


def test_rerun_skips_and_param_change_reruns(tiny_run, tmp_path):
    out, prof, _ = tiny_run
    assert [r["status"] for r in run.run_profile(prof, out, only=["00", "01"])] == ["skipped", "skipped"]
    prof.notebooks["01_tiling"] = {**prof.notebooks["01_tiling"], "min_tissue": 0.9}
    recs = run.run_profile(prof, out, only=["00", "01"])
    assert [r["status"] for r in recs] == ["skipped", "ran"]
    tiles, _ = data.load_tiling(out)
    assert tiles.tissue_fraction.min() >= 0.9


def test_training_outputs(tiny_run):
    import json

    out, prof, _ = tiny_run
    d = out / "02_training"
    acc = io.read_table(d / "accuracy.tsv")
    assert {"tile", "slide"} <= set(acc.level) and {"validation", "test"} <= set(acc.split)
    assert acc.accuracy.between(0, 1).all()
    _, samples = data.load_tiling(out)
    prov = json.loads((d / "features_provenance.json").read_text())
    first = prof.notebooks["02_training"]["archs"][0]
    net = models.build_model(first, 3)  # every channel of every feature layer of the first network
    with torch.no_grad(), features.LayerRecorder(models.feature_layers(net, first)) as rec:
        net.eval()(torch.zeros(1, 3, 64, 64))
        rec.collect()
    names = features.feature_names(rec.channels)
    # compact: 8 conv + 8 ReLU + 4 pool modules; compact_bn adds 8 BN (16-32-64-128 channels per block)
    assert len(names) == {"compact": 1200, "compact_bn": 1680}.get(first, len(names))
    for name in ("trained", "untrained"):
        f = io.read_table(d / f"features_{name}_256px.parquet")
        assert f.index.name == "image_id"
        assert set(f.index) == set(samples.image_id)  # every usable slide, train/validation/test
        assert f.shape[1] == prov["tables"][f"features_{name}_256px.parquet"]["n_features"] == len(names)
        assert list(f.columns) == names
        assert np.isfinite(f.to_numpy()).all()
    trained = io.read_table(d / "features_trained_256px.parquet")
    untrained = io.read_table(d / "features_untrained_256px.parquet")
    assert not np.allclose(trained.to_numpy(), untrained.to_numpy())
    archs = prof.notebooks["02_training"]["archs"]
    for arch in archs:  # every network trained, scored and (after the first) quantified as <arch>-trained
        assert (d / "checkpoints" / arch / "best.pt").exists()
        assert set(acc.arch) == set(archs)
    for arch in archs[1:]:
        meta = prov["tables"][f"features_{arch}-trained_256px.parquet"]
        assert meta["arch"] == arch and meta["n_slides"] == len(samples)


def test_feature_correlation_outputs(tiny_run):
    import json

    out, prof, _ = tiny_run
    d = out / "03_feature_correlation"
    par = prof.notebooks["03_feature_correlation"]
    pairs = io.read_table(d / "pairs.parquet")
    _, samples = data.load_tiling(out)
    n_split = (samples.split == par["split"]).sum()
    tested = pairs[pairs.perm_p.notna()]
    assert len(tested) > 0 and (tested.perm_p >= 1 / (par["n_permutations"] + 1)).all()
    assert (pairs.r.abs() <= 1).all() and pairs.q.between(0, 1).all() and (pairs.q >= pairs.p - 1e-15).all()
    grid = io.read_table(d / "threshold_grid.tsv")
    for _, g in grid.groupby("E_T"):  # counts never grow with R_T
        assert (np.diff(g.sort_values("R_T").pairs) <= 0).all()
    top = grid[(grid.R_T == par.get("r_threshold", 0.8)) & (grid.E_T == par["e_threshold"])]
    t7 = io.read_table(d / "indirect_dependencies.tsv")
    assert (t7.pairs == int(top.pairs.iloc[0])).all()
    assert (t7[["g–t–f", "f–g–t", "g–f–t"]].to_numpy() <= t7[["pairs"]].to_numpy()).all()
    assert (t7.sort_values("alpha")["g–t–f"].diff().dropna() <= 0).all()  # fewer non-rejections at larger alpha
    rep = json.loads((d / "reproducibility.json").read_text())
    assert rep["n_samples_split"] <= n_split and -1 <= rep["z_correlation"] <= 1
    rec = io.read_table(d / "recovery_summary.tsv")
    assert set(rec.method) == {"pooled scan (Badea)", "within-tissue scan"}
    # Tables 2-4: the first network's own table counts what the main scan counted at (R_T, E_T)
    comp = io.read_table(d / "network_comparison.tsv").set_index(["arch", "weights", "tile_px"])
    first = (prof.notebooks["02_training"]["archs"][0], "trained", par.get("tile_px", 256))
    assert comp.loc[first, f"pairs @ R_T {par.get('r_threshold', 0.8):g}"] == int(top.pairs.iloc[0])
    assert set(comp.index.get_level_values("arch")) == set(prof.notebooks["02_training"]["archs"])
    assert io.read_table(d / "batch_norm_effect.tsv").shape[0] == len(prof.notebooks["02_training"]["feature_tile_px"])


def test_cross_variance_and_confounder_outputs(tiny_run):
    out, prof, _ = tiny_run
    grid = io.read_table(out / "04_pca_cross_variance" / "shared_variance.tsv")
    assert {"all"} < set(grid.layer) and set(grid.var_fraction) == set(prof.notebooks["04_pca_cross_variance"]
                                                                       ["var_fractions"])
    for side in ("image", "expression"):
        assert grid[f"{side}_shared"].between(0, 1 + 1e-9).all()
        assert grid[f"{side}_p"].between(0, 1).all()
    assert (grid.n_pc_image < grid.n_samples).all() and (grid.n_pc_expression < grid.n_samples).all()
    d = out / "05_confounder_regression"
    res = io.read_table(d / "residual_expression.parquet")
    _, samples = data.load_tiling(out)
    tissue = samples.drop_duplicates("SAMPID").set_index("SAMPID").SMTS.reindex(res.index)
    # residuals have mean zero within each tissue (the intercept is in every model)
    assert np.nanmax(np.abs(res.groupby(tissue.to_numpy()).mean().to_numpy())) < 1e-8
    vp = io.read_table(d / "variance_by_confounder_genes.parquet")
    asked = set(prof.notebooks["05_confounder_regression"]["confounders"])
    designs = io.read_table(d / "designs.tsv").set_index("tissue")
    for t, g in vp.groupby("tissue"):  # every requested term is either fitted or reported as left out
        left_out = set(str(designs.loc[t, "left_out_terms"]).split(", ")) - {"", "nan"}
        assert set(g.term) - {"(all)"} | left_out == asked and not (set(g.term) & left_out)
    assert "log_ischemic_time" in set(vp.term)
    assert vp.unique_r2.between(-1e-9, 1 + 1e-9).all()
    full = vp[vp.term == "(all)"].set_index(["tissue", "gene"]).unique_r2
    # a term's unique share never exceeds what the full model explains
    assert (vp[vp.term != "(all)"].unique_r2 <= full.reindex(
        vp[vp.term != "(all)"].set_index(["tissue", "gene"]).index).to_numpy() + 1e-9).all()


def test_gsea_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = out / "06_gsea"
    g = io.read_table(d / "gsea_features.tsv")
    assert g.fdr.between(0, 1).all() and g.pval.between(0, 1).all()
    assert any(w.startswith("tracks program_") for w in g.why)  # the planted-truth features were added
    for _, lst in g.groupby("list"):  # ranks 1..n by |NES|
        assert list(lst["rank"]) == list(range(1, len(lst) + 1))
        assert (np.diff(lst.nes.abs().to_numpy()) <= 1e-12).all()
    conf = io.read_table(d / "gsea_confounders.tsv")
    asked = set(prof.notebooks["05_confounder_regression"]["confounders"])
    assert set(conf.list) <= asked and "log_ischemic_time" in set(conf.list)
    counts = io.read_table(d / "association_counts.tsv")
    assert (counts.associations_bonferroni <= counts.associations_bh).all()
    assert (counts.associations_bh <= counts.tests).all()


def test_visualization_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = out / "07_visualization"
    reps = io.read_table(d / "features.tsv")
    par = prof.notebooks["07_visualization"]
    _, samples = data.load_tiling(out)
    test_ids = set(samples.image_id[samples.split == "test"])
    assert set(reps.image_id) <= test_ids  # gBP only on test tiles
    for _, g in reps.groupby("feature"):  # the selector's rules hold on real output
        assert len(g) <= par["tiles_per_feature"] and g.subject_id.value_counts().max() <= 1
        assert (np.diff(g.value.to_numpy()) <= 0).all()
    loc = io.read_table(d / "localisation.tsv")
    assert loc.auroc.dropna().between(0, 1).all()
    assert set(loc.kind) == {"tracks", "random"} and set(loc.structure) <= {"nuclei", "stroma", "lumen"}


def test_hti_survival_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = out / "08_hti_survival"
    labels = io.read_table(d / "slide_labels.tsv").set_index("image_id")
    splits = __import__("json").loads((d / "splits.json").read_text())
    test = set(splits["test"])
    # patient-level splits: no patient in two sets of any split
    for s in splits["splits"]:
        assert not set(s["train"]) & set(s["validation"]) and not (set(s["train"]) | set(s["validation"])) & test
    traits = __import__("ast").literal_eval(prof.declared["08_hti_survival"]["traits"])  # declared as source text
    # the survival set: test patients and patients OOD for every trait, one DX1 slide each
    surv = io.read_table(d / "survival.tsv")
    assert surv.patient.is_unique and surv.image_id.str.endswith("DX1").all()
    lab = labels.loc[surv.image_id]
    ood_all = np.logical_and.reduce([lab[f"{t}:ood"].to_numpy(bool) for t in traits])
    assert (ood_all | lab.patient.isin(test).to_numpy()).all()
    # Table 1 has every trait and set; the tile truth HTI follows the area truth (the cartography geometry)
    t1 = io.read_table(d / "table1.tsv")
    assert set(t1.trait) == set(traits) and t1[["test_runs_mean", "OOD-all_ensemble"]].notna().all().all()
    hti = io.read_table(d / "slide_hti.tsv").dropna(subset=["true_hti", "tile_truth_hti"])
    assert np.corrcoef(hti.true_hti, hti.tile_truth_hti)[0, 1] > 0.9
    h = hti.dropna(subset=["hti"])
    # the interval redraws the split models' ensemble (issue 18): a percentile interval of that resampled
    # statistic, well formed on every slide, and the coverage column of the figure's table says what it covers
    assert len(h) and ((h.hti_low >= -1e-9) & (h.hti_low <= h.hti_high + 1e-9)).all()
    vs = pd.read_csv(out / "figures" / "08_hti_survival" / "hti_vs_truth.csv").dropna(subset=["hti_low"])
    inside = (vs.true_hti >= vs.hti_low - 1e-9) & (vs.true_hti <= vs.hti_high + 1e-9)
    assert len(vs) and (vs.covers.astype(bool) == inside).all()
    assert len(io.read_table(d / "logrank.tsv")) == 4 and "planted_coef" in io.read_table(d / "cox.tsv")


def test_radiogenomic_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = out / "09_radiogenomic_network"
    n_folds = int(prof.notebooks["09_radiogenomic_network"]["n_folds"])
    traits = io.read_table(d / "traits.tsv")
    # every model scored on the same folds of every trait
    auc = io.read_table(d / "fold_auc.tsv")
    assert set(auc.model) == {"nn", "gbt", "rf", "svm", "logit"} and set(auc.trait) == set(traits.trait)
    assert (auc.groupby(["trait", "model"]).fold.nunique() == n_folds).all()
    assert auc.auc.dropna().between(0, 1).all()
    oof = io.read_table(d / "out_of_fold.tsv")
    assert (oof.fold >= 0).all() and oof[["nn", "gbt", "rf", "svm", "logit"]].notna().all().all()
    # masking: every set ranked once per trait; the planted set of each trait has its rank there
    masking = io.read_table(d / "gene_masking.tsv")
    for t, g in masking.groupby("trait"):
        assert sorted(g["rank"]) == list(range(1, len(g) + 1)) and g.gene_set.is_unique
        assert g.auc.between(0, 1).all()
    truth = io.read_table(d / "masking_truth.tsv").set_index("trait")
    for t, r in truth.iterrows():
        g = masking[masking.trait == t].set_index("gene_set")
        assert g.loc[r.planted_set, "rank"] == r["rank"] and r["rank"] <= r.n_sets
    rates = io.read_table(d / "saliency_truth.tsv")
    assert rates[["rate_positive", "rate_negative", "decoy_rate_positive"]].stack().between(0, 1).all()
