"""The figures of notebook 08's tile models: training curves, Table 1, slide score distributions.

Drawing only, from the tables of :mod:`histo_utils.trait_models`.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

__all__ = ["trait_training_curves", "table1_auc", "score_distributions"]


def trait_training_curves(history: pd.DataFrame, traits: Sequence[str]):
    """Validation slide AUC by epoch, one panel per trait and one line per split.

    Parameters
    ----------
    history : :func:`histo_utils.trait_models.fit_trait_models` history (``trait, split, epoch, val_score``)
    traits : the traits, one panel each

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, len(traits), figsize=(4 * len(traits), 3), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, t in zip(axes, traits):
        for s, h in history[history.trait == t].groupby("split"):
            ax.plot(h.epoch, h.val_score, marker=".", label=f"split {s}")
        ax.set_title(t)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("validation slide AUC")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def table1_auc(tab1: pd.DataFrame):
    """Table 1 as a figure: test AUC of the runs (mean and range) and of the ensemble on each set.

    Parameters
    ----------
    tab1 : :func:`histo_utils.trait_models.table1` output

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(tab1))
    ax.errorbar(x - 0.2, tab1.test_runs_mean, yerr=[tab1.test_runs_mean - tab1.test_runs_min,
                                                   tab1.test_runs_max - tab1.test_runs_mean],
                fmt="o", color="k", capsize=3, label="test, 5-run mean (range)")
    for off, col, m in ((-0.05, "#1b9e77", "test_ensemble"), (0.1, "#d95f02", "OOD-near_ensemble"),
                        (0.25, "#7570b3", "OOD-all_ensemble")):
        ax.scatter(x + off, tab1[m], color=col, label=m.replace("_", " "), zorder=3)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, tab1.trait)
    ax.set_ylabel("slide-level AUC")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def score_distributions(scores: pd.DataFrame):
    """Ensemble slide scores of slides above and below the median, per trait, on test, OOD-near, OOD-all.

    Parameters
    ----------
    scores : :func:`histo_utils.trait_models.evaluate_slides` scores (``set, trait, label, score``)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
    for ax, s in zip(axes, ("test", "OOD-near", "OOD-all")):
        d = scores[scores.set == s].assign(bulk=lambda d: np.where(d.label == 1, "above median", "below median"))
        sns.boxplot(data=d, x="trait", y="score", hue="bulk", hue_order=["below median", "above median"],
                    palette={"below median": "#bbbbbb", "above median": "#e7298a"}, ax=ax, fliersize=2)
        ax.set_title(s)
        ax.set_ylabel("ensemble slide score (% tiles positive)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
