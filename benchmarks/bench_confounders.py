"""Benchmark: batched confounder regression against statsmodels gene by gene (notebook 05).

Random data of GTEx's shapes: 56,202 genes (log2(1 + TPM)) of ``--samples`` samples of one tissue, with a
design of ~16 columns (intercept, log ischemic time, RIN, 3 centres, 6 age brackets, sex, and a few more
numeric covariates to reach 16). Measured in one run:

* the batched residual pass (:func:`histo_utils.confounders.residualize`, one projection for all genes):
  goal <= 0.2 s;
* statsmodels ``OLS(y, X).fit().resid`` gene by gene on a random sample of genes, extrapolated to all genes,
  as a multiple of the batched pass;
* the type-II variance partition of all genes (one projection per term) as a multiple of the residual pass;
* the largest difference between the batched and the statsmodels residuals on the sample.

Run: ``python benchmarks/bench_confounders.py [--genes 56202] [--samples 334] [--sample-genes 300]``
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import statsmodels.api as sm

from histo_utils import confounders as cf

log = logging.getLogger("bench_confounders")


def make_samples(n: int, rng) -> pd.DataFrame:
    return pd.DataFrame({
        "SMTSISCH": rng.lognormal(6.2, 0.6, n).round(),
        "SMRIN": rng.normal(7.2, 0.9, n).round(1),
        "SMCENTER": rng.choice(["B1", "C1", "D1", "E1"], n),
        "AGE": rng.choice(["20-29", "30-39", "40-49", "50-59", "60-69", "70-79"], n),
        "SEX": rng.choice([1, 2], n),
        "SMEXNCRT": rng.normal(size=n), "SMMAPRT": rng.normal(size=n), "SMRRNART": rng.normal(size=n),
        "SMMPPD": rng.normal(size=n),
    }, index=[f"S{i}" for i in range(n)])


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=56202)
    ap.add_argument("--samples", type=int, default=334)
    ap.add_argument("--sample-genes", type=int, default=300, help="genes fitted one by one with statsmodels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(args.seed)
    s = make_samples(args.samples, rng)
    spec = {**cf.DEFAULT_CONFOUNDERS, "exonic_rate": ("SMEXNCRT", "numeric"), "mapping_rate": ("SMMAPRT", "numeric"),
            "rrna_rate": ("SMRRNART", "numeric"),
            "mapped_pairs": ("SMMPPD", "numeric")}
    design = cf.build_design(s, confounders=spec)
    x = design.matrix.to_numpy()
    y = rng.normal(size=(args.samples, args.genes)) + x @ rng.normal(scale=0.3, size=(x.shape[1], args.genes))

    t_batch = best_of(lambda: cf.residualize(y, x))
    res = cf.residualize(y, x)
    pick = rng.choice(args.genes, size=min(args.sample_genes, args.genes), replace=False)
    t0 = time.perf_counter()
    sm_res = np.column_stack([sm.OLS(y[:, j], x).fit().resid for j in pick])
    t_sm = (time.perf_counter() - t0) / len(pick) * args.genes
    diff = float(np.abs(sm_res - res[:, pick]).max())
    t_vp = best_of(lambda: cf.variance_partition(y, design), repeats=1)

    rows = [
        ("batched residuals, all genes", t_batch, "", "<= 0.2 s", "yes" if t_batch <= 0.2 else "NO"),
        ("statsmodels OLS per gene (extrapolated)", t_sm, f"{t_sm / t_batch:,.0f}x batched", "", ""),
        ("type-II variance partition, all genes", t_vp, f"{t_vp / t_batch:.1f}x batched", "", ""),
    ]
    log.info("Design: %d samples x %d columns (%s); %d genes", *x.shape, ", ".join(design.terms), args.genes)
    log.info("%-42s %10s  %-18s %-9s %s", "measure", "seconds", "ratio", "goal", "met")
    for name, t, ratio, goal, met in rows:
        log.info("%-42s %10.3f  %-18s %-9s %s", name, t, ratio, goal, met)
    log.info("max |batched - statsmodels| residual on %d genes: %.1e", len(pick), diff)


if __name__ == "__main__":
    main()
