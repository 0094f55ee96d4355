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
from .errors import InputError, InputKeyError, InputTypeError, MissingInputError
from .correlation import correlation_blocks, scan_pairs
from .gsea import prerank_lists

log = logging.getLogger(__name__)

__all__ = ["load_gene_sets", "to_symbols", "set_coverage", "associations", "associations_by_scope",
           "associations_per_feature", "choose_features", "feature_rankings", "confounder_rankings", "prerank",
           "prerank_many", "RunningSums", "rank_by_nes", "jaccard", "over_representation", "annotation_filter", "summarize_lists"]


def load_gene_sets(path: str | os.PathLike | None, *, universe: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Gene sets of a GMT file (any file name), optionally restricted to a universe of symbols.

    A missing file is an error that says where to put one: nothing is downloaded (no Enrichr).

    Parameters
    ----------
    path : path of the GMT file
    universe : symbols to keep in each set (None: all)

    Returns
    -------
    dict, set name -> list of symbols (in the file's order).
    """
    if path is None or not Path(path).exists():
        raise MissingInputError(
            f"Gene-set file {str(path)!r} not found. Put a GMT file (e.g. MSigDB's c5.go.v2023.2.Hs.symbols.gmt, "
            f"downloaded once by hand) in the data directory or name it with the gmt_path parameter; "
            f"the synthetic cohort writes synthetic_gene_sets.gmt.")
    sets = read_gmt(path)
    if not sets:
        raise InputError(f"Gene-set file '{path}' holds no gene sets.")
    if universe is not None:
        u = set(universe)
        sets = {k: [g for g in v if g in u] for k, v in sets.items()}
    return sets


def to_symbols(scores: pd.Series, symbols: pd.Series) -> tuple[pd.Series, dict]:
    """Re-index gene scores from expression IDs (GCT ``Name``) to symbols (GCT ``Description``).

    Genes without a symbol are dropped; when several IDs share a symbol the one with the largest |score| is
    kept.

    Parameters
    ----------
    scores : Series, gene ID -> score (n_genes)
    symbols : Series, gene ID -> symbol

    Returns
    -------
    scores : Series, symbol -> score, sorted descending
    report : dict ``genes, without_symbol, duplicate_symbols, mapped``
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
    """How many genes of each set are in the ranked universe (genes of a set that do not map are reported).

    Parameters
    ----------
    sets : dict, set -> symbols
    universe : the symbols of the ranking

    Returns
    -------
    DataFrame, one row per set: ``gene_set, size, in_ranking, not_in_ranking`` (up to 20 missing symbols,
    ;-joined).
    """
    u = set(universe)
    rows = [{"gene_set": k, "size": len(v), "in_ranking": sum(g in u for g in v),
             "not_in_ranking": ";".join(sorted(g for g in v if g not in u)[:20])} for k, v in sets.items()]
    return pd.DataFrame(rows)


def associations(features: pd.DataFrame, expression: pd.DataFrame, *, n_conditioning: int = 0, fdr: float = 0.05,
                 block_size: int = 2048) -> pd.DataFrame:
    """Linear models ``gene ~ feature`` for every gene and feature of residual tables, vectorised.

    For residuals of a regression on a design of rank ``n_conditioning + 1`` the slope of the residual
    regression equals the feature's coefficient in ``gene ~ feature + confounders`` (Frisch–Waugh), and its
    t test has ``n - 2 - n_conditioning`` degrees of freedom; the engine computes all pairs as correlations
    (``beta = r * sd_gene / sd_feature``, ``R² = r²``) and keeps the Benjamini–Hochberg rejections.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features)
        Residual image features.
    expression : DataFrame, shape (n_samples, n_genes)
        Residual expression, same samples in the same order.
    n_conditioning : int
        Rank of the confounder design minus one (0 for raw tables).
    fdr : float
        BH level over all gene × feature pairs.

    Returns
    -------
    DataFrame of the pairs with BH q <= fdr: ``gene, feature, r, r2, beta, se, t, p, q, p_bonferroni``.

    Examples
    --------
    >>> pairs = associations(residual_features, residual_expression, n_conditioning=4)   # doctest: +SKIP
    """
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


def _non_constant(table: pd.DataFrame) -> pd.DataFrame:
    """Columns without missing values and with SD above 1e-10 (residuals of a constant are ~1e-16)."""
    t = table.dropna(axis=1)
    return t.loc[:, t.std() > 1e-10]


def _samples_in_table(features: pd.DataFrame, ids: pd.Index, name: str) -> pd.Series:
    """Which of ``ids`` a feature table holds (a row with any value; bool Series indexed by ``ids``); the others
    (e.g. a slide without a tile of this size: a row of NaN after reindexing) are logged and left out of that
    table's tests, not fatal. Columns with NaN in some rows are left to :func:`_non_constant`, as before."""
    complete = features.reindex(ids).notna().any(axis=1)
    if not complete.all():
        log.warning("%s: %d of %d samples have no features in this table (e.g. %s: no tile of this size?); "
                    "they are left out of its tests", name, int((~complete).sum()), len(ids),
                    list(complete.index[~complete][:3]))
    return complete


def associations_by_scope(features: Mapping[str, pd.DataFrame], expression: pd.DataFrame, tissue: pd.Series,
                          designs: pd.DataFrame, *, fdr: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`associations` per tissue and pooled over tissues, for every residual feature table.

    Each tissue's residuals were fitted on that tissue's design: a tissue spends ``design_columns - 1``
    degrees of freedom on its confounders; the pooled residuals spend the sum over tissues of
    ``design_columns``, minus one (one design per tissue). A scope with fewer than one degree of freedom
    left is skipped with a warning.

    Parameters
    ----------
    features : dict, table name -> DataFrame, shape (n_samples, n_features), residual features
    expression : DataFrame, shape (n_samples, n_genes), residual expression (index: sample)
    tissue : Series, sample -> tissue, indexed like ``expression``
    designs : DataFrame indexed by tissue with ``design_columns`` (notebook 05's ``designs.tsv``)
    fdr : BH level of each scope's test

    Returns
    -------
    pairs : DataFrame, the BH-significant pairs of every (table, scope): :func:`associations`' columns plus
        ``table, scope``
    counts : DataFrame, one row per (table, scope): ``samples, genes, features, tests, associations_bh,
        associations_bonferroni, genes_associated, features_associated``
    """
    pairs, counts = [], []
    scopes = {t: tissue.index[tissue == t] for t in designs.index} | {"pooled": tissue.index}
    for name, feats in features.items():
        complete = _samples_in_table(feats, tissue.index, name)
        for scope, ids in scopes.items():
            ids = ids[complete.reindex(ids, fill_value=False).to_numpy()]
            e = _non_constant(expression.loc[ids])
            f = _non_constant(feats.loc[ids])
            spent = (int(designs.loc[scope, "design_columns"]) - 1 if scope != "pooled"
                     else int(designs.design_columns.sum()) - 1)
            if len(ids) - 2 - spent < 1:
                log.warning("%s: %d samples leave %d degrees of freedom after the confounders; skipped.", scope,
                            len(ids), len(ids) - 2 - spent)
                continue
            a = associations(f, e, n_conditioning=spent, fdr=fdr).assign(table=name, scope=scope)
            pairs.append(a)
            counts.append({"table": name, "scope": scope, "samples": len(ids), "genes": e.shape[1],
                           "features": f.shape[1], "tests": e.shape[1] * f.shape[1], "associations_bh": len(a),
                           "associations_bonferroni": int((a.p_bonferroni < fdr).sum()),
                           "genes_associated": a.gene.nunique(), "features_associated": a.feature.nunique()})
    if not pairs:
        raise InputError("No tissue (nor the pooled residuals) has enough samples left after the confounders for "
                         "an association test; use fewer confounders in notebook 05 or more samples.")
    return pd.concat(pairs, ignore_index=True), pd.DataFrame(counts)


def associations_per_feature(pairs: pd.DataFrame) -> pd.DataFrame:
    """Number of associated genes of each feature on the pooled residuals.

    Parameters
    ----------
    pairs : DataFrame
        :func:`associations_by_scope` pairs (``table, scope, feature``).

    Returns
    -------
    DataFrame ``table, feature, associations``, one row per feature with at least one pooled pair.
    """
    return (pairs[pairs.scope == "pooled"].groupby(["table", "feature"]).size().rename("associations")
            .reset_index())


def choose_features(per_feature: pd.DataFrame, tables: Mapping[str, pd.DataFrame], *, top_k: int = 3,
                    named: Sequence[str] = (), trackers: Mapping[str, Mapping[str, str]] | None = None
                    ) -> dict[tuple[str, str], str]:
    """The features whose gene rankings go to GSEA, each with the reason it was chosen.

    Parameters
    ----------
    per_feature : :func:`associations_per_feature` output
    tables : dict, table name -> residual feature table (the features that can be chosen)
    top_k : features per table with the most pooled associations
    named : ``"table/feature"`` strings chosen by hand
    trackers : table name -> {program: feature} (synthetic cohort: the feature tracking each program), or None

    Returns
    -------
    dict, (table, feature) -> ``"most associations"``, ``"named"`` or ``"tracks program_<name>"``, in that
    order of precedence (a feature keeps its first reason).
    """
    chosen = {}
    for name in tables:
        top = per_feature[per_feature.table == name].nlargest(top_k, "associations").feature
        chosen.update({(name, f): "most associations" for f in top})
    for item in named:
        name, feat = item.split("/", 1)
        if name not in tables or feat not in tables[name].columns:
            raise InputError(f"Feature {item!r} not available: give table/feature with a table of {list(tables)}.")
        chosen[(name, feat)] = "named"
    for name, by_program in (trackers or {}).items():
        for prog, best in by_program.items():
            if best in tables[name].columns:
                chosen.setdefault((name, best), f"tracks program_{prog}")
    return chosen


def feature_rankings(features: Mapping[str, pd.DataFrame], chosen: Mapping[tuple[str, str], str],
                     expression: pd.DataFrame, symbols: pd.Series) -> tuple[dict[str, pd.Series], dict[str, dict]]:
    """Every gene ranked by the signed variance a chosen feature explains, sign(r) r², by symbol.

    Parameters
    ----------
    features : dict, table name -> DataFrame, shape (n_samples, n_features), indexed like ``expression``
    chosen : (table, feature) -> reason (:func:`choose_features`)
    expression : DataFrame, shape (n_samples, n_genes), residual expression; constant genes are left out
    symbols : Series, gene ID -> symbol

    Returns
    -------
    rankings : dict, ``"table/feature"`` -> Series, symbol -> score (sorted, descending)
    reports : dict, ``"table/feature"`` -> the ID mapping report of :func:`to_symbols`
    """
    ids = expression.index
    rankings, reports = {}, {}
    for name, feat in chosen:
        keep = _samples_in_table(features[name][[feat]], ids, name).to_numpy()
        e_all = _non_constant(expression[keep])
        r = next(correlation_blocks(features[name].reindex(ids).loc[keep, [feat]], e_all,
                                    block_size=e_all.shape[1]))[1][0]
        key = f"{name}/{feat}"
        rankings[key], reports[key] = to_symbols(pd.Series(np.sign(r) * r ** 2, index=e_all.columns), symbols)
    return rankings, reports


def confounder_rankings(variance: pd.DataFrame, symbols: pd.Series) -> dict[str, pd.Series]:
    """Genes ranked by the variance each confounder explains (mean over tissues), by symbol.

    Parameters
    ----------
    variance : notebook 05's per-gene variance table: ``term, gene, unique_r2`` (rows of term ``(all)``
        are left out)
    symbols : Series, gene ID -> symbol

    Returns
    -------
    dict, term -> Series, symbol -> score; a tiny increasing offset (1e-12 over the ranking) breaks ties.
    """
    vp = variance[variance.term != "(all)"]
    out = {}
    for term, g in vp.groupby("term"):
        score = g.groupby("gene").unique_r2.mean()
        out[term], _ = to_symbols(score + 1e-12 * np.arange(len(score)) / len(score), symbols)
    return out


def rank_by_nes(table: pd.DataFrame) -> pd.DataFrame:
    """A one-sided ranking's GSEA table (e.g. variance explained, R² >= 0): sets by NES, the top end only.

    Parameters
    ----------
    table : :func:`prerank_many` table (``list, nes``)

    Returns
    -------
    DataFrame: ``table`` sorted by list, then NES descending, with ``rank`` (1 = highest NES) per list.
    """
    out = table.sort_values(["list", "nes"], ascending=[True, False], kind="stable")
    out["rank"] = out.groupby("list").cumcount() + 1
    return out


def summarize_lists(gsea: pd.DataFrame, *, fdr: float = 0.05) -> pd.DataFrame:
    """Per ranked list: why it was chosen, sets enriched at ``fdr``, the top set with its NES and FDR.

    Parameters
    ----------
    gsea : GSEA table of the feature rankings (``list, why, term, nes, fdr``; each list's rows sorted by rank)
    fdr : FDR level at which a set counts as enriched

    Returns
    -------
    DataFrame indexed by list: ``why, enriched, top_set, top_nes, top_fdr``.
    """
    return gsea.groupby("list").agg(why=("why", "first"), enriched=("fdr", lambda f: int((f < fdr).sum())),
                                    top_set=("term", "first"), top_nes=("nes", "first"), top_fdr=("fdr", "first"))


def annotation_filter(pairs: pd.DataFrame, floor: pd.DataFrame, symbols: pd.Series,
                      gene_sets: Mapping[str, Sequence[str]], *, annotation_sets: Sequence[str] = (),
                      r_threshold: float = 0.8, e_threshold: float = 10.0, perm_alpha: float = 0.001
                      ) -> tuple[pd.DataFrame, list[str], list[str], dict[str, list[str]]]:
    """Badea's annotation filter: which correlated genes of notebook 03 carry each annotation set.

    Parameters
    ----------
    pairs : notebook 03's ``pairs.parquet`` (``r, max_median, perm_p, symbol``)
    floor : notebook 03's ``expression_floor.tsv`` indexed by ``Name`` with ``max_median``
    symbols : Series, gene ID -> symbol
    gene_sets : dict, set -> symbols
    annotation_sets : the sets used (empty: all)
    r_threshold, e_threshold, perm_alpha : |r| >= R_T, expression >= E_T, permutation p < alpha

    Returns
    -------
    carriers : DataFrame, one row per annotation: ``annotation, genes`` (;-joined), ``n`` (sorted by n)
    correlated : sorted symbols of the correlated genes
    universe : sorted symbols of the genes notebook 03 could report (the background)
    annotations : the annotation sets used
    """
    missing = sorted(set(annotation_sets) - set(gene_sets))
    if missing:
        raise InputError(f"Annotation sets {missing} are not in the GMT; available e.g. {sorted(gene_sets)[:5]}.")
    tested = floor.index[floor.max_median >= e_threshold]  # the genes notebook 03 could report
    sig = pairs[(pairs.r.abs() >= r_threshold) & (pairs.max_median >= e_threshold) & (pairs.perm_p < perm_alpha)]
    correlated = sorted(sig.symbol.dropna().unique())
    universe = sorted(symbols.reindex(tested).dropna().unique())
    ann = {k: v for k, v in gene_sets.items() if not annotation_sets or k in annotation_sets}
    carriers = pd.DataFrame([{"annotation": k, "genes": ";".join(sorted(set(v) & set(correlated))),
                              "n": len(set(v) & set(correlated))} for k, v in ann.items()]).sort_values(
        "n", ascending=False)
    return carriers, correlated, universe, ann


ENGINES = ("numpy", "gseapy")


class RunningSums(Mapping):
    """Running-sum curves of one ranked list, computed by gseapy on first access (one set, no permutations).

    ``curves[term]`` is a dict with ``hits, RES`` (gseapy's, what :func:`gseapy.gseaplot` draws) and the
    set's ``nes, pval, fdr`` from the table the curves belong to. Only the sets looked up are computed: the
    curves of every set of a large collection would take ``n_sets * n_genes`` values per list.
    """

    def __init__(self, scores: pd.Series, gene_sets: Mapping[str, Sequence[str]], table: pd.DataFrame, *,
                 min_size: int, max_size: int):
        self._scores = scores.sort_values(ascending=False, kind="stable")
        self._sets = gene_sets
        self._stats = table.set_index("term")[["nes", "pval", "fdr"]]
        self._size = (min_size, max_size)
        self._cache: dict = {}

    def __getitem__(self, term):
        if term not in self._stats.index:
            raise InputKeyError(f"Gene set {term!r} was not tested in this list ({len(self._stats)} sets were).")
        if term not in self._cache:
            import gseapy

            pre = gseapy.prerank(rnk=self._scores, gene_sets={term: list(self._sets[term])}, permutation_num=0,
                                 min_size=self._size[0], max_size=self._size[1], seed=0, threads=1, outdir=None,
                                 no_plot=True, verbose=False)
            r = pre.results[term]
            row = self._stats.loc[term]
            self._cache[term] = {"hits": r["hits"], "RES": r["RES"], "nes": float(row.nes),
                                 "pval": float(row.pval), "fdr": float(row.fdr)}
        return self._cache[term]

    def __iter__(self):
        return iter(self._stats.index)

    def __len__(self):
        return len(self._stats)


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise InputError(f"GSEA engine {engine!r} not available. Available engines: {', '.join(ENGINES)}.")


def prerank(scores: pd.Series, gene_sets: Mapping[str, Sequence[str]], *, permutations: int = 1000,
            min_size: int = 5, max_size: int = 500, seed: int = 0, threads: int = 1, engine: str = "numpy"
            ) -> tuple[pd.DataFrame, Mapping]:
    """Preranked GSEA of one ranked list (gseapy's statistics).

    Parameters
    ----------
    scores : Series, symbol -> score (larger = more associated); ties and NaN are not allowed
    gene_sets : dict, set -> symbols
    permutations : random gene sets per set (gseapy) or per set size (numpy engine)
    engine : ``"numpy"`` (default; :func:`histo_utils.gsea.prerank_lists`: the same ES, leading edges and
        statistics, nulls drawn once per set size, seconds instead of minutes on a large collection) or
        ``"gseapy"`` (the reference, ``gseapy.prerank``)
    threads : gseapy's threads (gseapy engine only)

    Returns
    -------
    table : DataFrame, one row per tested set: ``term, es, nes, pval, fdr, fwer, matched, lead_genes``,
        sorted by |NES| (a set can be enriched at either end: negative NES means the genes fall at the bottom,
        e.g. for a feature that decreases as the program increases); FDR is 0 when no permutation reached
        the observed score, i.e. below 1 / permutations
    curves : mapping, term -> ``hits, RES, nes, pval, fdr`` (what :func:`gseapy.gseaplot` draws); with the
        numpy engine a :class:`RunningSums` that runs gseapy for the sets looked up
    """
    _check_engine(engine)
    if scores.isna().any():
        raise InputError(f"The ranking has {int(scores.isna().sum())} NaN scores; drop them first.")
    if engine == "numpy":
        t = prerank_lists(scores.to_frame("list"), gene_sets, permutations=permutations, min_size=min_size,
                          max_size=max_size, seed=seed).drop(columns="list")
        return t, RunningSums(scores, gene_sets, t, min_size=min_size, max_size=max_size)
    import gseapy

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
    table, curves = prerank(scores, sets, engine="gseapy", **kw)
    return key, table, (curves if keep_curves else None)


def prerank_many(rankings: Mapping, gene_sets: Mapping[str, Sequence[str]], *, workers: int = 1,
                 curves: bool = True, engine: str = "numpy", **kwargs) -> tuple[pd.DataFrame, dict]:
    """:func:`prerank` for many ranked lists.

    With the numpy engine (default) the lists over the same genes are computed together in this process and
    share their nulls (:func:`histo_utils.gsea.prerank_lists`; ``workers`` is not used); with ``"gseapy"``
    each list is a ``gseapy.prerank`` call in one of ``workers`` processes.

    Returns the tables concatenated (with a ``list`` column: the ranking's key) and the curves by key
    (``curves=False``: an empty dict; gseapy's running-sum curves of hundreds of lists take a lot of memory,
    the numpy engine's are computed on access, see :class:`RunningSums`).
    """
    _check_engine(engine)
    if engine == "numpy":
        kw = {k: kwargs[k] for k in ("permutations", "min_size", "max_size", "seed") if k in kwargs}
        unknown = set(kwargs) - set(kw) - {"threads"}
        if unknown:
            raise InputTypeError(f"prerank_many got unexpected options {sorted(unknown)}.")
        for k, v in rankings.items():
            if v.isna().any():
                raise InputError(f"Ranking {k!r} has {int(v.isna().sum())} NaN scores; drop them first.")
        groups: list[tuple[pd.Index, list]] = []  # lists over the same genes share one computation
        for k, v in rankings.items():
            for idx, keys in groups:
                if len(idx) == len(v) and idx.equals(v.index):
                    keys.append(k)
                    break
            else:
                groups.append((v.index, [k]))
        tables = {}
        for idx, keys in groups:
            frame = pd.DataFrame({i: rankings[k].to_numpy() for i, k in enumerate(keys)}, index=idx)
            t = prerank_lists(frame, gene_sets, **kw)
            for i, part in t.groupby("list", sort=False):
                tables[keys[i]] = part.drop(columns="list").reset_index(drop=True)
        out = [tables[k].assign(list=str(k)) for k in rankings if k in tables]
        lo, hi = kw.get("min_size", 5), kw.get("max_size", 500)
        cv = {k: RunningSums(rankings[k], gene_sets, tables[k], min_size=lo, max_size=hi)
              for k in rankings if k in tables} if curves else {}
        return (pd.concat(out, ignore_index=True) if out else pd.DataFrame()), cv
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
    """Jaccard index |A ∩ B| / |A ∪ B| between the enriched-set collections of every pair of lists.

    Parameters
    ----------
    enriched : dict, list name -> set of enriched gene-set names (n_lists entries)

    Returns
    -------
    DataFrame, shape (n_lists, n_lists), symmetric; NaN where both collections are empty.
    """
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
    r["genes"] = r.genes.map(lambda g: ";".join(sorted(str(g).split(";"))))  # gseapy joins a set: order varies by process
    r = r[r.overlap.map(lambda o: int(str(o).split("/")[0]) >= min_overlap)]
    return r[["term", "overlap", "set_in_universe", "odds_ratio", "p", "q", "genes"]].sort_values(
        ["p", "term"], kind="mergesort").reset_index(drop=True)


def _empty_ora() -> pd.DataFrame:
    return pd.DataFrame({"term": pd.Series(dtype=object), "overlap": pd.Series(dtype=object),
                         "set_in_universe": pd.Series(dtype="int64"), "odds_ratio": pd.Series(dtype=float),
                         "p": pd.Series(dtype=float), "q": pd.Series(dtype=float), "genes": pd.Series(dtype=object)})


