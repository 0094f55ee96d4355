"""Shared variance through PCs (Jones Q1) and confounder regression / variance partition (Q2, Q3A)."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from histo_utils import confounders as cf
from histo_utils import crossvariance as cv


def test_shared_variance_known_answer():
    """Image PCs: two independent signals with variance 3 and 1; expression carries only the first."""
    rng = np.random.default_rng(0)
    n = 4000
    a, b = rng.normal(size=n), rng.normal(size=n)
    image = np.c_[np.sqrt(3) * a, b]  # variance fractions 0.75 and 0.25
    expr = np.c_[a + 0.0 * rng.normal(size=n), rng.normal(size=n) * 0.1]
    res = cv.shared_variance(image, expr, var_fraction=1.0)
    assert res.n_pc_image == 2 and res.n_pc_expression == 2
    assert res.image == pytest.approx(0.75, abs=0.01)  # 0.75 * 1 + 0.25 * ~0
    # expression: PC1 (a, ~99 % of its variance) is fully explained by image PC1
    assert res.expression == pytest.approx(1 / 1.01, abs=0.01)
    # a weaker link: r(image PC1, expression) = 0.6 gives 0.75 * 0.36
    expr2 = np.c_[0.6 * a + 0.8 * rng.normal(size=n)]
    assert cv.shared_variance(image, expr2, var_fraction=1.0).image == pytest.approx(0.75 * 0.36, abs=0.02)


def test_null_is_large_with_many_pcs_and_detects_a_real_link():
    rng = np.random.default_rng(1)
    n = 40
    latent = rng.normal(size=(n, 2))
    image = latent @ rng.normal(size=(2, 60)) + 0.5 * rng.normal(size=(n, 60))
    expr_linked = latent @ rng.normal(size=(2, 200)) + 0.5 * rng.normal(size=(n, 200))
    expr_unlinked = rng.normal(size=(n, 2)) @ rng.normal(size=(2, 200)) + 0.5 * rng.normal(size=(n, 200))
    # 99.9 %: nearly n - 1 PCs on each side, so shuffled data share almost everything too
    full = cv.shared_variance_with_null(image, expr_unlinked, var_fraction=0.999, n_shuffles=50)
    assert full.image_null_mean > 0.8 and full.image_p > 0.05
    linked = cv.shared_variance_with_null(image, expr_linked, var_fraction=0.8, n_shuffles=100)
    unlinked = cv.shared_variance_with_null(image, expr_unlinked, var_fraction=0.8, n_shuffles=100)
    assert linked.image_shared > 0.5 and linked.image_p < 0.02
    assert unlinked.image_p > 0.05


def test_pca_components_and_limits(caplog):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 30))
    p = cv.pca(x, var_fraction=1.0)
    assert p.n_components == 9  # n - 1 components carry variance
    assert p.total_explained == pytest.approx(1.0)
    ref = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    np.testing.assert_allclose(p.explained, (ref / ref.sum())[:9], rtol=1e-10)
    assert cv.pca(x, var_fraction=0.5).total_explained >= 0.5
    with caplog.at_level("WARNING"):
        assert cv.pca(x, var_fraction=1.0, max_components=50).n_components == 9
    assert "at most 9" in caplog.text
    with pytest.raises(ValueError, match="var_fraction"):
        cv.pca(x, var_fraction=0)
    with pytest.raises(ValueError, match="NaN"):
        cv.pca(np.where(x > 2, np.nan, x))


def _samples(n=60, seed=3):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "SMTSISCH": rng.lognormal(6, 0.5, n).round(),
        "SMRIN": rng.normal(7, 1, n).round(1),
        "SMCENTER": rng.choice(["B1", "C1", "D1"], n),
        "AGE": rng.choice(["20-29", "50-59", "60-69"], n),
        "SEX": rng.choice([1, 2], n),
    }, index=[f"s{i}" for i in range(n)])


def test_batched_residuals_equal_statsmodels():
    s = _samples()
    d = cf.build_design(s)
    rng = np.random.default_rng(4)
    y = rng.normal(size=(len(s), 5)) + d.matrix.to_numpy() @ rng.normal(size=(d.matrix.shape[1], 5))
    res = cf.residualize(y, d.matrix)
    df = s.assign(lit=np.log1p(s.SMTSISCH.clip(lower=0)), y=y[:, 2])
    fit = smf.ols("y ~ lit + SMRIN + C(SMCENTER) + C(AGE) + C(SEX)", df).fit()
    np.testing.assert_allclose(res[:, 2], fit.resid.to_numpy(), atol=1e-10)
    # a rank-deficient design (a duplicated column) projects onto the same space
    x2 = np.c_[d.matrix.to_numpy(), d.matrix.to_numpy()[:, 1]]
    np.testing.assert_allclose(cf.residualize(y, x2), res, atol=1e-10)


def test_variance_partition_matches_type2_anova_and_recovers_effects():
    s = _samples(n=300, seed=5)
    rng = np.random.default_rng(6)
    lit = np.log1p(s.SMTSISCH.clip(lower=0))
    y_isch = 2.0 * (lit - lit.mean()) + rng.normal(size=300)  # ischemia-driven column
    y_rin = 0.8 * (s.SMRIN - 7) + rng.normal(size=300)  # RIN-driven column
    y_null = rng.normal(size=300)
    d = cf.build_design(s)
    vp = cf.variance_partition(np.c_[y_isch, y_rin, y_null], d, names=["isch", "rin", "null"])
    top = vp[vp.term != "(all)"].sort_values("unique_r2").groupby("column").tail(1).set_index("column").term
    assert top["isch"] == "log_ischemic_time" and top["rin"] == "RIN"
    df = s.assign(lit=lit, y=y_isch.to_numpy())
    fit = smf.ols("y ~ lit + SMRIN + C(SMCENTER) + C(AGE) + C(SEX)", df).fit()
    aov = sm.stats.anova_lm(fit, typ=2)
    row = vp[(vp.column == "isch") & (vp.term == "centre")].iloc[0]
    assert row.F == pytest.approx(aov.loc["C(SMCENTER)", "F"], rel=1e-8)
    assert row.p == pytest.approx(aov.loc["C(SMCENTER)", "PR(>F)"], rel=1e-6)
    tss = ((y_isch - y_isch.mean()) ** 2).sum()
    assert row.unique_r2 == pytest.approx(aov.loc["C(SMCENTER)", "sum_sq"] / tss, rel=1e-8)
    allrow = vp[(vp.column == "isch") & (vp.term == "(all)")].iloc[0]
    assert allrow.unique_r2 == pytest.approx(fit.rsquared, rel=1e-10)
    # the planted fraction var(2 lit) / var(y) is recovered (large sample: small sampling error)
    big = _samples(n=5000, seed=9)
    lit_b = np.log1p(big.SMTSISCH.clip(lower=0))
    y_b = 2.0 * (lit_b - lit_b.mean()) + np.random.default_rng(10).normal(size=5000)
    vp_b = cf.variance_partition(y_b.to_numpy()[:, None], cf.build_design(big))
    planted = np.var(2.0 * lit_b) / np.var(y_b)
    assert vp_b[vp_b.term == "log_ischemic_time"].unique_r2.iloc[0] == pytest.approx(planted, abs=0.02)


def test_model_choice_rules():
    s = _samples(n=200, seed=7)
    rng = np.random.default_rng(8)
    lit = np.log1p(s.SMTSISCH.clip(lower=0))
    y = np.c_[3 * (lit - lit.mean()) + rng.normal(size=200), rng.normal(size=200)]
    d = cf.build_design(s)
    assert cf.select_terms(y, d, method="all").all().all()
    sig = cf.select_terms(y, d, method="significant", alpha=0.001)
    fwd = cf.select_terms(y, d, method="forward", alpha=0.001)
    assert sig.loc[0, "log_ischemic_time"] and fwd.loc[0, "log_ischemic_time"]
    assert fwd.loc[0].sum() == 1 and fwd.loc[1].sum() == 0  # nothing else enters
    r = cf.residualize_selected(y, d, fwd)
    np.testing.assert_allclose(r[:, 1], y[:, 1] - y[:, 1].mean(), atol=1e-10)  # intercept only
    with pytest.raises(ValueError, match="Model choice 'lasso' not available"):
        cf.select_terms(y, d, method="lasso")


def test_design_handles_gtex_quirks():
    s = _samples(n=30)
    s.loc["s0", "SMTSISCH"] = -12  # GTEx has a few non-positive times
    s.loc["s1", "SMRIN"] = np.nan
    s["SMCENTER"] = "B1"  # one centre only in this tissue
    s.loc["s2", "AGE"] = "70-79"  # a level with a single sample
    d = cf.build_design(s)
    assert d.dropped["samples_missing"] == ["s1"] and "s1" not in d.matrix.index
    assert "centre" in d.dropped["constant_terms"] and "centre" not in d.terms
    assert d.dropped["merged_levels"]["age"] == ["70-79"]
    assert cf.log_ischemic_time([-12, 0, np.e - 1]).tolist() == pytest.approx([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="missing confounders"):
        cf.build_design(s, on_missing="raise")
    with pytest.raises(ValueError, match="lacks confounder columns"):
        cf.build_design(s.drop(columns="AGE"))
    with pytest.raises(ValueError, match="no residual degrees of freedom"):
        cf.residualize(np.ones((3, 2)), np.eye(3))


def test_null_of_residual_tables_stays_in_the_residual_space():
    """Unrelated tables residualised on the same 12-column design: a plain shuffle calls them linked, the
    Freedman–Lane null (shuffle, project back, PCA again) is calibrated and its values are fractions."""
    n = 40
    rates = {"plain": [], "fl_image": [], "fl_expression": []}
    for seed in range(30):
        rng = np.random.default_rng(seed)
        x = np.c_[np.ones(n), rng.normal(size=(n, 11))]
        image = cf.residualize(rng.normal(size=(n, 50)), x)
        expr = cf.residualize(rng.normal(size=(n, 300)), x)
        plain = cv.shared_variance_with_null(image, expr, var_fraction=0.95, n_shuffles=60, seed=seed)
        fl = cv.shared_variance_with_null(image, expr, var_fraction=0.95, n_shuffles=60, seed=seed, design=x)
        rates["plain"].append(plain.expression_p < 0.05)
        rates["fl_image"].append(fl.image_p < 0.05)
        rates["fl_expression"].append(fl.expression_p < 0.05)
    assert np.mean(rates["plain"]) > 0.8  # the artefact of a plain shuffle
    assert np.mean(rates["fl_image"]) <= 0.2 and np.mean(rates["fl_expression"]) <= 0.2  # nominal 0.05
    # at 99.9 % the expression PCs fill the residual space; projected shuffles are re-orthogonalised, so
    # null values stay fractions (summing squared correlations with correlated columns exceeded 1)
    ipca, epca = cv.pca(image, var_fraction=0.999), cv.pca(expr, var_fraction=0.999)
    null = cv.shared_variance_null(ipca, epca, n_shuffles=50, design=x)
    assert null.to_numpy().max() <= 1 + 1e-9 and null.to_numpy().min() >= 0


def _reference_null(image_pca, expression_pca, *, n_shuffles, seed, design=None):
    """The per-shuffle loop the batched null replaced (one permutation, projection and SVD at a time)."""
    rng = np.random.default_rng(seed)
    n = len(image_pca.scores)
    m = None
    if design is not None:
        u, sv, _ = np.linalg.svd(design, full_matrices=False)
        q = u[:, : int((sv > sv[0] * max(design.shape) * np.finfo(float).eps).sum())]
        m = np.eye(n) - q @ q.T
    rows = []
    lam_e = expression_pca.explained
    for _ in range(n_shuffles):
        shuffled = expression_pca.scores[rng.permutation(n)]
        if m is not None:
            u, sv, _ = np.linalg.svd(m @ shuffled, full_matrices=False)
            keep = sv > sv[0] * n * np.finfo(float).eps
            shuffled = u[:, keep] * sv[keep]
            lam_e = sv[keep] ** 2 / np.sum(sv[keep] ** 2) * float(np.sum(expression_pca.explained))
        r2 = cv.cross_correlation(image_pca.scores, shuffled) ** 2
        rows.append((float(image_pca.explained @ r2.sum(1)), float(lam_e @ r2.sum(0))))
    return pd.DataFrame(rows, columns=["image", "expression"])


@pytest.mark.parametrize("with_design", [False, True])
@pytest.mark.parametrize("var_fraction", [0.999, 0.8])
def test_batched_null_equals_the_per_shuffle_loop(with_design, var_fraction):
    """Same seed => the same permutations and the same null values as one shuffle at a time, also when the
    design leaves fewer residual dimensions than expression PCs (columns dropped per shuffle)."""
    rng = np.random.default_rng(7)
    n = 30
    x = np.c_[np.ones(n), rng.normal(size=(n, 6))] if with_design else None
    image, expr = rng.normal(size=(n, 40)), rng.normal(size=(n, 120))
    if with_design:
        image, expr = cf.residualize(image, x), cf.residualize(expr, x)
    ipca, epca = cv.pca(image, var_fraction=var_fraction), cv.pca(expr, var_fraction=var_fraction)
    fast = cv.shared_variance_null(ipca, epca, n_shuffles=25, seed=3, design=x)
    ref = _reference_null(ipca, epca, n_shuffles=25, seed=3, design=x)
    np.testing.assert_allclose(fast.to_numpy(), ref.to_numpy(), rtol=0, atol=1e-12)
    shared = cv.shuffle_expression(epca, n_shuffles=25, seed=3, design=x)  # reused for a second table
    other = cv.pca(rng.normal(size=(n, 15)), var_fraction=var_fraction)
    np.testing.assert_allclose(cv.shared_variance_null(other, shuffled=shared).to_numpy(),
                               _reference_null(other, epca, n_shuffles=25, seed=3, design=x).to_numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="samples"):
        cv.shared_variance_null(cv.pca(image[:-1], var_fraction=0.9), shuffled=shared)


def _reference_grid(tables, expr, tissue, *, var_fractions, n_shuffles, designs=None, top_features=None,
                    top_genes=None):
    """The grid as a plain loop over tables, tissues, fractions and layers: a fresh PCA of each side for
    every row and the per-shuffle null (no shared SVDs or shuffles)."""
    from histo_utils.data import feature_layer

    rows = []
    for key, table in tables.items():
        for t in sorted(tissue.unique()):
            ids = table.index.intersection(tissue.index[tissue == t]).intersection(expr.index)
            design = None if designs is None else designs[t].loc[ids].to_numpy(dtype=float)
            e = cv.select_columns(expr.loc[ids], top=top_genes, min_mean=None)
            layer_of = pd.Series(feature_layer(table.columns), index=table.columns)
            groups = {"all": table.columns, **layer_of.groupby(layer_of, sort=False).groups}
            for vf in var_fractions:
                epca = cv.pca(e.to_numpy(), var_fraction=vf)
                for lay, cols in groups.items():
                    f = cv.select_columns(table.loc[ids, cols], top=top_features)
                    xs = f.to_numpy(dtype=float)
                    ipca = cv.pca((xs - xs.mean(0)) / xs.std(0), var_fraction=vf)
                    null = _reference_null(ipca, epca, n_shuffles=n_shuffles, seed=0, design=design)
                    obs = cv.shared_variance_of_pcas(ipca, epca)
                    rows.append({"table": key, "tissue": t, "layer": lay, "var_fraction": vf,
                                 "n_pc_image": ipca.n_components, "n_pc_expression": epca.n_components,
                                 "image_shared": obs.image, "expression_shared": obs.expression,
                                 "image_null_mean": null.image.mean(), "expression_null_q95":
                                 null.expression.quantile(0.95), "image_p": (1 + (null.image >= obs.image - 1e-12)
                                                                              .sum()) / (1 + n_shuffles)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("residual", [False, True])
def test_grid_with_shared_svds_and_shuffles_equals_the_plain_loop(residual):
    """The grid reuses one SVD per table and layer for every fraction, and one set of shuffles per tissue and
    fraction for every table and layer: its rows equal a fresh computation of each row."""
    rng = np.random.default_rng(11)
    ids = [f"S{i}" for i in range(36)]
    tissue = pd.Series(["A"] * 18 + ["B"] * 18, index=ids)
    latent = rng.normal(size=(36, 2))
    cols = [f"{lay}_{c}" for lay in ("l1", "l2") for c in range(12)]
    tables = {name: pd.DataFrame(latent @ rng.normal(size=(2, 24)) + rng.normal(size=(36, 24)), index=ids,
                                 columns=cols) for name in ("net1", "net2")}
    expr = pd.DataFrame(latent @ rng.normal(size=(2, 60)) + rng.normal(size=(36, 60)) + 5, index=ids)
    designs = None
    if residual:
        designs = {t: pd.DataFrame(np.c_[np.ones(18), rng.normal(size=(18, 3))], index=ids[i * 18:(i + 1) * 18])
                   for i, t in enumerate("AB")}
        tables = {k: pd.concat([pd.DataFrame(cf.residualize(v.loc[d.index].to_numpy(), d.to_numpy()), index=d.index,
                                             columns=cols) for d in designs.values()]) for k, v in tables.items()}
        expr = pd.concat([pd.DataFrame(cf.residualize(expr.loc[d.index].to_numpy(), d.to_numpy()), index=d.index)
                          for d in designs.values()])
    opts = dict(var_fractions=(0.999, 0.9, 0.6), n_shuffles=30, designs=designs, top_features=10, top_genes=40)
    fast = cv.shared_variance_grid(tables, expr, tissue, layers=True, seed=0, gene_min_mean=None, **opts)
    ref = _reference_grid(tables, expr, tissue, **opts)
    assert len(fast) == len(ref) == 2 * 2 * 3 * 3
    keys = ["table", "tissue", "layer", "var_fraction"]
    assert fast[keys].equals(ref[keys])
    num = [c for c in ref.columns if c not in keys]
    np.testing.assert_allclose(fast[num].to_numpy(dtype=float), ref[num].to_numpy(dtype=float), atol=1e-12)
    assert (fast.image_shared - fast.image_null_mean).mean() > 0.05  # the planted latent link is seen
