"""The gene–feature correlation engine against scipy, numpy, statsmodels and brute force."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import fdrcorrection

from histo_utils import correlation as hc


def _data(n=30, nf=17, ng=23, seed=0, planted=((2, 5, 0.9), (7, 11, -0.8))):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, nf)) * rng.uniform(0.5, 3, nf) + rng.normal(size=nf) * 5
    g = rng.normal(size=(n, ng)) * rng.uniform(0.5, 3, ng) + 7
    for i, j, r in planted:
        g[:, j] = r * (f[:, i] - f[:, i].mean()) / f[:, i].std() + np.sqrt(1 - r * r) * rng.normal(size=n)
    return f, g


def test_blocks_equal_numpy_corrcoef_and_scipy():
    f, g = _data()
    full = np.concatenate([r for _, r in hc.correlation_blocks(f, g, block_size=5)], axis=1)
    ref = np.corrcoef(f.T, g.T)[: f.shape[1], f.shape[1]:]
    np.testing.assert_allclose(full, ref, atol=1e-12)
    res = stats.pearsonr(f[:, 3], g[:, 8])
    assert full[3, 8] == pytest.approx(res.statistic, abs=1e-12)
    assert hc.pearson_pvalues(full[3, 8], len(f)) == pytest.approx(res.pvalue, rel=1e-9)


def test_torch_backend_gives_the_same_numbers():
    f, g = _data(ng=40)
    a = np.concatenate([r for _, r in hc.correlation_blocks(f, g, block_size=16)], axis=1)
    b = np.concatenate([r for _, r in hc.correlation_blocks(f, g, block_size=16, backend="torch", device="cpu")],
                       axis=1)
    np.testing.assert_allclose(a, b, atol=1e-12)
    s1 = hc.scan_pairs(f, g, r_min=0.3, fdr_keep=0.1)
    s2 = hc.scan_pairs(f, g, r_min=0.3, fdr_keep=0.1, backend="torch", device="cpu")
    pd.testing.assert_frame_equal(s1.pairs, s2.pairs, atol=1e-10)
    with pytest.raises(ValueError, match="Backend 'cupy' not available"):
        next(hc.correlation_blocks(f, g, backend="cupy"))


def test_partial_correlation_equals_regression_residuals():
    f, g = _data(n=40)
    tissue = np.repeat(["a", "b", "c", "d"], 10)
    part = np.concatenate([r for _, r in hc.correlation_blocks(f, g, groups=tissue, block_size=7)], axis=1)
    d = pd.DataFrame({"f": f[:, 2], "g": g[:, 5], "t": tissue})
    rf = smf.ols("f ~ C(t)", d).fit().resid
    rg = smf.ols("g ~ C(t)", d).fit().resid
    assert part[2, 5] == pytest.approx(np.corrcoef(rf, rg)[0, 1], abs=1e-12)
    # its test: the t test of g in g ~ f-residualised model has n - k - 1 df, as statsmodels' OLS of f ~ g + C(t)
    fit = smf.ols("f ~ g + C(t)", d).fit()
    assert hc.pearson_pvalues(part[2, 5], 40, n_conditioning=3) == pytest.approx(fit.pvalues["g"], rel=1e-8)
    np.testing.assert_allclose(hc.pair_correlations(f, g, [2, 0], [5, 1], groups=tissue), part[[2, 0], [5, 1]],
                               atol=1e-12)


def test_scan_keeps_every_pair_above_threshold_and_exact_bh():
    f, g = _data(n=25, nf=30, ng=50, seed=3)
    full = np.corrcoef(f.T, g.T)[:30, 30:]
    p_all = stats.t.sf(np.abs(full) * np.sqrt(23 / (1 - full ** 2)), 23) * 2
    q_all = fdrcorrection(p_all.ravel())[1].reshape(full.shape)
    for r_min in (0.45, 1.0):
        res = hc.scan_pairs(f, g, r_min=r_min, fdr_keep=0.2, block_size=9, histogram_bins=200)
        expected = (np.abs(full) >= r_min) | (q_all <= 0.2)  # |r| floor, or rejected by BH over all pairs
        assert 0 < (q_all <= 0.2).sum() < expected.size
        got = np.zeros_like(expected)
        got[res.pairs.feature, res.pairs.gene] = True
        assert (got == expected).all()
        assert res.histogram.sum() == full.size
        np.testing.assert_array_equal(res.histogram, np.histogram(full, bins=res.bins)[0])
        q_ref = q_all[res.pairs.feature, res.pairs.gene]
        exact = res.pairs.q.to_numpy() <= 0.2
        assert exact.sum() == (q_all <= 0.2).sum()
        np.testing.assert_allclose(res.pairs.q.to_numpy()[exact], q_ref[exact], rtol=1e-10)
        assert (res.pairs.q.to_numpy() >= q_ref - 1e-12).all()  # above the bound: never anti-conservative


def test_bh_adjust_full_family_matches_statsmodels():
    p = np.random.default_rng(1).uniform(size=500) ** 3
    np.testing.assert_allclose(hc.bh_adjust(p), fdrcorrection(p)[1], rtol=1e-12)


def test_permutation_pvalues_equal_brute_force_loop():
    f, g = _data(n=12, nf=6, ng=9, seed=5, planted=((1, 2, 0.9),))
    fi = np.array([0, 1, 1, 3, 5, 5, 2])
    gi = np.array([0, 2, 4, 4, 8, 1, 2])
    for fi_, gi_ in ((fi, gi), (np.zeros(7, int), gi)):  # grouped by gene, then by feature
        p, r = hc.permutation_pvalues(f, g, fi_, gi_, n_permutations=199, seed=11)
        rng = np.random.default_rng(11)
        perms = [rng.permutation(12) for _ in range(199)]
        for k, (a, b) in enumerate(zip(fi_, gi_)):
            obs = stats.pearsonr(f[:, a], g[:, b]).statistic
            null = np.array([stats.pearsonr(f[:, a], g[pi, b]).statistic for pi in perms])
            assert r[k] == pytest.approx(obs, abs=1e-12)
            assert p[k] == (1 + np.sum(np.abs(null) >= abs(obs) - 1e-12)) / 200
    # the planted pair is never beaten
    p, _ = hc.permutation_pvalues(f, g, [1], [2], n_permutations=999, seed=0)
    assert p[0] == pytest.approx(1 / 1000)


def test_conditional_independence_matches_statsmodels_f_tests():
    rng = np.random.default_rng(2)
    n, t = 45, np.repeat(["x", "y", "z"], 15)
    shift = pd.Series(t).map({"x": 0.0, "y": 2.0, "z": -1.0}).to_numpy()
    g = shift + rng.normal(size=n)
    f = 1.5 * shift + 0.3 * g + rng.normal(size=n)
    d = pd.DataFrame({"f": f, "g": g, "t": t})
    r = np.corrcoef(f, g)[0, 1]
    rp = hc.pair_correlations(f[:, None], g[:, None], [0], [0], groups=t)[0]
    e2g, e2f = hc.group_r2(g[:, None], t)[0], hc.group_r2(f[:, None], t)[0]
    out = hc.conditional_independence(np.array([r]), np.array([rp]), np.array([e2g]), np.array([e2f]), n=n,
                                     n_groups=3).iloc[0]
    full = smf.ols("f ~ g + C(t)", d).fit()
    assert out.p_g_t_f == pytest.approx(full.pvalues["g"], rel=1e-8)
    assert out.p_f_g_t == pytest.approx(full.compare_f_test(smf.ols("f ~ g", d).fit())[1], rel=1e-8)
    full_g = smf.ols("g ~ f + C(t)", d).fit()
    assert out.p_g_f_t == pytest.approx(full_g.compare_f_test(smf.ols("g ~ f", d).fit())[1], rel=1e-8)
    assert hc.group_r2(f[:, None], t)[0] == pytest.approx(smf.ols("f ~ C(t)", d).fit().rsquared, rel=1e-10)


def test_bad_inputs_are_named():
    f, g = _data()
    with pytest.raises(ValueError, match="constant columns"):
        next(hc.correlation_blocks(np.c_[f, np.ones(len(f))], g))
    with pytest.raises(ValueError, match="NaN"):
        bad = g.copy()
        bad[3, 4] = np.nan
        next(hc.correlation_blocks(f, bad))
    with pytest.raises(ValueError, match="align them first"):
        next(hc.correlation_blocks(f, g[:-1]))
    df = pd.DataFrame(g, columns=[f"g{i}" for i in range(g.shape[1])]).assign(zero=0.0, five=5.0)
    kept, dropped = hc.drop_constant(df, what="gene")
    assert dropped == ["zero", "five"] and kept.shape[1] == g.shape[1]
    # within-group constant column: NaN partial correlations, never reported
    tissue = np.repeat(["a", "b", "c"], 10)
    gg = g.copy()
    gg[:, 0] = np.repeat([1.0, 2.0, 3.0], 10)
    res = hc.scan_pairs(f, gg, groups=tissue, r_min=0.0, fdr_keep=0)
    assert (res.pairs.gene != 0).all() and len(res.pairs) == f.shape[1] * (g.shape[1] - 1)


def test_compare_scans_and_grid():
    f, g = _data(n=60, nf=8, ng=30, seed=9)
    summ, sample = hc.compare_scans(f[:30], g[:30], f[30:], g[30:], block_size=7, sample_pairs=50)
    ra = np.corrcoef(f[:30].T, g[:30].T)[:8, 8:].ravel()
    rb = np.corrcoef(f[30:].T, g[30:].T)[:8, 8:].ravel()
    assert summ["r_correlation"] == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-10)
    assert summ["z_correlation"] == pytest.approx(np.corrcoef(np.arctanh(ra), np.arctanh(rb))[0, 1], abs=1e-10)
    assert len(sample) == 50
    pairs = pd.DataFrame({"feature": ["a", "a", "b", "c"], "gene": ["x", "y", "x", "z"], "r": [0.9, -0.85, 0.7, 0.95]})
    floor = pd.Series({"x": 8.0, "y": 3.0, "z": 9.0})
    tissue = pd.Series({"x": "T1", "y": "T2", "z": "T1"})
    grid = hc.threshold_grid(pairs, floor, tissue, r_thresholds=[0.8, 0.6], e_thresholds=[0, 5]).set_index(
        ["R_T", "E_T"])
    assert grid.loc[(0.8, 0)].tolist() == [3, 3, 2, 2]
    assert grid.loc[(0.8, 5)].tolist() == [2, 2, 2, 1]
    assert grid.loc[(0.6, 5)].tolist() == [3, 2, 3, 1]


def test_recovers_planted_truth_of_the_cohort_generator():
    """Expression from the cohort generator, features that carry tissue and programs: the pooled scan finds
    tissue genes and Table 7 calls them indirect; the within-tissue scan finds the program modules."""
    from histo_utils import truth
    from histo_utils.synthetic import CohortParams
    from histo_utils.synthetic.cohort import design_cohort, simulate_expression

    p = CohortParams(seed=1, samples_per_tissue=40, n_genes=800, module_size=20, tissue_genes=20)
    subjects, samples = design_cohort(p)
    tpm, genes, _ = simulate_expression(p, subjects, samples)
    tpm.attrs = {}
    s = samples[samples.has_rna].drop_duplicates("SAMPID").set_index("SAMPID").loc[tpm.columns]
    rng = np.random.default_rng(0)
    n = len(s)
    tissue = s.SMTS.to_numpy()
    feats = {f"t_{t}": 6.0 * (tissue == t) + rng.normal(size=n) for t in np.unique(tissue)}
    progs = [c for c in s.columns if c.startswith("program_")]
    # program features also differ between tissues, as a CNN's channels do
    tissue_mean = pd.Series(tissue).map({t: 1.5 * i for i, t in enumerate(np.unique(tissue))}).to_numpy()
    feats.update({f"p_{c}": tissue_mean + s[c].to_numpy() + 0.5 * rng.normal(size=n) for c in progs})
    feats.update({f"noise_{i}": rng.normal(size=n) for i in range(20)})
    F = pd.DataFrame(feats, index=s.index)
    G, _ = hc.drop_constant(np.log2(1 + tpm.T), what="gene")
    floor = hc.expression_floor(G, tissue)
    tested = floor.index[floor.max_median >= 5]
    G = G[tested]
    groups = truth.gene_groups(genes)

    pooled = hc.scan_pairs(F, G, r_min=0.6, fdr_keep=0)
    found = G.columns[pooled.pairs.gene].unique()
    _, summ = truth.gene_recovery(found, groups, tested=tested)
    pr, _ = truth.gene_recovery(found, groups, tested=tested)
    assert summ["precision"] == 1.0
    assert pr[pr.group == "tissue"].found.sum() / pr[pr.group == "tissue"].tested.sum() > 0.8
    assert pr[pr.group == "program"].found.sum() == 0  # tissue variance of the features hides the programs
    fi, gi = pooled.pairs.feature.to_numpy(), pooled.pairs.gene.to_numpy()
    rp = hc.pair_correlations(F, G, fi, gi, groups=tissue)
    ci = hc.conditional_independence(pooled.pairs.r, rp, hc.group_r2(G, tissue)[gi], hc.group_r2(F, tissue)[fi],
                                     n=n, n_groups=len(np.unique(tissue)))
    assert (ci.p_g_t_f > 0.01).mean() > 0.9  # tissue genes: indirect g–t–f

    within = hc.scan_pairs(F, G, groups=tissue, r_min=1.0, fdr_keep=0.05)
    hits = within.pairs[within.pairs.q < 0.05]
    found_w = G.columns[hits.gene].unique()
    pr_w, summ_w = truth.gene_recovery(found_w, groups, tested=tested, positive=("program",))
    prog = pr_w[pr_w.group == "program"]
    assert prog.found.sum() / prog.tested.sum() > 0.9
    assert summ_w["precision"] > 0.9
    # each program gene pairs with its own program's feature
    g_hit = groups.loc[G.columns[hits.gene]]
    own = F.columns[hits.feature] == ("p_program_" + g_hit.target).to_numpy()
    assert own[(g_hit.group == "program").to_numpy()].mean() > 0.95


def _old_scan(f, g, **kw):
    """The screen by thresholding every block at p = fdr_keep (the implementation before the binned screen)."""
    return hc._scan_thresholded(f, g, be=hc._Backend("numpy"), progress=False, **kw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("min_rejections", [1000, 1])
def test_binned_screen_equals_thresholding_and_brute_force(monkeypatch, dtype, min_rejections):
    """Same pairs, r, q and histogram as thresholding every block, and BH over the full matrix.

    Structure only in the last blocks: the cut projected from the first ones is too high, so with
    ``min_rejections=1`` the blocks holding pairs between it and the final BH cut must be recomputed.
    """
    monkeypatch.setattr(hc, "_MIN_REJECTIONS", min_rejections)
    rng = np.random.default_rng(7)
    n, nf, ng = 40, 25, 400
    f = rng.normal(size=(n, nf))
    g = rng.normal(size=(n, ng)) + 3
    late = np.arange(300, 400)
    g[:, late] += 0.6 * f[:, rng.integers(0, nf, len(late))] * rng.uniform(1, 4, len(late))
    recounts = []
    real = hc.log.info
    monkeypatch.setattr(hc.log, "info", lambda msg, *a: (recounts.append(msg) if "recomputing" in msg else None,
                                                         real(msg, *a)))
    res = hc.scan_pairs(f, g, r_min=0.6, fdr_keep=0.05, block_size=32, histogram_bins=200, dtype=dtype)
    k = 0
    screen = min(0.6, hc.critical_r(0.05, n))
    fi, gi, rr, hist, r_keep = _old_scan(f, g, groups=None, block_size=32, dtype=dtype, r_min=0.6, screen=screen,
                                         fdr_keep=0.05, histogram_bins=200, n=n, k_cond=k)
    assert res.r_keep == r_keep
    np.testing.assert_array_equal(res.histogram, hist)
    old = pd.DataFrame({"feature": fi, "gene": gi, "r": rr.astype(np.float64)})
    pd.testing.assert_frame_equal(res.pairs[["feature", "gene", "r"]], old, check_dtype=False)
    # brute force: BH over every pair of the full matrix
    full = np.corrcoef(f.T, g.T)[:nf, nf:]
    q_all = fdrcorrection(hc.pearson_pvalues(full, n).ravel())[1].reshape(full.shape)
    expected = (np.abs(full) >= 0.6) | (q_all <= 0.05)
    assert 50 < (q_all <= 0.05).sum() < 0.5 * expected.size
    got = np.zeros_like(expected)
    got[res.pairs.feature, res.pairs.gene] = True
    assert (got == expected).all()
    exact = res.pairs.q.to_numpy() <= 0.05
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(res.pairs.q.to_numpy()[exact], q_all[res.pairs.feature, res.pairs.gene][exact],
                               rtol=tol)
    assert res.histogram.sum() == full.size
    if dtype == np.float64:
        np.testing.assert_array_equal(res.histogram, np.histogram(full, bins=res.bins)[0])
    assert bool(recounts) == (min_rejections == 1)  # the fallback runs, and only when the projection is short


def test_binned_screen_partial_with_constant_columns_and_other_bins():
    """NaN partial correlations (within-group constant gene) are not counted; 50 bins as np.histogram."""
    f, g = _data(n=30, nf=12, ng=60, seed=4)
    tissue = np.repeat(["a", "b", "c"], 10)
    g[:, 7] = np.repeat([1.0, 2.0, 3.0], 10)
    res = hc.scan_pairs(f, g, groups=tissue, r_min=0.5, fdr_keep=0.2, block_size=16, histogram_bins=50)
    full = np.concatenate([r for _, r in hc.correlation_blocks(f, g, groups=tissue, block_size=16)], axis=1)
    assert np.isnan(full[:, 7]).all() and res.histogram.sum() == full.size - 12
    np.testing.assert_array_equal(res.histogram, np.histogram(full[np.isfinite(full)], bins=res.bins)[0])
    fi, gi, rr, hist, r_keep = _old_scan(f, g, groups=tissue, block_size=16, dtype=np.float64, r_min=0.5,
                                         screen=min(0.5, hc.critical_r(0.2, 30, n_conditioning=2)), fdr_keep=0.2,
                                         histogram_bins=50, n=30, k_cond=2)
    np.testing.assert_array_equal(res.histogram, hist)
    assert res.r_keep == r_keep and len(res.pairs) == len(rr) > 0
    np.testing.assert_array_equal(res.pairs.r.to_numpy(), rr)


def test_binned_screen_is_the_same_with_any_number_of_threads(monkeypatch):
    """Blocks multiplied and screened in 1, 2 or 3 threads give the same pairs, histogram and cut; a rerun with
    the same threads recomputes the same blocks (a block's screen cut depends only on the blocks collected
    before it was started, in order, never on timing)."""
    monkeypatch.setattr(hc, "_MIN_REJECTIONS", 1)
    rng = np.random.default_rng(3)
    n, nf, ng = 40, 25, 400
    f = rng.normal(size=(n, nf))
    g = rng.normal(size=(n, ng))
    g[:, 300:] += 0.7 * f[:, rng.integers(0, nf, 100)]
    screen = min(0.6, hc.critical_r(0.05, n))
    out = {}
    for threads in (1, 2, 3, "2 again"):
        logged = []
        monkeypatch.setattr(hc.log, "info", lambda msg, *a: logged.append(msg % a))
        out[threads] = (hc._scan_binned(f, g, groups=None, block_size=32, dtype=np.float64, progress=False, r_min=0.6,
                                        screen=screen, fdr_keep=0.05, histogram_bins=200, n=n, k_cond=0,
                                        threads=int(str(threads)[0])), [m for m in logged if "recomputing" in m])
    for threads in (2, 3):
        (fi, gi, rr, hist, r_keep), recomputed = out[threads]
        (fi1, gi1, rr1, hist1, r_keep1), recomputed1 = out[1]
        np.testing.assert_array_equal(fi, fi1)
        np.testing.assert_array_equal(gi, gi1)
        np.testing.assert_array_equal(rr, rr1)
        np.testing.assert_array_equal(hist, hist1)
        assert r_keep == r_keep1 and len(rr1) > 50
    assert out[2][1] == out["2 again"][1] and out[2][1]  # blocks were recomputed, the same ones


def test_within_group_r_is_pearson_r_of_the_group_centred_columns():
    rng = np.random.default_rng(3)
    groups = np.repeat(["a", "b", "c"], 20)
    shift = pd.Series({"a": 0.0, "b": 5.0, "c": -3.0})[groups].to_numpy()
    drivers = pd.DataFrame({"p": rng.normal(size=60) + shift, "q": rng.normal(size=60)})
    feats = pd.DataFrame({"f1": drivers.p + rng.normal(size=60) + 2 * shift, "f2": rng.normal(size=60) - shift,
                          "flat": shift})  # constant within every group
    r = hc.within_group_r(feats, drivers, groups=groups)
    centre = lambda v: v - pd.Series(v).groupby(groups).transform("mean").to_numpy()  # noqa: E731
    for f in ("f1", "f2"):
        for d in ("p", "q"):
            want = np.corrcoef(centre(feats[f].to_numpy()), centre(drivers[d].to_numpy()))[0, 1]
            assert r.at[f, d] == pytest.approx(want, abs=1e-12)
    assert r.loc["flat"].isna().all()  # no variance within groups: never a tracker
    assert r.at["f1", "p"] > 0.5  # the pooled shift (tissue) is removed, the within-group link stays
    with pytest.raises(ValueError, match="one row per sample"):
        hc.within_group_r(feats, drivers.iloc[:10], groups=groups)
