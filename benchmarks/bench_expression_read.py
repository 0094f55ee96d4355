"""Benchmark: reading the samples a notebook needs from a GTEx-shaped TPM file (issue 16, item 2).

GTEx v8's ``GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz`` has 56,200 genes x 17,382 samples.
This writes a gzipped GCT of ``--genes`` x ``--samples`` (default 5,620 x 2,000, a tenth of the genes;
``--full`` writes 56,200 x 4,000), then, each measurement in a fresh process (peak RSS from
``resource.getrusage``):

* first read of ``--read`` samples (default 1,000) through :func:`histo_utils.data.load_log_expression`
  (only those columns parsed, float32, cache written);
* cached read of the same samples (the run's ``cache/expression.<key>.npz``);
* for reference, the whole file through ``pandas.read_csv`` as float64 (what notebooks did before).

Goals (issue 16): reading 1,000 of 17,382 samples under 1.5 GB; a cached read under 5 s.
Measured at GTEx's real size (``--genes 56200 --sweep 2000,5000,17382 --read 1000 --no-whole``, 2 cores shared
with five other jobs, load ~14; each file written then deleted, the 17,382-sample one 2,069 MB gzipped,
written in 27 min):

    samples in file  gz MB  first read s  first read peak MB  cached read s  cached peak MB
               2000    238          38.8                 719           3.75             370
               5000    595         143.0                 825           1.45             371
              17382   2069        1206.5                1100           3.32             371

Peak memory of the first read grows by 24 MB per 1,000 samples in the file (the parser's buffers for the
wide rows), not with the samples read: 1,000 of 17,382 samples peak at 1.1 GB (goal < 1.5 GB); its time
grows with the file's size (all of it is decompressed and tokenised; ~1.7 MB/s gzipped here under load).
The cached read (``<out>/cache/expression.<key>.npz``, 225 MB) takes 1.5-3.8 s at 371 MB whatever the file
(goal < 5 s). The whole file through pandas as float64 (the notebooks before) needs 56,200 x 17,382 x 8 B =
7.3 GB for the values alone (4.2 GB peak measured at 4,000 samples).
Run: ``python benchmarks/bench_expression_read.py [--full] [--genes N --samples M --read K] [--no-whole]``
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEASURE = """
import json, resource, sys, time
from histo_utils import data
path, cache, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
from histo_utils import io
pick = io.read_gct_samples(path, check=False)[:k]
t = time.perf_counter()
e, _ = data.load_log_expression(path, samples=pick, cache_dir=cache)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "shape": list(e.shape), "dtype": str(e.dtypes.iloc[0])}))
"""
WHOLE = """
import json, resource, sys, time
import pandas as pd
t = time.perf_counter()
df = pd.read_csv(sys.argv[1], sep="\\t", skiprows=2, index_col=0)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "shape": list(df.shape), "dtype": "float64"}))
"""


def write_gct(path: Path, genes: int, samples: int, *, seed: int = 0, block: int = 500) -> None:
    """A GCT v1.2 of TPM-like values (gamma, 30 % zeros, 4 significant digits as GTEx's), gzip level 1.

    Values are drawn from 65,536 pre-formatted gamma quantiles (formatting 225 million floats one by one
    would take longer than the reads measured).
    """
    rng = np.random.default_rng(seed)
    vocab = np.char.mod("%.4g", np.sort(rng.gamma(0.3, 30.0, 65536))).astype(object)
    vocab[: 65536 * 3 // 10] = "0"  # many zeros, as in real TPM tables
    ids = [f"GTEX-{i // 20:05d}-{i % 20:04d}-SM-{i:06d}" for i in range(samples)]
    with gzip.open(path, "wt", compresslevel=1) as fh:
        fh.write(f"#1.2\n{genes}\t{samples}\nName\tDescription\t" + "\t".join(ids) + "\n")
        for g0 in range(0, genes, block):
            n = min(block, genes - g0)
            cells = vocab[rng.integers(0, len(vocab), (n, samples))]
            fh.write("".join(f"ENSG{g0 + i:011d}.5\tGENE{g0 + i}\t" + "\t".join(cells[i]) + "\n" for i in range(n)))


def run(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(gct: Path, cache: Path, read: int, *, whole: bool) -> list[tuple[str, dict, str]]:
    """First read, cached read (and optionally the whole file as float64), each in a fresh process."""
    rows = [("first read (subset, float32)", run(MEASURE, gct, cache, read),
             "peak < 1.5 GB for 1,000 of 17,382 samples"),
            ("cached read", run(MEASURE, gct, cache, read), "< 5 s")]
    if whole:
        rows.append(("whole file, pandas float64 (before)", run(WHOLE, gct), "-"))
    return rows


def extrapolate(sweep: list[dict], target: int = 17382) -> dict:
    """Least-squares line of seconds, peak MB and gzipped MB against the sample count, at ``target``."""
    n = np.array([r["samples"] for r in sweep], float)
    out = {}
    for k in ("size_mb", "first_s", "first_mb", "cached_s", "cached_mb"):
        y = np.array([r[k] for r in sweep], float)
        slope, icpt = np.polyfit(n, y, 1) if len(n) > 1 else (0.0, y[0])
        out[k] = (slope * target + icpt, slope * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=5620)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--read", type=int, default=1000)
    ap.add_argument("--full", action="store_true", help="56,200 genes x 4,000 samples (about 1 GB gzipped)")
    ap.add_argument("--sweep", default="", help="comma-separated sample counts (e.g. 2000,4000,8000): one file "
                    "per count, read times and peaks against file size, extrapolated linearly to 17,382")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-file pandas float64 reference")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    a = ap.parse_args()
    if a.full:
        a.genes, a.samples = 56200, max(a.samples, 4000)
    counts = [int(c) for c in a.sweep.split(",") if c.strip()] or [a.samples]
    sweep = []
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        for n_samples in counts:
            gct = Path(tmp) / f"gene_tpm.{n_samples}.gct.gz"
            t = time.perf_counter()
            write_gct(gct, a.genes, n_samples)
            write_s = time.perf_counter() - t
            size_mb = gct.stat().st_size / 2**20
            print(f"GCT {a.genes} genes x {n_samples} samples: {size_mb:.0f} MB gzipped (written in {write_s:.0f} s); "
                  f"reading {a.read} samples", flush=True)
            rows = measure(gct, Path(tmp) / f"cache{n_samples}", a.read, whole=not a.no_whole)
            print(f"{'measurement':38s} {'seconds':>8s} {'MB/s gz':>8s} {'peak MB':>8s}  {'shape':14s} goal")
            for name, r, goal in rows:
                print(f"{name:38s} {r['seconds']:8.1f} {size_mb / r['seconds']:8.1f} {r['peak_mb']:8.0f}  "
                      f"{'x'.join(map(str, r['shape'])):14s} {goal}", flush=True)
            sweep.append({"samples": n_samples, "size_mb": size_mb, "first_s": rows[0][1]["seconds"],
                          "first_mb": rows[0][1]["peak_mb"], "cached_s": rows[1][1]["seconds"],
                          "cached_mb": rows[1][1]["peak_mb"]})
            gct.unlink()  # one file on disk at a time
        if len(sweep) > 1:
            print("\nsamples in file  gz MB  first s  first peak MB  cached s  cached peak MB")
            for r in sweep:
                print(f"{r['samples']:15d} {r['size_mb']:6.0f} {r['first_s']:8.1f} {r['first_mb']:14.0f} "
                      f"{r['cached_s']:9.2f} {r['cached_mb']:15.0f}")
            ex = extrapolate(sweep)
            print("linear in the file's sample count (value at 17,382 samples; change per 1,000 samples):")
            for k, label in (("size_mb", "gzipped MB"), ("first_s", "first read s"), ("first_mb", "first read peak MB"),
                             ("cached_s", "cached read s"), ("cached_mb", "cached read peak MB")):
                print(f"  {label:20s} {ex[k][0]:9.1f}   ({ex[k][1]:+.1f} per 1,000 samples)")
        scale = 56200 / a.genes
        if scale > 1:
            print(f"(genes are 1/{scale:.0f} of GTEx's: the float32 block of {a.read} samples x 56,200 genes is "
                  f"{a.read * 56200 * 4 / 2**20:.0f} MB; run --full for the real shape)")


if __name__ == "__main__":
    main()
