"""Expression networks, gene masking, gene saliency and the cross-validation plumbing (Smedley et al.)."""
import numpy as np
import pandas as pd
import pytest
import torch

from histo_utils import radiogenomics as rg


class _Recorder(torch.nn.Module):
    """A 'network' that remembers its input and answers P(positive) = sigmoid(sum of inputs)."""

    def forward(self, x):
        self.seen = x.detach().clone()
        s = x.sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)


def test_masking_keeps_exactly_the_set():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    net = _Recorder()
    out = rg.gene_masking(net, x, {"ab": [0, 1]}, fill=np.array([-1, -2, -3, -4], np.float32))
    seen = net.seen.numpy()
    assert np.array_equal(seen[:, :2], x[:, :2]) and np.array_equal(seen[:, 2:], np.tile([-3, -4], (3, 1)))
    assert out["ab"].to_numpy() == pytest.approx(1 / (1 + np.exp(-seen.sum(1))))
    rg.gene_masking(net, x, {"c": [3]})  # scalar fill: everything else 0
    assert np.array_equal(net.seen.numpy()[:, :3], np.zeros((3, 3))) and np.array_equal(net.seen.numpy()[:, 3], x[:, 3])
    with pytest.raises(IndexError, match="outside"):
        rg.gene_masking(net, x, {"bad": [7]})


def test_saliency_matches_finite_differences():
    torch.manual_seed(0)
    net = rg.TraitNet(6, (5, 4, 3), dropout=0.5).eval()  # eval: dropout off
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    sal = rg.gene_saliency(net, x)
    eps = 1e-3
    num = np.zeros_like(sal)
    for g in range(6):
        d = np.zeros(6, np.float32)
        d[g] = eps
        num[:, g] = (rg.predict_proba(net, x + d).astype(np.float64) - rg.predict_proba(net, x - d)) / (2 * eps)
    assert np.allclose(sal, num, atol=2e-4), np.abs(sal - num).max()


def test_autoencoder_transfer_and_frozen_first_layer():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(64, 3)) @ rng.normal(size=(3, 20))).astype(np.float32)  # rank-3 data
    cfg = rg.NetConfig(hidden=(8, 4, 2), ae_epochs=60, epochs=5, batch_size=16)
    ae, hist = rg.pretrain_autoencoder(x, config=cfg)
    assert hist.loss.iloc[-1] < 0.5 * hist.loss.iloc[0]
    y = (x[:, 0] > 0).astype(int)
    net = rg.fit_trait_net(x, y, config=cfg, encoder=ae)
    assert torch.equal(net.first.weight, ae.encoder[0].weight)  # frozen: unchanged by fine-tuning
    assert not torch.equal(net.layers[4].weight, ae.encoder[2].weight)  # second layer was fine-tuned
    free = rg.fit_trait_net(x, y, config=rg.NetConfig(hidden=(8, 4, 2), epochs=5, freeze_first=False), encoder=ae)
    assert not torch.equal(free.first.weight, ae.encoder[0].weight)
    with pytest.raises(ValueError, match="does not fit"):
        rg.transfer_encoder(rg.TraitNet(19, (8, 4, 2)), ae)


def test_cross_validation_and_bootstrap_on_known_answers():
    rng = np.random.default_rng(2)
    n = 120
    x = rng.normal(size=(n, 30))
    y = (x[:, :3].sum(1) + 0.3 * rng.normal(size=n) > 0).astype(int)  # three genes decide
    cfg = rg.NetConfig(hidden=(16, 8, 4), epochs=60, dropout=0.1)
    from sklearn.linear_model import LogisticRegression
    auc, oof = rg.cross_validate(x, y, n_folds=5, seed=0, config=cfg, models={"logit": lambda: LogisticRegression()})
    assert set(auc.model) == {"nn", "logit"} and len(auc) == 10 and sorted(oof.fold.unique()) == list(range(5))
    assert oof[["nn", "logit"]].notna().all().all()
    assert auc[auc.model == "logit"].auc.mean() > 0.9 and auc[auc.model == "nn"].auc.mean() > 0.75
    # labels unrelated to the genes: chance
    auc0, _ = rg.cross_validate(x, rng.permutation(y), n_folds=5, seed=0, config=cfg,
                                models={"logit": lambda: LogisticRegression()})
    assert abs(auc0.auc.mean() - 0.5) < 0.15
    # paired bootstrap: a perfect reference against a random model
    oof2 = pd.DataFrame({"y": y, "fold": 0, "nn": y + 0.01 * rng.random(n), "coin": rng.random(n)})
    b = rg.bootstrap_differences(oof2, n_boot=50, seed=0)
    assert len(b) == 50 and np.allclose(b.auc_reference, 1.0) and b.difference.mean() > 0.35
    assert b.equals(rg.bootstrap_differences(oof2, n_boot=50, seed=0))  # seeded


def test_rank_gene_sets_puts_the_informative_set_first():
    y = np.array([0, 0, 0, 1, 1, 1])
    masked = pd.DataFrame({"good": [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], "noise": [0.5, 0.9, 0.1, 0.2, 0.6, 0.4]})
    r = rg.rank_gene_sets(masked, y)
    assert r.gene_set.tolist() == ["good", "noise"] and r.loc[0, "auc"] == 1.0 and r["rank"].tolist() == [1, 2]


def test_masking_log_odds_keep_the_order_where_probabilities_saturate():
    # the _Recorder network answers log-odds = sum of inputs; a fill far from the data pushes every
    # masked sample to P = 1.0 in float32, but the kept gene still orders the samples
    y = np.array([0, 0, 0, 1, 1, 1])
    x = np.c_[np.array([0.0, 1, 2, 3, 4, 5]), np.zeros(6)].astype(np.float32)
    sets = {"informative": [0], "other": [1]}
    p = rg.gene_masking(_Recorder(), x, sets, fill=40.0)
    assert (p["informative"] == 1.0).all()  # saturated: ties everywhere, AUC 0.5
    assert rg.rank_gene_sets(p, y).set_index("gene_set").loc["informative", "auc"] == 0.5
    lo = rg.gene_masking(_Recorder(), x, sets, fill=40.0, output="log_odds")
    assert lo["informative"].to_numpy() == pytest.approx(40.0 + x[:, 0])
    r = rg.rank_gene_sets(lo, y, scores="log_odds").set_index("gene_set")
    assert r.loc["informative", "auc"] == 1.0 and r.loc["informative", "rank"] == 1
    assert r.loc["informative", "mean_p_positive"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="output must be"):
        rg.gene_masking(_Recorder(), x, sets, output="logit")


def test_traits_are_binarised_within_tissue_and_oriented():
    feats = pd.DataFrame({"f": [1.0, 2, 3, 4, 10, 20, 30, 40]}, index=[f"s{i}" for i in range(8)])
    tissue = pd.Series(["A"] * 4 + ["B"] * 4, index=feats.index)
    info = pd.DataFrame({"trait": ["up", "down"], "feature": ["f", "f"], "r_within_tissue": [0.5, -0.5]})
    t = rg.binarize_traits(feats, tissue, info)
    assert t.up.tolist() == [0, 0, 1, 1, 0, 0, 1, 1] and t.down.tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    real = rg.feature_traits(["f"], feats.columns)
    assert real.trait.tolist() == ["f_high"] and rg.binarize_traits(feats, tissue, real).f_high.sum() == 4
    with pytest.raises(KeyError, match="not columns"):
        rg.feature_traits(["g"], feats.columns)
    with pytest.raises(ValueError, match="trait_features"):
        rg.feature_traits([], feats.columns)


def test_gene_set_columns_fill_and_rates():
    sets = rg.gene_set_columns({"S": ["B", "C", "Z"], "T": ["A"]}, ["A", "B", "C"], min_size=2)
    assert sets == {"S": [1, 2]}
    sc = rg.Standardizer().fit(np.array([[1.0, 4.0], [3.0, 4.0]]))
    np.testing.assert_allclose(rg.mask_fill(sc, "zero"), [-2.0, -4.0])  # sd 0 -> 1
    assert rg.mask_fill(sc, "mean") == 0.0
    with pytest.raises(ValueError, match="zero"):
        rg.mask_fill(sc, "median")
    sal = pd.DataFrame({"trait": "t", "SAMPID": ["a", "a", "b", "b"], "positive": [1, 1, 0, 0],
                        "term": ["PLANTED_X", "DECOY_1"] * 2, "nes": [2.0, -1.0, 1.0, 1.0],
                        "fdr": [0.01, 0.01, 0.2, 0.01]})
    r = rg.saliency_rates(sal).set_index(["term", "positive"]).rate
    assert r[("PLANTED_X", 1)] == 1.0 and r[("DECOY_1", 1)] == 0.0 and r[("DECOY_1", 0)] == 1.0


def test_summarize_comparison():
    fold_auc = pd.DataFrame({"trait": "t", "model": ["nn", "nn", "rf", "rf"], "fold": [0, 1, 0, 1],
                             "auc": [0.8, 0.9, 0.6, 0.7]})
    boots = pd.DataFrame({"trait": "t", "model": "rf", "resample": range(5), "difference": [0.1, 0.2, -0.1, 0.3, 0.0]})
    summary, diff = rg.summarize_comparison(fold_auc, boots, ["nn", "rf"])
    assert summary.loc["t"].tolist() == pytest.approx([0.85, 0.65])
    assert diff.iloc[0].p_nn_better == 0.6 and diff.iloc[0]["mean"] == pytest.approx(0.1)


def test_pretraining_expression_from_a_gct_refuses_trait_samples(tmp_path):
    from histo_utils import io

    tpm = pd.DataFrame({"S1": [1.0, 3.0, 7.0], "S2": [0.0, 1.0, 3.0]}, index=["ENSG1", "ENSG2", "ENSG3"])
    gct = tmp_path / "pre.gct"
    io.write_gct(tpm, gct, description=pd.Series(["A", "B", "C"], index=tpm.index))
    pre = rg.pretraining_expression(pd.Index(["ENSG3", "ENSG1"]), ["T1"], gct=str(gct))
    assert list(pre.columns) == ["ENSG3", "ENSG1"] and pre.loc["S1", "ENSG3"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="also trait samples"):
        rg.pretraining_expression(pd.Index(["ENSG1"]), ["S2"], gct=str(gct))
    with pytest.raises(ValueError, match="absent"):
        rg.pretraining_expression(pd.Index(["ENSG9"]), ["T1"], gct=str(gct))


def test_pretraining_expression_simulates_with_the_generator_it_is_given(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "cohort.json").write_text("{}")  # a synthetic cohort: auto means simulate
    with pytest.raises(ValueError, match="simulate="):
        rg.pretraining_expression(pd.Index(["g1"]), [], data_dir=tmp_path)
    calls = []

    def simulate(data_dir, n_samples, *, stream):
        calls.append((data_dir, n_samples, stream))
        return pd.DataFrame({"g0": [1.0, 2.0], "g1": [3.0, 4.0]}, index=["P1", "P2"])

    pre = rg.pretraining_expression(pd.Index(["g1"]), ["T1"], data_dir=tmp_path, n_samples=7, stream=3,
                                    simulate=simulate)
    assert calls == [(tmp_path, 7, 3)] and pre.g1.tolist() == [3.0, 4.0] and list(pre.columns) == ["g1"]


def test_planted_traits_are_the_truths_program_traits(tmp_path):
    from histo_utils import io, truth

    rng = np.random.default_rng(1)
    n = 36
    idx = pd.Index([f"S{k}" for k in range(n)], name="SAMPID")
    tissue = np.repeat(["A", "B", "C"], n // 3)
    planted = pd.DataFrame({"SMTS": tissue, "program_a": rng.normal(size=n), "program_b": rng.normal(size=n),
                            "ischemic_severity": rng.uniform(size=n)}, index=idx)
    feats = pd.DataFrame({"f0": planted.program_a + 0.5 * rng.normal(size=n),
                          "f1": -planted.program_b + 0.3 * rng.normal(size=n),
                          "f2": rng.normal(size=n),
                          "f3": pd.Series(tissue, index=idx).map({"A": 1.0, "B": 2.0, "C": 3.0})}, index=idx)
    rows = pd.concat([planted, planted.iloc[:2]]).reset_index()  # an extra RNA aliquot: SAMPIDs repeat
    io.write_table(rows, tmp_path / "samples.tsv")
    expected = truth.program_traits(truth.feature_truth(feats, planted), ["b", "a"])
    got = rg.trait_definitions(feats, feats, pd.Series(tissue, index=idx), truth_dir=tmp_path, programs=["b", "a"])
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.feature.tolist() == ["f1", "f0"]
    with pytest.raises(ValueError, match="not planted"):
        rg.trait_definitions(feats, feats, pd.Series(tissue, index=idx), truth_dir=tmp_path, programs=["c"])


def test_figures_of_notebook_09_draw_from_their_tables():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histo_utils import figures

    rng = np.random.default_rng(0)
    fold_auc = pd.DataFrame([{"trait": t, "model": m, "fold": f, "auc": rng.uniform(0.4, 0.9)}
                             for t in ("a", "b") for m in ("nn", "rf") for f in range(3)])
    boots = pd.DataFrame([{"trait": t, "model": "rf", "resample": r, "difference": rng.normal(0.1, 0.05)}
                          for t in ("a", "b") for r in range(7)])
    fig = figures.model_comparison(fold_auc, boots, ["nn", "rf"], seed=0)
    titles = [ax.get_title() for ax in fig.axes]
    assert "(a) 3-fold cross-validation AUC" in titles and "(b) AUC(nn) - AUC(model), 7 bootstrap resamples" in titles
    masking = pd.DataFrame({"trait": "a", "gene_set": ["PLANTED_X", "DECOY_1"], "auc": [0.8, 0.5],
                            "planted": [True, False]})
    fig = figures.gene_masking(masking, target={"a": "PLANTED_X"})
    widths = [b.get_width() for b in fig.axes[0].patches]
    assert widths == [0.5, 0.8]  # drawn bottom-up: the top set last
    traits = pd.DataFrame({"a": [1, 0, 1]}, index=["s1", "s2", "s3"])
    sal = pd.DataFrame({"trait": "a", "SAMPID": np.repeat(["s1", "s2", "s3"], 2), "term": ["PLANTED_X", "DECOY_1"] * 3,
                        "nes": [2.0, 0.1, -1.0, 0.2, 1.5, 0.0]})
    fig, table = figures.saliency_heatmap(sal, traits)
    assert len(table) == 6 and table.groupby("SAMPID").size().to_dict() == {"s1": 2, "s2": 2, "s3": 2}
    assert table.SAMPID.iloc[0] in ("s1", "s3")  # positives first
    plt.close("all")


def test_compare_models_in_worker_processes_equals_cross_validate():
    """The parallel folds (forked workers, one thread each) give the numbers of the in-process path."""
    import torch
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 12))
    traits = pd.DataFrame({"a": (x[:, 0] > 0).astype(int), "b": (x[:, 1] + x[:, 2] > 0).astype(int)},
                          index=[f"S{i}" for i in range(60)])
    cfg = rg.NetConfig(hidden=(8, 4, 2), epochs=15, dropout=0.1)
    models = {"logit": lambda: LogisticRegression(), "rf": lambda: RandomForestClassifier(20, random_state=0, n_jobs=2)}
    threads = torch.get_num_threads()
    serial = rg.compare_models(x, traits, n_folds=4, n_boot=20, seed=1, config=cfg, models=models, workers=1)
    parallel = rg.compare_models(x, traits, n_folds=4, n_boot=20, seed=1, config=cfg, models=models, workers=2)
    assert torch.get_num_threads() == threads
    for a, b in zip(serial, parallel):
        pd.testing.assert_frame_equal(a, b)
    fold_auc, oof, _ = serial
    auc_b, oof_b = rg.cross_validate(x, traits["b"].to_numpy(), n_folds=4, seed=1, config=cfg, models=models)
    pd.testing.assert_frame_equal(fold_auc[fold_auc.trait == "b"].drop(columns="trait").reset_index(drop=True), auc_b)
    np.testing.assert_array_equal(oof[oof.trait == "b"].nn.to_numpy(), oof_b.nn.to_numpy())
    assert fold_auc[(fold_auc.trait == "a") & (fold_auc.model == "logit")].auc.mean() > 0.85  # the folds learn
