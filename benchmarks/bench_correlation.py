"""Benchmark: the gene–feature correlation engine against a bare matrix product, in one run.

Random data of the reference study's shapes (Badea & Stănescu 2020: 9,920 image
features x 56,202 genes x 334 samples; ``--scale`` multiplies the numbers of
features and genes) with ``--planted`` strongly correlated gene–feature pairs
(r ~ 0.9, distinct genes and features) and ``--tissues`` tissue labels (as
GTEx). Every figure is measured in the same run and reported as a ratio, so the
machine's speed cancels out:

1. ``correlation.scan_pairs`` with the settings of notebook 03 (``r_min=0.5``,
   ``fdr_keep=0.05``, ``histogram_bins=200``; and without the histogram) against a bare GEMM of the same
   shapes and dtype: standardised ``F.T (n_features x n) @ G (n x n_genes)``
   computed in the same gene blocks as the engine, outputs discarded (the
   baseline; the engine cannot hold the whole matrix either). One single
   product is also timed for reference when it fits in memory. A second scan
   with ``fdr_keep=0, histogram_bins=0`` shows what the screening and the
   histogram cost. Goal: scan <= 1.5x GEMM.
2. Peak memory of every phase: each phase runs in a fresh ``spawn`` child
   process and reports the child's peak resident set (``VmHWM`` of
   ``/proc/self/status``; ``ru_maxrss`` of a spawned child on Linux also counts
   the parent's resident set at the fork, so it is only the fallback), plus the
   ``tracemalloc`` peak of one extra, untimed scan (NumPy allocations, not BLAS
   buffers). Goal: <= 4 GB.
3. ``correlation.permutation_pvalues`` with N = 1000 for (a) the pairs the scan
   reports at |r| >= 0.8 (the planted ones; each must get p = 1/1001) and (b)
   Badea's 27,671 pairs (reported at R_T 0.7 / E_T 7, among 995 genes and
   1,947 features; here random pairs among as many random genes and features:
   the cost does not depend on which), each as a multiple of the full
   scan. At ``--scale s`` the 27,671 pairs become 27,671 s² (the same share of
   all pairs); ``--perm-pairs`` overrides. Goal: <= 10x.
4. Partial correlation given tissue (``scan_pairs(..., groups=tissue)``, same
   settings) as a multiple of the plain scan. Goal: <= 1.2x.
5. A ``scipy.stats.pearsonr`` loop over a random sample of pairs, extrapolated
   to all pairs, as a multiple of the scan.
6. Recall of the planted pairs at |r| >= 0.8 and the number of unplanted pairs
   above it (random data: expected 0).
7. With ``--torch``: the scan on the torch backend (CPU) as a multiple of NumPy.

The scans and GEMMs use ``--dtype`` (default float32, the setting for the
reference scale: the float64 correlation blocks take twice the memory and
time); the permutations and pearsonr are float64 whatever ``--dtype`` says (the
engine has no dtype for them). The inputs are handed to the engine as float64
arrays, as notebook 03 holds its tables. Data generation, standardising the
GEMM's inputs and warm-up calls are not timed.

Usage::

    python benchmarks/bench_correlation.py [--scale 0.1] [--dtype float32|float64] [--torch]

The reference scale (``--scale 1``, the default) takes minutes and up to about
3 GB per phase (5 GB for the float64 one-product GEMM); ratios measured at a
smaller scale are indicative only (fixed costs weigh more), the goals are
judged at ``--scale 1``.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REF_FEATURES, REF_GENES, REF_SAMPLES = 9920, 56202, 334
BADEA_PAIRS = 27671  # pairs reported at R_T 0.7 / E_T 7
NOTEBOOK_SCAN = {"r_min": 0.5, "fdr_keep": 0.05, "histogram_bins": 0}  # the correlation pass: BH screen
HIST_SCAN = {"r_min": 0.5, "fdr_keep": 0.05, "histogram_bins": 200}  # plus the histogram of every r (03's figure)
BARE_SCAN = {"r_min": 0.5, "fdr_keep": 0.0, "histogram_bins": 0}
REPORT_R = 0.8
GB = 1024 ** 3

log = logging.getLogger("bench_correlation")


# --------------------------------------------------------------------------
# helpers run in the child processes
# --------------------------------------------------------------------------
def _status_bytes(key: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _memory() -> dict:
    """Current and peak resident set of this process (bytes)."""
    peak = _status_bytes("VmHWM")
    if peak is None:  # not Linux: ru_maxrss (bytes on macOS, KiB elsewhere)
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = ru if sys.platform == "darwin" else ru * 1024
    return {"rss": _status_bytes("VmRSS"), "peak": peak}


def _best(fn, repeats: int):
    """Best-of-``repeats`` wall time of ``fn()`` and its last result."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        out = None  # free the previous result before the next run
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _load(folder: str, dtype=np.float64):
    d = Path(folder)
    f = np.load(d / "features.npy").astype(dtype)
    g = np.load(d / "expression.npy").astype(dtype)
    return f, g, np.load(d / "tissue.npy"), np.load(d / "planted.npy")


def _dtype(name: str):
    return {"float32": np.float32, "float64": np.float64}[name]


# --------------------------------------------------------------------------
# phases (each in a fresh spawn child)
# --------------------------------------------------------------------------
def phase_data(folder: str, n_features: int, n_genes: int, n_samples: int, n_planted: int, planted_r: float,
               n_tissues: int, tissue_effect: float, seed: int) -> dict:
    """Random features and expression (float32 .npy), tissue labels and planted pairs."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(n_tissues, 2.0))  # uneven tissue sizes, at least 3 samples each
    tissue = np.concatenate([np.repeat(np.arange(n_tissues), 3),
                             rng.choice(n_tissues, n_samples - 3 * n_tissues, p=p)])
    tissue = rng.permutation(tissue)

    def table(n_cols):
        x = rng.standard_normal((n_samples, n_cols), dtype=np.float32)
        if tissue_effect > 0:
            x *= np.float32(np.sqrt(1 - tissue_effect))
            x += np.float32(np.sqrt(tissue_effect)) * rng.standard_normal((n_tissues, n_cols),
                                                                          dtype=np.float32)[tissue]
        return x

    f, g = table(n_features), table(n_genes)
    pf = rng.choice(n_features, n_planted, replace=False)
    pg = rng.choice(n_genes, n_planted, replace=False)
    for a, b in zip(pf, pg):
        zf = f[:, a].astype(np.float64)
        zf = (zf - zf.mean()) / zf.std()
        g[:, b] = planted_r * zf + np.sqrt(1 - planted_r ** 2) * rng.standard_normal(n_samples)
    g += np.float32(5.0)  # expression-like offset (log2(1 + TPM) scale); no effect on r
    d = Path(folder)
    np.save(d / "features.npy", f)
    np.save(d / "expression.npy", g)
    np.save(d / "tissue.npy", np.array([f"tissue_{t:02d}" for t in tissue]))
    planted = np.stack([pf, pg], axis=1).astype(np.int64)
    np.save(d / "planted.npy", planted)
    return {"planted": planted, "tissue_sizes": np.bincount(tissue, minlength=n_tissues)}


def phase_gemm(folder: str, dtype: str, block_size: int, repeats: int, one_product_max_bytes: float) -> dict:
    """Bare GEMM of the standardised inputs: in the engine's gene blocks, and as one product if it fits."""
    from histo_utils import correlation as hc

    dt = _dtype(dtype)
    f, g, _, _ = _load(folder)
    zf = hc.standardize(f, dtype=dt)
    blocks = [np.ascontiguousarray(hc.standardize(g[:, s:s + block_size], dtype=dt))
              for s in range(0, g.shape[1], block_size)]
    del g
    zf.T @ blocks[0][:, :64]  # warm-up (BLAS threads)
    before = _memory()

    def blocked():
        for b in blocks:
            r = zf.T @ b  # noqa: F841  (the engine also allocates each block's result)

    t_blocked, _ = _best(blocked, repeats)
    mem_blocked = _memory()
    out = {"t_blocked": t_blocked, "mem_before": before, "mem": mem_blocked, "t_one": None, "mem_one": None}
    n_out = zf.shape[1] * sum(b.shape[1] for b in blocks) * np.dtype(dt).itemsize
    if n_out <= one_product_max_bytes:
        zg = np.concatenate(blocks, axis=1)
        del blocks
        out["t_one"], _ = _best(lambda: zf.T @ zg, repeats)
        out["mem_one"] = _memory()
    out["one_product_bytes"] = n_out
    return out


def phase_scan(folder: str, dtype: str, block_size: int, repeats: int, settings: dict, partial: bool = False,
               backend: str = "numpy", top_k: int = 0, trace: bool = False) -> dict:
    """One ``scan_pairs`` pass (timed), its memory, and the pairs the other phases need."""
    from histo_utils import correlation as hc

    dt = _dtype(dtype)
    f, g, tissue, planted = _load(folder)
    groups = tissue if partial else None
    kw = dict(settings, groups=groups, block_size=block_size, backend=backend, dtype=dt)
    if backend == "torch":
        kw["device"] = "cpu"
    hc.scan_pairs(f[:, :16], g[:, :256], **dict(kw, block_size=64))  # warm-up (imports, BLAS threads)
    before = _memory()
    t, res = _best(lambda: hc.scan_pairs(f, g, **kw), repeats)
    mem = _memory()
    pairs = res.pairs
    absr = pairs["r"].abs().to_numpy()
    strong = pairs[absr >= REPORT_R]
    planted_set = {(int(a), int(b)) for a, b in planted}
    found = {(int(a), int(b)) for a, b in zip(strong.feature, strong.gene)}
    out = {"t": t, "mem_before": before, "mem": mem, "n_kept": len(pairs), "n_tests": res.n_tests,
           "r_keep": res.r_keep, "recall": len(found & planted_set) / max(1, len(planted_set)),
           "unplanted": len(found - planted_set),
           "strong": strong[["feature", "gene"]].to_numpy(np.int64),
           "planted_r": pairs.set_index(["feature", "gene"])["r"].reindex(list(planted_set)).to_numpy()}
    if top_k:
        k = min(top_k, len(pairs))
        top = np.argpartition(-absr, k - 1)[:k] if k < len(pairs) else np.arange(len(pairs))
        out["top"] = pairs.iloc[top][["feature", "gene"]].to_numpy(np.int64)
        out["top_min_r"] = float(absr[top].min()) if k else float("nan")
    del res, pairs, strong
    if trace:
        tracemalloc.start()
        hc.scan_pairs(f, g, **kw)
        out["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out


def phase_permutations(folder: str, sets: dict, n_permutations: int, seed: int) -> dict:
    """``permutation_pvalues`` timed on each set of pairs (float64; the engine has no dtype here)."""
    from histo_utils import correlation as hc

    f, g, _, _ = _load(folder)
    hc.permutation_pvalues(f[:, :8], g[:, :8], [0, 1], [2, 3], n_permutations=10)  # warm-up
    out = {"mem_before": _memory()}
    for name, pairs in sets.items():
        t = time.perf_counter()
        p, r = hc.permutation_pvalues(f, g, pairs[:, 0], pairs[:, 1], n_permutations=n_permutations, seed=seed)
        out[name] = {"t": time.perf_counter() - t, "p": p, "r": r, "n": len(pairs),
                     "keys": min(len(np.unique(pairs[:, 0])), len(np.unique(pairs[:, 1])))}
    out["mem"] = _memory()
    return out


def phase_pearsonr(folder: str, n_pairs: int, seed: int) -> dict:
    """A ``scipy.stats.pearsonr`` loop over random pairs; seconds per pair."""
    from scipy import stats

    f, g, _, _ = _load(folder)
    rng = np.random.default_rng(seed + 1)
    fi = rng.integers(0, f.shape[1], n_pairs)
    gi = rng.integers(0, g.shape[1], n_pairs)
    for a, b in zip(fi[:20], gi[:20]):  # warm-up
        stats.pearsonr(f[:, a], g[:, b])
    before = _memory()
    t = time.perf_counter()
    for a, b in zip(fi, gi):
        stats.pearsonr(f[:, a], g[:, b])
    t = time.perf_counter() - t
    return {"t": t, "per_pair": t / n_pairs, "mem_before": before, "mem": _memory()}


def _in_child(fn, *args, **kwargs):
    """Run ``fn`` in a fresh spawn process (its own memory figures) and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args, **kwargs).result()


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name', '?')} {cfg.get('version', '')}".strip()
    except Exception:  # older NumPy
        return "unknown"


def _available_bytes() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * GB


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the numbers of features and genes")
    ap.add_argument("--samples", type=int, default=REF_SAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                    help="dtype of the scans and GEMMs")
    ap.add_argument("--block-size", type=int, default=2048, help="genes per block (notebook 03's default)")
    ap.add_argument("--planted", type=int, default=20, help="planted gene–feature pairs")
    ap.add_argument("--planted-r", type=float, default=0.9)
    ap.add_argument("--tissues", type=int, default=30, help="tissue categories (partial correlation)")
    ap.add_argument("--tissue-effect", type=float, default=0.0,
                    help="share of every column's variance due to tissue (0: independent columns; real "
                         "expression is far from 0, and more pairs then pass the p <= fdr_keep screen)")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--perm-pairs", type=int, default=None,
                    help=f"pairs of the large permutation test (default {BADEA_PAIRS:,} x scale^2)")
    ap.add_argument("--pearsonr-pairs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3,
                    help="best of this many runs of each timed pass (a single 2-s GEMM varies by 15 %% run to run)")
    ap.add_argument("--torch", action="store_true", help="also time the torch backend (CPU)")
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the extra traced scan")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)

    nf = max(2, round(REF_FEATURES * args.scale))
    ng = max(2, round(REF_GENES * args.scale))
    n = args.samples
    if args.planted > min(nf, ng):
        ap.error(f"--planted {args.planted} exceeds the {min(nf, ng)} features or genes at this scale.")
    if n < 3 * args.tissues + 3:
        ap.error(f"--samples {n} is too few for {args.tissues} tissues (3 samples each at least).")
    perm_pairs = args.perm_pairs or max(1, round(BADEA_PAIRS * args.scale ** 2))
    itemsize = np.dtype(args.dtype).itemsize
    one_product_max = 0.25 * _available_bytes()
    wall = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench_correlation_") as tmp:
        log.info("data: %d features x %d genes x %d samples, %d planted pairs (not timed)", nf, ng, n, args.planted)
        data = _in_child(phase_data, tmp, nf, ng, n, args.planted, args.planted_r, args.tissues,
                         args.tissue_effect, args.seed)
        log.info("bare GEMM (%s, blocks of %d genes)", args.dtype, args.block_size)
        gemm = _in_child(phase_gemm, tmp, args.dtype, args.block_size, args.repeats, one_product_max)
        log.info("scan_pairs, notebook settings %s", NOTEBOOK_SCAN)
        scan = _in_child(phase_scan, tmp, args.dtype, args.block_size, args.repeats, NOTEBOOK_SCAN,
                         top_k=perm_pairs, trace=not args.no_tracemalloc)
        log.info("scan_pairs with the histogram of all r %s", HIST_SCAN)
        hscan = _in_child(phase_scan, tmp, args.dtype, args.block_size, args.repeats, HIST_SCAN)
        log.info("scan_pairs, no screening or histogram %s", BARE_SCAN)
        bare = _in_child(phase_scan, tmp, args.dtype, args.block_size, args.repeats, BARE_SCAN)
        log.info("scan_pairs given tissue (%d categories)", args.tissues)
        part = _in_child(phase_scan, tmp, args.dtype, args.block_size, args.repeats, NOTEBOOK_SCAN, partial=True)
        tscan = None
        if args.torch:
            log.info("scan_pairs, torch backend (CPU)")
            tscan = _in_child(phase_scan, tmp, args.dtype, args.block_size, args.repeats, NOTEBOOK_SCAN,
                              backend="torch")
        # Badea's reported pairs involve 995 genes and 1,947 features: draw as many pairs among as many
        # random genes and features (the cost depends on the counts and the grouping, not on which pairs)
        prng = np.random.default_rng(args.seed + 1)
        g_pool = prng.choice(ng, size=min(ng, max(1, round(995 * args.scale))), replace=False)
        f_pool = prng.choice(nf, size=min(nf, max(1, round(1947 * args.scale))), replace=False)
        flat = prng.choice(len(f_pool) * len(g_pool), size=min(perm_pairs, len(f_pool) * len(g_pool)),
                           replace=False)
        badea = np.c_[f_pool[flat // len(g_pool)], g_pool[flat % len(g_pool)]].astype(np.int64)
        scan["top"] = badea
        scan["top_min_r"] = float("nan")
        log.info("permutation p-values, N = %d: %d reported pairs, %d Badea-sized pairs", args.permutations,
                 len(scan["strong"]), len(badea))
        perm = _in_child(phase_permutations, tmp, {"reported": scan["strong"], "top": badea},
                         args.permutations, args.seed)
        log.info("scipy.stats.pearsonr loop on %d pairs", args.pearsonr_pairs)
        loop = _in_child(phase_pearsonr, tmp, args.pearsonr_pairs, args.seed)
    wall = time.perf_counter() - wall

    # ---------------------------------------------------------------- table
    t_gemm, t_scan = gemm["t_blocked"], scan["t"]
    n_tests = nf * ng
    p_min = 1.0 / (args.permutations + 1)
    rep = perm["reported"]
    planted_set = {(int(a), int(b)) for a, b in data["planted"]}
    is_planted = np.array([(int(a), int(b)) in planted_set for a, b in scan["strong"]], dtype=bool)
    planted_p_ok = bool(is_planted.sum() == len(planted_set) and np.all(rep["p"][is_planted] == p_min))
    scan_peak = max(x["mem"]["peak"] for x in (scan, hscan, bare, part))  # NumPy backend (torch's import alone is ~0.4 GB)

    def gb(m):
        return f"{m['peak'] / GB:.2f}" if m else ""

    def yn(ok):
        return "yes" if ok else "NO"

    rows = [  # figure, time s, ratio, goal, met, peak RSS GB of the phase's process
        ("bare GEMM in the engine's gene blocks (baseline)", t_gemm, "1.00", "", "", gb(gemm["mem"]))]
    if gemm["t_one"] is not None:
        rows.append(("bare GEMM as one product (reference) / blocked", gemm["t_one"],
                     f"{gemm['t_one'] / t_gemm:.2f}", "", "", gb(gemm["mem_one"])))
    rows += [
        ("scan_pairs as notebook 03 runs it (BH screen + histogram of all r) / GEMM", hscan["t"],
         f"{hscan['t'] / t_gemm:.2f}", "<= 1.5", yn(hscan["t"] / t_gemm <= 1.5), gb(hscan["mem"])),
        ("scan_pairs, BH screen only / GEMM", t_scan, f"{t_scan / t_gemm:.2f}", "<= 1.5",
         yn(t_scan / t_gemm <= 1.5), gb(scan["mem"])),
        ("scan_pairs, fdr_keep=0 histogram_bins=0 / GEMM", bare["t"], f"{bare['t'] / t_gemm:.2f}", "", "",
         gb(bare["mem"])),
        ("  BH screen (difference) / GEMM", t_scan - bare["t"], f"{(t_scan - bare['t']) / t_gemm:.2f}",
         "", "", ""),
        ("peak memory of a scan process, GB (numpy scans)", None, f"{scan_peak / GB:.2f}", "<= 4",
         yn(scan_peak <= 4 * GB), ""),
    ]
    if "traced_peak" in scan:
        rows.append(("  tracemalloc peak of one scan, GB", None, f"{scan['traced_peak'] / GB:.2f}", "", "", ""))
    for key, label in (("reported", f"permutation p, N={args.permutations}, {rep['n']} pairs |r|>={REPORT_R} / scan"),
                       ("top", f"permutation p, N={args.permutations}, {perm['top']['n']:,} Badea-sized / scan")):
        x = perm[key]
        rows.append((label, x["t"], f"{x['t'] / t_scan:.2f}", "<= 10", yn(x["t"] / t_scan <= 10), gb(perm["mem"])))
    rows += [
        (f"  planted pairs all get p = 1/{args.permutations + 1}", None, "", "", yn(planted_p_ok), ""),
        (f"partial scan given tissue ({args.tissues}) / scan", part["t"], f"{part['t'] / t_scan:.2f}", "<= 1.2",
         yn(part["t"] / t_scan <= 1.2), gb(part["mem"])),
        (f"pearsonr loop ({args.pearsonr_pairs:,} pairs) extrapolated / scan", loop["per_pair"] * n_tests,
         f"{loop['per_pair'] * n_tests / t_scan:.0f}", "", "", gb(loop["mem"])),
    ]
    if tscan:
        rows.append(("scan_pairs torch (CPU) / numpy", tscan["t"], f"{tscan['t'] / t_scan:.2f}", "", "",
                     gb(tscan["mem"])))
    rows += [
        (f"planted pairs found at |r|>={REPORT_R} (recall)", None, f"{scan['recall']:.2f}", "1",
         yn(scan["recall"] == 1.0), ""),
        (f"unplanted pairs at |r|>={REPORT_R}", None, f"{scan['unplanted']}", "0", yn(scan["unplanted"] == 0), ""),
    ]

    print(f"correlation engine benchmark: {nf:,} features x {ng:,} genes x {n} samples "
          f"(--scale {args.scale:g}) = {n_tests:,} pairs; dtype {args.dtype} for the scans and GEMMs "
          f"(permutations and pearsonr: float64); gene blocks of {args.block_size}; BLAS {_blas()}")
    print(f"random data, {args.planted} planted pairs (r ~ {args.planted_r}; observed "
          f"{np.nanmin(scan['planted_r']):.3f}..{np.nanmax(scan['planted_r']):.3f}), "
          f"{args.tissues} tissues ({data['tissue_sizes'].min()}..{data['tissue_sizes'].max()} samples), "
          f"tissue effect {args.tissue_effect:g}")
    print(f"baseline: the bare GEMM in the engine's blocks (same shapes, dtype and block results as the scan, "
          f"inputs standardised beforehand); one product of {gemm['one_product_bytes'] / GB:.2f} GB "
          + ("timed for reference" if gemm["t_one"] is not None else "skipped (too large for the memory free)"))
    print(f"scan kept {scan['n_kept']:,} pairs ({scan['n_kept'] / n_tests:.1%}; |r| >= {scan['r_keep']:.3f}, "
          f"the p <= 0.05 screen); bare scan kept {bare['n_kept']:,}; partial scan kept {part['n_kept']:,}")
    print(f"permutation pairs: {perm['top']['n']:,} random pairs among Badea-sized gene and feature sets ("
          f"{perm['top']['keys']:,} distinct genes or features) = {BADEA_PAIRS:,} x scale^2 unless --perm-pairs; "
          f"permutation ratios are over the notebook-settings scan")
    if args.scale < 1:
        print("NB: --scale < 1: fixed costs weigh more, ratios are indicative; goals are judged at --scale 1")
    print()
    head = ("figure", "time s", "ratio", "goal", "met", "peak RSS GB")
    width = max(len(r[0]) for r in rows)
    print(f"{head[0]:<{width}}  {head[1]:>8}  {head[2]:>7}  {head[3]:>6}  {head[4]:>3}  {head[5]:>11}")
    for name, t, ratio, goal, met, mem in rows:
        ts = f"{t:8.3f}" if t is not None else ""
        print(f"{name:<{width}}  {ts:>8}  {ratio:>7}  {goal:>6}  {met:>3}  {mem:>11}")
    print(f"\npeak RSS: VmHWM of each phase's fresh spawn process (interpreter, imports and float64 inputs "
          f"included: {(scan['mem_before']['rss'] or 0) / GB:.2f} GB before the scan); total wall time {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
