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
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["combination_codes", "combination_names", "COMBINATION_COLOURS", "hti", "hti_from_proportions",
           "hti_bootstrap", "cartography", "smooth_calls", "slide_hti", "combination_cmap", "plot_planted_clones",
           "plot_cartographies", "plot_hti_vs_truth"]

#: colour of each combination code (0: no positive trait), for up to three traits
COMBINATION_COLOURS = ("#f0f0f0", "#E69F00", "#56B4E9", "#CC79A7", "#0072B2", "#D55E00", "#009E73", "#000000")  # Okabe-Ito


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

    Parameters
    ----------
    calls : array or DataFrame, shape (n_tiles, k), binary
    tile_slides : sequence, shape (n_tiles,): the slide of each tile
    n_boot : bootstrap resamples of the tiles for the interval (0: none)
    seed : seed of the bootstrap (slide j uses ``seed + j``)
    empty : as for :func:`hti`

    Returns
    -------
    DataFrame indexed by ``image_id``, one row per slide: ``hti`` (NaN when no tile is positive for any trait),
    ``hti_low``, ``hti_high`` (bootstrap over tiles; NaN without ``n_boot``), ``n_tiles``, and the fraction of
    tiles in each combination (``comb_<code>``).
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


def combination_cmap(k: int):
    """Matplotlib colormap of the 2^k combination codes (draw with ``vmin=-0.5, vmax=2**k - 0.5``)."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(list(COMBINATION_COLOURS[: 2 ** k]))


def _combination_legend(fig, traits: Sequence[str], y: float) -> None:
    import matplotlib.pyplot as plt

    k = len(traits)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COMBINATION_COLOURS[c]) for c in range(2 ** k)]
    fig.legend(handles, combination_names(traits), loc="upper center", ncol=2 ** k, fontsize=8,
               bbox_to_anchor=(0.5, y))


def plot_planted_clones(truth_dir, slides_dir, truth: pd.DataFrame, values: pd.DataFrame, clinical: pd.DataFrame,
                        traits: Sequence[str], *, hti_split: float = 0.5):
    """What the synthetic tumour cohort planted: clone maps, true HTI, mixes against bulk, survival by true HTI.

    Parameters
    ----------
    truth_dir, slides_dir : the tumour cohort's ``truth/`` and ``slides/`` folders
    truth : DataFrame indexed by ``image_id``: ``truth/slides.tsv``
    values : DataFrame, patients x traits (bulk expression)
    clinical : DataFrame indexed by patient with ``OS, OS.time``
    traits : the traits (k <= 3)
    hti_split : the true-HTI threshold of the Kaplan-Meier panel

    Returns
    -------
    fig : the figure (top: four DX1 slides from low to high true HTI with their clones coloured by
        combination; bottom: true HTI histogram, true high-clone area against bulk expression, KM)
    table : DataFrame, one row per DX1 slide: ``image_id, patient, n_clones, mix_<trait>..., true_hti,
        planted_log_hazard``
    """
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter

    from .io import read_table
    from .slides import read_thumbnail
    from .truth import true_combination_map

    k = len(traits)
    clones = read_table(Path(truth_dir) / "clones.tsv")
    dx1 = truth[truth.dx == 1].copy()
    dx1["true_hti0"] = dx1.true_hti.fillna(0.0)
    show = dx1.sort_values("true_hti0").iloc[np.linspace(0, len(dx1) - 1, 4).astype(int)]
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.5), gridspec_kw={"height_ratios": [1, 0.9]})
    for ax, (iid, r) in zip(axes[0], show.iterrows()):
        thumb, _ = read_thumbnail(Path(slides_dir) / r.file, max_px=400)
        ax.imshow(thumb)
        ax.imshow(true_combination_map(truth_dir, clones, iid, traits), cmap=combination_cmap(k), vmin=-0.5,
                  vmax=2 ** k - 0.5, alpha=0.35, extent=(0, thumb.shape[1], thumb.shape[0], 0),
                  interpolation="nearest")
        ax.set_title(f"{iid[:12]}  {int(r.n_clones)} clone(s), true HTI {r.true_hti0:.2f}", fontsize=8)
        ax.set_axis_off()
    axes[1, 0].hist(dx1.true_hti0, bins=20, color="#7570b3")
    axes[1, 0].set_xlabel("true HTI (DX1 slides)")
    for j, t in enumerate(traits[:2]):
        axes[1, 1 + j].scatter(dx1[f"mix_{t}"], values.loc[dx1.patient, t], s=6)
        axes[1, 1 + j].set_xlabel(f"true high-clone area, {t}")
        axes[1, 1 + j].set_ylabel("bulk log2 expression")
    surv_truth = clinical.loc[dx1.patient]
    for flag, col in ((False, "#d95f02"), (True, "#1f78b4")):
        sel = (dx1.true_hti0 > hti_split).to_numpy() == flag
        KaplanMeierFitter(label=f"true HTI {'>' if flag else '<='} {hti_split}").fit(
            surv_truth["OS.time"].to_numpy()[sel] / 30.44, surv_truth.OS.to_numpy()[sel]).plot_survival_function(
            ax=axes[1, 3], color=col)
    axes[1, 3].set_xlabel("months")
    axes[1, 3].legend(fontsize=7)
    _combination_legend(fig, traits, 1.03)
    fig.tight_layout()
    table = dx1.reset_index()[["image_id", "patient", "n_clones", *[f"mix_{t}" for t in traits], "true_hti",
                               "planted_log_hazard"]]
    return fig, table


def plot_cartographies(tiles: pd.DataFrame, calls: pd.DataFrame, slide_table: pd.DataFrame, paths: dict, *,
                       n_slides: int = 6, true_calls: np.ndarray | None = None):
    """Example slides: thumbnail, one cartography per trait, the heterogeneity map (and the true one).

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...), with ``image_id, x, y, size0``
    calls : DataFrame, shape (n_tiles, k), the ensemble's 0/1 calls, one column per trait
    slide_table : :func:`slide_hti` output with ``hti0`` (HTI, 0 when undefined) and, with ``true_calls``,
        ``true_hti``
    paths : image_id -> slide file
    n_slides : slides shown, evenly spaced in the order of ``hti0``
    true_calls : array, shape (n_tiles, k), the true state of each tile (synthetic cohort), or None

    Returns
    -------
    fig : the figure
    table : DataFrame, one row per tile shown: ``image_id, x, y, combination`` and the calls per trait
    """
    import matplotlib.pyplot as plt

    from .slides import read_thumbnail

    traits = list(calls.columns)
    k = len(traits)
    cmap = combination_cmap(k)
    order = slide_table.sort_values("hti0")
    ex = order.iloc[np.linspace(0, len(order) - 1, n_slides).astype(int)].index
    ncol = k + 2 + (true_calls is not None)
    fig, axes = plt.subplots(len(ex), ncol, figsize=(2.3 * ncol, 2.0 * len(ex)))
    axes = np.atleast_2d(axes)
    rows = []
    for r, iid in enumerate(ex):
        sel = (tiles.image_id == iid).to_numpy()
        st = tiles[sel]
        thumb, _ = read_thumbnail(paths[iid], max_px=300)
        axes[r, 0].imshow(thumb)
        axes[r, 0].set_title(iid[:12], fontsize=7)
        cart = cartography(st, calls[sel].to_numpy(), fill=np.nan)
        for j, t in enumerate(traits):
            axes[r, 1 + j].imshow(cart[..., j], cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
            axes[r, 1 + j].set_title(t, fontsize=7)
        codes = combination_codes(calls[sel].to_numpy())
        hmap = cartography(st, codes, fill=np.nan)
        axes[r, 1 + k].imshow(np.ma.masked_invalid(hmap), cmap=cmap, vmin=-0.5, vmax=2 ** k - 0.5,
                              interpolation="nearest")
        h = slide_table.loc[iid]
        axes[r, 1 + k].set_title(f"HTI {h.hti0:.2f} [{h.hti_low:.2f}, {h.hti_high:.2f}]", fontsize=7)
        if true_calls is not None:
            tcodes = combination_codes(np.asarray(true_calls)[sel])
            axes[r, 2 + k].imshow(np.ma.masked_invalid(cartography(st, tcodes)), cmap=cmap, vmin=-0.5,
                                  vmax=2 ** k - 0.5, interpolation="nearest")
            axes[r, 2 + k].set_title(f"truth: HTI {np.nan_to_num(h.true_hti):.2f}", fontsize=7)
        rows += [{"image_id": iid, "x": int(a.x), "y": int(a.y), "combination": int(c),
                  **{t: int(v) for t, v in zip(traits, calls[sel].to_numpy()[i])}}
                 for i, (a, c) in enumerate(zip(st.itertuples(), codes))]
    for a in axes.ravel():
        a.set_axis_off()
    _combination_legend(fig, traits, 1.02)
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def plot_hti_vs_truth(slide_table: pd.DataFrame, held: pd.Series, *, smooth_window: int = 3):
    """Estimated against true HTI: held-out slides (raw and smoothed) and training/validation slides.

    Parameters
    ----------
    slide_table : DataFrame indexed by ``image_id`` with ``true_hti, hti0, hti_low, hti_high, hti_smooth``
    held : Series of bool indexed by ``image_id`` (:func:`histo_utils.trait_models.held_out_slides`)
    smooth_window : the majority filter's side (for the title)

    Returns
    -------
    fig : three scatter panels with Pearson r in the titles
    table : DataFrame, one row per slide with a true HTI
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    d = slide_table.dropna(subset=["true_hti"])
    d = d.assign(true0=d.true_hti.fillna(0))
    m_held = held.reindex(d.index)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    panels = (("test + OOD slides", m_held, "hti0"),
              (f"test + OOD, smoothed {smooth_window}x{smooth_window}", m_held, "hti_smooth"),
              ("training/validation slides", ~m_held, "hti0"))
    for ax, (name, m, col) in zip(axes, panels):
        dd = d[m.to_numpy()]
        if col == "hti0":
            ax.errorbar(dd.true0, dd.hti0, yerr=[(dd.hti0 - dd.hti_low).clip(lower=0),
                                                 (dd.hti_high - dd.hti0).clip(lower=0)],
                        fmt="o", ms=3, alpha=0.6, elinewidth=0.5)
        else:
            ax.plot(dd.true0, dd[col], "o", ms=3, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        r = stats.pearsonr(dd.true0, dd[col]).statistic if len(dd) > 2 else np.nan
        ax.set_title(f"{name}: r = {r:.2f} (n = {len(dd)})", fontsize=8)
        ax.set_xlabel("true HTI (clone areas)")
    axes[0].set_ylabel("estimated HTI (ensemble tiles)")
    fig.tight_layout()
    return fig, d.reset_index()[["image_id", "true_hti", "hti", "hti_low", "hti_high", "hti_smooth",
                                 "tile_truth_hti"]]
