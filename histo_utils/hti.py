"""Molecular cartographies and the heterogeneity index HTI (Levy-Jurgenson et al. 2020).

A slide's tiles each get a binary call per trait (high/low expression of a gene or miRNA). The tensor
cartography is the stack of these maps; each tile falls into one combination of positive traits. With k
traits there are C = 2^k - 1 non-empty combinations and

    HTI = - sum_{i=1..C} p_i log_C p_i,

p_i the proportion of tiles whose positive traits are exactly combination i. Tiles with no positive trait
are left out of the proportions by default (the paper counts only the C non-empty combinations); they can
also be counted as a combination of their own (``empty="category"``, then C = 2^k).

The tile models that make the calls are in :mod:`histo_utils.trait_models`, the survival analysis of the
index in :mod:`histo_utils.survival`.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["combination_codes", "combination_names", "COMBINATION_COLOURS", "hti", "hti_from_proportions",
           "hti_bootstrap", "cartography", "smooth_calls", "slide_hti"]

#: colour of each combination code (0: no positive trait), for up to three traits
COMBINATION_COLOURS = ("#f0f0f0", "#e7298a", "#1b9e77", "#7570b3", "#e6ab02", "#66a61e", "#a6761d", "#666666")


def combination_names(traits: Sequence[str]) -> list[str]:
    """Name of each combination code 0..2^k - 1: ``"none"``, then the positive traits joined by ``+``.

    Parameters
    ----------
    traits : sequence of k str
        Trait names in the column order of the calls (trait j has bit 2^j).

    Returns
    -------
    list of 2^k str
    """
    return ["none"] + ["+".join(t for j, t in enumerate(traits) if c >> j & 1) for c in range(1, 2 ** len(traits))]


def _grid_index(tiles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each tile of one slide on its tile grid (``y // size0``, ``x // size0`` from the
    top-left tile), each shape (n_tiles,)."""
    size = float(tiles["size0"].iloc[0])
    y, x = tiles["y"].to_numpy(float), tiles["x"].to_numpy(float)
    return np.round((y - y.min()) / size).astype(int), np.round((x - x.min()) / size).astype(int)


def cartography(tiles: pd.DataFrame, values: np.ndarray, *, fill: float = np.nan) -> np.ndarray:
    """Place per-tile values at their grid positions: a molecular cartography of one slide.

    Parameters
    ----------
    tiles : DataFrame of one slide's tiles with ``x, y, size0`` (level-0 pixels, one tile size)
    values : array, shape (n_tiles,) or (n_tiles, k) (a tensor cartography of k traits)
    fill : value of grid cells without a tile

    Returns
    -------
    ndarray, shape (rows, cols) or (rows, cols, k); row = y // size0, col = x // size0 from the
    top-left tile.
    """
    if tiles["size0"].nunique() != 1:
        raise ValueError("A cartography needs tiles of one size; select one tile_px first.")
    v = np.asarray(values, dtype=float)
    if len(v) != len(tiles):
        raise ValueError(f"{len(v)} values for {len(tiles)} tiles.")
    r, c = _grid_index(tiles)
    grid = np.full((r.max() + 1, c.max() + 1, *v.shape[1:]), fill, dtype=float)
    grid[r, c] = v
    return grid


def combination_codes(tile_traits: np.ndarray) -> np.ndarray:
    """Code of each tile's combination of positive traits: sum_j 2^j t_j (0: no positive trait).

    tile_traits : array, shape (n_tiles, k), binary
    """
    t = np.asarray(tile_traits).astype(int)
    if t.ndim != 2 or not np.isin(t, (0, 1)).all():
        raise ValueError("tile_traits must be a binary (n_tiles, k) array.")
    return t @ (1 << np.arange(t.shape[1]))


def hti_from_proportions(weights: np.ndarray, *, k: int, empty: str = "exclude") -> float:
    """HTI from the weight (tile count or area) of each combination code 0..2^k - 1.

    Parameters
    ----------
    weights : array, shape (2^k,), non-negative; index = combination code (0: no positive trait)
    k : number of traits, >= 2
    empty : ``"exclude"`` the no-positive-trait weight (paper; C = 2^k - 1) or count it as a ``"category"``
        (C = 2^k)

    Returns
    -------
    float in [0, 1]; NaN when no weight is left.
    """
    if k < 2:
        raise ValueError(f"HTI needs k >= 2 traits, got k = {k}.")
    if empty not in ("exclude", "category"):
        raise ValueError(f"empty={empty!r} not available: 'exclude' or 'category'.")
    w = np.asarray(weights, dtype=float)
    if w.shape != (2 ** k,) or (w < 0).any():
        raise ValueError(f"weights must be {2 ** k} non-negative numbers (one per combination code), got {w.shape}.")
    c = 2 ** k - 1
    if empty == "exclude":
        w = w[1:]
    else:
        c += 1
    tot = w.sum()
    if tot <= 0:
        return float("nan")
    p = w[w > 0] / tot
    return float(max(0.0, -(p * np.log(p)).sum() / np.log(c)))


def hti(tile_traits: np.ndarray, *, empty: str = "exclude") -> float:
    """Heterogeneity index of one slide's tensor cartography.

    Parameters
    ----------
    tile_traits : array, shape (n_tiles, k), binary, k >= 2
    empty : ``"exclude"`` tiles with no positive trait (paper; C = 2^k - 1) or count them as a
        ``"category"`` (C = 2^k)

    Returns
    -------
    float in [0, 1]; NaN when no tile is left.
    """
    t = np.asarray(tile_traits)
    if t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"HTI needs k >= 2 traits: tile_traits of shape (n_tiles, k), got {t.shape}.")
    k = t.shape[1]
    return hti_from_proportions(np.bincount(combination_codes(t), minlength=2 ** k), k=k, empty=empty)


def hti_bootstrap(tile_traits: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                  empty: str = "exclude") -> tuple[float, float, float]:
    """HTI with a percentile bootstrap confidence interval over tiles: ``(hti, low, high)``."""
    t = np.asarray(tile_traits)
    rng = np.random.default_rng(seed)
    boots = np.array([hti(t[rng.integers(0, len(t), len(t))], empty=empty) for _ in range(n_boot)])
    boots = boots[~np.isnan(boots)]
    a = (1 - level) / 2
    lo, hi = (np.quantile(boots, [a, 1 - a]) if len(boots) else (np.nan, np.nan))
    return hti(t, empty=empty), float(lo), float(hi)


def smooth_calls(tiles: pd.DataFrame, calls: np.ndarray, *, size: int = 3) -> np.ndarray:
    """Majority filter of binary tile calls over each tile's ``size`` x ``size`` neighbourhood on its slide.

    Beyond the paper: isolated wrong calls make spurious trait combinations, and HTI (an entropy) rises
    steeply with small proportions; a neighbourhood vote removes salt-and-pepper errors while clones
    larger than the window keep their borders. Cells without a tile do not vote; ties keep the tile's call.

    Parameters
    ----------
    tiles : DataFrame with ``image_id, x, y, size0`` (one tile size)
    calls : array, shape (n_tiles, k), binary
    size : odd window side in tiles (1: no smoothing)

    Returns
    -------
    array, shape (n_tiles, k), binary
    """
    from scipy.ndimage import uniform_filter

    c = np.asarray(calls, dtype=float)
    if c.ndim != 2 or len(c) != len(tiles):
        raise ValueError(f"calls must be (n_tiles, k) with n_tiles = {len(tiles)}, got {c.shape}.")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd number of tiles, got {size}.")
    out = c.copy()
    if size == 1:
        return out.astype(int)
    for _, idx in tiles.reset_index(drop=True).groupby("image_id").indices.items():
        r, q = _grid_index(tiles.iloc[idx])
        valid = np.zeros((r.max() + 1, q.max() + 1))
        valid[r, q] = 1
        n = uniform_filter(valid, size, mode="constant")[r, q]
        for j in range(c.shape[1]):
            g = np.zeros_like(valid)
            g[r, q] = c[idx, j]
            frac = uniform_filter(g, size, mode="constant")[r, q] / n
            out[idx, j] = np.where(np.isclose(frac, 0.5), c[idx, j], frac > 0.5)
    return out.astype(int)


def slide_hti(calls: pd.DataFrame, tile_slides: Sequence[str], *, n_boot: int = 0, seed: int = 0,
              empty: str = "exclude") -> pd.DataFrame:
    """HTI of every slide from its tiles' ensemble calls (a tensor cartography), optionally with a CI.

    Returns one row per slide: ``hti`` (NaN when no tile is positive for any trait), ``hti_low``,
    ``hti_high`` (bootstrap over tiles; NaN without ``n_boot``), ``n_tiles``, and the fraction of tiles in
    each combination (``comb_<code>``).
    """
    t = np.asarray(calls)
    k = t.shape[1]
    ids = np.asarray(tile_slides)
    rows = []
    for j, (iid, idx) in enumerate(sorted(pd.Series(np.arange(len(ids))).groupby(ids).indices.items())):
        tt = t[idx]
        counts = np.bincount(combination_codes(tt), minlength=2 ** k)
        if n_boot:
            h, lo, hi = hti_bootstrap(tt, n_boot=n_boot, seed=seed + j, empty=empty)
        else:
            h, lo, hi = hti_from_proportions(counts, k=k, empty=empty), np.nan, np.nan
        frac = counts / len(tt)
        rows.append({"image_id": iid, "hti": h, "hti_low": lo, "hti_high": hi, "n_tiles": len(idx),
                     **{f"comb_{c}": float(f) for c, f in enumerate(frac)}})
    return pd.DataFrame(rows).set_index("image_id")
