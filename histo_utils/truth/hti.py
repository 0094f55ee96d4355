"""Planted truth of the synthetic tumour cohort (notebook 08, :mod:`histo_utils.hti`): tile calls against the
true clone states, the estimated HTI against the true one.

:func:`true_combination_map` (the painted clone map by combination code) is :mod:`histo_utils.hti`'s, which
draws it; it is re-exported here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..hti import true_combination_map
from ..metrics import auc

__all__ = ["true_combination_map", "tile_accuracy", "hti_agreement"]


def tile_accuracy(calls: pd.DataFrame, smoothed: np.ndarray, prob: pd.DataFrame, true_calls: pd.DataFrame,
                  held: np.ndarray) -> pd.DataFrame:
    """Tile calls against the true clone state under each tile, on all tiles and on the held-out slides' tiles.

    Parameters
    ----------
    calls : DataFrame, shape (n_tiles, k), ensemble 0/1 calls, one column per trait
    smoothed : array, shape (n_tiles, k), the majority-filtered calls
    prob : DataFrame, shape (n_tiles, k * n_splits), columns (trait, split): P(high) of every model
    true_calls : DataFrame with ``true_<trait>`` columns, one row per tile
        (:func:`histo_utils.synthetic.tumour.tile_truth`)
    held : array of bool, shape (n_tiles,): tiles of slides that took part in no training or validation

    Returns
    -------
    DataFrame, one row per (trait, set): ``tile_accuracy``, ``tile_accuracy_smoothed``, ``tile_auc`` (mean
    P of the models against the truth, :func:`histo_utils.metrics.auc`), ``n_tiles``.
    """
    return pd.DataFrame([{"trait": t, "set": name,
                          "tile_accuracy": float((calls.loc[m, t] == true_calls.loc[m, f"true_{t}"]).mean()),
                          "tile_accuracy_smoothed": float((smoothed[m, j] == true_calls.loc[m, f"true_{t}"]).mean()),
                          "tile_auc": auc(prob.loc[m, t].mean(1).to_numpy(), true_calls.loc[m, f"true_{t}"].to_numpy()),
                          "n_tiles": int(m.sum())}
                         for j, t in enumerate(calls.columns)
                         for name, m in (("all tiles", np.ones(len(calls), bool)),
                                         ("test + OOD slides", np.asarray(held, bool)))])


def hti_agreement(slide_table: pd.DataFrame, held: pd.Series) -> pd.DataFrame:
    """Estimated HTI (raw and smoothed) against the true HTI of the clone areas, per set of slides.

    Parameters
    ----------
    slide_table : DataFrame indexed by ``image_id`` with ``true_hti, hti0, hti_low, hti_high, hti_smooth,
        tile_truth_hti`` (the HTI of the true tile states)
    held : Series of bool indexed by ``image_id``: slides that took part in no training or validation

    Returns
    -------
    DataFrame, one row per (set, hti) with more than two slides: ``n, pearson, spearman,
    pearson_tile_truth, mean_abs_error, ci_coverage`` (bootstrap interval covering the truth; raw HTI only).
    """
    from scipy import stats

    d = slide_table.dropna(subset=["true_hti"])
    d = d.assign(true0=d.true_hti.fillna(0))
    h = held.reindex(d.index).to_numpy(bool)
    return pd.DataFrame([{"set": name, "hti": col, "n": int(m.sum()),
                          "pearson": stats.pearsonr(d.true0[m], d[col][m]).statistic,
                          "spearman": stats.spearmanr(d.true0[m], d[col][m]).statistic,
                          "pearson_tile_truth": stats.pearsonr(d.true0[m], d.tile_truth_hti.fillna(0)[m]).statistic,
                          "mean_abs_error": float((d.true0[m] - d[col][m]).abs().mean()),
                          "ci_coverage": (float(((d.true0[m] >= d.hti_low[m] - 1e-9)
                                                 & (d.true0[m] <= d.hti_high[m] + 1e-9)).mean())
                                          if col == "hti0" else np.nan)}
                         for name, m in (("test + OOD slides", h), ("training/validation slides", ~h))
                         for col in ("hti0", "hti_smooth") if m.sum() > 2])
