"""Vectorised associations, ID mapping, preranked GSEA and over-representation."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from histo_utils import confounders as cf
from histo_utils import enrichment as en


def test_associations_equal_statsmodels_full_model():
    rng = np.random.default_rng(0)
    n = 60
    design = np.c_[np.ones(n), rng.normal(size=(n, 4))]
    feats = pd.DataFrame(rng.normal(size=(n, 6)) + design[:, 1:2], columns=[f"f{i}" for i in range(6)])
    genes = pd.DataFrame(rng.normal(size=(n, 40)) + design[:, 2:3], columns=[f"g{i}" for i in range(40)])
    genes["g7"] += 1.5 * feats["f2"]
    rf = pd.DataFrame(cf.residualize(feats, design), columns=feats.columns)
    rg = pd.DataFrame(cf.residualize(genes, design), columns=genes.columns)
    res = en.associations(rf, rg, n_conditioning=design.shape[1] - 1, fdr=0.05).set_index(["gene", "feature"])
    assert ("g7", "f2") in res.index
    fit = sm.OLS(genes["g7"].to_numpy(), np.c_[design, feats["f2"].to_numpy()]).fit()
    row = res.loc[("g7", "f2")]
    assert row.beta == pytest.approx(fit.params[-1], rel=1e-10)
    assert row.se == pytest.approx(fit.bse[-1], rel=1e-8)
    assert row.p == pytest.approx(fit.pvalues[-1], rel=1e-6)
    assert row.p_bonferroni == pytest.approx(min(1, fit.pvalues[-1] * 240), rel=1e-6)


def test_to_symbols_maps_and_reports():
    scores = pd.Series([3.0, -5.0, 1.0, 2.0], index=["ENSG1.1", "ENSG2.1", "ENSG3.1", "ENSG4.1"])
    symbols = pd.Series({"ENSG1.1": "A", "ENSG2.1": "A", "ENSG3.1": None, "ENSG4.1": "B"})
    s, rep = en.to_symbols(scores, symbols)
    assert s.to_dict() == {"B": 2.0, "A": -5.0}  # the larger |score| of the two A's kept; sorted by score
    assert rep == {"genes": 4, "without_symbol": 1, "duplicate_symbols": 1, "mapped": 2}


def test_prerank_finds_the_planted_set_not_the_decoys():
    rng = np.random.default_rng(1)
    genes = [f"SG{i:05d}" for i in range(1200)]
    scores = pd.Series(rng.normal(size=1200), index=genes)
    planted = list(rng.choice(genes, 30, replace=False))
    scores[planted] += 1.2
    rest = [g for g in genes if g not in planted]
    sets = {"PLANTED": planted, **{f"DECOY_{i}": list(rng.choice(rest, 30, replace=False)) for i in range(6)}}
    table, curves = en.prerank(scores, sets, permutations=500, seed=0)
    assert table.iloc[0].term == "PLANTED" and table.iloc[0].fdr < 0.05
    assert (table[table.term != "PLANTED"].fdr > 0.05).all()
    assert set(curves) == set(sets) and len(curves["PLANTED"]["RES"]) == 1200
    many, _ = en.prerank_many({"a": scores, "b": -scores}, sets, workers=2, permutations=200, seed=0)
    assert set(many.list) == {"a", "b"}
    assert many[(many.list == "b") & (many.term == "PLANTED")].nes.iloc[0] < 0


def test_over_representation_and_missing_gmt(tmp_path):
    universe = [f"G{i}" for i in range(500)]
    sets = {"S1": universe[:20], "S2": universe[100:120]}
    r = en.over_representation(universe[:15] + universe[300:305], universe, sets)
    assert r.iloc[0].term == "S1" and r.iloc[0].q < 1e-6 and r.iloc[0].overlap == "15/20"
    assert "S2" not in set(r.term) or r.set_index("term").loc["S2"].p > 0.05  # no overlap: nothing to report
    with pytest.raises(FileNotFoundError, match="Put a GMT file"):
        en.load_gene_sets(tmp_path / "none.gmt")
    (tmp_path / "sets.txt").write_text("S1\tdesc\tA\tB\tC\nS2\tdesc\tC\tD\n")
    assert en.load_gene_sets(tmp_path / "sets.txt", universe=["A", "C"]) == {"S1": ["A", "C"], "S2": ["C"]}
    j = en.jaccard({"x": {"S1", "S2"}, "y": {"S2"}, "z": set()})
    assert j.loc["x", "y"] == 0.5 and j.loc["x", "z"] == 0 and np.isnan(j.loc["z", "z"])


def test_associations_by_scope_spends_each_tissues_design():
    rng = np.random.default_rng(3)
    n = 30
    tissue = pd.Series(["A"] * n + ["B"] * n, index=[f"s{i}" for i in range(2 * n)])
    feats = pd.DataFrame(rng.normal(size=(2 * n, 3)), index=tissue.index, columns=["f0", "f1", "f2"])
    genes = pd.DataFrame(rng.normal(size=(2 * n, 5)), index=tissue.index, columns=[f"g{i}" for i in range(5)])
    genes["g1"] += 2 * feats["f0"]
    genes["g4"] = 1.0  # constant: left out
    designs = pd.DataFrame({"design_columns": [3, 4]}, index=["A", "B"])
    pairs, counts = en.associations_by_scope({"t": feats}, genes, tissue, designs, fdr=0.05)
    c = counts.set_index("scope")
    assert list(c.index) == ["A", "B", "pooled"] and (c.genes == 4).all() and (c.tests == 12).all()
    # each scope's test is the plain test with that scope's confounder degrees of freedom
    ref = en.associations(feats.loc[tissue == "B"], genes.loc[tissue == "B", ["g0", "g1", "g2", "g3"]],
                          n_conditioning=3, fdr=0.05)
    got = pairs[pairs.scope == "B"].drop(columns=["table", "scope"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref)
    pooled = en.associations(feats, genes.drop(columns="g4"), n_conditioning=6, fdr=0.05)
    assert pairs[pairs.scope == "pooled"].p.tolist() == pytest.approx(pooled.p.tolist(), rel=1e-9)
    per_feature = en.associations_per_feature(pairs)
    assert per_feature.set_index("feature").associations["f0"] >= 1
    with pytest.raises(ValueError, match="enough samples"):
        en.associations_by_scope({"t": feats}, genes, tissue, designs.assign(design_columns=[40, 40]))


def test_a_sample_without_features_in_one_table_is_left_out_of_its_tests_only(caplog):
    """Seed 1 of the default profile: one slide without a 512 px tile emptied that tissue's and the pooled scan."""
    rng = np.random.default_rng(4)
    n = 30
    tissue = pd.Series(["A"] * n + ["B"] * n, index=[f"s{i}" for i in range(2 * n)])
    feats = pd.DataFrame(rng.normal(size=(2 * n, 3)), index=tissue.index, columns=["f0", "f1", "f2"])
    genes = pd.DataFrame(rng.normal(size=(2 * n, 4)), index=tissue.index, columns=[f"g{i}" for i in range(4)])
    genes["g1"] += 2 * feats["f0"]
    designs = pd.DataFrame({"design_columns": [3, 4]}, index=["A", "B"])
    short = feats.drop(index="s3").reindex(tissue.index)  # as notebook 06 reindexes each table to the samples
    pairs, counts = en.associations_by_scope({"t": short}, genes, tissue, designs, fdr=0.05)
    c = counts.set_index("scope")
    assert c.loc["A", "samples"] == n - 1 and c.loc["pooled", "samples"] == 2 * n - 1
    assert (c.features == 3).all() and "s3" in caplog.text  # every feature tested, the sample reported
    ref = en.associations(feats.drop(index="s3"), genes.drop(index="s3"), n_conditioning=6, fdr=0.05)
    assert pairs[pairs.scope == "pooled"].p.tolist() == pytest.approx(ref.p.tolist(), rel=1e-9)
    # a feature column without values is dropped by the scan, it does not take every sample with it
    with_empty = short.assign(f_empty=np.nan)
    pairs2, counts2 = en.associations_by_scope({"t": with_empty}, genes, tissue, designs, fdr=0.05)
    assert counts2.set_index("scope").loc["pooled", "samples"] == 2 * n - 1
    assert pairs2[pairs2.scope == "pooled"].p.tolist() == pytest.approx(ref.p.tolist(), rel=1e-9)
    rankings, _ = en.feature_rankings({"t": short}, {("t", "f0"): "named"}, genes,
                                      pd.Series({g: g.upper() for g in genes.columns}))
    full, _ = en.feature_rankings({"t": feats.drop(index="s3")}, {("t", "f0"): "named"}, genes.drop(index="s3"),
                                  pd.Series({g: g.upper() for g in genes.columns}))
    assert rankings["t/f0"].index[0] == "G1" and np.isfinite(rankings["t/f0"]).all()
    pd.testing.assert_series_equal(rankings["t/f0"], full["t/f0"])


def test_choose_features_and_one_sided_ranking():
    per_feature = pd.DataFrame({"table": ["t"] * 3, "feature": ["a", "b", "c"], "associations": [5, 9, 1]})
    tables = {"t": pd.DataFrame(columns=["a", "b", "c", "d"])}
    chosen = en.choose_features(per_feature, tables, top_k=1, named=["t/d"],
                                trackers={"t": {"x": "b", "y": "c", "z": "missing"}})
    assert chosen == {("t", "b"): "most associations", ("t", "d"): "named", ("t", "c"): "tracks program_y"}
    with pytest.raises(ValueError, match="not available"):
        en.choose_features(per_feature, tables, named=["t/zz"])
    g = pd.DataFrame({"list": ["x", "x", "x", "y"], "term": ["a", "b", "c", "a"], "nes": [-3.0, 2.0, 1.0, 0.5]})
    r = en.rank_by_nes(g)
    assert r[r.list == "x"].term.tolist() == ["b", "c", "a"] and r["rank"].tolist() == [1, 2, 3, 1]


def test_annotation_filter_and_confounder_rankings():
    pairs = pd.DataFrame({"r": [0.9, -0.85, 0.95, 0.9], "max_median": [20, 20, 5, 20], "perm_p": [0, 0, 0, 0.1],
                          "symbol": ["A", "B", "C", "D"]})
    floor = pd.DataFrame({"max_median": [20, 20, 5, 20]}, index=["gA", "gB", "gC", "gD"])
    symbols = pd.Series({"gA": "A", "gB": "B", "gC": "C", "gD": "D"})
    sets = {"S1": ["A", "C"], "S2": ["B", "D"], "S3": ["D"]}
    carriers, correlated, universe, ann = en.annotation_filter(pairs, floor, symbols, sets, r_threshold=0.8,
                                                               e_threshold=10, perm_alpha=0.001)
    assert correlated == ["A", "B"] and universe == ["A", "B", "D"] and set(ann) == {"S1", "S2", "S3"}
    assert carriers.set_index("annotation").n.to_dict() == {"S1": 1, "S2": 1, "S3": 0}
    with pytest.raises(ValueError, match="not in the GMT"):
        en.annotation_filter(pairs, floor, symbols, sets, annotation_sets=["S9"])
    vp = pd.DataFrame({"term": ["RIN"] * 4 + ["(all)"], "gene": ["gA", "gB", "gA", "gB", "gA"],
                       "unique_r2": [0.1, 0.5, 0.3, 0.5, 0.9]})
    rk = en.confounder_rankings(vp, symbols)
    assert list(rk) == ["RIN"] and rk["RIN"].index.tolist() == ["B", "A"]
    assert rk["RIN"]["A"] == pytest.approx(0.2)


def test_planted_vs_decoys_table_and_figure():
    from histo_utils import truth

    gsea = pd.DataFrame({"list": ["t/f1"] * 4, "why": ["tracks program_a"] * 4,
                         "term": ["DECOY_1", "PLANTED_PROGRAM_A", "DECOY_2", "X"], "rank": [1, 2, 3, 4],
                         "nes": [2.1, -1.9, 0.4, 0.1], "fdr": [0.01, 0.02, 0.9, 0.9]})
    conf = pd.DataFrame({"list": ["RIN", "RIN", "RIN"], "term": ["PLANTED_RIN", "DECOY_1", "DECOY_2"],
                         "rank": [1, 2, 3], "nes": [2.6, 0.9, 0.5], "fdr": [0.0, 0.8, 0.9]})
    table = truth.gsea_planted_vs_decoys(gsea, conf)
    assert set(table.ranking) == {"t/f1", "confounder RIN"}
    f1 = table[table.ranking == "t/f1"]
    assert f1.kind.tolist() == ["decoy", "planted", "decoy", "other"]
    assert (f1.decoys_above == 1).all() and (f1.n_sets == 4).all()  # one decoy ranked above the planted set
    rin = table[table.ranking == "confounder RIN"]
    assert rin[rin.kind == "planted"].nes.item() == 2.6 and (rin.decoys_above == 0).all()
    text = truth.gsea_truth_reading(table)
    assert "PLANTED_PROGRAM_A ranks 2 of 4 (NES -1.90, FDR 0.02), after DECOY_1; decoys above it: 1." in text
    assert "largest |NES| 2.10" in text and "PLANTED_RIN ranks 1 of 3 (NES 2.60, FDR 0); decoys" in text
    from histo_utils import figures

    fig = figures.planted_vs_decoys(table)
    assert len(fig.axes[0].collections) == 3  # decoys, others, planted
    with pytest.raises(ValueError, match="No ranking with a planted set"):
        figures.planted_vs_decoys(table.iloc[:0])


def test_over_representation_is_the_same_table_in_every_process():
    """gseapy joins each term's genes from a Python set, whose order depends on the process's hash seed."""
    code = ("from histo_utils import enrichment as en; u=[f'G{i}' for i in range(500)]; "
            "print(en.over_representation(u[:15]+u[300:305], u, {'S1': u[:20], 'S2': u[10:30]}).to_csv())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(outs) == 1, outs
    genes = next(iter(outs)).splitlines()[1].split(",")[-1]
    assert genes.split(";") == sorted(genes.split(";"))
