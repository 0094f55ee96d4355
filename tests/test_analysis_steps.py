"""The analysis steps notebooks 03-05 call (correlation, crossvariance, confounders), against direct computations."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from histo_utils import confounders as cf
from histo_utils import correlation as corr
from histo_utils import crossvariance as cv
from histo_utils.data import FeatureKey


# --------------------------------------------------------------------------------------------- correlation
def test_null_r_density_is_the_beta_law_of_r():
    r = np.linspace(-0.99, 0.99, 201)
    for n in (5, 12, 40):
        a = n / 2 - 1  # (r + 1) / 2 ~ Beta(n/2 - 1, n/2 - 1) under no correlation
        np.testing.assert_allclose(corr.null_r_density(r, n), stats.beta.pdf((r + 1) / 2, a, a) / 2, rtol=1e-10)


def _paired(n=30, nf=6, ng=8, seed=0):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame(rng.normal(size=(n, nf)), columns=[f"{i // 3}_{i % 3}" for i in range(nf)])
    g = pd.DataFrame(rng.normal(size=(n, ng)), columns=[f"G{i}" for i in range(ng)])
    g["G0"] = f["0_1"] * 3 + 0.1 * rng.normal(size=n)  # one planted pair
    return f, g


def test_named_pairs_and_genes_per_layer():
    f, g = _paired()
    scan = corr.scan_pairs(f, g, r_min=0.9, fdr_keep=0)
    named = corr.named_pairs(scan.pairs, f, g)
    assert named[["feature", "gene"]].values.tolist() == [["0_1", "G0"]]
    pairs = pd.DataFrame({"layer": ["0", "0", "0", "1"], "gene": ["a", "a", "b", "a"], "tissue": ["L", "L", "M", "L"]})
    counts = corr.genes_per_layer(pairs, ["0", "1", "2"], by="tissue")
    assert counts.loc["0"].tolist() == [1, 1] and counts.loc["1"].tolist() == [1, 0]  # gene a once in layer 0
    assert counts.loc["2"].tolist() == [0, 0]


def test_significant_counts_by_table_finds_the_planted_pair_in_each_table():
    f, g = _paired(n=40)
    floor = pd.DataFrame({"max_median": 12.0, "max_tissue": "Liver"}, index=g.columns)
    tables = {FeatureKey("trained", 256): f, FeatureKey("untrained", 512): f.assign(**{"1_2": 1.0})}
    out = corr.significant_counts_by_table(tables, g, floor, r_threshold=0.8, e_threshold=10, n_permutations=200,
                                           perm_alpha=0.01)
    assert out.network.tolist() == ["trained", "untrained"] and out.tile_px.tolist() == [256, 512]
    assert out.pairs.tolist() == [1, 1] and out.genes.tolist() == [1, 1]
    assert out.features_tested.tolist() == [6, 5]  # the constant column is left out
    floor["max_median"] = 5.0  # below E_T: nothing reported
    assert corr.significant_counts_by_table(tables, g, floor, r_threshold=0.8, e_threshold=10,
                                            n_permutations=50).pairs.tolist() == [0, 0]


def test_significant_counts_by_table_scans_a_table_missing_samples_on_those_it_has(caplog):
    """A slide too small for a 1,024-px tile has no row in that size's table: the table is scanned on the
    samples it has (before: 'features have 9 samples and expression 10' stopped notebook 03)."""
    f, g = _paired(n=40)
    f.index = g.index = [f"S{i}" for i in range(40)]
    floor = pd.DataFrame({"max_median": 12.0, "max_tissue": "Liver"}, index=g.columns)
    tables = {FeatureKey("trained", 256): f, FeatureKey("trained", 1024): f.iloc[3:]}
    with caplog.at_level("WARNING", logger="histo_utils.correlation"):
        out = corr.significant_counts_by_table(tables, g, floor, r_threshold=0.8, e_threshold=10,
                                               n_permutations=100, perm_alpha=0.05)
    assert out.samples.tolist() == [40, 37] and out.pairs.tolist() == [1, 1]
    assert "has 37 of the 40 samples" in caplog.text
    alone = corr.significant_counts_by_table({FeatureKey("trained", 1024): f.iloc[3:]}, g.iloc[3:], floor,
                                             r_threshold=0.8, e_threshold=10, n_permutations=100, perm_alpha=0.05)
    assert alone.drop(columns="samples").equals(out.iloc[[1]].drop(columns="samples").reset_index(drop=True))


def test_reproducibility_of_identical_and_unrelated_splits():
    f, g = _paired(n=40)
    reported = pd.DataFrame({"feature": ["0_1"], "gene": ["G0"], "r": [np.corrcoef(f["0_1"], g["G0"])[0, 1]]})
    same = corr.reproducibility(f, g, f.assign(**{"1_0": 2.0}), g, reported, split="a", replicate_split="b")
    assert same.summary["z_correlation"] == pytest.approx(1.0)
    assert same.summary["reported_sign_agreement"] == 1.0 and same.summary["reported_pairs"] == 1
    assert same.summary["split"] == "a" and same.summary["replicate_split"] == "b"
    assert "1_0" not in set(same.sample.feature)  # constant on the replicate split: left out
    assert same.reported.r_replicate.iloc[0] == pytest.approx(reported.r.iloc[0])
    f2, g2 = _paired(n=40, seed=5)
    other = corr.reproducibility(f, g.drop(columns="G0"), f2, g2, reported.iloc[:0])
    assert abs(other.summary["z_correlation"]) < 0.3 and other.summary["reported_pairs"] == 0


def test_indirect_dependencies_count_the_tests():
    rng = np.random.default_rng(3)
    tissue = np.repeat(["A", "B", "C"], 20)
    shift = pd.Series(tissue).map({"A": 0.0, "B": 3.0, "C": 6.0}).to_numpy()
    f = pd.DataFrame({"0_0": shift + rng.normal(size=60), "0_1": rng.normal(size=60)})
    g = pd.DataFrame({"tissue_gene": shift + rng.normal(size=60)})
    g["direct_gene"] = f["0_1"] + 0.3 * rng.normal(size=60)
    pairs = pd.DataFrame({"feature": ["0_0", "0_1"], "gene": ["tissue_gene", "direct_gene"]})
    pairs["r"] = [np.corrcoef(f[a], g[b])[0, 1] for a, b in zip(pairs.feature, pairs.gene)]
    out, table = corr.indirect_dependencies(f, g, pairs, tissue, alphas=[0.01, 0.05])
    np.testing.assert_allclose(out.r_partial, corr.pair_correlations(f, g, [0, 1], [0, 1], groups=tissue))
    assert out.p_g_t_f.iloc[0] > 0.05 and out.p_g_t_f.iloc[1] < 1e-6  # tissue pair indirect, direct pair not
    assert table.alpha.tolist() == [0.01, 0.05] and table.pairs.tolist() == [2, 2]
    assert table["g–t–f"].tolist() == [int((out.p_g_t_f > a).sum()) for a in (0.01, 0.05)]
    assert set(corr.CI_COLUMNS) <= set(out.columns)


# --------------------------------------------------------------------------------------------- crossvariance
def _linked(n=60, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    return (latent @ rng.normal(size=(2, 20)) + 0.3 * rng.normal(size=(n, 20)),
            latent @ rng.normal(size=(2, 40)) + 0.3 * rng.normal(size=(n, 40)))


def test_one_mode_per_function_same_numbers():
    image, expr = _linked()
    ipca, epca = cv.pca(image, var_fraction=0.9), cv.pca(expr, var_fraction=0.9)
    a = cv.shared_variance(image, expr, var_fraction=0.9)
    b = cv.shared_variance_of_pcas(ipca, epca)
    assert (a.image, a.expression) == (b.image, b.expression)
    with pytest.raises(ValueError, match="align them first"):
        cv.shared_variance_of_pcas(ipca, cv.pca(expr[:50], var_fraction=0.9))
    t1 = cv.shared_variance_with_null(image, expr, var_fraction=0.9, n_shuffles=30, seed=2)
    t2 = cv.shared_variance_test(ipca, epca, n_shuffles=30, seed=2)
    assert t1 == t2 and t1.image_shared == a.image and t1.image_p < 0.05
    rec = t1.as_record()
    assert list(rec)[:3] == ["n_samples", "n_pc_image", "n_pc_expression"] and rec["n_samples"] == 60
    assert rec["image_excess"] == pytest.approx(rec["image_shared"] - rec["image_null_mean"])
    assert a.cross_table().shape == (a.n_pc_image, a.n_pc_expression)
    assert a.cross_table().index[0] == "image_PC1" and a.cross_table().columns[-1] == f"expression_PC{a.n_pc_expression}"


def test_shared_variance_by_tissue_and_grid_keys():
    image, expr = _linked(n=80)
    ids = [f"S{i}" for i in range(80)]
    feats = pd.DataFrame(image, index=ids, columns=[f"{i // 5}_{i % 5}" for i in range(20)])
    log_expr = pd.DataFrame(expr + 5, index=ids, columns=[f"G{i}" for i in range(40)])
    tissue = pd.Series(np.repeat(["B", "A"], 40), index=ids)
    by = cv.shared_variance_by_tissue(feats, log_expr, tissue, var_fraction=0.9)
    assert list(by) == ["A", "B"]
    sub = feats.loc[tissue == "A"]
    direct = cv.shared_variance(((sub - sub.mean()) / sub.std()).to_numpy(), log_expr.loc[tissue == "A"].to_numpy(),
                                var_fraction=0.9)
    assert by["A"].image == pytest.approx(direct.image) and by["A"].expression == pytest.approx(direct.expression)
    key = FeatureKey("trained", 256, "mean")
    grid = cv.shared_variance_grid({key: feats}, log_expr, tissue, layers=True, var_fractions=[0.9], n_shuffles=20,
                                   min_samples=10)
    assert (grid.network == "trained").all() and (grid.tile_px == 256).all() and (grid.aggregation == "mean").all()
    assert set(grid.layer) == {"all", "0", "1", "2", "3"}
    s = cv.summarize_against_null(grid, ["tissue"])
    assert s.rows.tolist() == [5, 5]
    assert s.image_above_null.tolist() == grid.groupby("tissue").image_p.apply(lambda p: int((p < 0.05).sum())).tolist()
    residual = grid.assign(image_shared=grid.image_shared / 2, expression_shared=0.0)
    both = cv.technical_share(grid, residual)
    np.testing.assert_allclose(both.image_technical, grid.image_shared / 2)
    np.testing.assert_allclose(both.expression_technical, grid.expression_shared)


# --------------------------------------------------------------------------------------------- confounders
def _cohort(n_per=30, seed=0):
    """Two tissues; gene RIN_gene = 1.5 * RIN, gene centre_gene shifted by centre; a third tissue too small."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per + 4
    s = pd.DataFrame({"SMTS": ["Liver"] * n_per + ["Lung"] * n_per + ["Tiny"] * 4,
                      "SMTSISCH": rng.uniform(-10, 900, n), "SMRIN": rng.uniform(5, 9, n),
                      "SMCENTER": rng.choice(["B1", "C1"], n), "AGE": rng.choice(["20-29", "60-69"], n),
                      "SEX": rng.choice([1, 2], n)}, index=[f"S{i}" for i in range(n)])
    e = pd.DataFrame(rng.normal(size=(n, 6)) + 4, index=s.index, columns=[f"G{i}" for i in range(6)])
    e["RIN_gene"] = 4 + 1.5 * (s.SMRIN - 7) + 0.3 * rng.normal(size=n)
    e["centre_gene"] = 4 + 2.0 * (s.SMCENTER == "C1") + 0.3 * rng.normal(size=n)
    e["low_gene"] = 0.1 * rng.random(n)
    e["flat_gene"] = 3.0
    f = pd.DataFrame(rng.normal(size=(n, 4)), index=s.index, columns=["0_0", "0_1", "1_0", "1_1"])
    f["1_1"] = 10 * (s.SMCENTER == "C1") + rng.normal(size=n)
    return s.assign(log_isch=cf.log_ischemic_time(s.SMTSISCH)), e, f


def test_spec_designs_and_gene_selection():
    assert list(cf.confounder_spec(["sex", "RIN"])) == ["sex", "RIN"]
    with pytest.raises(ValueError, match=r"Confounder 'batch' not available"):
        cf.confounder_spec(["RIN", "batch"])
    s, e, _ = _cohort()
    designs, notes = cf.build_designs(s, min_samples=10)
    assert list(designs) == ["Liver", "Lung"] and notes.tissue.tolist() == ["Liver", "Lung"]
    assert notes.samples.tolist() == [30, 30]
    assert notes.ischemic_time_le_0.tolist() == [int((s[s.SMTS == t].SMTSISCH <= 0).sum()) for t in ("Liver", "Lung")]
    kept = cf.expressed_genes(e, designs["Liver"], min_mean=1.0)
    assert "low_gene" not in kept and "flat_gene" not in kept and "RIN_gene" in kept and len(kept) == 30


def test_residuals_are_orthogonal_to_the_design_and_stack_by_tissue():
    s, e, f = _cohort()
    designs, _ = cf.build_designs(s, min_samples=10)
    d = designs["Liver"]
    res, keep = cf.residual_table(e, d)
    assert "flat_gene" not in res and keep.all().all()
    x = d.matrix.to_numpy()
    assert np.abs(x.T @ res.to_numpy()).max() < 1e-8
    np.testing.assert_allclose(res.to_numpy(), cf.residualize(e.loc[d.matrix.index, res.columns].to_numpy(), x))
    stacked = cf.residualize_expression_by_tissue(e, designs, gene_min_mean=1.0)
    assert len(stacked) == 60 and "low_gene" not in stacked and not stacked["RIN_gene"].isna().any()
    feats = cf.residualize_by_tissue(f, designs)
    assert feats.shape == (60, 4) and np.abs(feats.loc[d.matrix.index].to_numpy().T @ x).max() < 1e-8


def test_variance_partition_finds_the_planted_confounders():
    s, e, f = _cohort(n_per=60)
    designs, _ = cf.build_designs(s, min_samples=10)
    part = cf.variance_by_confounder(f, e, designs, symbols=pd.Series("sym", index=e.columns), gene_min_mean=1.0)
    top = part.genes[part.genes.term != "(all)"].sort_values("unique_r2").groupby(["tissue", "gene"]).tail(1)
    top = top.set_index(["tissue", "gene"]).term
    assert top.loc[("Liver", "RIN_gene")] == "RIN" and top.loc[("Lung", "centre_gene")] == "centre"
    assert (part.genes.symbol == "sym").all()
    share = cf.largest_term_share(part.features)
    assert share.sum() == pytest.approx(1.0)
    ov = part.overall.set_index(["tissue", "table", "term"])
    assert ov.loc[("Liver", "image features", "centre"), "fraction_of_variance"] > 0.1
    diag = cf.strongest_columns(part, f, e, s, designs, ["RIN", "centre"])
    chosen = diag.chosen.set_index(["confounder", "kind"]).column
    assert chosen[("RIN", "gene")] == "RIN_gene" and chosen[("centre", "feature")] == "1_1"
    rin = diag.scatter[(diag.scatter.confounder == "RIN") & (diag.scatter.kind == "gene")]
    assert len(rin) == 60 and rin.y.tolist() == e.loc[s.index[s.SMTS == diag.chosen.tissue[0]], "RIN_gene"].tolist()
    fit = diag.fitted
    np.testing.assert_allclose(fit.fitted + fit.residual, diag.scatter.y.astype(float).to_numpy())


def test_model_choices_remove_less_with_fewer_terms():
    s, e, f = _cohort(n_per=40)
    designs, _ = cf.build_designs(s, min_samples=10)
    choice = cf.compare_model_choices(f, e, designs, n_shuffles=20, top_genes=None).set_index(["model_choice", "tissue"])
    n_terms = len(designs["Liver"].terms)
    assert choice.loc[("all", "Liver"), "terms_per_gene"] == n_terms
    assert choice.loc[("forward", "Liver"), "terms_per_gene"] < n_terms
    assert (choice.loc["all"].expression_variance_removed >= choice.loc["forward"].expression_variance_removed - 1e-9).all()
    assert choice.expression_p.between(0, 1).all()
