"""Gene–feature correlation engine (Badea & Stănescu 2020, notebook 03).

Every gene is correlated with every image feature over the same samples:

    r(g, f) = sum_s  z_g[s] z_f[s]        z: column centred and scaled to unit norm

which for all pairs is one matrix product ``Z_F.T @ Z_G``. The engine streams
it over blocks of genes, so the ``n_features x n_genes`` matrix never sits in
memory: each block is screened and only the pairs that can matter are kept
(those above a correlation floor and those that Benjamini–Hochberg over all
pairs rejects at ``fdr_keep``, whose q-values are then exact).

Partial correlation given a categorical variable (tissue) is the same product
after centring each column within the categories: the correlation of the
residuals of both variables regressed on the category indicators
(Frisch–Waugh), tested with ``n - 2 - (k - 1)`` degrees of freedom for ``k``
categories.

Permutation p-values use one permuted sample order per permutation for all
pairs (the gene's values are permuted, the feature's stay), and are computed
for every reported pair with every permutation: they equal exhaustive
per-pair permutation testing with the same orders (:func:`permutation_pvalues`).

Backends: NumPy (default) and torch (CPU, or CUDA when present); the same
numbers up to floating-point rounding.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import data, gtex, io, products
from .errors import InputError
from .text import md_text

log = logging.getLogger(__name__)

__all__ = ["drop_constant", "standardize", "correlation_blocks", "scan_pairs", "ScanResult",
           "pair_correlations", "pearson_pvalues", "critical_r", "bh_adjust", "permutation_pvalues",
           "fisher_z", "compare_scans", "group_r2", "within_group_r", "conditional_independence", "expression_floor",
           "threshold_grid", "null_r_density", "named_pairs", "significant_counts_by_table", "network_comparison",
           "batch_norm_effect", "describe_batch_norm_effect", "genes_per_layer",
           "Reproducibility", "reproducibility", "indirect_dependencies"]

BACKENDS = ("numpy", "torch")
#: the p-value columns of :func:`conditional_independence`
CI_COLUMNS = ("p_g_t_f", "p_f_g_t", "p_g_f_t")


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------
def drop_constant(df: pd.DataFrame, *, what: str = "column", tol: float = 0.0) -> tuple[pd.DataFrame, list]:
    """Drop columns without variance (a correlation with them is undefined).

    The one test of constancy used everywhere: a column is constant when its
    centred values are zero up to rounding (relative 1e-10 of its largest
    absolute value) or its standard deviation is at most ``tol``.

    Parameters
    ----------
    df : DataFrame, shape (n_samples, n_columns)
    what : how a column is called in messages (``feature``, ``gene``)
    tol : absolute floor on the standard deviation

    Returns
    -------
    kept : DataFrame, shape (n_samples, n_kept)
    dropped : list of the dropped column names (to report)

    Raises on NaN or infinite values, naming the columns.
    """
    values = df.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(0)
    if bad.any():
        raise InputError(f"{int(bad.sum())} {what}s contain NaN or infinite values (e.g. "
                         f"{list(df.columns[bad][:3])}); impute or drop them before correlating.")
    keep = ~_flat(values - values.mean(0), values, tol)
    dropped = list(df.columns[~keep])
    if dropped:
        log.debug("Dropping %d constant %ss (e.g. %s)", len(dropped), what, dropped[:3])
    return df.loc[:, keep], dropped


def _group_means(x: np.ndarray, groups) -> np.ndarray:
    """Each row replaced by its group's column means, shape of x (one-hot products: BLAS, not a loop)."""
    _, code = np.unique(np.asarray(groups), return_inverse=True)
    onehot = np.zeros((len(code), code.max() + 1))
    onehot[np.arange(len(code)), code] = 1.0
    means = (onehot.T @ x) / onehot.sum(0)[:, None]
    return onehot @ means


def _flat(centred: np.ndarray, x: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Columns whose centred values are zero up to rounding (relative 1e-10) or ``tol`` (standard deviation)."""
    sd = np.sqrt((centred ** 2).mean(0))
    return sd <= np.maximum(np.abs(x).max(0) * 1e-10, tol) + 1e-300


def within_group_r(features: pd.DataFrame, drivers: pd.DataFrame, *, groups: Sequence) -> pd.DataFrame:
    """Pearson r of every feature with every driver within groups (group means removed from both).

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features)
    drivers : DataFrame, shape (n_samples, n_drivers), rows in the order of ``features`` (e.g. planted programs)
    groups : sequence, length n_samples, the group (tissue) of each sample

    Returns
    -------
    DataFrame, shape (n_features, n_drivers): r within groups; NaN for a feature or driver without variance
    within groups (:func:`standardize`).
    """
    if len(drivers) != len(features):
        raise InputError(f"drivers has {len(drivers)} rows but features has {len(features)}: give one row per "
                         "sample of features, in its order.")
    groups = np.asarray(groups)
    zf = standardize(features.to_numpy(dtype=np.float64), groups=groups)
    return pd.DataFrame({name: (zf * standardize(v.to_numpy(dtype=np.float64)[:, None], groups=groups)).sum(0)
                         for name, v in drivers.items()}, index=features.columns)


def standardize(x: np.ndarray, *, groups: Sequence | None = None, dtype=np.float64, name: str = "matrix"
                ) -> np.ndarray:
    """Centre each column (within groups when given) and scale it to unit norm.

    Parameters
    ----------
    x : array, shape (n_samples, n_columns)
    groups : sequence, length n_samples, optional
        Category of each sample: columns are centred within each category
        (residuals of a regression on the category indicators).
    dtype : float dtype of the result

    Returns
    -------
    array, shape (n_samples, n_columns)
        Columns ``z`` with ``z.sum() == 0`` and ``(z ** 2).sum() == 1``, so that
        ``z_a @ z_b`` is Pearson's r. Columns without (residual) variance are
        all NaN when ``groups`` is given; without groups they are an error.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"{name} must be 2-D (samples x columns), got shape {x.shape}.")
    if not np.isfinite(x).all():
        cols = np.where(~np.isfinite(x).all(0))[0]
        raise InputError(f"{name} has NaN or infinite values in {len(cols)} columns (e.g. {cols[:5].tolist()}); "
                         f"impute or drop them before correlating.")
    if groups is None:
        z = x - x.mean(0)
    else:
        groups = np.asarray(groups)
        if len(groups) != len(x):
            raise InputError(f"groups has {len(groups)} entries for {len(x)} samples of {name}.")
        z = x - _group_means(x, groups)
    norm = np.sqrt((z ** 2).sum(0))
    flat = _flat(z, x)
    if flat.any():
        if groups is None:
            raise InputError(f"{name} has {int(flat.sum())} constant columns (e.g. {np.where(flat)[0][:5].tolist()}); "
                             f"drop them first (correlation.drop_constant).")
        norm = np.where(flat, np.nan, norm)
    return (z / norm).astype(dtype, copy=False)


def _as_matrix(x, name):
    if isinstance(x, pd.DataFrame):
        return x.to_numpy(dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------
class _Backend:
    """Matrix products on NumPy or torch (CPU/CUDA), results back as NumPy."""

    def __init__(self, backend: str = "numpy", device: str = "auto"):
        if backend not in BACKENDS:
            raise InputError(f"Backend {backend!r} not available. Available backends: {', '.join(BACKENDS)}.")
        self.name = backend
        self.device = None
        if backend == "torch":
            import torch
            self.torch = torch
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cuda" and not torch.cuda.is_available():
                raise InputError("device='cuda' requested but no CUDA device is available; use 'cpu' or 'auto'.")
            self.device = torch.device(device)

    def put(self, a: np.ndarray):
        if self.name == "numpy":
            return a
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def matmul_t(self, a, b) -> np.ndarray:
        """``a.T @ b`` as a NumPy array."""
        return self.to_numpy(a.T @ b)

    def matmul_t_native(self, a, b):
        """``a.T @ b`` in the backend's array type."""
        return a.T @ b

    def to_numpy(self, a) -> np.ndarray:
        return a if self.name == "numpy" else a.cpu().numpy()

    def screen(self, r, thr: float, hist_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Flat indices and values of |r| >= thr, and counts of r in ``hist_bins`` bins over [-1, 1].

        Runs where the block lives (on the GPU for CUDA): only the kept pairs come back. The block may be
        overwritten (it is not used afterwards).
        """
        if self.name == "torch":
            flat = r.reshape(-1)
            idx = self.torch.nonzero(flat.abs() >= thr).squeeze(1)
            vals = flat[idx]
            hist = None
            if hist_bins:  # NaN (within-group constant columns) moved out of range: not counted
                hist = self.torch.histc(self.torch.nan_to_num(flat, nan=5.0).float(), bins=hist_bins,
                                        min=-1.0, max=1.0).cpu().numpy().astype(np.int64)
            return idx.cpu().numpy(), vals.cpu().numpy(), hist
        flat = r.reshape(-1)
        idx = np.flatnonzero((flat >= thr) | (flat <= -thr))
        vals = flat[idx]
        hist = None
        if hist_bins:  # in place: bin index = floor((r + 1) * bins / 2); r = 1 folds into the last bin
            flat += 1.0
            flat *= hist_bins / 2.0
            np.nan_to_num(flat, copy=False, nan=4.0 * hist_bins)  # NaN: out of range, not counted
            counts = np.bincount(flat.astype(np.int32), minlength=hist_bins + 1)
            hist = counts[:hist_bins].astype(np.int64)
            hist[-1] += counts[hist_bins]
        return idx, vals, hist


# --------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------
def _check_scan_inputs(f: np.ndarray, g: np.ndarray, groups, block_size: int) -> None:
    if f.shape[0] != g.shape[0]:
        raise InputError(f"features have {f.shape[0]} samples and expression {g.shape[0]}: align them first "
                         f"(data.match_samples).")
    if f.shape[0] < 3 + (0 if groups is None else len(np.unique(groups)) - 1):
        raise InputError(f"{f.shape[0]} samples are too few for a correlation test.")
    if block_size < 1:
        raise InputError(f"block_size must be >= 1, got {block_size}.")


def _native_blocks(f: np.ndarray, g: np.ndarray, *, groups, block_size: int, be: "_Backend", dtype,
                   progress: bool):
    """(genes slice, r block) with the block in the backend's own array type (device memory for CUDA)."""
    _check_scan_inputs(f, g, groups, block_size)
    zf = be.put(standardize(f, groups=groups, dtype=dtype, name="features"))
    n_genes = g.shape[1]
    for start in tqdm(range(0, n_genes, block_size), desc="gene blocks", disable=not progress):
        sl = slice(start, min(start + block_size, n_genes))
        zg = be.put(standardize(g[:, sl], groups=groups, dtype=dtype, name="expression"))
        yield sl, be.matmul_t_native(zf, zg)


def correlation_blocks(features, expression, *, groups: Sequence | None = None, block_size: int = 2048,
                       backend: str = "numpy", device: str = "auto", dtype=np.float64,
                       progress: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
    """Stream the feature × gene correlation matrix over blocks of genes.

    Parameters
    ----------
    features : array or DataFrame, shape (n_samples, n_features)
    expression : array or DataFrame, shape (n_samples, n_genes)
        Same samples in the same order (see :func:`histo_utils.data.match_samples`); already
        transformed (log2(1 + TPM)).
    groups : sequence, length n_samples, optional
        Condition on this categorical variable: partial correlations.
    block_size : genes per block (memory: ``n_features * block_size`` values)
    backend : ``"numpy"`` or ``"torch"``
    device : torch device (``"auto"``, ``"cpu"``, ``"cuda"``)
    dtype : ``np.float64`` or ``np.float32``

    Yields
    ------
    genes : slice of gene columns in this block
    r : array, shape (n_features, block)
    """
    be = _Backend(backend, device)
    for sl, r in _native_blocks(_as_matrix(features, "features"), _as_matrix(expression, "expression"),
                                groups=groups, block_size=block_size, be=be, dtype=dtype, progress=progress):
        yield sl, be.to_numpy(r)


def critical_r(alpha: float, n: int, *, n_conditioning: int = 0) -> float:
    """The |r| at which the two-sided t test of r = 0 reaches p = ``alpha``.

    ``df = n - 2 - n_conditioning``; for a partial correlation given a
    k-category variable ``n_conditioning = k - 1``.
    """
    df = n - 2 - n_conditioning
    if df < 1:
        raise InputError(f"{n} samples leave {df} degrees of freedom; at least 1 is needed.")
    t = stats.t.isf(alpha / 2, df)
    return float(t / np.sqrt(df + t * t))


def pearson_pvalues(r: np.ndarray, n: int, *, n_conditioning: int = 0) -> np.ndarray:
    """Two-sided analytic p-values of (partial) correlations, t test with ``n - 2 - n_conditioning`` df.

    Equals ``scipy.stats.pearsonr(...).pvalue`` for plain correlations.
    """
    df = n - 2 - n_conditioning
    if df < 1:
        raise InputError(f"{n} samples leave {df} degrees of freedom; at least 1 is needed.")
    r = np.clip(np.asarray(r, dtype=np.float64), -1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
    return 2.0 * stats.t.sf(np.abs(t), df)


def bh_adjust(pvalues: np.ndarray, *, n_tests: int | None = None) -> np.ndarray:
    """Benjamini–Hochberg q-values of the smallest p-values of a larger family.

    Parameters
    ----------
    pvalues : array, shape (k,)
        The k smallest p-values of a family of ``n_tests`` tests (all of them
        when ``n_tests`` is None), any order.
    n_tests : size of the family (m)

    Returns
    -------
    q : array, shape (k,)
        ``q_(i) = min_{j >= i} m p_(j) / j``, capped at 1. With the full family
        this equals statsmodels' ``fdrcorrection``. With only the k smallest, the
        unseen tail can only lower a q-value that lies above the largest p-value
        not kept; every q below that bound is exact.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p) if n_tests is None else int(n_tests)
    if m < len(p):
        raise InputError(f"n_tests={m} is smaller than the {len(p)} p-values given.")
    if len(p) == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty_like(q)
    out[order] = q
    return out


@dataclass
class ScanResult:
    """Pairs kept by :func:`scan_pairs` and what is needed to judge them.

    Attributes
    ----------
    pairs : DataFrame with ``feature, gene`` (integer column positions), ``r``, ``p`` (analytic), ``q`` (BH over
        all ``n_tests`` pairs; exact where ``q <= fdr_keep``, an upper bound above)
    n_samples, n_features, n_genes, n_tests : sizes; ``n_tests = n_features * n_genes``
    r_keep : |r| above which pairs were kept
    n_conditioning : degrees of freedom spent on the conditioning variable
    histogram : counts of all r in ``bins`` (every pair, not only the kept ones)
    """

    pairs: pd.DataFrame
    n_samples: int
    n_features: int
    n_genes: int
    r_keep: float
    fdr_keep: float
    n_conditioning: int = 0
    bins: np.ndarray = field(default_factory=lambda: np.linspace(-1, 1, 201))
    histogram: np.ndarray | None = None

    @property
    def n_tests(self) -> int:
        return self.n_features * self.n_genes


#: gene blocks multiplied and screened at once by the NumPy scan (one BLAS thread each); memory: this many blocks
SCAN_THREADS = max(1, min(os.cpu_count() or 1, 8))
_GRID = 200  # bins over [-1, 1] of the per-block histogram that drives the screen (0.01 wide)
_CHUNK = 1 << 18  # values binned at a time (stays in cache)
_MIN_REJECTIONS = 1000  # the screen's cut assumes at least this many BH rejections (a recount covers more)


def _bin_codes(flat: np.ndarray, bins: int, buf: np.ndarray, out: np.ndarray, may_nan: bool) -> None:
    """Bin index ``floor((r + 1) * bins / 2)`` of every value, in the values' dtype (as np.histogram's edges).

    NaN (within-group constant columns) gets ``bins + 50``: out of range, not counted.
    """
    np.add(flat, 1.0, out=buf)
    np.multiply(buf, bins / 2.0, out=buf)
    np.maximum(buf, 0.0, out=buf)  # r = -1 - eps rounds to a tiny negative: bin 0 (as int truncation gave)
    if may_nan:
        np.nan_to_num(buf, copy=False, nan=bins + 50.0)
    np.copyto(out, buf, casting="unsafe")


def _code_bounds(cut: float, bins: int) -> tuple[int, int]:
    """Bin indices ``lo, hi`` such that |r| >= cut implies code <= lo or code >= hi (one bin of margin)."""
    hi = int(np.floor((1.0 + cut) * bins / 2.0)) - 1
    lo = int(np.floor((1.0 - cut) * bins / 2.0)) + 1
    return lo, hi


def _screen_binned(r: np.ndarray, cut: float, may_nan: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over a block: counts of r in the ``_GRID`` bins and the values with |r| >= cut.

    Values are binned a chunk at a time (in cache): the chunk's counts tell whether it holds any value that
    can reach the cut; only such chunks are searched, on the 8-bit bin codes, then checked exactly.

    Returns
    -------
    idx : int64 array, flat indices in the block of the values with |r| >= cut
    vals : their values
    counts : int64 array, shape (_GRID + 1,): bins 0.._GRID - 1, and r = 1 exactly (folded by the caller)
    """
    flat = r.reshape(-1)
    n = flat.size
    buf = np.empty(min(n, _CHUNK), dtype=flat.dtype)
    codes = np.empty(min(n, _CHUNK), dtype=np.uint8)
    counts = np.zeros(256, dtype=np.int64)
    lo, hi = _code_bounds(cut, _GRID)
    idx, vals = [], []
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        c = codes[:e - s]
        _bin_codes(flat[s:e], _GRID, buf[:e - s], c, may_nan)
        cc = np.bincount(c, minlength=256)
        counts += cc
        if cc[hi:_GRID + 1].sum() + cc[:max(lo + 1, 0)].sum():
            cand = np.flatnonzero((c >= hi) | (c <= lo))
            v = flat[s:e][cand]
            ok = (v >= cut) | (v <= -cut)
            idx.append(cand[ok] + s)
            vals.append(v[ok])
    idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    vals = np.concatenate(vals) if vals else np.zeros(0, flat.dtype)
    return idx, vals, counts[:_GRID + 1]


def _abs_counts(counts: np.ndarray) -> np.ndarray:
    """Signed-r counts on the ``_GRID`` bins (r = 1 in the last entry) folded into |r| bins of width 2/_GRID."""
    h = counts[:_GRID].copy()
    h[-1] += counts[_GRID]
    half = _GRID // 2
    return h[half:] + h[:half][::-1]


def _count_above(absr: np.ndarray, cut: float, t: float, abs_hist: np.ndarray) -> int:
    """Upper bound of #{|r| >= t} in a block: exact above the block's cut, the histogram below it.

    The histogram's bins that may hold a value in [t, cut) are counted whole, with one bin of margin.
    """
    k = int(np.count_nonzero(absr >= max(t, cut)))
    if t < cut:
        w = 2.0 / _GRID
        a = max(int(np.floor(t / w)) - 1, 0)
        b = min(int(np.ceil(cut / w)) + 1, len(abs_hist))
        k += int(abs_hist[a:b].sum())
    return k


def _bh_rejections(blocks: list, fdr: float, n_tests: int, n: int, k_cond: int, start: int) -> int:
    """Largest fixed point of ``k -> C(critical_r(fdr k / m))`` from ``start`` down, C from :func:`_count_above`.

    With exact counts this is the Benjamini–Hochberg number of rejections R; with the upper bounds it is an
    upper bound of R (the function is monotone and only larger).
    """
    kk = start
    for _ in range(100000):
        if kk == 0:
            break
        t = critical_r(fdr * kk / n_tests, n, n_conditioning=k_cond)
        k_new = sum(_count_above(b["absr"], b["cut"], t, b["abs_hist"]) for b in blocks)
        if k_new >= kk:
            break
        kk = k_new
    return kk


def _next_cut(abs_hist: np.ndarray, seen: int, *, r_min: float, screen: float, fdr: float, n_tests: int, n: int,
              k_cond: int) -> float:
    """The screen's cut for the next block: the BH cut for 4x the rejections the blocks seen so far project.

    Any cut is correct (blocks whose histogram shows values between their cut and the final BH cut are
    recomputed); a good one keeps few pairs and needs no recount.
    """
    if seen == 0:
        return screen
    w = 2.0 / _GRID
    above = np.cumsum(abs_hist[::-1])[::-1] * (n_tests / seen)  # projected #{|r| >= a w}, a = 0..
    edges = np.arange(len(abs_hist)) * w
    p = pearson_pvalues(edges, n, n_conditioning=k_cond)
    ok = p <= fdr * above / n_tests
    r_est = float(above[ok].max()) if ok.any() else 0.0
    k = min(float(n_tests), max(_MIN_REJECTIONS, 4.0 * r_est))
    cut = critical_r(fdr * k / n_tests, n, n_conditioning=k_cond) - w
    return float(min(r_min, max(cut, screen)))


def scan_pairs(features, expression, *, r_min: float = 0.5, fdr_keep: float = 0.05,
               groups: Sequence | None = None, block_size: int = 2048, backend: str = "numpy",
               device: str = "auto", dtype=np.float64, histogram_bins: int = 0,
               n_conditioning: int | None = None, progress: bool = False) -> ScanResult:
    """All gene–feature pairs that can be reported, in one streamed pass.

    A pair is kept when ``|r| >= r_min`` or when Benjamini–Hochberg over all
    ``n_features * n_genes`` pairs rejects it at level ``fdr_keep`` (its
    q-value is at most ``fdr_keep``). Blocks are screened at the |r| of
    ``p = fdr_keep`` (every pair that could be rejected), the rejections are
    counted exactly from those, and only the rejected pairs are kept: their
    q-values are exact; q-values of pairs kept only for ``r_min`` are upper
    bounds (they exceed ``fdr_keep``). Set ``fdr_keep=0`` to keep by ``r_min``
    only.

    Parameters
    ----------
    features : array or DataFrame, shape (n_samples, n_features)
    expression : array or DataFrame, shape (n_samples, n_genes)
    r_min : keep pairs with |r| at least this
    fdr_keep : keep the pairs BH rejects at this level (0 to disable)
    groups : condition on this category (partial correlations)
    histogram_bins : bins over [-1, 1] counting every r (0: no histogram). On the NumPy backend the screen
        bins every block anyway (200 bins): with ``histogram_bins=200`` the histogram is free, other numbers
        of bins cost one more pass per block
    n_conditioning : degrees of freedom already spent on covariates, when both tables are residuals of a
        regression on a design of rank ``n_conditioning + 1`` (the p-values then use ``n - 2 -
        n_conditioning`` df, as the coefficient's t test in the full model would); default: the ``groups``'
        categories minus one, or 0

    Returns
    -------
    ScanResult
    """
    f = _as_matrix(features, "features")
    g = _as_matrix(expression, "expression")
    n = f.shape[0]
    k = 0 if groups is None else len(np.unique(np.asarray(groups))) - 1
    if n_conditioning is not None:
        k = int(n_conditioning)
    n_tests = f.shape[1] * g.shape[1]
    screen = float(r_min)
    if fdr_keep > 0:
        screen = min(screen, critical_r(fdr_keep, n, n_conditioning=k))
    be = _Backend(backend, device)
    bins = np.linspace(-1, 1, histogram_bins + 1) if histogram_bins else np.array([])
    if be.name == "numpy" and (fdr_keep > 0 or histogram_bins):
        fi, gi, rr, hist, r_keep = _scan_binned(f, g, groups=groups, block_size=block_size, dtype=dtype,
                                                progress=progress, r_min=float(r_min), screen=screen,
                                                fdr_keep=fdr_keep, histogram_bins=histogram_bins, n=n, k_cond=k)
    else:
        fi, gi, rr, hist, r_keep = _scan_thresholded(f, g, groups=groups, block_size=block_size, dtype=dtype,
                                                     progress=progress, be=be, r_min=float(r_min), screen=screen,
                                                     fdr_keep=fdr_keep, histogram_bins=histogram_bins, n=n,
                                                     k_cond=k)
    pairs = pd.DataFrame({"feature": fi, "gene": gi, "r": rr.astype(np.float64)})
    pairs["p"] = pearson_pvalues(pairs["r"].to_numpy(), n, n_conditioning=k)
    pairs["q"] = bh_adjust(pairs["p"].to_numpy(), n_tests=n_tests)
    res = ScanResult(pairs=pairs, n_samples=n, n_features=f.shape[1], n_genes=g.shape[1], r_keep=r_keep,
                     fdr_keep=fdr_keep, n_conditioning=k, bins=bins, histogram=hist)
    log.info("Scanned %d x %d pairs on %d samples; kept %d with |r| >= %.3f", res.n_features, res.n_genes, n,
             len(pairs), r_keep)
    return res


def _scan_thresholded(f, g, *, groups, block_size, dtype, progress, be, r_min, screen, fdr_keep, histogram_bins,
                      n, k_cond):
    """The screen by thresholding: every pair with |r| >= ``screen`` is kept, then cut to the BH rejections.

    The torch backend's path (the screen runs on the device), and NumPy's without BH or histogram.
    """
    k = k_cond
    n_tests = f.shape[1] * g.shape[1]
    fi, gi, rr = [], [], []
    hist = np.zeros(histogram_bins, dtype=np.int64) if histogram_bins else None

    def collect(sl, future):
        idx, vals, h = future.result()
        a, b = np.divmod(idx, sl.stop - sl.start)
        fi.append(a.astype(np.int32))
        gi.append((b + sl.start).astype(np.int32))
        rr.append(vals)
        if hist is not None:
            np.add(hist, h, out=hist)

    # a worker thread screens block i while the main thread multiplies block i + 1 (NumPy releases the GIL)
    pending = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        for sl, r in _native_blocks(f, g, groups=groups, block_size=block_size, be=be, dtype=dtype,
                                    progress=progress):
            job = (sl, pool.submit(be.screen, r, screen, histogram_bins))
            if pending is not None:
                collect(*pending)
            pending = job
        if pending is not None:
            collect(*pending)
    fi = np.concatenate(fi) if fi else np.zeros(0, np.int32)
    gi = np.concatenate(gi) if gi else np.zeros(0, np.int32)
    rr = np.concatenate(rr) if rr else np.zeros(0)
    r_keep = float(r_min)
    if fdr_keep > 0 and len(rr):
        # Benjamini–Hochberg rejections at fdr_keep: R = max{k : p_(k) <= fdr_keep k / m}. Every pair with
        # p <= fdr_keep is at hand, so R is the largest fixed point of k -> #{p <= fdr_keep k / m}, reached
        # from above. Only the R rejected pairs (and those above r_min) are kept: their q-values are exact.
        absr = np.abs(rr)
        kk = len(rr)
        for _ in range(100000):
            if kk == 0:
                break
            k_new = int(np.count_nonzero(absr >= critical_r(fdr_keep * kk / n_tests, n, n_conditioning=k)))
            if k_new == kk:
                break
            kk = k_new
        if kk:
            r_keep = min(r_keep, critical_r(fdr_keep * kk / n_tests, n, n_conditioning=k))
        keep = absr >= r_keep
        fi, gi, rr = fi[keep], gi[keep], rr[keep]
    elif len(rr):
        keep = np.abs(rr) >= r_keep
        fi, gi, rr = fi[keep], gi[keep], rr[keep]
    return fi, gi, rr, hist, r_keep


def _histogram_chunks(flat: np.ndarray, bins: int, may_nan: bool) -> np.ndarray:
    """Counts of r in ``bins`` bins over [-1, 1] (r = 1 in the last bin), NaN not counted."""
    buf = np.empty(min(flat.size, _CHUNK), dtype=flat.dtype)
    codes = np.empty(min(flat.size, _CHUNK), dtype=np.uint8 if bins + 50 < 256 else np.uint32)
    counts = np.zeros(bins + 51, dtype=np.int64)
    for s in range(0, flat.size, _CHUNK):
        e = min(flat.size, s + _CHUNK)
        _bin_codes(flat[s:e], bins, buf[:e - s], codes[:e - s], may_nan)
        counts += np.bincount(codes[:e - s], minlength=bins + 51)[:bins + 51]
    h = counts[:bins].copy()
    h[-1] += counts[bins]
    return h


def _screen_job(r: np.ndarray, cut: float, may_nan: bool, histogram_bins: int):
    idx, vals, counts = _screen_binned(r, cut, may_nan)
    extra = None
    if histogram_bins and histogram_bins != _GRID:
        extra = _histogram_chunks(r.reshape(-1), histogram_bins, may_nan)
    return idx, vals, counts, extra


def _multiply_and_screen(zf: np.ndarray, g: np.ndarray, sl: slice, groups, dtype, cut: float, may_nan: bool,
                         histogram_bins: int):
    """One gene block: its correlations with every feature, then :func:`_screen_job` (the block is dropped)."""
    zg = standardize(g[:, sl], groups=groups, dtype=dtype, name="expression")
    return _screen_job(zf.T @ zg, cut, may_nan, histogram_bins)


def _scan_binned(f, g, *, groups, block_size, dtype, progress, r_min, screen, fdr_keep, histogram_bins, n,
                 k_cond, threads: int = SCAN_THREADS):
    """The NumPy screen: one binned pass per block gives the histogram and the BH counts.

    Each block is binned on a grid of 0.01 in r (:func:`_screen_binned`) and only its pairs with |r| at least
    a cut are kept. The cut of the first blocks is the |r| of ``p = fdr_keep`` (every pair BH could reject),
    later ones the BH cut for 4x the rejections projected from the blocks seen (at least ``_MIN_REJECTIONS``),
    never above ``r_min``. At the end the BH number of rejections R is found from the kept pairs and, below
    each block's cut, from its histogram (an upper bound); blocks whose histogram shows values between their
    cut and the BH cut are recomputed and thresholded there, after which the counts are exact: R, the kept
    pairs and their q-values are those of thresholding every block at ``p = fdr_keep``.
    """
    n_tests = f.shape[1] * g.shape[1]
    nf = f.shape[1]
    may_nan = groups is not None
    use_bh = fdr_keep > 0
    blocks: list[dict] = []
    total = np.zeros(_GRID + 1, dtype=np.int64)
    abs_total = np.zeros(_GRID // 2, dtype=np.int64)
    extra_total = np.zeros(histogram_bins, dtype=np.int64) if histogram_bins and histogram_bins != _GRID else None
    seen = 0

    def next_cut():
        if not use_bh:
            return r_min
        return _next_cut(abs_total, seen, r_min=r_min, screen=screen, fdr=fdr_keep, n_tests=n_tests, n=n,
                         k_cond=k_cond)

    def collect(sl, cut, future):
        nonlocal seen
        idx, vals, counts, extra = future.result()
        ah = _abs_counts(counts)
        blocks.append({"sl": sl, "idx": idx, "r": vals, "absr": np.abs(vals), "cut": cut, "abs_hist": ah})
        total[:] += counts
        abs_total[:] += ah
        seen += nf * (sl.stop - sl.start)
        if extra_total is not None:
            extra_total[:] += extra

    # Each block is multiplied and screened by one thread with one BLAS thread, ``threads`` blocks at a time.
    # (Multiplying on all BLAS threads while another thread screens made the two fight for the cores: the
    # BLAS threads wait for the slowest at every step.) Block j's cut depends only on blocks 0 .. j - threads,
    # collected in order, so for a given number of threads the work done, like the result (the same for any
    # number), is the same in every run.
    _check_scan_inputs(f, g, groups, block_size)
    zf = standardize(f, groups=groups, dtype=dtype, name="features")
    starts = range(0, g.shape[1], block_size)
    inflight: deque = deque()
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=threads) as pool:
        for start in tqdm(starts, desc="gene blocks", disable=not progress):
            if len(inflight) >= threads:
                collect(*inflight.popleft())
            sl = slice(start, min(start + block_size, g.shape[1]))
            cut = next_cut()
            inflight.append((sl, cut, pool.submit(_multiply_and_screen, zf, g, sl, groups, dtype, cut, may_nan,
                                                  histogram_bins)))
        while inflight:
            collect(*inflight.popleft())

    r_keep = r_min
    if use_bh:
        start = sum(_count_above(b["absr"], b["cut"], screen, b["abs_hist"]) for b in blocks)
        kk = _bh_rejections(blocks, fdr_keep, n_tests, n, k_cond, start)
        if kk:
            t_up = critical_r(fdr_keep * kk / n_tests, n, n_conditioning=k_cond)
            stale = [b for b in blocks if t_up < b["cut"] and  # histogram mass between the BH cut and its cut
                     _count_above(b["absr"], b["cut"], t_up, b["abs_hist"]) > np.count_nonzero(b["absr"] >= b["cut"])]
            if stale:
                log.info("BH cut |r| >= %.3f below the screen's cut in %d of %d blocks: recomputing them",
                         t_up, len(stale), len(blocks))
                for b in stale:  # zf: the standardised features of the pass above
                    zg = standardize(g[:, b["sl"]], groups=groups, dtype=dtype, name="expression")
                    flat = (zf.T @ zg).reshape(-1)
                    idx = np.flatnonzero((flat >= t_up) | (flat <= -t_up))
                    b.update(idx=idx, r=flat[idx], absr=np.abs(flat[idx]), cut=t_up)
                kk = _bh_rejections(blocks, fdr_keep, n_tests, n, k_cond, kk)
        if kk:
            r_keep = min(r_keep, critical_r(fdr_keep * kk / n_tests, n, n_conditioning=k_cond))
    fi, gi, rr = [], [], []
    for b in blocks:
        keep = np.abs(b["r"]) >= r_keep
        a, c = np.divmod(b["idx"][keep], b["sl"].stop - b["sl"].start)
        fi.append(a.astype(np.int32))
        gi.append((c + b["sl"].start).astype(np.int32))
        rr.append(b["r"][keep])
    fi = np.concatenate(fi) if fi else np.zeros(0, np.int32)
    gi = np.concatenate(gi) if gi else np.zeros(0, np.int32)
    rr = np.concatenate(rr) if rr else np.zeros(0)
    hist = None
    if histogram_bins == _GRID:
        hist = total[:_GRID].copy()
        hist[-1] += total[_GRID]
    elif histogram_bins:
        hist = extra_total
    return fi, gi, rr, hist, r_keep


def pair_correlations(features, expression, feature_idx, gene_idx, *, groups: Sequence | None = None
                      ) -> np.ndarray:
    """(Partial) correlations of the listed pairs only, shape (n_pairs,)."""
    zf = standardize(_as_matrix(features, "features"), groups=groups, name="features")
    zg = standardize(_as_matrix(expression, "expression"), groups=groups, name="expression")
    fi, gi = np.asarray(feature_idx), np.asarray(gene_idx)
    out = np.empty(len(fi))
    step = max(1, 2 ** 22 // max(len(zf), 1))
    for s in range(0, len(fi), step):
        out[s:s + step] = np.einsum("sk,sk->k", zf[:, fi[s:s + step]], zg[:, gi[s:s + step]])
    return out


# --------------------------------------------------------------------------
# permutation tests
# --------------------------------------------------------------------------
def permutation_pvalues(features, expression, feature_idx, gene_idx, *, n_permutations: int = 1000,
                        seed: int = 0, backend: str = "numpy", device: str = "auto",
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided permutation p-values of the listed pairs, the same permutations for all.

    Permutation ``b`` reorders the samples of every gene by the same order
    ``pi_b`` (drawn once from ``seed``); a pair's null statistics are
    ``r_b = r(f, g[pi_b])`` and

        p = (1 + #{b : |r_b| >= |r_obs| - 1e-12}) / (1 + N).

    Every listed pair is tested with all N permutations, so the result equals a
    per-pair loop over the same orders (a test checks it against that loop).
    The work is grouped by the gene (or feature, whichever has fewer distinct
    values): one ``(N, n) @ (n, k)`` product per group, no loop over pairs.
    Permuting a feature by the inverse order gives the same ``r_b``.

    Parameters
    ----------
    features : array or DataFrame, shape (n_samples, n_features)
    expression : array or DataFrame, shape (n_samples, n_genes)
    feature_idx, gene_idx : int arrays, shape (n_pairs,)
    n_permutations : N (Badea: 1,000)
    seed : seed of the permutation orders

    Returns
    -------
    p : array, shape (n_pairs,)
    r : array, shape (n_pairs,), the observed correlations
    """
    zf = standardize(_as_matrix(features, "features"), name="features")
    zg = standardize(_as_matrix(expression, "expression"), name="expression")
    fi = np.asarray(feature_idx, dtype=np.int64)
    gi = np.asarray(gene_idx, dtype=np.int64)
    if fi.shape != gi.shape:
        raise InputError(f"feature_idx ({fi.shape}) and gene_idx ({gi.shape}) must have the same length.")
    if n_permutations < 1:
        raise InputError(f"n_permutations must be >= 1, got {n_permutations}.")
    n = len(zf)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n) for _ in range(n_permutations)])  # (N, n)
    r_obs = np.einsum("sk,sk->k", zf[:, fi], zg[:, gi]) if len(fi) else np.zeros(0)
    counts = np.zeros(len(fi), dtype=np.int64)
    be = _Backend(backend, device)
    by_gene = len(np.unique(gi)) <= len(np.unique(fi))
    if by_gene:
        key, other, zkey, zother, orders = gi, fi, zg, zf, perms
    else:  # permute the feature by the inverse orders: r(f[pi^-1], g) == r(f, g[pi])
        key, other, zkey, zother, orders = fi, gi, zf, zg, np.argsort(perms, axis=1)
    order = np.argsort(key, kind="stable")
    uniq, starts = np.unique(key[order], return_index=True)
    bounds = np.append(starts, len(order))
    orders_t = np.ascontiguousarray(orders.T)  # (n, N): column b is permutation b
    # one small product per group: threading BLAS over a (N, n) @ (n, k) product with k ~ 1-10 costs more
    # than it saves, so BLAS runs on one thread here
    with threadpool_limits(limits=1, user_api="blas"):
        for j in tqdm(range(len(uniq)), desc="permutations", disable=not progress):
            sel = order[bounds[j]:bounds[j + 1]]
            permuted = zkey[:, uniq[j]][orders_t]  # (n, N)
            rb = be.matmul_t(be.put(permuted), be.put(zother[:, other[sel]]))  # (N, k)
            counts[sel] = (np.abs(rb) >= np.abs(r_obs[sel]) - 1e-12).sum(0)
    return (1.0 + counts) / (1.0 + n_permutations), r_obs


# --------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------
def fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher's transform ``z = artanh(r)`` (|r| clipped below 1).

    Parameters
    ----------
    r : array of correlations, any shape

    Returns
    -------
    array, shape of ``r``
    """
    return np.arctanh(np.clip(np.asarray(r, dtype=np.float64), -1 + 1e-12, 1 - 1e-12))


def compare_scans(features_a, expression_a, features_b, expression_b, *, block_size: int = 2048,
                  backend: str = "numpy", device: str = "auto", sample_pairs: int = 20000, seed: int = 0
                  ) -> tuple[dict, pd.DataFrame]:
    """Agreement of all gene–feature correlations between two sample sets (Badea's S3 Fig).

    Both correlation matrices are streamed block by block (same features and
    genes, different samples); the Pearson correlation between them, of r and
    of Fisher's z(r), is accumulated from running sums over all pairs.

    Returns
    -------
    summary : dict with ``r_correlation``, ``z_correlation``, ``n_pairs``
    sample : DataFrame, a random sample of pairs (``feature, gene, r_a, r_b``) for a scatter plot
    """
    fa, ga = _as_matrix(features_a, "features_a"), _as_matrix(expression_a, "expression_a")
    fb, gb = _as_matrix(features_b, "features_b"), _as_matrix(expression_b, "expression_b")
    if fa.shape[1] != fb.shape[1] or ga.shape[1] != gb.shape[1]:
        raise InputError(f"The two sample sets must have the same features and genes: "
                         f"{fa.shape[1]}/{fb.shape[1]} features, {ga.shape[1]}/{gb.shape[1]} genes.")
    sums = {k: np.zeros(5) for k in ("r", "z")}  # sum a, sum b, sum a2, sum b2, sum ab
    n_pairs = fa.shape[1] * ga.shape[1]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n_pairs, size=min(sample_pairs, n_pairs), replace=False))
    f_idx, g_idx = np.divmod(pick, ga.shape[1])  # flat index in the (n_features, n_genes) matrix
    samples = []
    blocks_b = correlation_blocks(fb, gb, block_size=block_size, backend=backend, device=device)
    for (sl, ra), (_, rb) in zip(correlation_blocks(fa, ga, block_size=block_size, backend=backend,
                                                    device=device), blocks_b):
        for key, (a, b) in (("r", (ra, rb)), ("z", (fisher_z(ra), fisher_z(rb)))):
            sums[key] += [a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()]
        inb = (g_idx >= sl.start) & (g_idx < sl.stop)
        if inb.any():
            fsel, gsel = f_idx[inb], g_idx[inb] - sl.start
            samples.append(pd.DataFrame({"feature": fsel, "gene": g_idx[inb], "r_a": ra[fsel, gsel],
                                         "r_b": rb[fsel, gsel]}))

    def corr(s):
        sa, sb, saa, sbb, sab = s
        cov = sab / n_pairs - sa * sb / n_pairs ** 2
        va, vb = saa / n_pairs - (sa / n_pairs) ** 2, sbb / n_pairs - (sb / n_pairs) ** 2
        return float(cov / np.sqrt(va * vb))

    summary = {"r_correlation": corr(sums["r"]), "z_correlation": corr(sums["z"]), "n_pairs": n_pairs}
    return summary, pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()


# --------------------------------------------------------------------------
# conditional independence given a categorical variable (Badea's Table 7)
# --------------------------------------------------------------------------
def group_r2(x, groups: Sequence) -> np.ndarray:
    """Fraction of each column's variance explained by the categories (eta², R² of x ~ C(groups)).

    x : array or DataFrame, shape (n_samples, n_columns); returns shape (n_columns,).
    """
    x = _as_matrix(x, "x")
    total = ((x - x.mean(0)) ** 2).sum(0)
    within = ((x - _group_means(x, groups)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - within / total


def conditional_independence(r: np.ndarray, r_partial: np.ndarray, eta2_gene: np.ndarray,
                             eta2_feature: np.ndarray, *, n: int, n_groups: int) -> pd.DataFrame:
    """p-values of the three conditional independence tests of a gene g, feature f and category t.

    Parameters
    ----------
    r : array, shape (n_pairs,), r(g, f)
    r_partial : array, shape (n_pairs,), r(g, f | t)
    eta2_gene, eta2_feature : arrays, shape (n_pairs,), R² of g ~ t and f ~ t
    n : samples; n_groups : categories of t (k)

    Returns
    -------
    DataFrame with columns

    ``p_g_t_f``
        g ⊥ f | t: t test of the partial correlation, ``n - k - 1`` df. Not
        rejected: the g–f correlation is indirect, through the tissue.
    ``p_f_g_t``
        f ⊥ t | g: partial F test of the k - 1 tissue indicators in
        ``f ~ g + C(t)`` against ``f ~ g``. Not rejected: the gene mediates
        the feature–tissue association.
    ``p_g_f_t``
        g ⊥ t | f: the same with g and f exchanged.

    The residual sums of squares come from r, the partial r and eta²
    (Frisch–Waugh): ``RSS(f ~ g) = SS_f (1 - r²)``,
    ``RSS(f ~ g + t) = SS_f (1 - eta²_f)(1 - r²_{gf|t})``; the tests match
    statsmodels' nested-model F test (checked in the tests).
    """
    r = np.asarray(r, dtype=np.float64)
    rp = np.asarray(r_partial, dtype=np.float64)
    df_full = n - n_groups - 1
    if df_full < 1:
        raise InputError(f"{n} samples and {n_groups} groups leave {df_full} residual degrees of freedom.")
    p_gtf = pearson_pvalues(rp, n, n_conditioning=n_groups - 1)

    def f_test(eta2_y):
        rss_reduced = 1.0 - r ** 2
        rss_full = (1.0 - np.asarray(eta2_y, dtype=np.float64)) * (1.0 - rp ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            fstat = ((rss_reduced - rss_full) / (n_groups - 1)) / (rss_full / df_full)
        return stats.f.sf(fstat, n_groups - 1, df_full)

    return pd.DataFrame({"p_g_t_f": p_gtf, "p_f_g_t": f_test(eta2_feature), "p_g_f_t": f_test(eta2_gene)})


# --------------------------------------------------------------------------
# expression floor and the threshold grid (Badea's Tables 4–5)
# --------------------------------------------------------------------------
def expression_floor(log_expression: pd.DataFrame, tissues: Sequence) -> pd.DataFrame:
    """Per gene, the tissue of maximal median expression and that median (log2(1 + TPM)).

    Parameters
    ----------
    log_expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM)
    tissues : sequence, length n_samples

    Returns
    -------
    DataFrame indexed by gene with ``max_tissue`` and ``max_median``: the gene passes
    an expression threshold E_T when ``max_median >= E_T``.
    """
    tissues = np.asarray(tissues)
    if len(tissues) != len(log_expression):
        raise InputError(f"tissues has {len(tissues)} entries for {len(log_expression)} samples.")
    med = log_expression.groupby(tissues).median()  # (n_tissues, n_genes)
    return pd.DataFrame({"max_tissue": med.idxmax(0), "max_median": med.max(0)})


def threshold_grid(pairs: pd.DataFrame, gene_floor: pd.Series, gene_tissue: pd.Series, *,
                   r_thresholds: Sequence[float], e_thresholds: Sequence[float],
                   extra: pd.Series | None = None) -> pd.DataFrame:
    """Counts of pairs, unique genes, features and tissues for every (R_T, E_T) (Tables 4–5).

    Parameters
    ----------
    pairs : DataFrame with ``feature, gene, r`` (labels or positions)
    gene_floor : Series, gene -> max_median (log2(1 + TPM)) of :func:`expression_floor`
    gene_tissue : Series, gene -> tissue of maximal expression
    r_thresholds, e_thresholds : the grid; a pair counts when |r| >= R_T and its gene's floor >= E_T
    extra : optional boolean Series aligned with ``pairs`` (e.g. permutation p < 1e-3): also required

    Returns
    -------
    DataFrame with ``R_T, E_T, pairs, genes, features, tissues``.
    """
    floor = pairs["gene"].map(gene_floor).to_numpy(dtype=np.float64)
    tissue = pairs["gene"].map(gene_tissue)
    absr = pairs["r"].abs().to_numpy()
    ok = np.ones(len(pairs), bool) if extra is None else np.asarray(extra, bool)
    rows = []
    for rt in r_thresholds:
        for et in e_thresholds:
            m = (absr >= rt) & (floor >= et) & ok
            rows.append({"R_T": rt, "E_T": et, "pairs": int(m.sum()), "genes": pairs["gene"][m].nunique(),
                         "features": pairs["feature"][m].nunique(), "tissues": tissue[m].nunique()})
    return pd.DataFrame(rows)



# --------------------------------------------------------------------------
# notebook 03: the analysis steps built on the engine
# --------------------------------------------------------------------------
def null_r_density(r: np.ndarray, n: int) -> np.ndarray:
    """Density of the sample correlation of ``n`` independent normal pairs (no correlation), at ``r``.

    ``f(r) = (1 - r²)^((n - 4) / 2) / B(1/2, (n - 2) / 2)``

    Parameters
    ----------
    r : array, values in (-1, 1)
    n : number of samples, > 3

    Returns
    -------
    array, shape of ``r``
    """
    from scipy import special

    r = np.asarray(r, dtype=np.float64)
    return (1 - r ** 2) ** ((n - 4) / 2) / special.beta(0.5, (n - 2) / 2)


def named_pairs(pairs: pd.DataFrame, features: pd.DataFrame, expression: pd.DataFrame) -> pd.DataFrame:
    """The pairs of a scan (column indexes ``feature``, ``gene``) with the feature and gene names instead.

    Parameters
    ----------
    pairs : DataFrame of :attr:`ScanResult.pairs`
    features : DataFrame, shape (n_samples, n_features), the scan's features
    expression : DataFrame, shape (n_samples, n_genes), the scan's genes

    Returns
    -------
    DataFrame, ``pairs`` with ``feature`` and ``gene`` as names
    """
    return pairs.assign(feature=features.columns[pairs.feature], gene=expression.columns[pairs.gene])


def significant_counts_by_table(tables: dict, expression: pd.DataFrame, floor: pd.DataFrame, *,
                                r_threshold: float | Sequence[float] = 0.8, e_threshold: float = 10.0,
                                n_permutations: int = 1000, perm_alpha: float = 0.001, seed: int = 0,
                                block_size: int = 2048, backend: str = "numpy", device: str = "auto") -> pd.DataFrame:
    """Badea's Table 4: the same scan and permutation test on each feature table, at fixed (R_T, E_T).

    Parameters
    ----------
    tables : dict, :class:`~histo_utils.data.FeatureKey` -> DataFrame, shape (n_samples, n_features),
        indexed by sample like ``expression``; a table that lacks some of its samples (a slide too small for
        a tile of that size, e.g. 1,024 px) is scanned on the samples it has, logged, its count in ``samples``
    expression : DataFrame, shape (n_samples, n_genes), without constant genes
    floor : DataFrame of :func:`expression_floor`
    r_threshold : one R_T or several (Badea: 0.8, also 0.75 and 0.7); every pair at the lowest is tested by
        permutation once and counted at each
    e_threshold, n_permutations, perm_alpha, seed : as :func:`threshold_grid` and :func:`permutation_pvalues`
    block_size, backend, device : of the engine

    Returns
    -------
    DataFrame, one row per table and R_T: the :func:`threshold_grid` counts with ``network, tile_px,
    features_tested, samples``
    """
    r_list = sorted({float(r) for r in np.atleast_1d(r_threshold)})
    rows = []
    for key, table in tables.items():
        expr = expression
        if not table.index.equals(expression.index):
            common = expression.index[expression.index.isin(table.index)]
            if len(common) < len(expression):
                log.warning("Feature table %s has %d of the %d samples (slides without a tile of this size): "
                            "scanned on those", key, len(common), len(expression))
            expr, _ = drop_constant(expression.loc[common], what="gene")
            table = table.loc[common]
        f, _ = drop_constant(table, what="feature")
        scan = scan_pairs(f, expr, r_min=r_list[0], fdr_keep=0, block_size=block_size, backend=backend,
                          device=device, histogram_bins=0)
        pairs = named_pairs(scan.pairs, f, expr)
        pairs = pairs[pairs.gene.map(floor.max_median) >= e_threshold]
        pp, _ = permutation_pvalues(f, expr, scan.pairs.feature[pairs.index], scan.pairs.gene[pairs.index],
                                    n_permutations=n_permutations, seed=seed, backend=backend, device=device)
        t = threshold_grid(pairs, floor.max_median, floor.max_tissue, r_thresholds=r_list,
                           e_thresholds=[e_threshold], extra=pp < perm_alpha)
        rows.append(t.assign(network=key.network, tile_px=key.tile_px, features_tested=f.shape[1], samples=len(f)))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def network_comparison(by_table: pd.DataFrame, provenance: Mapping, accuracy: pd.DataFrame | None = None
                       ) -> pd.DataFrame:
    """Badea's Tables 2-4 side by side: one row per architecture, weights and tile size.

    Parameters
    ----------
    by_table : DataFrame of :func:`significant_counts_by_table` (``network, tile_px, R_T, E_T, pairs, genes,
        features, tissues``)
    provenance : notebook 02's ``features_provenance.json`` (its ``tables`` give each table's ``arch``;
        tables of older runs without it are the provenance's ``arch``)
    accuracy : notebook 02's ``accuracy.tsv`` (``arch, level, split, class, accuracy``), optional: the test
        tile and slide accuracies of each trained architecture (Tables 2-3)

    Returns
    -------
    DataFrame indexed by ``arch, weights, tile_px`` (``weights``: trained or untrained; architectures in the
    order of the provenance's ``archs``, trained before untrained, tile sizes ascending), columns
    ``tile_acc_test, slide_acc_test`` (when ``accuracy`` is given) and ``<count> @ R_T <r>`` for pairs, genes,
    features and tissues at every R_T (E_T in ``attrs["E_T"]``)
    """
    meta = {m["network"]: m.get("arch", provenance.get("arch", "")) for m in provenance["tables"].values()}
    d = by_table.assign(arch=by_table.network.map(meta),
                        weights=np.where(by_table.network.str.endswith("untrained"), "untrained", "trained"))
    if d.arch.isna().any():
        raise InputError(f"Networks {sorted(d.network[d.arch.isna()].unique())} are not in the provenance's "
                         "tables: pass the features_provenance.json of the same run.")
    wide = d.pivot_table(index=["arch", "weights", "tile_px"], columns="R_T",
                         values=["pairs", "genes", "features", "tissues"], sort=False)
    wide = wide[[(v, r) for r in sorted(d.R_T.unique(), reverse=True) for v in ("pairs", "genes", "features",
                                                                              "tissues")]]
    wide.columns = [f"{v} @ R_T {r:g}" for v, r in wide.columns]
    wide = wide.astype(int)
    order = {a: i for i, a in enumerate(provenance.get("archs") or dict.fromkeys(d.arch))}  # notebook 02's order
    wide = wide.sort_index(key=lambda ix: ix.map(order) if ix.name == "arch" else
                           (ix == "untrained") if ix.name == "weights" else ix)
    if accuracy is not None:
        acc = accuracy[(accuracy["class"] == "(all)") & (accuracy.split == "test")]
        if "arch" not in acc.columns:
            acc = acc.assign(arch=provenance.get("arch", ""))
        acc = acc.pivot_table(index="arch", columns="level", values="accuracy")
        trained = wide.index.get_level_values("weights") == "trained"
        archs = wide.index.get_level_values("arch")
        for level in ("tile", "slide"):
            col = acc[level].reindex(archs).to_numpy() if level in acc.columns else np.full(len(wide), np.nan)
            wide.insert(0 if level == "tile" else 1, f"{level}_acc_test", np.where(trained, col, np.nan))
    wide.attrs["E_T"] = float(d.E_T.iloc[0]) if len(d) else float("nan")
    return wide


def batch_norm_effect(comparison: pd.DataFrame, *, r_threshold: float) -> pd.DataFrame:
    """Each trained architecture with batch norm (``<base>_bn``) next to its base without, per tile size.

    Parameters
    ----------
    comparison : DataFrame of :func:`network_comparison`
    r_threshold : the R_T whose counts are compared

    Returns
    -------
    DataFrame, one row per pair and tile size: ``base, bn, tile_px, genes, genes_bn, pairs, pairs_bn,
    weakens`` (``weakens``: fewer correlated genes with batch norm); empty when no pair is present
    """
    trained = comparison.xs("trained", level="weights")
    archs = set(trained.index.get_level_values("arch"))
    g, p = f"genes @ R_T {r_threshold:g}", f"pairs @ R_T {r_threshold:g}"
    if g not in trained.columns:
        raise InputError(f"R_T {r_threshold} is not among the comparison's thresholds: "
                         f"{[c for c in trained.columns if c.startswith('genes')]}.")
    rows = []
    for bn in sorted(a for a in archs if a.endswith("_bn") and a[:-3] in archs):
        base = bn[:-3]
        for px in trained.loc[bn].index:
            if px in trained.loc[base].index:
                a, b = trained.loc[(base, px)], trained.loc[(bn, px)]
                rows.append({"base": base, "bn": bn, "tile_px": int(px), "genes": int(a[g]), "genes_bn": int(b[g]),
                             "pairs": int(a[p]), "pairs_bn": int(b[p]), "weakens": bool(b[g] < a[g])})
    return pd.DataFrame(rows, columns=["base", "bn", "tile_px", "genes", "genes_bn", "pairs", "pairs_bn", "weakens"])


def describe_batch_norm_effect(effect: pd.DataFrame, *, r_threshold: float, e_threshold: float) -> str:
    """One sentence per architecture pair from :func:`batch_norm_effect`, numbers formatted from the table.

    Returns
    -------
    str (Markdown), saying whether batch norm weakens the features' gene correlations here
    """
    if effect.empty:
        return ("No architecture was run both with and without batch norm, so its effect is not measured here "
                "(notebook 02 with `archs: [compact_bn, compact]`, or the `gtex` profile's VGG and VGG_bn, measures it).")
    out = []

    for (base, bn), d in effect.groupby(["base", "bn"], sort=False):
        per_px = "; ".join(f"{r.tile_px}-px tiles: {r.genes_bn:,} genes in {r.pairs_bn:,} pairs with batch norm "
                           f"against {r.genes:,} genes in {r.pairs:,} pairs without" for r in d.itertuples())
        if d.weakens.all():
            verdict = "batch norm **weakens** the correlations here, as Badea found for VGG vs VGG_bn"
        elif not d.weakens.any():
            verdict = "batch norm does **not** weaken the correlations here (Badea found it did for VGG)"
        else:
            verdict = "the effect of batch norm depends on the tile size here"
        out.append(f"**{md_text(bn)} vs {md_text(base)}** (R_T = {r_threshold:g}, E_T = {e_threshold:g}, test split): {per_px}: "
                   f"{verdict}.")
    return "\n\n".join(out)


def genes_per_layer(pairs: pd.DataFrame, layers: Sequence[str], *, by: str) -> pd.DataFrame:
    """Distinct genes with a pair in each layer, broken down by a gene attribute (Badea's Fig 3).

    Parameters
    ----------
    pairs : DataFrame with ``layer``, ``gene`` and ``by``
    layers : layer order of the rows (layers without pairs get zeros)
    by : column to break down by (e.g. ``max_tissue``)

    Returns
    -------
    DataFrame, shape (n_layers, n_values_of_by), counts of genes
    """
    return (pairs.drop_duplicates(["layer", "gene"]).groupby(["layer", by]).size().unstack(fill_value=0)
            .reindex(list(layers), fill_value=0))


@dataclass
class Reproducibility:
    """Agreement of gene–feature correlations between two splits (Badea's S3 Fig).

    Attributes
    ----------
    summary : dict, :func:`compare_scans`' summary with the split names and sizes and the agreement over the
        reported pairs (``reported_pairs, reported_z_correlation, reported_sign_agreement``)
    sample : DataFrame, a random sample of all pairs: ``feature, gene, r_a`` (replicate split), ``r_b``
    reported : DataFrame, the reported pairs with a value on both splits: their rows with ``r_replicate``
    """

    summary: dict
    sample: pd.DataFrame
    reported: pd.DataFrame


def reproducibility(features: pd.DataFrame, expression: pd.DataFrame, replicate_features: pd.DataFrame,
                    replicate_expression: pd.DataFrame, reported: pd.DataFrame, *, split: str = "test",
                    replicate_split: str = "validation", block_size: int = 2048, backend: str = "numpy",
                    device: str = "auto", seed: int = 0) -> Reproducibility:
    """Correlations of the same features and genes on a second split, compared with the first.

    Parameters
    ----------
    features, expression : DataFrames, shape (n_samples, n_features / n_genes), the first split (no
        constant column)
    replicate_features, replicate_expression : the second split, shape (n_replicate, ...), with at least the
        same columns; columns constant there are left out of the comparison
    reported : DataFrame, the reported pairs (``feature, gene, r``) of the first split
    split, replicate_split : names recorded in the summary
    block_size, backend, device, seed : of :func:`compare_scans`

    Returns
    -------
    Reproducibility
    """
    fr, _ = drop_constant(replicate_features[features.columns], what="feature")
    gr, _ = drop_constant(replicate_expression[expression.columns], what="gene")
    f, g = features[fr.columns], expression[gr.columns]
    summary, sample = compare_scans(fr, gr, f, g, block_size=block_size, backend=backend, device=device, seed=seed)
    rep = reported[reported.feature.isin(fr.columns) & reported.gene.isin(gr.columns)]
    r_rep = pair_correlations(fr, gr, fr.columns.get_indexer(rep.feature), gr.columns.get_indexer(rep.gene))
    summary.update({"replicate_split": replicate_split, "split": split, "n_samples_split": len(features),
                    "n_samples_replicate": len(replicate_features), "reported_pairs": len(rep),
                    "reported_z_correlation": float(np.corrcoef(fisher_z(rep.r), fisher_z(r_rep))[0, 1])
                    if len(rep) > 2 else float("nan"),
                    "reported_sign_agreement": float(np.mean(np.sign(rep.r) == np.sign(r_rep)))
                    if len(rep) else float("nan")})
    return Reproducibility(summary, named_pairs(sample, fr, gr), rep.assign(r_replicate=r_rep))


def indirect_dependencies(features: pd.DataFrame, expression: pd.DataFrame, pairs: pd.DataFrame,
                          groups: Sequence, *, alphas: Sequence[float] = (0.01, 0.05)
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Partial correlations given the tissue and the conditional independence tests of reported pairs
    (Badea's Table 7).

    Parameters
    ----------
    features, expression : DataFrames, shape (n_samples, n_features / n_genes)
    pairs : DataFrame with ``feature``, ``gene`` (names) and ``r``
    groups : array, shape (n_samples,), the tissue of each sample
    alphas : levels of the tests

    Returns
    -------
    pairs : DataFrame, ``pairs`` with ``r_partial`` and the :func:`conditional_independence` columns
    table : DataFrame, one row per alpha: ``alpha, pairs`` and, per test (``g–t–f, f–g–t, g–f–t``), the
        pairs whose independence is not rejected (p > alpha)
    """
    groups = np.asarray(groups)
    fi, gi = features.columns.get_indexer(pairs.feature), expression.columns.get_indexer(pairs.gene)
    out = pairs.copy()
    out["r_partial"] = pair_correlations(features, expression, fi, gi, groups=groups)
    eta_f, eta_g = group_r2(features, groups), group_r2(expression, groups)
    ci = conditional_independence(out.r.to_numpy(), out.r_partial.to_numpy(), eta_g[gi], eta_f[fi],
                                  n=len(features), n_groups=len(np.unique(groups)))
    out[ci.columns] = ci.to_numpy()
    table = pd.DataFrame([{"alpha": a, "pairs": len(out),
                           **{name: int((out[f"p_{name.replace('–', '_')}"] > a).sum())
                              for name in ("g–t–f", "f–g–t", "g–f–t")}} for a in alphas])
    return out, table


@products.reads()  # the run's cache only
def tissue_expression_floor(expression_path: str | os.PathLike, attributes: pd.DataFrame, *, tissues: Sequence[str],
                            label_column: str = "SMTS", median_tpm: str | os.PathLike = "",
                            cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Badea's expression floor: per gene, the tissue of maximal median expression and that median.

    Medians are over the tissues of the study only (those with slides; whole blood and cultured cells left
    out), as log2(1 + median TPM) (the median commutes with the monotone log, up to the mean of the two
    middle values of an even count).

    Parameters
    ----------
    expression_path : the TPM GCT (``GTExFiles.expression``)
    attributes : sample attributes indexed by ``SAMPID``, with ``label_column``
    tissues : the study's tissues (values of ``label_column``)
    label_column : ``SMTS`` or ``SMTSD``
    median_tpm : GTEx's ``*gene_median_tpm.gct.gz`` (columns are ``SMTSD`` tissues): when given, the floor
        is read from it and the 17,382-sample TPM table is not read at all; empty: medians over the RNA
        samples of ``tissues`` (only their columns read, float32, cached in ``cache_dir``)
    cache_dir : the run's cache directory (:func:`histo_utils.data.load_log_expression`)

    Returns
    -------
    DataFrame indexed by gene (``Name``) with ``max_tissue`` and ``max_median`` (log2(1 + TPM))
    """
    tissues = sorted(set(tissues))
    if median_tpm:
        if label_column != "SMTSD":
            raise InputError(f"median_tpm '{median_tpm}' has one column per detailed tissue (SMTSD), but the "
                             f"labels are {label_column}: set label_column to SMTSD or leave median_tpm empty.")
        med = gtex.read_median_tpm(median_tpm, tissues)
        log.info("Expression floor from the median-TPM file %s (%d tissues, %d genes)", median_tpm, len(tissues),
                 med.shape[1])
        return pd.DataFrame({"max_tissue": med.idxmax(0), "max_median": med.max(0)}).rename_axis("Name")
    gtex.check_label_column(attributes.reset_index(), label_column)
    in_file = set(io.read_gct_samples(expression_path, check=False))
    rna = attributes.index[attributes[label_column].isin(tissues) & attributes.index.isin(in_file)]
    order = [s for s in io.read_gct_samples(expression_path, check=False) if s in set(rna)]
    log_expr, _ = data.load_log_expression(expression_path, samples=order, cache_dir=cache_dir)
    log.info("Expression floor over %d RNA samples of %d tissues", len(order), len(tissues))
    return expression_floor(log_expr, attributes.loc[log_expr.index, label_column])
