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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .io import read_table
from .text import md_text
from .slides import read_thumbnail
from .survival import hti_by_subtype, km_estimate

log = logging.getLogger(__name__)

__all__ = ["combination_codes", "combination_names", "hti", "hti_from_proportions",
           "hti_bootstrap", "cartography", "smooth_calls", "slide_hti", "true_combination_map",
           "reading", "SLIDE_SETS", "HELD_OUT_SETS", "PlantedClones", "planted_clones", "CartographyExamples",
           "cartography_examples", "HTIvsTruth", "hti_vs_truth"]


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
        raise InputError("A cartography needs tiles of one size; select one tile_px first.")
    v = np.asarray(values, dtype=float)
    if len(v) != len(tiles):
        raise InputError(f"{len(v)} values for {len(tiles)} tiles.")
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
        raise InputError("tile_traits must be a binary (n_tiles, k) array.")
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
        raise InputError(f"HTI needs k >= 2 traits, got k = {k}.")
    if empty not in ("exclude", "category"):
        raise InputError(f"empty={empty!r} not available: 'exclude' or 'category'.")
    w = np.asarray(weights, dtype=float)
    if w.shape != (2 ** k,) or (w < 0).any():
        raise InputError(f"weights must be {2 ** k} non-negative numbers (one per combination code), got {w.shape}.")
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
        raise InputError(f"HTI needs k >= 2 traits: tile_traits of shape (n_tiles, k), got {t.shape}.")
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
        raise InputError(f"calls must be (n_tiles, k) with n_tiles = {len(tiles)}, got {c.shape}.")
    if size < 1 or size % 2 == 0:
        raise InputError(f"size must be a positive odd number of tiles, got {size}.")
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


def _vote_resample(model_calls: np.ndarray, top: int, rng: np.random.Generator) -> np.ndarray:
    """Per trait, ``top`` models drawn with replacement vote on every tile: array (n_tiles, k), binary."""
    n_models = model_calls.shape[2]
    pick = rng.integers(0, n_models, (model_calls.shape[1], top))
    votes = np.stack([model_calls[:, j, pick[j]].sum(1) for j in range(model_calls.shape[1])], 1)
    return (2 * votes > top).astype(int)


def slide_hti(calls: pd.DataFrame, tile_slides: Sequence[str], *, n_boot: int = 0, seed: int = 0,
              empty: str = "exclude", model_calls: np.ndarray | None = None, top: int = 3,
              level: float = 0.95) -> pd.DataFrame:
    """HTI of every slide from its tiles' ensemble calls (a tensor cartography), optionally with a CI.

    Without ``model_calls`` the interval is a percentile bootstrap over the slide's tiles (sampling of tiles
    only). With ``model_calls`` (the calls of every split's model) each resample also redraws the ensemble:
    per trait, ``top`` of the models drawn with replacement vote on every tile, then the slide's tiles are
    resampled; the interval then reflects how much the maps change with the model, not only with the tiles.

    Parameters
    ----------
    calls : array or DataFrame, shape (n_tiles, k), binary
    tile_slides : sequence, shape (n_tiles,): the slide of each tile
    n_boot : bootstrap resamples for the interval (0: none)
    seed : seed of the bootstrap (slide j uses ``seed + j``; with ``model_calls`` one stream for all slides)
    empty : as for :func:`hti`
    model_calls : array, shape (n_tiles, k, n_models), binary: each split model's calls, or None
    top : models voting in each resampled ensemble (the ensemble's size; ties count as 0, as in
        :func:`histo_utils.trait_models.ensemble_vote`; a top above the number of models is lowered to it)
    level : coverage of the interval

    Returns
    -------
    DataFrame indexed by ``image_id``, one row per slide: ``hti`` (NaN when no tile is positive for any trait),
    ``hti_low``, ``hti_high`` (NaN without ``n_boot``), ``n_tiles``, and the fraction of tiles in each
    combination (``comb_<code>``).
    """
    t = np.asarray(calls)
    k = t.shape[1]
    ids = np.asarray(tile_slides)
    groups = sorted(pd.Series(np.arange(len(ids))).groupby(ids).indices.items())
    a = (1 - level) / 2
    bounds = {}
    if n_boot and model_calls is not None:
        mc = np.asarray(model_calls)
        if mc.shape[:2] != t.shape or mc.ndim != 3:
            raise InputError(f"model_calls must be (n_tiles, k, n_models) with (n_tiles, k) = {t.shape}, "
                             f"got {mc.shape}.")
        if top < 1:
            raise InputError(f"top must be a positive number of models, got {top}.")
        if top > mc.shape[2]:  # fewer split models than the ensemble's size: as ensemble_predictions, all of them
            log.info("HTI interval: %d models per resampled vote (top=%d, only %d split models)",
                     mc.shape[2], top, mc.shape[2])
            top = mc.shape[2]
        rng = np.random.default_rng(seed)
        boots = np.full((n_boot, len(groups)), np.nan)
        for b in range(n_boot):
            codes = combination_codes(_vote_resample(mc, top, rng))
            for j, (_, idx) in enumerate(groups):
                w = np.bincount(codes[idx[rng.integers(0, len(idx), len(idx))]], minlength=2 ** k)
                boots[b, j] = hti_from_proportions(w, k=k, empty=empty)
        for j, (iid, _) in enumerate(groups):
            v = boots[:, j][~np.isnan(boots[:, j])]
            bounds[iid] = tuple(np.quantile(v, [a, 1 - a])) if len(v) else (np.nan, np.nan)
    rows = []
    for j, (iid, idx) in enumerate(groups):
        tt = t[idx]
        counts = np.bincount(combination_codes(tt), minlength=2 ** k)
        h = hti_from_proportions(counts, k=k, empty=empty)
        if n_boot and model_calls is not None:
            lo, hi = bounds[iid]
        elif n_boot:
            h, lo, hi = hti_bootstrap(tt, n_boot=n_boot, level=level, seed=seed + j, empty=empty)
        else:
            lo, hi = np.nan, np.nan
        frac = counts / len(tt)
        rows.append({"image_id": iid, "hti": h, "hti_low": float(lo), "hti_high": float(hi), "n_tiles": len(idx),
                     **{f"comb_{c}": float(f) for c, f in enumerate(frac)}})
    return pd.DataFrame(rows).set_index("image_id")


def true_combination_map(truth_dir, clones: pd.DataFrame, image_id: str, traits: Sequence[str]) -> np.ndarray:
    """The clone map of a synthetic tumour slide recoloured by each clone's combination code.

    Parameters
    ----------
    truth_dir : the tumour cohort's ``truth/`` folder (``clone_maps/<image_id>.png``: clone number + 1)
    clones : ``truth/clones.tsv`` with ``image_id, clone`` and ``state_<trait>`` columns
    image_id : the slide
    traits : the traits, in the column order of the calls

    Returns
    -------
    array of int, shape (H, W) of the painted map: :func:`histo_utils.hti.combination_codes` of each pixel's clone
    """
    from PIL import Image

    lab = np.asarray(Image.open(Path(truth_dir) / "clone_maps" / f"{image_id}.png")).astype(int) - 1
    cl = clones[clones.image_id == image_id].set_index("clone")
    return combination_codes(cl[[f"state_{t}" for t in traits]].to_numpy())[lab]


# --------------------------------------------------------------------------
# results drawn by histo_utils.figures (planted_clones, cartographies, hti_vs_truth)
# --------------------------------------------------------------------------
#: the slide sets of :func:`histo_utils.trait_models.slide_sets`; the first three are held out
SLIDE_SETS = ("test", "OOD", "unused", "train", "validation")
HELD_OUT_SETS = SLIDE_SETS[:3]


@dataclass(frozen=True)
class PlantedClones:
    """What the synthetic tumour cohort planted, as drawn by :func:`histo_utils.figures.planted_clones`.

    ``examples``: four DX1 slides from low to high true HTI (``image_id, n_clones, true_hti0``) with their
    ``thumbnails`` (RGB) and ``clone_maps`` (:func:`true_combination_map`: combination code per pixel);
    ``slides``: every DX1 slide, ``image_id, patient, true_hti0``, ``mix_<trait>`` and ``bulk_<trait>`` (the
    patient's bulk log2 expression); ``curves``: Kaplan-Meier estimates of true HTI above and at most
    ``hti_split`` (``group, time`` in months, ``survival, ci_lower, ci_upper``); ``table``: one row per DX1 slide,
    ``image_id, patient, n_clones, mix_<trait>..., true_hti, planted_log_hazard``.
    """

    traits: tuple[str, ...]
    hti_split: float
    examples: pd.DataFrame
    thumbnails: list
    clone_maps: list
    slides: pd.DataFrame
    curves: pd.DataFrame
    table: pd.DataFrame


def planted_clones(truth_dir, slides_dir, truth: pd.DataFrame, values: pd.DataFrame, clinical: pd.DataFrame,
                   traits: Sequence[str], *, hti_split: float = 0.5) -> PlantedClones:
    """What the synthetic tumour cohort planted: clone maps, true HTI, mixes against bulk, survival by true HTI.

    Parameters
    ----------
    truth_dir, slides_dir : the tumour cohort's ``truth/`` and ``slides/`` folders
    truth : DataFrame indexed by ``image_id``: ``truth/slides.tsv``
    values : DataFrame, patients x traits (bulk expression)
    clinical : DataFrame indexed by patient with ``OS, OS.time``
    traits : the traits (k <= 3)
    hti_split : the true-HTI threshold of the Kaplan-Meier estimates

    Returns
    -------
    PlantedClones
    """
    clones = read_table(Path(truth_dir) / "clones.tsv")
    dx1 = truth[truth.dx == 1].copy()
    dx1["true_hti0"] = dx1.true_hti.fillna(0.0)
    show = dx1.sort_values("true_hti0").iloc[np.linspace(0, len(dx1) - 1, 4).astype(int)]
    thumbs, maps = [], []
    for iid, r in show.iterrows():
        thumbs.append(read_thumbnail(Path(slides_dir) / r.file, max_px=400)[0])
        maps.append(true_combination_map(truth_dir, clones, iid, traits))
    surv_truth = clinical.loc[dx1.patient]
    curves = []
    for flag in (False, True):
        sel = (dx1.true_hti0 > hti_split).to_numpy() == flag
        curves.append(km_estimate(surv_truth["OS.time"].to_numpy()[sel] / 30.44, surv_truth.OS.to_numpy()[sel],
                                  group=f"true HTI {'>' if flag else '<='} {hti_split}"))
    slides = dx1.reset_index()[["image_id", "patient", "true_hti0", *[f"mix_{t}" for t in traits]]]
    for t in traits:
        slides[f"bulk_{t}"] = values.loc[dx1.patient, t].to_numpy()
    table = dx1.reset_index()[["image_id", "patient", "n_clones", *[f"mix_{t}" for t in traits], "true_hti",
                               "planted_log_hazard"]]
    return PlantedClones(traits=tuple(traits), hti_split=hti_split,
                         examples=show.reset_index()[["image_id", "n_clones", "true_hti0"]], thumbnails=thumbs,
                         clone_maps=maps, slides=slides, curves=pd.concat(curves, ignore_index=True), table=table)


@dataclass(frozen=True)
class CartographyExamples:
    """Example slides' cartographies, as drawn by :func:`histo_utils.figures.cartographies`.

    ``slides``: one row per example (in the order of ``hti0``), ``image_id, set`` (``?`` when the slide has
    no set; None without sets), ``hti0, hti_low, hti_high`` and, with true calls, ``true_hti``;
    ``thumbnails``: RGB thumbnail of each; ``trait_maps``: array (rows, cols, k) of the calls, NaN where there
    is no tile; ``combination_maps``: array (rows, cols) of combination codes (NaN: no tile);
    ``true_maps``: the same of the true tile states, or None; ``table``: one row per tile shown,
    ``image_id, set, x, y, combination`` and the calls per trait.
    """

    traits: tuple[str, ...]
    slides: pd.DataFrame
    thumbnails: list
    trait_maps: list
    combination_maps: list
    true_maps: list | None
    table: pd.DataFrame


def cartography_examples(tiles: pd.DataFrame, calls: pd.DataFrame, slide_table: pd.DataFrame, paths: dict, *,
                         n_slides: int = 6, true_calls: np.ndarray | None = None, sets: pd.Series | None = None
                         ) -> CartographyExamples:
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
    sets : Series indexed by ``image_id``, each slide's set (:func:`histo_utils.trait_models.slide_sets`), or
        None; when given, the examples are drawn from the ``test`` and ``OOD`` slides

    Returns
    -------
    CartographyExamples
    """
    traits = list(calls.columns)
    order = slide_table.sort_values("hti0")
    if sets is not None and sets.reindex(order.index).isin(["test", "OOD"]).sum() >= n_slides:
        order = order[sets.reindex(order.index).isin(["test", "OOD"]).to_numpy()]
    ex = order.iloc[np.linspace(0, len(order) - 1, n_slides).astype(int)].index
    shown, thumbs, tmaps, cmaps, truemaps, rows = [], [], [], [], [], []
    for iid in ex:
        sel = (tiles.image_id == iid).to_numpy()
        st = tiles[sel]
        thumbs.append(read_thumbnail(paths[iid], max_px=300)[0])
        tmaps.append(cartography(st, calls[sel].to_numpy(), fill=np.nan))
        codes = combination_codes(calls[sel].to_numpy())
        cmaps.append(cartography(st, codes, fill=np.nan))
        h = slide_table.loc[iid]
        info = {"image_id": iid, "set": None if sets is None else sets.get(iid, "?"), "hti0": h.hti0,
                "hti_low": h.hti_low, "hti_high": h.hti_high}
        if true_calls is not None:
            truemaps.append(cartography(st, combination_codes(np.asarray(true_calls)[sel])))
            info["true_hti"] = h.true_hti
        shown.append(info)
        rows += [{"image_id": iid, "set": None if sets is None else sets.get(iid), "x": int(a.x), "y": int(a.y),
                  "combination": int(c), **{t: int(v) for t, v in zip(traits, calls[sel].to_numpy()[i])}}
                 for i, (a, c) in enumerate(zip(st.itertuples(), codes))]
    return CartographyExamples(traits=tuple(traits), slides=pd.DataFrame(shown), thumbnails=thumbs, trait_maps=tmaps,
                               combination_maps=cmaps, true_maps=truemaps if true_calls is not None else None,
                               table=pd.DataFrame(rows))


@dataclass(frozen=True)
class HTIvsTruth:
    """Estimated against true HTI, as drawn by :func:`histo_utils.figures.hti_vs_truth`.

    ``table``: one row per slide with a true HTI, ``image_id, set, true_hti, hti, hti0, hti_low, hti_high, covers``
    (the interval covers the true HTI), ``hti_smooth, tile_truth_hti``; ``panels``: ``panel, column`` (the
    estimate), ``n, r`` (Pearson, NaN below three slides); ``points``: one row per slide and panel, ``panel,
    image_id, set, true_hti, estimate, hti0, hti_low, hti_high``.
    """

    smooth_window: int
    table: pd.DataFrame
    panels: pd.DataFrame
    points: pd.DataFrame


def hti_vs_truth(slide_table: pd.DataFrame, sets: pd.Series, *, smooth_window: int = 3) -> HTIvsTruth:
    """Estimated against true HTI: held-out slides (raw and smoothed) and training/validation slides.

    Parameters
    ----------
    slide_table : DataFrame indexed by ``image_id`` with ``true_hti, hti, hti0, hti_low, hti_high,
        hti_smooth, tile_truth_hti``
    sets : Series of str indexed by ``image_id``: ``test``, ``OOD``, ``unused`` (held out), ``train`` or
        ``validation`` (:func:`histo_utils.trait_models.slide_sets`)
    smooth_window : the majority filter's side (the smoothed panel's name)

    Returns
    -------
    HTIvsTruth
    """
    from scipy import stats

    bad = set(sets.dropna().unique()) - set(SLIDE_SETS)
    if bad:
        raise InputError(f"Unknown slide sets {sorted(bad)}; expected {list(SLIDE_SETS)}.")
    d = slide_table.dropna(subset=["true_hti"])
    d = d.assign(set=sets.reindex(d.index).to_numpy())
    m_held = d.set.isin(list(HELD_OUT_SETS))
    panels = (("test + OOD slides", m_held, "hti0"),
              (f"test + OOD, smoothed {smooth_window}x{smooth_window}", m_held, "hti_smooth"),
              ("training/validation slides", ~m_held, "hti0"))
    rows, points = [], []
    for name, m, col in panels:
        dd = d[m.to_numpy()]
        r = stats.pearsonr(dd.true_hti, dd[col]).statistic if len(dd) > 2 else np.nan
        rows.append({"panel": name, "column": col, "n": len(dd), "r": float(r)})
        points.append(pd.DataFrame({"panel": name, "image_id": dd.index, "set": dd.set.to_numpy(),
                                    "true_hti": dd.true_hti.to_numpy(), "estimate": dd[col].to_numpy(),
                                    "hti0": dd.hti0.to_numpy(), "hti_low": dd.hti_low.to_numpy(),
                                    "hti_high": dd.hti_high.to_numpy()}))
    covers = (d.true_hti >= d.hti_low - 1e-9) & (d.true_hti <= d.hti_high + 1e-9)
    table = d.assign(covers=covers).reset_index()
    return HTIvsTruth(smooth_window=smooth_window,
                      table=table[["image_id", "set", "true_hti", "hti", "hti0", "hti_low", "hti_high", "covers",
                                   "hti_smooth", "tile_truth_hti"]],
                      panels=pd.DataFrame(rows), points=pd.concat(points, ignore_index=True))


def _fmt_p(p: float) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def reading(tab1: pd.DataFrame, evaluation: pd.DataFrame, logrank: pd.DataFrame, bulk_logrank: pd.DataFrame,
            cox: pd.DataFrame, surv: pd.DataFrame, *, tile_acc: pd.DataFrame | None = None,
            agree: pd.DataFrame | None = None, run: dict | None = None) -> str:
    """The written reading of notebook 08, every number formatted from the run's tables.

    Parameters
    ----------
    tab1, evaluation : :func:`histo_utils.trait_models.table1` and :func:`~histo_utils.trait_models.evaluate_slides`
    logrank, bulk_logrank : the log-rank tables of the HTI splits and of the bulk splits
    cox : :func:`histo_utils.survival.cox_table` (with ``planted_coef`` on the synthetic cohort)
    surv : :func:`histo_utils.survival.survival_table`
    tile_acc, agree : :func:`histo_utils.truth.tile_accuracy` and :func:`~histo_utils.truth.hti_agreement`
        (synthetic cohort), or None
    run : optional facts of the run: ``n_slides, n_patients, n_tiles, n_models, train_seconds``

    Returns
    -------
    str, Markdown bullet points; trait, comparison and fit names escaped (:func:`histo_utils.text.md_text`).
    """
    out = []
    if run:
        out.append(f"This run: {run['n_slides']} slides of {run['n_patients']} patients, {run['n_tiles']:,} tiles, "
                   f"{run['n_models']} tile models trained in {run['train_seconds']:.0f} s.")
    ev = evaluation[(evaluation.set == "test") & (evaluation.model == "ensemble")].set_index("trait")
    parts = [(f"{md_text(r.trait)}: 5-run mean {r.test_runs_mean:.2f} "
              f"(range {r.test_runs_min:.2f}–{r.test_runs_max:.2f}), "
              f"ensemble {r.test_ensemble:.2f} on {int(ev.loc[r.trait, 'n_slides'])} test slides "
              f"({int(ev.loc[r.trait, 'n_high'])} high)" if r.trait in ev.index
              else f"{md_text(r.trait)}: no test AUC (its test slides are not of both classes)")
             + f", OOD-near {r['OOD-near_ensemble']:.2f}, OOD-all {r['OOD-all_ensemble']:.2f}"
             for _, r in tab1.iterrows()]
    out.append("**Table 1 / Fig 2 (slide AUC).** " + "; ".join(parts) + ". Lowest 5-run mean: "
               f"{tab1.test_runs_mean.min():.2f} (goal ≥ 0.9).")
    if tile_acc is not None:
        ta = tile_acc[tile_acc.set == "test + OOD slides"].set_index("trait")
        out.append("**Cartographies (tile calls against the clone under each tile, test + OOD slides).** "
                   + "; ".join(f"{md_text(t)}: tile AUC {r.tile_auc:.2f}, ensemble calls {100 * r.tile_accuracy:.0f} % "
                               f"correct ({100 * r.tile_accuracy_smoothed:.0f} % after the majority filter)"
                               for t, r in ta.iterrows())
                   + f" (goal: tile AUC ≥ 0.85; {int(ta.n_tiles.iloc[0]):,} tiles).")
    if agree is not None and len(agree):
        ag = agree.set_index(["set", "hti"])
        held = ag.loc[("test + OOD slides", "hti0")] if ("test + OOD slides", "hti0") in ag.index else None
        txt = "**HTI against the true HTI.** "
        if held is not None:
            txt += (f"Pearson r = {held.pearson:.2f} on {int(held.n)} test + OOD slides with a true HTI (goal "
                    f"≥ 0.8 on ≥ 40 slides), mean absolute error {held.mean_abs_error:.2f}; ")
            if ("test + OOD slides", "hti_smooth") in ag.index:
                txt += f"smoothed HTI r = {ag.loc[('test + OOD slides', 'hti_smooth'), 'pearson']:.2f}; "
            txt += (f"the interval over the split models and the tiles covers the true HTI on "
                    f"{100 * held.ci_coverage:.0f} % of these slides (goal ≥ 80 %). ")
        if ("training/validation slides", "hti0") in ag.index:
            tv = ag.loc[("training/validation slides", "hti0")]
            txt += (f"On {int(tv.n)} training/validation slides r = {tv.pearson:.2f} (coverage "
                    f"{100 * tv.ci_coverage:.0f} %). ")
        if held is not None:
            txt += (f"The HTI of the true tile states follows the area truth at r = {held.pearson_tile_truth:.2f}, "
                    "so what separates the estimate from the truth is the tile calls, not the index.")
        out.append(txt)
    lr = logrank.set_index("comparison")
    bits = [f"{md_text(c)}: p = {_fmt_p(r.p)} ({int(r.n_high)} high, {int(r.n_low)} low)" for c, r in lr.iterrows()]
    out.append(f"**Survival (Fig 4; {len(surv)} test + OOD patients, {int(surv.OS.sum())} deaths).** Log-rank: "
               + "; ".join(bits) + ".")
    cx = cox[cox.covariate == "HTI"].set_index("fit")
    if len(cx):
        txt = "**Cox model (HTI per unit, adjusted for age and stage).** "
        for fit, r in cx.iterrows():
            txt += f"{md_text(fit)}: {r.coef:.2f} (95 % CI {r['coef lower 95%']:.2f} to {r['coef upper 95%']:.2f})"
            if "planted_coef" in r and np.isfinite(r.planted_coef):
                inside = r["coef lower 95%"] <= r.planted_coef <= r["coef upper 95%"]
                txt += f", {'covers' if inside else 'misses'} the planted {r.planted_coef:.1f}"
            txt += "; "
        out.append(txt.rstrip("; ") + ".")
    bl = "; ".join(f"{md_text(r.trait)}: p = {_fmt_p(r.p)}" for _, r in bulk_logrank.iterrows())
    sub = hti_by_subtype(surv, value="hti0")  # the test of figure hti_by_subtype
    kw = f"; HTI by subtype: Kruskal–Wallis p = {_fmt_p(sub.kruskal_p)}" if len(sub.order) >= 2 else ""
    out.append(f"**Bulk and subtype (Figs 5, 6).** Bulk split at the median: {bl}{kw}.")
    return "\n".join(f"* {o}" for o in out)
