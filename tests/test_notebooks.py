"""End to end: the notebooks through papermill on the tiny profile."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histo_utils import data, features, io, models, products, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tiny_profile_run):
    return tiny_profile_run  # made once per session in conftest.py (test_faults compares with it too)


def _written(prof, stem: str, p, out) -> bool:
    """Whether notebook ``stem`` writes the declared output ``p`` with the profile's parameters (the tiny profile's
    cohort is synthetic: every planted-truth output is written)."""
    if p.when is None:
        return True
    return bool(run._param_value(prof, stem, run.resolve_parameters(prof, stem, out), p.when))


def test_figures_each_with_their_numbers(tiny_run):
    out, prof, records = tiny_run
    assert [r["status"] for r in records] == ["ran"] * 10
    for nb, declared in products.NOTEBOOKS.items():
        names = [n for n, p in declared.figures.items() if _written(prof, nb, p, out)]
        assert names, nb
        for n in names:
            png = products.outputs(out, nb).figure(n)
            assert png.stat().st_size > 5000 and len(pd.read_csv(png.with_suffix(".csv"))) > 0, f"{nb}/{n}"


def test_every_declared_output_is_written_and_nothing_else(tiny_run):
    """Drift both ways: a declared file the tiny run does not write, or a file it writes that nobody declared."""
    out, prof, _ = tiny_run
    for nb, declared in products.NOTEBOOKS.items():
        files = {k: p for k, p in declared.files.items() if not p.parameter}
        top = [p.pattern() for p in files.values() if "/" not in p.name]
        written = sorted(x.name for x in (out / nb).iterdir() if not x.name.startswith("."))
        assert [w for w in written if not any(t.match(w) for t in top)] == [], f"{nb}: undeclared outputs"
        o = products.outputs(out, nb)
        for key, p in files.items():
            paths = o[key].glob() if p.is_template else [o[key]]
            if not _written(prof, nb, p, out):
                assert not any(q.exists() for q in paths), f"{nb}:{key} written though {p.when} is off"
                continue
            assert paths and all(q.exists() for q in paths), f"{nb}:{key} ({p.name}) not written"
            for q in paths:  # the columns (JSON: keys) its readers rely on
                if p.columns and p.kind == "table":
                    assert set(p.columns) <= set(io.read_table(q).columns), f"{nb}:{key} columns"
                elif p.columns and p.kind == "json":
                    assert set(p.columns) <= set(__import__("json").loads(q.read_text())), f"{nb}:{key} keys"
        for key, p in declared.files.items():
            if p.parameter and _written(prof, nb, p, out):
                assert any(Path(run.resolve_parameters(prof, nb, out)[p.parameter]).iterdir()), f"{nb}:{key}"
        pngs = sorted(x.stem for x in (out / "figures" / nb).glob("*.png"))
        assert pngs == sorted(n for n, p in declared.figures.items() if _written(prof, nb, p, out)), nb
        csvs = sorted(x.stem for x in (out / "figures" / nb).glob("*.csv"))
        assert csvs == pngs, nb


def test_tiling_outputs_match_planted_truth(tiny_run):
    out, _, _ = tiny_run
    tiles, samples = data.load_tiling(out)
    truth = io.read_table(out / "data" / "truth" / "samples.tsv")
    slides = io.read_table(products.outputs(out, "01_tiling").slides)
    # the planted damaged slide is reported and skipped, all others tiled
    corrupt = set(truth.loc[truth.corrupt, "image_id"])
    assert set(slides.loc[slides.status == "error", "image_id"]) == corrupt
    # the join finds exactly the planted problems
    usable = truth[truth.has_slide & truth.has_rna & ~truth.corrupt & (truth.duplicate_of.fillna("") == "")]
    assert set(samples.image_id) == set(usable.image_id)
    dup = io.read_table(products.outputs(out, "01_tiling").duplicate_rna)
    assert set(dup.image_id) == set(truth.loc[truth.duplicate_of.fillna("") != "", "image_id"])
    # no subject in two splits; tiles only from usable slides; effective resolution recorded
    assert samples.groupby("subject_id").split.nunique().max() == 1
    assert set(tiles.image_id) >= set(samples.image_id)
    assert np.allclose(tiles.effective_mpp, 0.9884, rtol=0.01)
    agree = io.read_table(products.outputs(out, "01_tiling").mask_agreement)
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
    d = products.outputs(out, "02_training")
    acc = io.read_table(d.accuracy)
    assert {"tile", "slide"} <= set(acc.level) and {"validation", "test"} <= set(acc.split)
    assert acc.accuracy.between(0, 1).all()
    _, samples = data.load_tiling(out)
    prov = json.loads(d.provenance.read_text())
    first = prof.notebooks["02_training"]["archs"][0]
    net = models.build_model(first, 3)  # every channel of every feature layer of the first network
    with torch.no_grad(), features.LayerRecorder(models.feature_layers(net, first)) as rec:
        net.eval()(torch.zeros(1, 3, 64, 64))
        rec.collect()
    names = features.feature_names(rec.channels)
    # compact: 8 conv + 8 ReLU + 4 pool modules; compact_bn adds 8 BN (16-32-64-128 channels per block)
    assert len(names) == {"compact": 1200, "compact_bn": 1680}.get(first, len(names))
    for name in ("trained", "untrained"):
        f = io.read_table(d.features(network=name, tile_px=256))
        assert f.index.name == "image_id"
        assert set(f.index) == set(samples.image_id)  # every usable slide, train/validation/test
        assert f.shape[1] == prov["tables"][d.features(network=name, tile_px=256).name]["n_features"] == len(names)
        assert list(f.columns) == names
        assert np.isfinite(f.to_numpy()).all()
    trained = io.read_table(d.features(network="trained", tile_px=256))
    untrained = io.read_table(d.features(network="untrained", tile_px=256))
    assert not np.allclose(trained.to_numpy(), untrained.to_numpy())
    archs = prof.notebooks["02_training"]["archs"]
    for arch in archs:  # every network trained, scored and (after the first) quantified as <arch>-trained
        assert d.checkpoint(arch=arch).exists()
        assert set(acc.arch) == set(archs)
    for arch in archs[1:]:
        meta = prov["tables"][d.features(network=f"{arch}-trained", tile_px=256).name]
        assert meta["arch"] == arch and meta["n_slides"] == len(samples)


def test_feature_correlation_outputs(tiny_run):
    import json

    out, prof, _ = tiny_run
    d = products.outputs(out, "03_feature_correlation")
    par = prof.notebooks["03_feature_correlation"]
    pairs = io.read_table(d.pairs)
    _, samples = data.load_tiling(out)
    n_split = (samples.split == par["split"]).sum()
    tested = pairs[pairs.perm_p.notna()]
    assert len(tested) > 0 and (tested.perm_p >= 1 / (par["n_permutations"] + 1)).all()
    assert (pairs.r.abs() <= 1).all() and pairs.q.between(0, 1).all() and (pairs.q >= pairs.p - 1e-15).all()
    grid = io.read_table(d.threshold_grid)
    for _, g in grid.groupby("E_T"):  # counts never grow with R_T
        assert (np.diff(g.sort_values("R_T").pairs) <= 0).all()
    top = grid[(grid.R_T == par.get("r_threshold", 0.8)) & (grid.E_T == par["e_threshold"])]
    t7 = io.read_table(d.indirect_dependencies)
    assert (t7.pairs == int(top.pairs.iloc[0])).all()
    assert (t7[["g–t–f", "f–g–t", "g–f–t"]].to_numpy() <= t7[["pairs"]].to_numpy()).all()
    assert (t7.sort_values("alpha")["g–t–f"].diff().dropna() <= 0).all()  # fewer non-rejections at larger alpha
    rep = json.loads(d.reproducibility.read_text())
    assert rep["n_samples_split"] <= n_split and -1 <= rep["z_correlation"] <= 1
    rec = io.read_table(d.recovery_summary)
    assert set(rec.method) == {"pooled scan (Badea)", "within-tissue scan"}
    # Tables 2-4: the first network's own table counts what the main scan counted at (R_T, E_T)
    comp = io.read_table(d.network_comparison).set_index(["arch", "weights", "tile_px"])
    first = (prof.notebooks["02_training"]["archs"][0], "trained", par.get("tile_px", 256))
    assert comp.loc[first, f"pairs @ R_T {par.get('r_threshold', 0.8):g}"] == int(top.pairs.iloc[0])
    assert set(comp.index.get_level_values("arch")) == set(prof.notebooks["02_training"]["archs"])
    assert io.read_table(d.batch_norm_effect).shape[0] == len(prof.notebooks["02_training"]["feature_tile_px"])


def test_cross_variance_and_confounder_outputs(tiny_run):
    out, prof, _ = tiny_run
    grid = io.read_table(products.outputs(out, "04_pca_cross_variance").shared_variance)
    assert {"all"} < set(grid.layer) and set(grid.var_fraction) == set(prof.notebooks["04_pca_cross_variance"]
                                                                       ["var_fractions"])
    for side in ("image", "expression"):
        assert grid[f"{side}_shared"].between(0, 1 + 1e-9).all()
        assert grid[f"{side}_p"].between(0, 1).all()
    assert (grid.n_pc_image < grid.n_samples).all() and (grid.n_pc_expression < grid.n_samples).all()
    d = products.outputs(out, "05_confounder_regression")
    res = io.read_table(d.residual_expression)
    _, samples = data.load_tiling(out)
    tissue = samples.drop_duplicates("SAMPID").set_index("SAMPID").SMTS.reindex(res.index)
    # residuals have mean zero within each tissue (the intercept is in every model)
    assert np.nanmax(np.abs(res.groupby(tissue.to_numpy()).mean().to_numpy())) < 1e-8
    vp = io.read_table(d.variance_by_confounder_genes)
    asked = set(prof.notebooks["05_confounder_regression"]["confounders"])
    designs = io.read_table(d.designs).set_index("tissue")
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
    d = products.outputs(out, "06_gsea")
    g = io.read_table(d.gsea_features)
    assert g.fdr.between(0, 1).all() and g.pval.between(0, 1).all()
    assert any(w.startswith("tracks program_") for w in g.why)  # the planted-truth features were added
    for _, lst in g.groupby("list"):  # ranks 1..n by |NES|
        assert list(lst["rank"]) == list(range(1, len(lst) + 1))
        assert (np.diff(lst.nes.abs().to_numpy()) <= 1e-12).all()
    conf = io.read_table(d.gsea_confounders)
    asked = set(prof.notebooks["05_confounder_regression"]["confounders"])
    assert set(conf.list) <= asked and "log_ischemic_time" in set(conf.list)
    counts = io.read_table(d.association_counts)
    assert (counts.associations_bonferroni <= counts.associations_bh).all()
    assert (counts.associations_bh <= counts.tests).all()


def test_visualization_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = products.outputs(out, "07_visualization")
    reps = io.read_table(d.features)
    par = prof.notebooks["07_visualization"]
    _, samples = data.load_tiling(out)
    test_ids = set(samples.image_id[samples.split == "test"])
    assert set(reps.image_id) <= test_ids  # gBP only on test tiles
    for _, g in reps.groupby("feature"):  # the selector's rules hold on real output
        assert len(g) <= par["tiles_per_feature"] and g.subject_id.value_counts().max() <= 1
        assert (np.diff(g.value.to_numpy()) <= 0).all()
    loc = io.read_table(d.localisation)
    assert loc.auroc.dropna().between(0, 1).all()
    assert set(loc.kind) == {"tracks", "random"} and set(loc.structure) <= {"nuclei", "stroma", "lumen"}


def test_hti_survival_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = products.outputs(out, "08_hti_survival")
    labels = io.read_table(d.slide_labels).set_index("image_id")
    splits = __import__("json").loads(d.splits.read_text())
    test = set(splits["test"])
    # patient-level splits: no patient in two sets of any split
    for s in splits["splits"]:
        assert not set(s["train"]) & set(s["validation"]) and not (set(s["train"]) | set(s["validation"])) & test
    traits = __import__("ast").literal_eval(prof.declared["08_hti_survival"]["traits"])  # declared as source text
    # the survival set: test patients and patients OOD for every trait, one DX1 slide each
    surv = io.read_table(d.survival)
    assert surv.patient.is_unique and surv.image_id.str.endswith("DX1").all()
    lab = labels.loc[surv.image_id]
    ood_all = np.logical_and.reduce([lab[f"{t}:ood"].to_numpy(bool) for t in traits])
    assert (ood_all | lab.patient.isin(test).to_numpy()).all()
    # Table 1 has every trait and set; the tile truth HTI follows the area truth (the cartography geometry)
    t1 = io.read_table(d.table1)
    assert set(t1.trait) == set(traits) and t1[["test_runs_mean", "OOD-all_ensemble"]].notna().all().all()
    hti = io.read_table(d.slide_hti).dropna(subset=["true_hti", "tile_truth_hti"])
    assert np.corrcoef(hti.true_hti, hti.tile_truth_hti)[0, 1] > 0.9
    h = hti.dropna(subset=["hti"])
    # the interval redraws the split models' ensemble (issue 18): a percentile interval of that resampled
    # statistic, well formed on every slide, and the coverage column of the figure's table says what it covers
    assert len(h) and ((h.hti_low >= -1e-9) & (h.hti_low <= h.hti_high + 1e-9)).all()
    vs = pd.read_csv(d.figure("hti_vs_truth").with_suffix(".csv")).dropna(subset=["hti_low"])
    inside = (vs.true_hti >= vs.hti_low - 1e-9) & (vs.true_hti <= vs.hti_high + 1e-9)
    assert len(vs) and (vs.covers.astype(bool) == inside).all()
    assert len(io.read_table(d.logrank)) == 4 and "planted_coef" in io.read_table(d.cox)


def test_radiogenomic_outputs(tiny_run):
    out, prof, _ = tiny_run
    d = products.outputs(out, "09_radiogenomic_network")
    n_folds = int(prof.notebooks["09_radiogenomic_network"]["n_folds"])
    traits = io.read_table(d.traits)
    # every model scored on the same folds of every trait
    auc = io.read_table(d.fold_auc)
    assert set(auc.model) == {"nn", "gbt", "rf", "svm", "logit"} and set(auc.trait) == set(traits.trait)
    assert (auc.groupby(["trait", "model"]).fold.nunique() == n_folds).all()
    assert auc.auc.dropna().between(0, 1).all()
    oof = io.read_table(d.out_of_fold)
    assert (oof.fold >= 0).all() and oof[["nn", "gbt", "rf", "svm", "logit"]].notna().all().all()
    # masking: every set ranked once per trait; the planted set of each trait has its rank there
    masking = io.read_table(d.gene_masking)
    for t, g in masking.groupby("trait"):
        assert sorted(g["rank"]) == list(range(1, len(g) + 1)) and g.gene_set.is_unique
        assert g.auc.between(0, 1).all()
    truth = io.read_table(d.masking_truth).set_index("trait")
    for t, r in truth.iterrows():
        g = masking[masking.trait == t].set_index("gene_set")
        assert g.loc[r.planted_set, "rank"] == r["rank"] and r["rank"] <= r.n_sets
    rates = io.read_table(d.saliency_truth)
    assert rates[["rate_positive", "rate_negative", "decoy_rate_positive"]].stack().between(0, 1).all()
