"""Benchmark: preranked GSEA, the numpy engine (histo_utils.gsea) against gseapy, time and agreement, one run.

A random GMT of ``--sets`` sets (default 5,000) over ``--genes`` genes (default 20,000), sizes drawn
log-uniformly between 15 and 500 as in MSigDB: the scale of a GO collection on a whole transcriptome. Each
ranked list is a random score per gene with ``--planted`` sets (the first ones of the collection) shifted up
(half of them) or down (the other half) in half of their genes.

Figures, each with its goal:

1. seconds per list of ``enrichment.prerank(engine="numpy")`` on one list against the whole collection, and
   of ``prerank_many`` when ``--lists`` lists share the collection (nulls shared across lists), both as the
   ratio gseapy / numpy per list. Goals: >= 20x for one list, >= 100x per list for many.
2. gseapy's seconds per list: ``gseapy.prerank`` (``--permutations``, one thread) on the first ``--ref-sets``
   sets of the collection (default 200), extrapolated to the whole collection per set (its cost is a sum over
   sets: each set has its own permutations over the whole list). ``--ref-sets 5000`` times the whole
   collection (about 443 s per list on this machine, measured once), which only makes the baseline exact.
3. Agreement with gseapy on the same list and the same ``--ref-sets`` sets (the FDR pools the tested
   collection, so both engines test the same one), printed beside gseapy's agreement with itself under
   another seed: Spearman correlation of NES (goal >= 0.99), share of the sets gseapy calls at FDR 0.05 that
   the engine calls too (goal >= 95 %), and identical leading-edge genes on the planted sets (goal: all).

Run: ``python benchmarks/bench_gsea.py [--lists 32] [--ref-sets 200] [--sets 5000] [--genes 20000]``
"""
from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import pandas as pd
from scipy import stats

from histo_utils import enrichment

log = logging.getLogger("bench_gsea")


def random_sets(n_sets: int, n_genes: int, rng) -> tuple[dict, list[str]]:
    genes = [f"G{i:05d}" for i in range(n_genes)]
    sizes = np.exp(rng.uniform(np.log(15), np.log(500), n_sets)).astype(int)
    return {f"SET_{k:05d}": list(rng.choice(genes, s, replace=False)) for k, s in enumerate(sizes)}, genes


def ranked_list(genes: list[str], sets: dict, planted: list[str], rng, shift: float) -> pd.Series:
    s = pd.Series(rng.normal(size=len(genes)), index=genes)
    for i, term in enumerate(planted):
        members = sets[term][: len(sets[term]) // 2]
        s[members] += shift if i % 2 == 0 else -shift
    return s


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", type=int, default=5000)
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--lists", type=int, default=32, help="lists sharing the collection (prerank_many)")
    ap.add_argument("--ref-sets", type=int, default=200,
                    help="sets gseapy runs on (extrapolated per set to --sets; --ref-sets 5000: the whole collection)")
    ap.add_argument("--planted", type=int, default=10, help="sets shifted in every list (among the first --ref-sets)")
    ap.add_argument("--shift", type=float, default=1.5, help="score shift of half the genes of a planted set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not 0 < args.planted <= args.ref_sets <= args.sets:
        ap.error("need 0 < --planted <= --ref-sets <= --sets")
    rng = np.random.default_rng(args.seed)
    sets, genes = random_sets(args.sets, args.genes, rng)
    terms = list(sets)
    planted = terms[: args.planted]
    ref_sets = {k: sets[k] for k in terms[: args.ref_sets]}
    one = ranked_list(genes, sets, planted, rng, args.shift)
    kw = dict(permutations=args.permutations, min_size=15, max_size=500)
    enrichment.prerank(one, {k: sets[k] for k in terms[:5]}, permutations=10, seed=0)  # warm-up (imports)
    enrichment.prerank(one, {k: sets[k] for k in terms[:5]}, permutations=10, seed=0, engine="gseapy")

    log.info("gseapy on %d sets x %d permutations, two seeds", args.ref_sets, args.permutations)
    t_ref, (ref, _) = timed(lambda: enrichment.prerank(one, ref_sets, seed=0, engine="gseapy", **kw))
    _, (ref2, _) = timed(lambda: enrichment.prerank(one, ref_sets, seed=1, engine="gseapy", **kw))
    log.info("numpy engine on the same sets")
    t_mine_ref, (mine, _) = timed(lambda: enrichment.prerank(one, ref_sets, seed=0, **kw))
    log.info("numpy engine, one list, %d sets", args.sets)
    t_one, (full, _) = timed(lambda: enrichment.prerank(one, sets, seed=0, **kw))
    log.info("numpy engine, %d lists sharing %d sets", args.lists, args.sets)
    lists = {i: ranked_list(genes, sets, planted, rng, args.shift) for i in range(args.lists)}
    t_many, (many, _) = timed(lambda: enrichment.prerank_many(lists, sets, seed=0, curves=False, **kw))
    n_tested = len(full)

    # ---------------------------------------------------------------- agreement
    def agree(a: pd.DataFrame, b: pd.DataFrame) -> dict:
        a, b = a.set_index("term"), b.set_index("term").loc[a.term]
        called = set(a.index[a.fdr < 0.05])
        shared = len(called & set(b.index[b.fdr < 0.05]))
        lead = [p for p in planted if p in a.index]
        return {"rho": stats.spearmanr(a.nes, b.nes).statistic, "called": len(called), "shared": shared,
                "lead": sum(a.loc[p, "lead_genes"] == b.loc[p, "lead_genes"] for p in lead), "planted": len(lead),
                "es": float(np.abs(a.es - b.es).max())}

    eng, self_ = agree(ref, mine), agree(ref, ref2)
    t_ref_full = t_ref * args.sets / args.ref_sets
    per_list_many = t_many / args.lists

    def ok(x):
        return "yes" if x else "NO"

    rows = [
        (f"gseapy per list, {args.ref_sets} sets (measured)", f"{t_ref:.2f}", "", "", ""),
        (f"gseapy per list, {args.sets} sets" + (" (measured)" if args.ref_sets == args.sets else
                                                  " (extrapolated per set)"), f"{t_ref_full:.1f}", "", "", ""),
        (f"numpy engine per list, {args.ref_sets} sets (same sets as gseapy)", f"{t_mine_ref:.2f}",
         f"{t_ref / t_mine_ref:.0f}", "", ""),
        (f"numpy engine, one list, {args.sets} sets: gseapy / numpy", f"{t_one:.2f}",
         f"{t_ref_full / t_one:.0f}", ">= 20", ok(t_ref_full / t_one >= 20)),
        (f"numpy engine, {args.lists} lists sharing {args.sets} sets, per list: gseapy / numpy",
         f"{per_list_many:.2f}", f"{t_ref_full / per_list_many:.0f}", ">= 100",
         ok(t_ref_full / per_list_many >= 100)),
    ]
    agree_rows = [
        ("NES Spearman with gseapy (seed 0)", f"{eng['rho']:.4f}", f"{self_['rho']:.4f}", ">= 0.99",
         ok(eng["rho"] >= 0.99)),
        ("gseapy's FDR < 0.05 calls shared", f"{eng['shared']}/{eng['called']}",
         f"{self_['shared']}/{self_['called']}", ">= 95 %", ok(eng["shared"] >= 0.95 * eng["called"])),
        ("planted sets with identical leading-edge genes", f"{eng['lead']}/{eng['planted']}",
         f"{self_['lead']}/{self_['planted']}", "all", ok(eng["lead"] == eng["planted"])),
        ("largest |ES difference|", f"{eng['es']:.1e}", f"{self_['es']:.1e}", "", ""),
    ]
    print(f"preranked GSEA benchmark: {args.sets:,} random sets (15-500 genes; {n_tested:,} tested) over "
          f"{args.genes:,} genes, {args.permutations} permutations, {args.planted} planted sets per list "
          f"(shift {args.shift}); one process, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    if args.ref_sets < args.sets:
        print(f"gseapy timed on the first {args.ref_sets} sets and extrapolated per set to {args.sets:,} "
              f"(--ref-sets {args.sets} times it whole)")
    print()
    w = max(len(r[0]) for r in rows + agree_rows)
    print(f"{'figure':<{w}}  {'s':>8}  {'ratio':>6}  {'goal':>6}  met")
    for name, t, ratio, goal, met in rows:
        print(f"{name:<{w}}  {t:>8}  {ratio:>6}  {goal:>6}  {met}")
    print()
    print(f"{'agreement on ' + str(args.ref_sets) + ' sets':<{w}}  {'numpy':>8}  {'gseapy seed 1':>13}  "
          f"{'goal':>7}  met")
    for name, a, b, goal, met in agree_rows:
        print(f"{name:<{w}}  {a:>8}  {b:>13}  {goal:>7}  {met}")
    calls = many[many.fdr < 0.05].groupby("list").term.apply(set)
    hit = np.mean([len(set(planted) & c) / len(planted) for c in calls]) if len(calls) else 0.0
    print(f"\n{args.lists} shared-collection lists: planted sets called at FDR 0.05 {hit:.0%} on average; "
          f"other sets called {int((many.fdr < 0.05).sum() - hit * len(planted) * args.lists)} "
          f"of {len(many) - len(planted) * args.lists:,} tests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
