"""Benchmark: time per preranked GSEA list (notebooks 06 and 09), to plan a real run.

Two gene-set collections, measured in one run with the same number of permutations:

* the synthetic cohort's GMT (``--data``: the default run's data directory; without it, the collection is
  rebuilt from the cohort generator: planted modules and same-size decoys over 2,000 genes);
* a random GMT of ``--sets`` sets (default 5,000) over ``--genes`` genes (default 20,000), sizes drawn
  between 15 and 500 as in MSigDB, i.e. the scale of a GO collection on a whole transcriptome.

Each ranked list is a random score per gene. Printed: seconds per list for each collection, the ratio of
the large to the small one, the per-set cost ratio, and the throughput of ``prerank_many`` with
``--workers`` processes relative to one process (lists per second).

Run: ``python benchmarks/bench_gsea.py [--permutations 1000] [--lists 4] [--sets 5000] [--genes 20000]``
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histo_utils import enrichment, io

log = logging.getLogger("bench_gsea")
ROOT = Path(__file__).resolve().parents[1]


def synthetic_sets(data: Path | None) -> tuple[dict, list[str]]:
    if data is not None and (data / "synthetic_gene_sets.gmt").exists():
        sets = io.read_gmt(data / "synthetic_gene_sets.gmt")
        genes = sorted({g for v in sets.values() for g in v} | {f"SG{i:05d}" for i in range(2000)})
        return sets, genes
    from histo_utils.synthetic import CohortParams, design_cohort, simulate_expression

    p = CohortParams()
    subjects, samples = design_cohort(p)
    tpm, genes, sets = simulate_expression(p, subjects, samples)
    return sets, list(genes.Description)


def random_sets(n_sets: int, n_genes: int, rng) -> tuple[dict, list[str]]:
    genes = [f"G{i:05d}" for i in range(n_genes)]
    sizes = np.exp(rng.uniform(np.log(15), np.log(500), n_sets)).astype(int)
    return {f"SET_{k:05d}": list(rng.choice(genes, s, replace=False)) for k, s in enumerate(sizes)}, genes


def time_lists(sets: dict, genes: list[str], *, n_lists: int, permutations: int, rng, workers: int = 1) -> float:
    rankings = {i: pd.Series(rng.normal(size=len(genes)), index=genes) for i in range(n_lists)}
    t0 = time.perf_counter()
    enrichment.prerank_many(rankings, sets, workers=workers, permutations=permutations, min_size=5, max_size=500,
                            seed=0, curves=False)
    return (time.perf_counter() - t0) / n_lists


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "default" / "data")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--lists", type=int, default=4, help="ranked lists timed per collection")
    ap.add_argument("--sets", type=int, default=5000)
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(args.seed)
    small, small_genes = synthetic_sets(args.data if args.data.exists() else None)
    big, big_genes = random_sets(args.sets, args.genes, rng)
    time_lists(small, small_genes, n_lists=1, permutations=10, rng=rng)  # warm-up (imports)
    t_small = time_lists(small, small_genes, n_lists=args.lists, permutations=args.permutations, rng=rng)
    t_big = time_lists(big, big_genes, n_lists=args.lists, permutations=args.permutations, rng=rng)
    t_small_par = time_lists(small, small_genes, n_lists=max(args.lists, 2 * args.workers),
                             permutations=args.permutations, rng=rng, workers=args.workers)
    log.info("permutations per list: %d", args.permutations)
    log.info("synthetic GMT (%d sets over %d genes): %.3f s per list", len(small), len(small_genes), t_small)
    log.info("random GMT (%d sets over %d genes): %.2f s per list", len(big), len(big_genes), t_big)
    log.info("ratio large / synthetic per list: %.1fx; per set: %.2fx", t_big / t_small,
             (t_big / len(big)) / (t_small / len(small)))
    log.info("prerank_many with %d workers on the synthetic GMT: %.2fx the lists per second of one process",
             args.workers, t_small / t_small_par)
    log.info("planning: 1,000 lists against the large GMT take about %.1f h on one process",
             1000 * t_big / 3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
