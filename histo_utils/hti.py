"""Molecular cartographies and the heterogeneity index HTI (Levy-Jurgenson et al. 2020).

A slide's tiles each get a binary call per trait (high/low expression of a gene or miRNA). The tensor
cartography is the stack of these maps; each tile falls into one combination of positive traits. With k
traits there are C = 2^k - 1 non-empty combinations and

    HTI = - sum_{i=1..C} p_i log_C p_i,

p_i the proportion of tiles whose positive traits are exactly combination i. Tiles with no positive trait
are left out of the proportions by default (the paper counts only the C non-empty combinations); they can
also be counted as a combination of their own (``empty="category"``, then C = 2^k).

Beyond the paper, :func:`corrected_hti` corrects the index for tile-call errors (denoised maps, error
rates from the validation slides, adjusted classify-and-count) and gives an interval that includes the
uncertainty of that correction.

The tile models that make the calls are in :mod:`histo_utils.trait_models`, the survival analysis of the
index in :mod:`histo_utils.survival`.
"""
from __future__ import annotations

import logging
import warnings
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
           "hti_bootstrap", "cartography", "slide_hti", "true_combination_map", "denoise_logits",
           "denoised_calls", "validation_errors", "misclassification_matrix", "adjust_proportions", "CorrectedHTI", "corrected_hti",
           "reading", "SLIDE_SETS", "HELD_OUT_SETS", "PlantedClones", "planted_clones", "CartographyExamples",
           "cartography_examples", "HTIvsTruth", "ESTIMATORS", "HOMOGENEOUS", "HTI_GOALS", "hti_vs_truth"]


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
# the corrected HTI: spatial denoising and adjusted classify-and-count
# --------------------------------------------------------------------------
def _slide_grids(tiles: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(image_id, tile rows of the slide, grid row, grid column)`` of every slide, in sorted order."""
    t = tiles.reset_index(drop=True)
    return [(iid, idx, *_grid_index(t.iloc[idx])) for iid, idx in sorted(t.groupby("image_id").indices.items())]


def denoise_logits(tiles: pd.DataFrame, prob: np.ndarray, *, sigma: float) -> np.ndarray:
    """Spatial denoising of tile probabilities: each column's log-odds smoothed over its slide's tile grid.

    A Gaussian of ``sigma`` tiles, normalised over the cells that hold a tile (grid cells without a tile do
    not pull the mean towards 0; a slide's edge is not a border of zeros):
    ``z_s(t) = sum_u w(t, u) logit p(u) / sum_u w(t, u)`` over the slide's tiles ``u``. Clones are regions of many
    tiles, tile-call errors are scattered: the average over a tile's neighbourhood keeps the first and damps
    the second. Log-odds average linearly, so the mean of several models' denoised maps is the denoised
    map of their mean.

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...), with ``image_id, x, y, size0`` (one tile size)
    prob : array, shape (n_tiles,) or (n_tiles, m): P(high) of each tile, for m models or traits
    sigma : Gaussian standard deviation in tiles (0: no smoothing, the log-odds themselves)

    Returns
    -------
    array of the shape of ``prob``: denoised log-odds (> 0: called high)
    """
    from scipy.ndimage import gaussian_filter

    p = np.asarray(prob, dtype=float)
    if p.shape[0] != len(tiles):
        raise InputError(f"prob has {p.shape[0]} rows for {len(tiles)} tiles.")
    if not sigma >= 0:
        raise InputError(f"sigma must be a number of tiles >= 0, got {sigma}.")
    p2 = p.reshape(len(p), -1).clip(1e-6, 1 - 1e-6)
    z = np.log(p2 / (1 - p2))
    if sigma == 0:
        return z.reshape(p.shape)
    out = np.empty_like(z)
    for _, idx, r, c in _slide_grids(tiles):
        present = np.zeros((r.max() + 1, c.max() + 1))
        present[r, c] = 1
        norm = gaussian_filter(present, sigma, mode="constant")[r, c]
        for j in range(z.shape[1]):
            g = np.zeros_like(present)
            g[r, c] = z[idx, j]
            out[idx, j] = gaussian_filter(g, sigma, mode="constant")[r, c] / norm
    return out.reshape(p.shape)


def denoised_calls(tiles: pd.DataFrame, prob: pd.DataFrame, *, sigma: float) -> pd.DataFrame:
    """The corrected HTI's tile calls: per trait, the mean of all split models' denoised log-odds > 0.

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...), with ``image_id, x, y, size0``
    prob : DataFrame, shape (n_tiles, k * n_splits), columns ``(trait, split)``: P(high) of every split model
    sigma : as for :func:`denoise_logits`

    Returns
    -------
    DataFrame, shape (n_tiles, k), 0/1, one column per trait (index of ``prob``)
    """
    z = pd.DataFrame(denoise_logits(tiles, prob.to_numpy(), sigma=sigma), columns=prob.columns, index=prob.index)
    return (z.T.groupby(level=0, sort=False).mean().T > 0).astype(int)


def validation_errors(logits: pd.DataFrame, tile_slides: Sequence[str], slides: pd.DataFrame,
                      splits: Sequence[tuple]) -> pd.DataFrame:
    """How often each split's model calls a validation slide's tiles against the slide's label.

    Only what a real study has: the slide labels (from bulk expression) of each split's own validation
    slides, which took no part in that model's training. A low slide's tiles called high estimate the
    false-positive rate of a tile call, a high slide's tiles called low the false-negative rate. Both are
    over-estimates where a labelled slide truly holds some of the other state (labels come from the bulk
    mix), which errs on the side of removing heterogeneity.

    Parameters
    ----------
    logits : DataFrame, shape (n_tiles, k * n_splits), columns ``(trait, split)``: each model's (denoised)
        log-odds, > 0 = called high
    tile_slides : sequence, shape (n_tiles,): the slide of each tile
    slides : DataFrame indexed by ``image_id`` with ``patient`` and ``<trait>:label``, ``<trait>:ood``
        (:func:`histo_utils.trait_models.label_slides`)
    splits : sequence of (train patients, validation patients), one per split

    Returns
    -------
    DataFrame, one row per (trait, split, validation slide in distribution for the trait): ``trait, split,
    image_id, label, n_tiles, against`` (fraction of the slide's tiles called against its label).
    """
    ids = pd.Series(np.asarray(tile_slides))
    groups = ids.groupby(ids).indices
    rows = []
    for (t, s) in logits.columns:
        val = slides[slides["patient"].isin(splits[int(s)][1]) & ~slides[f"{t}:ood"].astype(bool)]
        z = logits[(t, s)].to_numpy()
        for iid, lab in val[f"{t}:label"].items():
            if iid not in groups:
                continue
            called = (z[groups[iid]] > 0).mean()
            rows.append({"trait": t, "split": int(s), "image_id": iid, "label": int(lab),
                         "n_tiles": len(groups[iid]), "against": float(1 - called if lab else called)})
    return pd.DataFrame(rows, columns=["trait", "split", "image_id", "label", "n_tiles", "against"])


def misclassification_matrix(fpr: Sequence[float], fnr: Sequence[float]) -> np.ndarray:
    """P(called combination | true combination) for k traits whose tile calls err independently.

    Parameters
    ----------
    fpr, fnr : sequences of k rates in [0, 1): per trait, P(called high | low) and P(called low | high)

    Returns
    -------
    array, shape (2^k, 2^k): row = true combination code, column = called code (:func:`combination_codes`:
    trait j is bit 2^j); the Kronecker product of the per-trait 2 x 2 matrices.
    """
    a, b = np.asarray(fpr, float), np.asarray(fnr, float)
    if a.shape != b.shape or a.ndim != 1 or ((a < 0) | (b < 0) | (a + b >= 1)).any():
        raise InputError(f"fpr and fnr must be k rates >= 0 with fpr + fnr < 1 per trait, got {a}, {b}.")
    m = np.ones((1, 1))
    for aj, bj in zip(a, b):  # trait j is bit j: it varies slowest in the Kronecker product of later traits
        m = np.kron(np.array([[1 - aj, aj], [bj, 1 - bj]]), m)
    return m


def adjust_proportions(called: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Adjusted classify-and-count: the combination proportions whose expected calls match the observed.

    Forman (2008) for one binary class, ``p = (q - fpr) / (1 - fpr - fnr)``; for combinations of k traits,
    the proportions p on the simplex that minimise ``|| M^T p - q ||^2`` (non-negative least squares with a
    heavily weighted sum-to-one row), so a correction never makes a proportion negative.

    Parameters
    ----------
    called : array, shape (2^k,): observed fraction of tiles called in each combination (sums to 1)
    matrix : array, shape (2^k, 2^k): :func:`misclassification_matrix`

    Returns
    -------
    array, shape (2^k,): corrected proportions, summing to 1
    """
    from scipy.optimize import nnls

    q = np.asarray(called, float)
    m = np.asarray(matrix, float)
    if m.shape != (len(q), len(q)):
        raise InputError(f"matrix must be ({len(q)}, {len(q)}) for {len(q)} combinations, got {m.shape}.")
    w = 1e3
    p, _ = nnls(np.vstack([m.T, np.full(len(q), w)]), np.r_[q, w])
    return p / p.sum() if p.sum() > 0 else q


#: fpr + fnr at or above which a trait's calls are no better than chance: its correction is left out
_CHANCE = 0.95


def _usable_rates(fpr: np.ndarray, fnr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The error rates a correction can use: a trait whose calls are no better than chance (fpr + fnr >=
    :data:`_CHANCE`, the misclassification matrix near singular) is left uncorrected (rates 0)."""
    bad = (fpr + fnr) >= _CHANCE
    return np.where(bad, 0.0, fpr), np.where(bad, 0.0, fnr)


def _rates(errors: pd.DataFrame, traits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean false-positive and false-negative rate of each trait over its validation slides."""
    g = errors.groupby(["trait", "label"]).against.mean()
    return (np.array([g.get((t, 0), 0.0) for t in traits]), np.array([g.get((t, 1), 0.0) for t in traits]))


def _adjusted_hti(codes: np.ndarray, groups: list, matrix: np.ndarray, k: int, empty: str,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Corrected HTI of every slide from tile combination codes.

    ``groups``: per slide, a list of arrays of tile rows (its blocks); with ``rng`` the blocks are resampled
    with replacement (a block bootstrap: call errors are spatially correlated, so blocks, not tiles, are the
    independent units).
    """
    out = np.empty(len(groups))
    for j, blocks in enumerate(groups):
        if rng is not None:
            idx = np.concatenate([blocks[i] for i in rng.integers(0, len(blocks), len(blocks))])
        else:
            idx = np.concatenate(blocks)
        q = np.bincount(codes[idx], minlength=2 ** k) / len(idx)
        out[j] = hti_from_proportions(adjust_proportions(q, matrix), k=k, empty=empty)
    return out


@dataclass(frozen=True)
class CorrectedHTI:
    """The corrected HTI of every slide (:func:`corrected_hti`).

    ``slides``: indexed by ``image_id``, ``hti_corrected`` (NaN: no positive tile), ``hti_corrected_low``,
    ``hti_corrected_high``, ``n_tiles``; ``errors``: :func:`validation_errors` of the denoised split models;
    ``rates``: per trait, ``fpr, fnr`` (means over the validation slides), ``used`` (False: no error seen, or
    calls no better than chance and left uncorrected), ``n_low, n_high`` (slides).
    """

    sigma: float
    slides: pd.DataFrame
    errors: pd.DataFrame
    rates: pd.DataFrame


def corrected_hti(tiles: pd.DataFrame, prob: pd.DataFrame, slides: pd.DataFrame, splits: Sequence[tuple], *,
                  sigma: float = 0.75, block: int = 1, n_boot: int = 200, level: float = 0.95, seed: int = 0,
                  empty: str = "exclude") -> CorrectedHTI:
    """HTI corrected for tile-call errors: denoised maps, adjusted classify-and-count, an interval over both.

    Beyond the paper. The entropy is steep near zero, so a few wrong tiles on a homogeneous slide make a
    large HTI. Three steps, using only what a real study has (slide labels of the validation slides, the tile
    grid, the models' probabilities):

    1. every split model's tile log-odds are denoised on the slide grid (:func:`denoise_logits`), and all
       split models are averaged (every held-out slide is out of sample for each of them);
    2. each trait's false-positive and false-negative rates are the mean fractions of tiles called against
       the label on the split models' own validation slides (:func:`validation_errors`);
    3. each slide's combination proportions are corrected for those rates (:func:`adjust_proportions`,
       Forman 2008; Saerens et al. 2002) before the entropy is taken.

    The interval is a percentile bootstrap that redraws all three sources of error at once: the split models
    averaged (drawn with replacement), the validation slides behind the error rates (per trait and label,
    with replacement: the uncertainty of the correction itself) and the slide's tiles (or blocks of tiles).

    What it cannot correct: errors that are spatially coherent (a model miscalling a third of a slide) look
    like a clone, and a mean error rate does not remove them; they are what is left between this estimate
    and the truth on the synthetic cohort.

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...), with ``image_id, x, y, size0``
    prob : DataFrame, shape (n_tiles, k * n_splits), columns ``(trait, split)``: P(high) of every split model
    slides : DataFrame indexed by ``image_id`` with ``patient``, ``<trait>:label``, ``<trait>:ood``
    splits : sequence of (train patients, validation patients)
    sigma : denoising Gaussian in tiles (0: none)
    block : side in tiles of the square blocks the bootstrap resamples within a slide (1: single tiles). Call
        errors are spatially correlated, so blocks are the more honest unit, at a price in width: on the
        default run's seeds 1 and 2, blocks of 2 raised coverage from 83-86 % to 90 % and the mean width from
        0.24-0.29 to 0.31-0.36
    n_boot : bootstrap resamples (0: no interval)
    level : coverage of the interval
    seed : seed of the bootstrap
    empty : as for :func:`hti`

    Returns
    -------
    CorrectedHTI
    """
    traits = list(dict.fromkeys(prob.columns.get_level_values(0)))
    k = len(traits)
    if k < 2:
        raise InputError(f"HTI needs k >= 2 traits, got {traits}.")
    if int(block) != block or block < 1:
        raise InputError(f"block must be a whole number of tiles >= 1, got {block}.")
    z = pd.DataFrame(denoise_logits(tiles, prob.to_numpy(), sigma=sigma), columns=prob.columns, index=prob.index)
    errors = validation_errors(z, tiles["image_id"].to_numpy(), slides, splits)
    missing = [(t, lab) for t in traits for lab in (0, 1) if not ((errors.trait == t) & (errors.label == lab)).any()]
    if missing:
        log.warning("Corrected HTI: no validation slide labelled %s; its error rate is taken as 0", missing)
    fpr, fnr = _rates(errors, traits)
    if (fpr + fnr >= 0.5).any():
        log.warning("Corrected HTI: tile calls err on validation slides at fpr + fnr = %s; the correction is "
                    "unstable for traits the models did not learn, and left out where the calls are no better "
                    "than chance (fpr + fnr >= %.2f)", np.round(fpr + fnr, 2).tolist(), _CHANCE)
    measured = (fpr, fnr)
    fpr, fnr = _usable_rates(fpr, fnr)
    splits_of = {t: list(z[t].columns) for t in traits}
    zs = {t: z[t].to_numpy() for t in traits}

    def codes_of(pick: dict) -> np.ndarray:
        return combination_codes(np.stack([zs[t][:, pick[t]].mean(1) > 0 for t in traits], 1).astype(int))

    slide_groups = _slide_grids(tiles)
    groups = [[idx[bl] for bl in pd.Series(np.arange(len(idx))).groupby([r // block, c // block]).indices.values()]
              for _, idx, r, c in slide_groups]
    full = {t: np.arange(len(splits_of[t])) for t in traits}
    est = _adjusted_hti(codes_of(full), groups, misclassification_matrix(fpr, fnr), k, empty)
    lo = hi = np.full(len(groups), np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        boots = np.empty((n_boot, len(groups)))
        parts = {(t, lab): errors[(errors.trait == t) & (errors.label == lab)].against.to_numpy()
                 for t in traits for lab in (0, 1)}
        for b in range(n_boot):
            pick = {t: rng.integers(0, len(splits_of[t]), len(splits_of[t])) for t in traits}
            rb = [[rng.choice(parts[(t, lab)], len(parts[(t, lab)])).mean() if len(parts[(t, lab)]) else 0.0
                   for t in traits] for lab in (0, 1)]
            fb, nb = _usable_rates(np.asarray(rb[0]), np.asarray(rb[1]))
            boots[b] = _adjusted_hti(codes_of(pick), groups, misclassification_matrix(fb, nb), k, empty, rng)
        a = (1 - level) / 2
        with warnings.catch_warnings():  # a slide without a positive tile in every resample: NaN, as its HTI
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(boots, a, axis=0), np.nanquantile(boots, 1 - a, axis=0)
    table = pd.DataFrame({"image_id": [g[0] for g in slide_groups], "hti_corrected": est, "hti_corrected_low": lo,
                          "hti_corrected_high": hi, "n_tiles": [len(g[1]) for g in slide_groups]}).set_index("image_id")
    g = errors.groupby(["trait", "label"]).size()
    rates = pd.DataFrame({"trait": traits, "fpr": measured[0], "fnr": measured[1], "used": (fpr + fnr) > 0,
                          "n_low": [int(g.get((t, 0), 0)) for t in traits],
                          "n_high": [int(g.get((t, 1), 0)) for t in traits]})
    return CorrectedHTI(sigma=sigma, slides=table, errors=errors, rates=rates)


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
    """The paper's and the corrected HTI against the true HTI, as drawn by :func:`histo_utils.figures.hti_vs_truth`.

    ``table``: one row per slide with a true HTI, ``image_id, set, true_hti``; the paper's HTI ``hti_paper``
    (0 where no tile is positive) with its interval ``hti_paper_low, hti_paper_high`` and ``covers_paper``;
    the corrected HTI ``hti_corrected`` with its interval ``hti_low, hti_high`` and ``covers`` (the interval
    covers the true HTI); ``tile_truth_hti`` (the HTI of the true tile states). ``panels``: ``panel, slides,
    estimator, column, n, r`` (Pearson, NaN below three slides), ``coverage, width`` (mean interval width);
    ``points``: one row per slide and panel, ``panel, image_id, set, true_hti, estimate, low, high``.
    """

    table: pd.DataFrame
    panels: pd.DataFrame
    points: pd.DataFrame


#: true HTI below which a slide counts as homogeneous (the goal: estimated at <= 0.1 on average)
HOMOGENEOUS = 0.05
#: the goals the HTI of the held-out slides is held to: column of ``truth.hti_agreement`` -> (relation, value)
HTI_GOALS = {"pearson": (">=", 0.8), "low_true_mean": ("<=", 0.1), "ci_coverage": (">=", 0.8), "ci_width": ("<=", 0.25)}
#: the two estimators of notebook 08: column of the estimate and of its interval in :func:`hti_vs_truth`
ESTIMATORS = {"paper's HTI": ("hti_paper", "hti_paper_low", "hti_paper_high"),
              "corrected HTI": ("hti_corrected", "hti_low", "hti_high")}


def hti_vs_truth(slide_table: pd.DataFrame, sets: pd.Series) -> HTIvsTruth:
    """The paper's and the corrected HTI against the true HTI, on held-out and on training/validation slides.

    Parameters
    ----------
    slide_table : DataFrame indexed by ``image_id`` with ``true_hti, hti0, hti_low, hti_high`` (the paper's
        HTI and its interval), ``hti_corrected, hti_corrected_low, hti_corrected_high`` (:func:`corrected_hti`)
        and ``tile_truth_hti``
    sets : Series of str indexed by ``image_id``: ``test``, ``OOD``, ``unused`` (held out), ``train`` or
        ``validation`` (:func:`histo_utils.trait_models.slide_sets`)

    Returns
    -------
    HTIvsTruth
    """
    from scipy import stats

    bad = set(sets.dropna().unique()) - set(SLIDE_SETS)
    if bad:
        raise InputError(f"Unknown slide sets {sorted(bad)}; expected {list(SLIDE_SETS)}.")
    d = slide_table.dropna(subset=["true_hti"])
    t = pd.DataFrame({"image_id": d.index, "set": sets.reindex(d.index).to_numpy(),
                      "true_hti": d.true_hti.to_numpy(), "hti_paper": d.hti0.to_numpy(),
                      "hti_paper_low": d.hti_low.fillna(0).to_numpy(), "hti_paper_high": d.hti_high.fillna(0).to_numpy(),
                      "hti_corrected": d.hti_corrected.fillna(0).to_numpy(),
                      "hti_low": d.hti_corrected_low.fillna(0).to_numpy(),
                      "hti_high": d.hti_corrected_high.fillna(0).to_numpy(),
                      "tile_truth_hti": d.tile_truth_hti.to_numpy()})
    for name, (col, lo, hi) in ESTIMATORS.items():
        t["covers" if col == "hti_corrected" else "covers_paper"] = ((t.true_hti >= t[lo] - 1e-9)
                                                                    & (t.true_hti <= t[hi] + 1e-9))
    t = t[["image_id", "set", "true_hti", "hti_paper", "hti_paper_low", "hti_paper_high", "covers_paper",
           "hti_corrected", "hti_low", "hti_high", "covers", "tile_truth_hti"]]
    m_held = t.set.isin(list(HELD_OUT_SETS)).to_numpy()
    rows, points = [], []
    for slides_name, m in (("test + OOD slides", m_held), ("training/validation slides", ~m_held)):
        dd = t[m]
        for name, (col, lo, hi) in ESTIMATORS.items():
            panel = f"{slides_name}, {name}"
            r = stats.pearsonr(dd.true_hti, dd[col]).statistic if len(dd) > 2 and dd[col].nunique() > 1 else np.nan
            cov = dd["covers" if col == "hti_corrected" else "covers_paper"]
            rows.append({"panel": panel, "slides": slides_name, "estimator": name, "column": col, "n": len(dd),
                         "r": float(r), "coverage": float(cov.mean()) if len(dd) else np.nan,
                         "width": float((dd[hi] - dd[lo]).mean()) if len(dd) else np.nan})
            points.append(pd.DataFrame({"panel": panel, "image_id": dd.image_id, "set": dd.set,
                                        "true_hti": dd.true_hti, "estimate": dd[col], "low": dd[lo],
                                        "high": dd[hi]}))
    return HTIvsTruth(table=t.reset_index(drop=True), panels=pd.DataFrame(rows),
                      points=pd.concat(points, ignore_index=True))


def _fmt_p(p: float) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def reading(tab1: pd.DataFrame, evaluation: pd.DataFrame, logrank: pd.DataFrame, bulk_logrank: pd.DataFrame,
            cox: pd.DataFrame, surv: pd.DataFrame, *, tile_acc: pd.DataFrame | None = None,
            agree: pd.DataFrame | None = None, rates: pd.DataFrame | None = None, run: dict | None = None) -> str:
    """The written reading of notebook 08, every number formatted from the run's tables.

    Parameters
    ----------
    tab1, evaluation : :func:`histo_utils.trait_models.table1` and :func:`~histo_utils.trait_models.evaluate_slides`
    logrank, bulk_logrank : the log-rank tables of the HTI splits and of the bulk splits
    cox : :func:`histo_utils.survival.cox_table` (with ``planted_coef`` on the synthetic cohort)
    surv : :func:`histo_utils.survival.survival_table`
    tile_acc, agree : :func:`histo_utils.truth.tile_accuracy` and :func:`~histo_utils.truth.hti_agreement`
        (synthetic cohort), or None
    rates : ``CorrectedHTI.rates`` (:func:`corrected_hti`): the validation error rates, or None
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
                   + "; ".join(f"{md_text(t)}: tile AUC {r.tile_auc:.2f}, the paper's ensemble calls "
                               f"{100 * r.tile_accuracy:.0f} % correct ({100 * r.tile_accuracy_denoised:.0f} % after "
                               "denoising)" for t, r in ta.iterrows())
                   + f" (goal: tile AUC ≥ 0.85; {int(ta.n_tiles.iloc[0]):,} tiles).")
    if rates is not None and len(rates):
        out.append("**Tile-call errors on the validation slides** (fraction of a slide's tiles called against its "
                   "label, after denoising; the correction of the corrected HTI): "
                   + "; ".join(f"{md_text(r.trait)}: false positives {100 * r.fpr:.1f} % ({int(r.n_low)} low slides), "
                               f"false negatives {100 * r.fnr:.1f} % ({int(r.n_high)} high slides)"
                               + ("" if getattr(r, "used", True) or r.fpr + r.fnr == 0
                                  else ", no better than chance: left uncorrected")
                               for r in rates.itertuples()) + ".")
    if agree is not None and len(agree):
        ag = agree.set_index(["set", "hti"])
        goals = ", ".join(f"{c} {rel.replace('>=', '≥').replace('<=', '≤')} {v:g}" for c, (rel, v) in HTI_GOALS.items())
        txt = f"**HTI against the true HTI (test + OOD slides; goals {goals}).** "
        for key, name in (("hti0", "The paper's HTI"), ("hti_corrected", "The corrected HTI")):
            if ("test + OOD slides", key) not in ag.index:
                continue
            a = ag.loc[("test + OOD slides", key)]
            ok = [a[c] >= v if rel == ">=" else a[c] <= v for c, (rel, v) in HTI_GOALS.items()]
            txt += (f"{name}: Pearson r = {a.pearson:.2f} on {int(a.n)} slides, mean estimate "
                    f"{a.low_true_mean:.2f} on the {int(a.n_homogeneous)} slides with true HTI < {HOMOGENEOUS:g}, "
                    f"interval coverage {100 * a.ci_coverage:.0f} % at mean width {a.ci_width:.2f}: "
                    f"{sum(ok)} of the {len(ok)} goals met. ")
        if ("test + OOD slides", "hti0") in ag.index:
            txt += (f"The HTI of the true tile states follows the area truth at r = "
                    f"{ag.loc[('test + OOD slides', 'hti0'), 'pearson_tile_truth']:.2f}, so what separates an "
                    "estimate from the truth is the tile calls, not the index.")
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
