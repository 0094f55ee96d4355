"""Planted truth of the synthetic tumour cohort (notebook 08, :mod:`histo_utils.hti`): tile calls against the
true clone states, the estimated HTI against the true one.

:func:`true_combination_map` (the painted clone map by combination code) is :mod:`histo_utils.hti`'s, which
draws it; it is re-exported here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..hti import ESTIMATORS, HELD_OUT_SETS, HOMOGENEOUS, HTIvsTruth, true_combination_map
from ..metrics import auc

__all__ = ["true_combination_map", "tile_accuracy", "hti_agreement", "HOMOGENEOUS"]


def tile_accuracy(calls: pd.DataFrame, denoised: np.ndarray, prob: pd.DataFrame, true_calls: pd.DataFrame,
                  held: np.ndarray) -> pd.DataFrame:
    """Tile calls against the true clone state under each tile, on all tiles and on the held-out slides' tiles.

    Parameters
    ----------
    calls : DataFrame, shape (n_tiles, k), the paper's ensemble 0/1 calls, one column per trait
    denoised : array, shape (n_tiles, k), the calls of the corrected HTI (denoised log-odds of all split
        models > 0, :func:`histo_utils.hti.denoise_logits`)
    prob : DataFrame, shape (n_tiles, k * n_splits), columns (trait, split): P(high) of every model
    true_calls : DataFrame with ``true_<trait>`` columns, one row per tile
        (:func:`histo_utils.synthetic.tumour.tile_truth`)
    held : array of bool, shape (n_tiles,): tiles of slides that took part in no training or validation

    Returns
    -------
    DataFrame, one row per (trait, set): ``tile_accuracy``, ``tile_accuracy_denoised``, ``tile_auc`` (mean
    P of the models against the truth, :func:`histo_utils.metrics.auc`), ``n_tiles``.
    """
    return pd.DataFrame([{"trait": t, "set": name,
                          "tile_accuracy": float((calls.loc[m, t] == true_calls.loc[m, f"true_{t}"]).mean()),
                          "tile_accuracy_denoised": float((denoised[m, j] == true_calls.loc[m, f"true_{t}"]).mean()),
                          "tile_auc": auc(prob.loc[m, t].mean(1).to_numpy(), true_calls.loc[m, f"true_{t}"].to_numpy()),
                          "n_tiles": int(m.sum())}
                         for j, t in enumerate(calls.columns)
                         for name, m in (("all tiles", np.ones(len(calls), bool)),
                                         ("test + OOD slides", np.asarray(held, bool)))])


def hti_agreement(vs: HTIvsTruth) -> pd.DataFrame:
    """The paper's and the corrected HTI against the true HTI of the clone areas, per set of slides.

    Parameters
    ----------
    vs : :func:`histo_utils.hti.hti_vs_truth` (its ``table``: one row per slide with a true HTI)

    Returns
    -------
    DataFrame, one row per (set, hti) with more than two slides; ``hti`` is ``hti0`` (the paper's HTI, 0
    where no tile is positive) or ``hti_corrected``: ``n, pearson, spearman, pearson_tile_truth`` (the HTI of
    the true tile states against the area truth: what a perfect tile caller would reach),
    ``mean_abs_error``, ``ci_coverage`` (the interval covers the true HTI), ``ci_width`` (mean width),
    ``n_homogeneous`` and ``low_true_mean`` (mean estimate on slides with true HTI < :data:`HOMOGENEOUS`).
    """
    from scipy import stats

    d = vs.table
    held = d.set.isin(list(HELD_OUT_SETS)).to_numpy()
    rows = []
    for name, m in (("test + OOD slides", held), ("training/validation slides", ~held)):
        if m.sum() <= 2:
            continue
        dd = d[m]
        homog = dd.true_hti < HOMOGENEOUS
        for label, (col, lo, hi) in ESTIMATORS.items():
            key = "hti0" if col == "hti_paper" else col
            rows.append({"set": name, "hti": key, "n": int(m.sum()),
                         "pearson": stats.pearsonr(dd.true_hti, dd[col]).statistic,
                         "spearman": stats.spearmanr(dd.true_hti, dd[col]).statistic,
                         "pearson_tile_truth": stats.pearsonr(dd.true_hti, dd.tile_truth_hti.fillna(0)).statistic,
                         "mean_abs_error": float((dd.true_hti - dd[col]).abs().mean()),
                         "ci_coverage": float(dd["covers" if col == "hti_corrected" else "covers_paper"].mean()),
                         "ci_width": float((dd[hi] - dd[lo]).mean()),
                         "n_homogeneous": int(homog.sum()),
                         "low_true_mean": float(dd[col][homog].mean()) if homog.any() else np.nan})
    return pd.DataFrame(rows)
