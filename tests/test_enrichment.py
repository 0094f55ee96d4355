"""Vectorised associations, ID mapping, preranked GSEA and over-representation."""
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
