"""Preranked GSEA for many ranked lists against one gene-set collection, with gseapy's statistics.

gseapy's ``prerank`` (the reference) computes, for every gene set S of k genes
in a list of N genes ranked by score s (descending), the running sum

    RES(i) = sum_{hits j <= i} |s_j| / sum_{hits} |s_j|  -  #misses <= i / (N - k)

and ES(S) = max RES or min RES, whichever is larger in absolute value (weight
p = 1). Its null draws, for every set, ``permutations`` random gene sets of
the same size (gene-set permutation) and its statistics are

* NES = ES / mean of the null ES of the same sign (per set),
* nominal p = share of the same-sign null ES at least as extreme,
* FDR = (share of all normalised nulls beyond NES) / (share of all observed
  NES beyond NES), per sign, over every set and permutation,
* FWER = share of permutations whose most extreme normalised null over all
  sets is beyond NES.

The null of a set depends only on its size k and on the list, so this module
draws the random sets once per size (sorted positions, shared by every set of
that size and by every list: the draws depend on ``seed`` and k only) and
computes every ES from the sorted hit positions p_1 < ... < p_k alone:

    RES after hit j  = W_j / W - (p_j - j + 1) / (N - k)
    RES before hit j = W_{j-1} / W - (p_j - j + 1) / (N - k)

(W_j: the cumulative weight of the first j hits; j from 1), whose maximum and
minimum are those of the whole running sum. Cost per list: the sum over the
collection's distinct sizes of ``permutations * k`` instead of
``n_sets * permutations * N``. The pooled FDR null counts each size's
normalised null once per set of that size, as gseapy's pool holds one null
per set; when the collection has few distinct sizes, sizes get up to one
block of permutations per set, so that the pool holds at least
min(sets, 200) blocks (one size only: as many as gseapy's). Leading-edge genes are gseapy's: the hits up to the running sum's
maximum (ES >= 0) or from its minimum down (ES < 0, listed from the bottom).

Numbers agree with gseapy up to the permutation noise of the nulls (ES and
leading edges exactly, with the same gene order; ties in the scores are
broken by the order of the input, stably).
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from .errors import InputError, InputTypeError

log = logging.getLogger(__name__)

__all__ = ["prerank_lists", "random_subsets"]

_NULL_CHUNK = 1 << 16  # null values (lists x permutations x size) computed at a time (in cache)
_MIN_POOL = 200  # blocks of permutations in the pooled FDR null, at least (or one per set when fewer sets)


def random_subsets(n: int, k: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """``n_draws`` uniform random k-subsets of ``range(n)``, each sorted.

    Draws with replacement, then redraws duplicated entries until every row is
    duplicate-free: the procedure treats every label alike, so each row is a
    uniform k-subset.

    Returns
    -------
    array of int64, shape (n_draws, k), rows strictly increasing
    """
    if not 0 < k <= n:
        raise InputError(f"Subset size {k} must be between 1 and the {n} genes of the ranking.")
    if 2 * k > n:  # dense subsets: a random order's first k
        return np.sort(np.argsort(rng.random((n_draws, n)), axis=1)[:, :k], axis=1)
    x = rng.integers(0, n, size=(n_draws, k))
    x.sort(axis=1)
    while True:
        dup = np.zeros(x.shape, dtype=bool)
        dup[:, 1:] = x[:, 1:] == x[:, :-1]
        n_dup = int(dup.sum())
        if n_dup == 0:
            return x
        x[dup] = rng.integers(0, n, size=n_dup)
        x.sort(axis=1)


def _prepare_sets(genes: pd.Index, gene_sets: Mapping[str, Sequence[str]], min_size: int, max_size: int):
    """Gene indices of every set with ``min_size <= matched genes <= max_size`` (gseapy's filter)."""
    pos = pd.Series(np.arange(len(genes)), index=genes)
    terms, idx = [], []
    for term, members in gene_sets.items():
        m = pos.reindex(pd.unique(np.asarray(list(members), dtype=object))).dropna().to_numpy(np.int64)
        if min_size <= len(m) <= max_size:
            terms.append(term)
            idx.append(m)
    return terms, idx


def _observed(order: np.ndarray, weights: np.ndarray, hits: np.ndarray, seg: np.ndarray, starts: np.ndarray,
              sizes: np.ndarray, lead: bool):
    """ES of every set in every list of a batch, and the leading-edge hit ranges.

    order : (L, N) gene index at each rank; weights : (L, N) |score| at each rank
    hits : (H,) gene indices of all sets concatenated; seg : (H,) set of each hit; starts, sizes : (S,)

    Returns es (L, S), positions (L, H) of the hits sorted within each set, and per (list, set) the leading
    edge as (first, last) hit slots and whether it is read from the bottom.
    """
    n_lists, n = order.shape
    rank = np.empty_like(order)
    rank[np.arange(n_lists)[:, None], order] = np.arange(n)[None, :]
    key = rank[:, hits] + seg[None, :] * n  # sorting keeps sets apart and orders hits within each set
    key.sort(axis=1)
    pos = key - seg[None, :] * n
    w = np.take_along_axis(weights, pos, axis=1)
    cw = np.cumsum(w, axis=1)
    before_set = np.concatenate([np.zeros((n_lists, 1)), cw[:, starts[1:] - 1]], axis=1)  # (L, S)
    cw -= before_set[:, seg]
    total = cw[:, starts + sizes - 1]  # (L, S)
    j0 = np.arange(len(hits)) - starts[seg]
    miss = (pos - j0[None, :]) / (n - sizes[seg])[None, :]  # misses at or above each hit
    with np.errstate(divide="ignore", invalid="ignore"):
        after = cw / total[:, seg] - miss
        before = after - w / total[:, seg]
    top = np.maximum.reduceat(after, starts, axis=1)
    bottom = np.minimum(np.minimum.reduceat(before, starts, axis=1), 0.0)
    es = np.where(np.abs(top) > np.abs(bottom), top, bottom)
    if not lead:
        return es, pos, None
    big = len(hits) + 1
    slot = np.arange(len(hits))[None, :]
    first_top = np.minimum.reduceat(np.where(after == top[:, seg], slot, big), starts, axis=1)
    first_bottom = np.minimum.reduceat(np.where(before == bottom[:, seg], slot, big), starts, axis=1)
    return es, pos, (first_top, first_bottom)


def _null_es(weights: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """ES of random sets (the same sorted positions for every list), shape (L, n_draws), float32.

    Laid out hit by draw (k, draws), so the cumulative sum runs down the rows (vectorised across draws, not a
    sequential loop per draw), in chunks of about ``_NULL_CHUNK`` values (several lists at once for small
    sets, a slice of the draws for large ones) that stay in cache.
    """
    n_draws, k = positions.shape
    pos_t = np.ascontiguousarray(positions.T)  # (k, n_draws)
    miss = ((pos_t - np.arange(k)[:, None]) / (n - k)).astype(np.float32)
    out = np.empty((len(weights), n_draws), dtype=np.float32)
    if n_draws * k <= _NULL_CHUNK:
        lists, cols = max(1, _NULL_CHUNK // (n_draws * k)), n_draws
    else:
        lists, cols = 1, max(1, _NULL_CHUNK // k)
    for ca in range(0, n_draws, cols):
        idx = np.ascontiguousarray(pos_t[:, ca:ca + cols])
        m = np.ascontiguousarray(miss[:, ca:ca + cols])
        for la in range(0, len(weights), lists):
            w = np.stack([np.take(wl, idx) for wl in weights[la:la + lists]])  # (lists, k, cols)
            cw = np.cumsum(w, axis=1)
            inv = np.reciprocal(cw[:, -1:, :])
            np.multiply(cw, inv, out=cw)
            cw -= m
            top = cw.max(axis=1)
            np.multiply(w, inv, out=w)
            cw -= w
            bottom = np.minimum(cw.min(axis=1), 0.0)
            out[la:la + lists, ca:ca + cols] = np.where(np.abs(top) > np.abs(bottom), top, bottom)
    return out


class _NestedDraws:
    """Random k-subsets of ``range(n)`` for every k up to ``k_max``, sorted, from one draw per row.

    Row p holds a uniform ``k_max``-subset (sorted) and a random order of its members; the size-k subset is
    its first k members in that order, kept in sorted position: a uniform k-subset, obtained with a mask
    instead of a sort. Subsets of different sizes in the same row overlap (nested), as the nulls of sets of
    different sizes in gseapy do not; each size's null is exact.
    """

    def __init__(self, n: int, k_max: int, n_draws: int, seed: int):
        rng = np.random.default_rng(seed)
        self.members = random_subsets(n, k_max, n_draws, rng)
        self.order = rng.permuted(np.broadcast_to(np.arange(k_max, dtype=np.int32), (n_draws, k_max)), axis=1)

    def of_size(self, k: int) -> np.ndarray:
        """Sorted positions, shape (n_draws, k)."""
        return self.members[self.order < k].reshape(len(self.members), k)


def _statistics(es: np.ndarray, nulls: Sequence[np.ndarray], size_of_set: np.ndarray, sets_per_size: np.ndarray,
                permutations: int):
    """gseapy's NES, nominal p, FDR and FWER of one list.

    es : (S,) observed; nulls : per distinct size, the null ES, ``reps * permutations`` values (``reps``
    independent blocks of ``permutations``); size_of_set : (S,) index into ``nulls`` of each set;
    sets_per_size : (K,) sets of each size. In gseapy's pooled FDR null every set brings its own
    ``permutations`` values: here a size's values are weighted so that its sets bring as much.
    """
    nes = np.empty(len(es))
    pval = np.empty(len(es))
    pooled, weights, tops, bottoms = [], [], [], []
    for i, null in enumerate(nulls):
        sel = np.flatnonzero(size_of_set == i)
        pos = null >= 0
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            pos_mean = null[pos].sum() / n_pos
            neg_mean = null[~pos].sum() / n_neg
            nnull = np.where(pos, null / pos_mean, -null / neg_mean)
            e = es[sel]
            up = e >= 0
            nes[sel] = np.where(up, e / pos_mean, -e / neg_mean)
            pval[sel] = np.where(up, (null[None, :] >= e[:, None]).sum(1) / n_pos,
                                 (null[None, :] < e[:, None]).sum(1) / n_neg)
        if len(sel):
            pooled.append(nnull)
            weights.append(np.full(len(nnull), len(sel) * permutations / len(nnull)))
            blocks = nnull.reshape(-1, permutations)  # permutation b of every block: one draw of the collection
            tops.append(np.where(blocks >= 0, blocks, -np.inf).max(0))
            bottoms.append(np.where(blocks < 0, blocks, np.inf).min(0))
    vals = np.concatenate(pooled)
    wts = np.concatenate(weights)
    o = np.argsort(vals, kind="stable")
    vals, cw = vals[o], np.concatenate([[0.0], np.cumsum(wts[o])])
    total = cw[-1]
    nnes = np.sort(nes)

    def upper(sorted_vals, cum, x, side):  # weight of values >= x (side left) or > x (side right)
        return cum[-1] - cum[np.searchsorted(sorted_vals, x, side=side)]

    def lower(sorted_vals, cum, x, side):  # weight of values < x (side left) or <= x (side right)
        return cum[np.searchsorted(sorted_vals, x, side=side)]

    ones = np.arange(len(nnes) + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        all_pos = upper(vals, cw, 0.0, "left")
        all_neg = total - all_pos
        obs_pos = upper(nnes, ones, 0.0, "left")
        obs_neg = len(nnes) - obs_pos
        fdr_pos = (upper(vals, cw, nes, "left") / all_pos) / (upper(nnes, ones, nes, "left") / obs_pos)
        fdr_neg = (lower(vals, cw, nes, "right") / all_neg) / (lower(nnes, ones, nes, "right") / obs_neg)
        fdr = np.where(nes >= 0, fdr_pos, fdr_neg)
    fdr = np.where(np.isfinite(fdr), np.minimum(fdr, 1.0), 1e9)  # gseapy's value for 0/0
    # FWER: the most extreme normalised null over all sets, per permutation
    max_null = np.max(tops, axis=0)
    min_null = np.min(bottoms, axis=0)
    fwer = np.where(nes >= 0, (max_null[None, :] >= nes[:, None]).mean(1),
                    (min_null[None, :] <= nes[:, None]).mean(1))
    return nes, pval, fdr, fwer


def prerank_lists(rankings: pd.DataFrame, gene_sets: Mapping[str, Sequence[str]], *, permutations: int = 1000,
                  min_size: int = 5, max_size: int = 500, seed: int = 0, lead_genes: bool = True,
                  batch_lists: int = 64, progress: bool = False) -> pd.DataFrame:
    """Preranked GSEA of many lists over the same genes, nulls shared by set size and by list.

    Parameters
    ----------
    rankings : DataFrame, shape (n_genes, n_lists)
        Index: gene symbols (unique); one column per ranked list (larger = more associated); no NaN.
    gene_sets : dict, set -> symbols
    permutations : random gene sets per size (gseapy's ``permutation_num``)
    min_size, max_size : sets tested have this many genes in the ranking (inclusive)
    seed : seed of the random sets (the same for every list and batch)
    lead_genes : also list the leading-edge genes (a string per row)
    batch_lists : lists computed together (memory: ``batch_lists * distinct sizes * permutations`` float32
        null values, 2 MB per list for 500 sizes and 1,000 permutations; and a few arrays of ``batch_lists``
        x total set sizes)

    Returns
    -------
    DataFrame, one row per list and tested set: ``list, term, es, nes, pval, fdr, fwer, matched, lead_genes``,
    sorted by list (column order) and, within a list, by |NES| descending (stable).
    """
    if not isinstance(rankings, pd.DataFrame):
        raise InputTypeError(f"rankings must be a DataFrame (genes x lists), got {type(rankings).__name__}.")
    if rankings.index.has_duplicates:
        dup = rankings.index[rankings.index.duplicated()]
        raise InputError(f"The ranking has duplicated genes (e.g. {list(dup[:3])}); keep one score per gene "
                         f"(enrichment.to_symbols does).")
    values = rankings.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = rankings.columns[~np.isfinite(values).all(0)]
        raise InputError(f"{len(bad)} ranked lists have NaN or infinite scores (e.g. {list(bad[:3])}); drop them.")
    if permutations < 1:
        raise InputError(f"permutations must be >= 1, got {permutations}.")
    n = len(rankings)
    terms, idx = _prepare_sets(rankings.index, gene_sets, min_size, max_size)
    cols = ["list", "term", "es", "nes", "pval", "fdr", "fwer", "matched", "lead_genes"]
    if not terms:
        log.warning("No gene set has between %d and %d genes in the ranking of %d genes.", min_size, max_size, n)
        return pd.DataFrame(columns=cols)
    sizes = np.array([len(m) for m in idx])
    if (sizes >= n).any():
        raise InputError(f"A gene set covers all {n} genes of the ranking; nothing to compare it with.")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    hits = np.concatenate(idx)
    seg = np.repeat(np.arange(len(terms)), sizes)
    uniq, size_of_set, sets_per_size = np.unique(sizes, return_inverse=True, return_counts=True)
    genes = rankings.index.to_numpy(dtype=object)
    # Sets of one size share their null. gseapy's FDR pools one null per set: when the collection has few
    # distinct sizes (e.g. every set of 15 genes) that pool would be much smaller here, so a size gets up to
    # one block of permutations per set until the pool holds min(sets, _MIN_POOL) blocks.
    reps = np.minimum(sets_per_size, max(1, -(-min(len(terms), _MIN_POOL) // len(uniq))))
    draws = _NestedDraws(n, int(uniq.max()), permutations * int(reps.max()), seed)
    out = []
    for a in tqdm(range(0, values.shape[1], batch_lists), desc="GSEA list batches", disable=not progress):
        v = values[:, a:a + batch_lists].T  # (L, N)
        order = np.argsort(-v, axis=1, kind="stable")
        weights = np.abs(np.take_along_axis(v, order, axis=1))
        es, pos, lead = _observed(order, weights, hits, seg, starts, sizes, lead_genes)
        w32 = weights.astype(np.float32)
        nulls = [_null_es(w32, draws.of_size(int(k))[: reps[i] * permutations], n) for i, k in enumerate(uniq)]
        for li in range(len(v)):
            nes, pval, fdr, fwer = _statistics(es[li], [x[li].astype(np.float64) for x in nulls], size_of_set,
                                               sets_per_size, permutations)
            t = pd.DataFrame({"list": rankings.columns[a + li], "term": terms, "es": es[li], "nes": nes,
                              "pval": pval, "fdr": fdr, "fwer": fwer, "matched": sizes})
            if lead_genes:
                first_top, first_bottom = lead[0][li], lead[1][li]
                p = pos[li]
                g = genes[order[li][p]]
                led = []
                for s in range(len(terms)):
                    b, e = starts[s], starts[s] + sizes[s]
                    if es[li, s] >= 0:
                        led.append(";".join(g[b:first_top[s] + 1]))
                    else:  # gseapy: hits at or below the position just before the minimum's hit, bottom first
                        j = first_bottom[s]
                        sel = np.flatnonzero(p[b:e] >= p[j] - 1) + b
                        led.append(";".join(g[sel[::-1]]))
                t["lead_genes"] = led
            else:
                t["lead_genes"] = ""
            out.append(t.iloc[np.argsort(-t.nes.abs().to_numpy(), kind="stable")])
    return pd.concat(out, ignore_index=True)[cols]
