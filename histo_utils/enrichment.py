"""Gene-set enrichment of ranked gene lists (Jones Q3, Q3A) and over-representation (Badea's annotation filter).

Formats are handled here, not in notebooks: gene sets are read from any GMT
file (gseapy itself wants a path ending in ``gmt`` or a dict; it gets a dict),
and expression gene IDs (GCT ``Name``, versioned Ensembl) are mapped to the
symbols GMT files use through the GCT ``Description`` column, with a report of
what did not map. Nothing is fetched from the internet.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .distributed import process_pool
from .io import read_gmt

log = logging.getLogger(__name__)

__all__ = ["load_gene_sets", "to_symbols", "set_coverage", "associations", "prerank", "prerank_many",
           "jaccard", "over_representation"]


def load_gene_sets(path: str | os.PathLike | None, *, universe: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Gene sets of a GMT file (any file name), optionally restricted to a universe of symbols.

    A missing file is an error that says where to put one: nothing is downloaded (no Enrichr).
    """
    if path is None or not Path(path).exists():
        raise FileNotFoundError(
            f"Gene-set file {str(path)!r} not found. Put a GMT file (e.g. MSigDB's c5.go.v2023.2.Hs.symbols.gmt, "
            f"downloaded once by hand) in the data directory or name it with the gmt_path parameter; "
            f"the synthetic cohort writes synthetic_gene_sets.gmt.")
    sets = read_gmt(path)
    if not sets:
        raise ValueError(f"Gene-set file '{path}' holds no gene sets.")
    if universe is not None:
        u = set(universe)
        sets = {k: [g for g in v if g in u] for k, v in sets.items()}
    return sets


def to_symbols(scores: pd.Series, symbols: pd.Series) -> tuple[pd.Series, dict]:
    """Re-index gene scores from expression IDs (GCT ``Name``) to symbols (GCT ``Description``).

    Genes without a symbol are dropped; when several IDs share a symbol the one with the largest |score| is
    kept. Returns the scores by symbol and a report of what happened.
    """
    sym = symbols.reindex(scores.index)
    missing = sym.isna() | (sym.astype(str).str.strip() == "")
    s = pd.Series(scores[~missing].to_numpy(), index=sym[~missing].astype(str).to_numpy())
    order = np.argsort(-np.abs(s.to_numpy()), kind="stable")
    s = s.iloc[order]
    dup = s.index.duplicated(keep="first")
    report = {"genes": len(scores), "without_symbol": int(missing.sum()), "duplicate_symbols": int(dup.sum()),
              "mapped": int((~dup).sum())}
    if report["without_symbol"] or report["duplicate_symbols"]:
        log.warning("Gene IDs to symbols: %d without a symbol, %d duplicates dropped (kept largest |score|)",
                    report["without_symbol"], report["duplicate_symbols"])
    return s[~dup].sort_values(ascending=False), report


def set_coverage(sets: Mapping[str, Sequence[str]], universe: Sequence[str]) -> pd.DataFrame:
    """How many genes of each set are in the ranked universe (genes of a set that do not map are reported)."""
    u = set(universe)
    rows = [{"gene_set": k, "size": len(v), "in_ranking": sum(g in u for g in v),
             "not_in_ranking": ";".join(sorted(g for g in v if g not in u)[:20])} for k, v in sets.items()]
    return pd.DataFrame(rows)


def associations(expression, features, *, n_conditioning: int = 0, fdr: float = 0.05, block_size: int = 2048
                 ) -> pd.DataFrame:
    """Linear models ``gene ~ feature`` for every gene and feature of residual tables, vectorised.

    For residuals of a regression on a design of rank ``n_conditioning + 1`` the slope of the residual
    regression equals the feature's coefficient in ``gene ~ feature + confounders`` (Frisch–Waugh), and its
    t test has ``n - 2 - n_conditioning`` degrees of freedom; the engine computes all pairs as correlations
    (``beta = r * sd_gene / sd_feature``, ``R² = r²``) and keeps the Benjamini–Hochberg rejections.

    Parameters
    ----------
    expression : DataFrame, shape (n_samples, n_genes), residuals
    features : DataFrame, shape (n_samples, n_features), residuals (same samples)
    n_conditioning : rank of the confounder design minus one (0 for raw tables)
    fdr : BH level over all gene × feature pairs

    Returns
    -------
    DataFrame of the pairs with BH q <= fdr: ``gene, feature, r, r2, beta, se, t, p, q, p_bonferroni``.
    """
    from .correlation import scan_pairs

    res = scan_pairs(features, expression, r_min=1.0, fdr_keep=fdr, block_size=block_size,
                     n_conditioning=n_conditioning)
    p = res.pairs
    p = p[p.q <= fdr].copy()
    sd_g = expression.std(ddof=1).to_numpy()
    sd_f = features.std(ddof=1).to_numpy()
    df = res.n_samples - 2 - n_conditioning
    p["beta"] = p.r * sd_g[p.gene] / sd_f[p.feature]
    p["t"] = p.r * np.sqrt(df / (1 - p.r ** 2))
    p["se"] = p.beta / p.t
    p["r2"] = p.r ** 2
    p["p_bonferroni"] = np.minimum(1.0, p.p * res.n_tests)
    p["gene"] = expression.columns[p.gene]
    p["feature"] = features.columns[p.feature]
    return p[["gene", "feature", "r", "r2", "beta", "se", "t", "p", "q", "p_bonferroni"]].reset_index(drop=True)


def prerank(scores: pd.Series, gene_sets: Mapping[str, Sequence[str]], *, permutations: int = 1000,
            min_size: int = 5, max_size: int = 500, seed: int = 0, threads: int = 1) -> tuple[pd.DataFrame, dict]:
    """Preranked GSEA (gseapy) of one ranked list.

    Parameters
    ----------
    scores : Series, symbol -> score (larger = more associated); ties and NaN are not allowed
    gene_sets : dict, set -> symbols

    Returns
    -------
    table : DataFrame, one row per tested set: ``term, es, nes, pval, fdr, fwer, matched, lead_genes``,
        sorted by |NES| (a set can be enriched at either end: negative NES means the genes fall at the bottom,
        e.g. for a feature that decreases as the program increases); gseapy reports FDR 0 when no
        permutation reached the observed score, i.e. below 1 / permutations
    curves : dict, term -> ``hits, RES, nes, pval, fdr`` (what :func:`gseapy.gseaplot` draws)
    """
    import gseapy

    if scores.isna().any():
        raise ValueError(f"The ranking has {int(scores.isna().sum())} NaN scores; drop them first.")
    pre = gseapy.prerank(rnk=scores.sort_values(ascending=False), gene_sets=dict(gene_sets),
                         permutation_num=permutations, min_size=min_size, max_size=max_size, seed=seed,
                         threads=threads, outdir=None, no_plot=True, verbose=False)
    t = pre.res2d.rename(columns={"Term": "term", "ES": "es", "NES": "nes", "NOM p-val": "pval",
                                  "FDR q-val": "fdr", "FWER p-val": "fwer", "Lead_genes": "lead_genes"})
    for c in ("es", "nes", "pval", "fdr", "fwer"):
        t[c] = pd.to_numeric(t[c], errors="coerce")
    t["matched"] = t.term.map(lambda k: len(pre.results[k]["matched_genes"].split(";")))
    t = t[["term", "es", "nes", "pval", "fdr", "fwer", "matched", "lead_genes"]]
    t = t.iloc[np.argsort(-t.nes.abs().to_numpy(), kind="stable")].reset_index(drop=True)
    curves = {k: {"hits": v["hits"], "RES": v["RES"], "nes": v["nes"], "pval": v["pval"], "fdr": v["fdr"]}
              for k, v in pre.results.items()}
    return t, curves


def _prerank_job(args):
    key, scores, sets, kw, keep_curves = args
    table, curves = prerank(scores, sets, **kw)
    return key, table, (curves if keep_curves else None)


def prerank_many(rankings: Mapping, gene_sets: Mapping[str, Sequence[str]], *, workers: int = 1,
                 curves: bool = True, **kwargs) -> tuple[pd.DataFrame, dict]:
    """:func:`prerank` for many ranked lists, in worker processes.

    Returns the tables concatenated (with a ``list`` column: the ranking's key) and the curves by key
    (``curves=False``: an empty dict; the running-sum curves of hundreds of lists take a lot of memory).
    """
    jobs = [(k, v, dict(gene_sets), kwargs, curves) for k, v in rankings.items()]
    if workers <= 1 or len(jobs) <= 1:
        done = [_prerank_job(j) for j in jobs]
    else:
        with process_pool(workers) as pool:
            done = list(pool.map(_prerank_job, jobs))
    tables = [t.assign(list=str(k)) for k, t, _ in done]
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), {k: c for k, _, c in done
                                                                                 if c is not None}


def jaccard(enriched: Mapping[str, set]) -> pd.DataFrame:
    """Jaccard index |A ∩ B| / |A ∪ B| between the enriched-set collections of every pair of lists."""
    keys = list(enriched)
    m = np.zeros((len(keys), len(keys)))
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            union = enriched[a] | enriched[b]
            m[i, j] = len(enriched[a] & enriched[b]) / len(union) if union else np.nan
    return pd.DataFrame(m, index=keys, columns=keys)


def over_representation(genes: Sequence[str], universe: Sequence[str], gene_sets: Mapping[str, Sequence[str]],
                        *, min_overlap: int = 1) -> pd.DataFrame:
    """Hypergeometric over-representation of a gene list against a background (gseapy's offline ``enrich``).

    Returns one row per set with ``term, overlap, set_in_universe, odds_ratio, p, q`` (BH), sorted by p.
    No gene of the list in any set is a result, not an error: an empty table with these columns (gseapy
    then returns a list and logs "No hits returned").
    """
    import gseapy

    u = set(universe)
    genes = [g for g in dict.fromkeys(genes) if g in u]
    sets = {k: [g for g in v if g in u] for k, v in gene_sets.items()}
    sets = {k: v for k, v in sets.items() if v}
    hit = set(genes) & {g for v in sets.values() for g in v}
    if not hit:
        log.warning("Over-representation: none of the %d listed genes is in any of the %d gene sets; "
                    "the result is an empty table", len(genes), len(sets))
        return _empty_ora()
    e = gseapy.enrich(gene_list=genes, gene_sets=sets, background=sorted(u), outdir=None, no_plot=True,
                      cutoff=1.0)
    if not isinstance(e.results, pd.DataFrame) or e.results.empty:  # gseapy: [] when nothing overlaps
        return _empty_ora()
    r = e.results.rename(columns={"Term": "term", "P-value": "p", "Adjusted P-value": "q", "Odds Ratio": "odds_ratio",
                                  "Overlap": "overlap", "Genes": "genes"})
    r["set_in_universe"] = r.term.map(lambda k: len(sets.get(k, [])))
    r = r[r.overlap.map(lambda o: int(str(o).split("/")[0]) >= min_overlap)]
    return r[["term", "overlap", "set_in_universe", "odds_ratio", "p", "q", "genes"]].sort_values("p").reset_index(
        drop=True)


def _empty_ora() -> pd.DataFrame:
    return pd.DataFrame({"term": pd.Series(dtype=object), "overlap": pd.Series(dtype=object),
                         "set_in_universe": pd.Series(dtype="int64"), "odds_ratio": pd.Series(dtype=float),
                         "p": pd.Series(dtype=float), "q": pd.Series(dtype=float), "genes": pd.Series(dtype=object)})
