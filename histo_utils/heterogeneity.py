"""Molecular cartographies, the heterogeneity index HTI and its survival analysis (Levy-Jurgenson et al. 2020).

A slide's tiles each get a binary prediction per trait (high/low expression of a gene or miRNA). The
tensor cartography is the stack of these maps; each tile falls into one combination of positive traits.
With k traits there are C = 2^k - 1 non-empty combinations and

    HTI = - sum_{i=1..C} p_i log_C p_i,

p_i the proportion of tiles whose positive traits are exactly combination i. Tiles with no positive trait
are left out of the proportions by default (the paper counts only the C non-empty combinations); they can
also be counted as a combination of their own (``empty="category"``, then C = 2^k).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["trait_labels", "split_patients", "ensemble_vote", "slide_scores", "combination_codes", "hti",
           "hti_bootstrap", "logrank_groups", "cox_hti"]


def trait_labels(values: pd.Series, *, ood_low: float = 0.2, ood_high: float = 0.8, near: float = 0.1
                 ) -> pd.DataFrame:
    """Label slides high/low by their expression percentile; mark the out-of-distribution band.

    Parameters
    ----------
    values : Series, slide -> bulk expression of the trait
    ood_low, ood_high : slides with percentile strictly between these are out of distribution (OOD) and not
        used for training (paper: 20th and 80th)
    near : width of the OOD-near bands inside the OOD band (20–30 and 70–80 percentiles)

    Returns
    -------
    DataFrame indexed like ``values``: ``percentile`` (0–1, average ranks), ``label`` (1 above the median),
    ``ood`` (bool), ``ood_near`` (bool).
    """
    if values.isna().any():
        raise ValueError(f"{int(values.isna().sum())} slides have no expression value; drop them first.")
    if not 0 <= ood_low < 0.5 < ood_high <= 1:
        raise ValueError(f"Need 0 <= ood_low < 0.5 < ood_high <= 1, got {ood_low}, {ood_high}.")
    pct = (values.rank(method="average") - 1) / max(len(values) - 1, 1)
    eps = 1e-9  # band edges are inclusive of their rounding (0.8 - 0.1 is not 0.7 in floating point)
    ood = (pct > ood_low + eps) & (pct < ood_high - eps)
    near_band = (pct <= ood_low + near + eps) | (pct >= ood_high - near - eps)
    return pd.DataFrame({"percentile": pct, "label": (pct > 0.5).astype(int), "ood": ood,
                         "ood_near": near_band & ood})


def split_patients(patients: Sequence[str], *, test_fraction: float = 0.1, n_splits: int = 5,
                   val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """Patients split before any trait is processed: one held-out test set, then ``n_splits`` random
    train/validation splits of the rest (paper: 10 % test; 80/10 of the whole, i.e. about 8:1 of the rest).

    Returns ``(test, [(train, validation), ...])``; no patient is in two of test/train/validation of a split.
    """
    ids = np.array(sorted(set(patients)))
    if len(ids) < 3:
        raise ValueError(f"{len(ids)} patients are too few for test, training and validation sets.")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(ids)
    n_test = max(1, int(round(test_fraction * len(ids))))
    test, rest = sorted(perm[:n_test]), perm[n_test:]
    n_val = max(1, int(round(val_fraction * len(ids))))
    if n_val >= len(rest):
        raise ValueError(f"{len(rest)} patients left after the test set cannot give {n_val} for validation.")
    splits = []
    for _ in range(n_splits):
        p = rng.permutation(rest)
        splits.append((sorted(p[n_val:]), sorted(p[:n_val])))
    return list(test), splits


def ensemble_vote(predictions: np.ndarray) -> np.ndarray:
    """Majority vote of binary tile predictions, shape (n_models, n_tiles) -> (n_tiles,); ties count as 0."""
    p = np.asarray(predictions)
    if p.ndim != 2:
        raise ValueError(f"predictions must be (n_models, n_tiles), got shape {p.shape}.")
    return (p.sum(0) * 2 > p.shape[0]).astype(int)


def slide_scores(tile_pred: Sequence[int], slide_ids: Sequence[str]) -> pd.Series:
    """Slide score = percent of the slide's tiles predicted positive."""
    s = pd.Series(np.asarray(tile_pred, dtype=float), index=np.asarray(slide_ids))
    return 100.0 * s.groupby(level=0).mean()


def combination_codes(tile_traits: np.ndarray) -> np.ndarray:
    """Code of each tile's combination of positive traits: sum_j 2^j t_j (0: no positive trait).

    tile_traits : array, shape (n_tiles, k), binary
    """
    t = np.asarray(tile_traits).astype(int)
    if t.ndim != 2 or not np.isin(t, (0, 1)).all():
        raise ValueError("tile_traits must be a binary (n_tiles, k) array.")
    return t @ (1 << np.arange(t.shape[1]))


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
    if empty not in ("exclude", "category"):
        raise ValueError(f"empty={empty!r} not available: 'exclude' or 'category'.")
    codes = combination_codes(t)
    k = t.shape[1]
    c = 2 ** k - 1
    if empty == "exclude":
        codes = codes[codes > 0]
    else:
        c += 1
    if len(codes) == 0:
        return float("nan")
    p = np.bincount(codes, minlength=2 ** k) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(c))


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


def logrank_groups(duration: Sequence[float], event: Sequence[int], group: Sequence[bool]) -> dict:
    """Kaplan–Meier fits of two groups and Mantel's log-rank test (lifelines).

    Returns ``{"p": ..., "statistic": ..., "n": (n_false, n_true), "km": {False: KaplanMeierFitter, True: ...}}``.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    d = np.asarray(duration, dtype=float)
    e = np.asarray(event, dtype=int)
    g = np.asarray(group, dtype=bool)
    if g.all() or (~g).all():
        raise ValueError("Both groups need at least one patient for a log-rank test.")
    res = logrank_test(d[~g], d[g], event_observed_A=e[~g], event_observed_B=e[g])
    km = {flag: KaplanMeierFitter(label=str(flag)).fit(d[g == flag], e[g == flag]) for flag in (False, True)}
    return {"p": float(res.p_value), "statistic": float(res.test_statistic), "n": (int((~g).sum()), int(g.sum())),
            "km": km}


def cox_hti(df: pd.DataFrame, *, duration: str = "time", event: str = "event", covariates: Sequence[str] = ("HTI",)
            ) -> pd.DataFrame:
    """Cox proportional-hazards model (lifelines); returns the summary (coef, HR = exp(coef), CI, p)."""
    from lifelines import CoxPHFitter

    cols = [duration, event, *covariates]
    missing = [c for c in cols if c not in df]
    if missing:
        raise ValueError(f"Columns {missing} missing from the survival table.")
    fit = CoxPHFitter().fit(df[cols].dropna(), duration_col=duration, event_col=event)
    return fit.summary
