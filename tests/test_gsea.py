"""Fast preranked GSEA (histo_utils.gsea) against gseapy: the same ES and leading edges, gseapy's statistics."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from histo_utils import enrichment as en
from histo_utils import gsea


def _case(n=1500, n_sets=60, seed=3):
    rng = np.random.default_rng(seed)
    genes = [f"G{i:05d}" for i in range(n)]
    sizes = rng.integers(8, 150, n_sets)
    sets = {f"S{i:03d}": list(rng.choice(genes, k, replace=False)) for i, k in enumerate(sizes)}
    sets["S000"] = sets["S000"] + ["NOT_IN_RANKING"]
    s = pd.Series(rng.normal(size=n), index=genes)
    for t in ("S000", "S001"):  # planted at the top
        s[sets[t][: len(sets[t]) // 2]] += 1.2
    s[[g for g in sets["S002"] if g in s.index][:40]] -= 1.2  # planted at the bottom
    return s, sets


def test_es_and_leading_edges_equal_gseapy_statistics_agree():
    s, sets = _case()
    ref, _ = en.prerank(s, sets, permutations=1000, seed=0, engine="gseapy")
    mine, curves = en.prerank(s, sets, permutations=1000, seed=0)
    ref, mine = ref.set_index("term"), mine.set_index("term")
    assert set(ref.index) == set(mine.index)
    mine = mine.loc[ref.index]
    np.testing.assert_allclose(mine.es, ref.es, atol=1e-12)
    assert (mine.lead_genes == ref.lead_genes).all()
    assert (mine.matched == ref.matched).all() and mine.loc["S000", "matched"] == len(sets["S000"]) - 1
    assert stats.spearmanr(mine.nes, ref.nes).statistic >= 0.99
    called_ref, called = set(ref.index[ref.fdr < 0.05]), set(mine.index[mine.fdr < 0.05])
    assert {"S000", "S002"} <= called and called == called_ref
    assert mine.loc["S002", "nes"] < 0 and ref.loc["S002", "nes"] < 0
    assert np.corrcoef(mine.pval, ref.pval)[0, 1] > 0.97 and np.abs(mine.pval - ref.pval).max() < 0.15
    # the running sum gseapy draws, for the sets looked up
    c = curves["S002"]
    assert len(c["RES"]) == len(s) and min(c["RES"]) == pytest.approx(mine.loc["S002", "es"], abs=1e-12)
    with pytest.raises(KeyError, match="was not tested"):
        curves["NOPE"]


def test_statistics_follow_gseapy_formulas():
    """NES, nominal p and FDR equal gseapy's reference functions given each set its size's null."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from gseapy import algorithm
    rng = np.random.default_rng(0)
    null = rng.normal(scale=0.3, size=(4, 500)) + rng.normal(scale=0.05, size=(4, 1))
    size_of_set = rng.integers(0, 4, 40)
    es = rng.normal(scale=0.4, size=40)
    counts = np.bincount(size_of_set, minlength=4)
    nes, pval, fdr, fwer = gsea._statistics(es, list(null), size_of_set, counts, 500)
    full = null[size_of_set]  # gseapy's layout: one null row per set
    ref = list(algorithm.gsea_significance(es, full))
    np.testing.assert_allclose(nes, [r[1] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(pval, [r[2] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(fdr, [r[3] for r in ref], rtol=1e-9)
    _, nnull = algorithm.normalize(es, full)
    top, bottom = np.where(nnull >= 0, nnull, -np.inf).max(0), np.where(nnull < 0, nnull, np.inf).min(0)
    expect = np.where(nes >= 0, (top[None] >= nes[:, None]).mean(1), (bottom[None] <= nes[:, None]).mean(1))
    np.testing.assert_allclose(fwer, expect)
    # two blocks of permutations for a size: its sets weigh as much in the pooled null as with one block
    doubled = [np.concatenate([x, x]) for x in null]
    again = gsea._statistics(es, doubled, size_of_set, counts, 500)
    for x, y in zip(again, (nes, pval, fdr, fwer)):
        np.testing.assert_allclose(x, y, rtol=1e-12)


def test_random_subsets_are_uniform_and_sorted():
    rng = np.random.default_rng(1)
    for n, k in ((60, 25), (60, 40)):  # sparse (redraws) and dense (random orders) paths
        x = gsea.random_subsets(n, k, 20000, rng)
        assert x.shape == (20000, k) and (np.diff(x, axis=1) > 0).all() and x.min() >= 0 and x.max() < n
        freq = np.bincount(x.ravel(), minlength=n)
        assert stats.chisquare(freq).pvalue > 1e-4
        both = ((x == 0).any(1) & (x == 1).any(1)).mean()  # pair inclusion k(k-1)/(n(n-1))
        assert both == pytest.approx(k * (k - 1) / (n * (n - 1)), abs=0.02)
    with pytest.raises(ValueError, match="between 1 and"):
        gsea.random_subsets(10, 11, 5, rng)


def test_lists_share_nulls_batches_do_not_change_numbers():
    s, sets = _case(n=800, n_sets=30, seed=5)
    frame = pd.DataFrame({"a": s, "b": -s, "c": s.sample(frac=1, random_state=2).to_numpy()}, index=s.index)
    together = gsea.prerank_lists(frame, sets, permutations=200, seed=4)
    alone = pd.concat([gsea.prerank_lists(frame[[c]], sets, permutations=200, seed=4) for c in frame])
    pd.testing.assert_frame_equal(together.reset_index(drop=True), alone.reset_index(drop=True))
    one_by_one = gsea.prerank_lists(frame, sets, permutations=200, seed=4, batch_lists=1)
    pd.testing.assert_frame_equal(together, one_by_one)
    a = together[together.list == "a"].set_index("term")
    b = together[together.list == "b"].set_index("term").loc[a.index]
    np.testing.assert_allclose(a.es, -b.es, atol=1e-12)  # reversed ranking: mirrored running sum
    with pytest.raises(ValueError, match="duplicated genes"):
        gsea.prerank_lists(pd.concat([frame, frame.iloc[:1]]), sets)
    with pytest.raises(ValueError, match="Available engines"):
        en.prerank(s, sets, engine="fgsea")
