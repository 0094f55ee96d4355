"""Benchmark: reading two traits of a PanCanAtlas-shaped mRNA table (notebook 08 on real TCGA files).

The real ``EBPlusPlusAdjustPANCAN_IlluminaHiSeq_RNASeqV2.geneExp.tsv`` has 20,531 genes x 11,069 aliquots
(about 1.9 GB of text). This writes a table of ``--aliquots`` columns and ``--genes`` rows (default one tenth
of the real rows, to keep the disk use near 200 MB), then, each in a fresh process:

* :func:`histo_utils.tcga.read_pancan_mrna` for two genes (streamed, float32): seconds, MB/s, peak RSS;
* ``pandas.read_csv`` of the whole table (what reading it as a matrix costs): seconds and peak RSS.

Seconds scale with the file size (the streamed reader touches every line once); the streamed reader's
memory does not. Run: ``python benchmarks/bench_tcga_read.py [--genes 2000] [--aliquots 11069]``
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STREAM = """
import resource, sys, time
from histo_utils import tcga
t = time.perf_counter()
df = tcga.read_pancan_mrna(sys.argv[1], genes=["G17", sys.argv[2]])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, df.shape[1])
"""
PANDAS = """
import resource, sys, time
import pandas as pd
t = time.perf_counter()
df = pd.read_csv(sys.argv[1], sep="\\t", index_col=0)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, df.shape[1])
"""


def write_table(path: Path, genes: int, aliquots: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cols = [f"TCGA-{i // 10000:02d}-{i % 10000:04d}-01A-11R-A001-07" for i in range(aliquots)]
    with open(path, "w") as fh:
        fh.write("\t".join(["gene_id", *cols]) + "\n")
        for i in range(genes):
            row = rng.lognormal(4, 2, aliquots)
            fh.write(f"G{i}|{i}\t" + "\t".join(np.char.mod("%.5g", row)) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--aliquots", type=int, default=11069)
    ap.add_argument("--skip-pandas", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "EBPlusPlusAdjustPANCAN_IlluminaHiSeq_RNASeqV2.geneExp.tsv"
        t = time.perf_counter()
        write_table(path, a.genes, a.aliquots)
        mb = path.stat().st_size / 1e6
        print(f"table {a.genes} x {a.aliquots}: {mb:.0f} MB written in {time.perf_counter() - t:.0f} s")
        runs = [("streamed, 2 genes", STREAM)] + ([] if a.skip_pandas else [("pandas, whole table", PANDAS)])
        for name, code in runs:
            out = subprocess.run([sys.executable, "-c", code, str(path), f"G{a.genes - 1}"], capture_output=True, text=True, check=True)
            sec, rss, ncol = out.stdout.split()
            print(f"{name:22s} {float(sec):7.1f} s  {mb / float(sec):6.0f} MB/s  peak RSS {float(rss):7.0f} MB  "
                  f"({ncol} columns)")
        real = 20531 / a.genes
        print(f"the real table has {real:.1f}x these rows: streamed time scales with it, its memory does not")


if __name__ == "__main__":
    main()
