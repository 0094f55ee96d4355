"""The figures of notebook 00: the synthetic cohort's confounders and stain fading.

Each function draws one figure from a result table. Moved unchanged from the former ``histo_utils/figures.py``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

__all__ = ["confounder_overview", "fading_scatter"]


def confounder_overview(samples: pd.DataFrame) -> plt.Figure:
    """Ischemic time (with the values <= 0 counted), RIN against log ischemic time, samples per centre.

    Parameters
    ----------
    samples : DataFrame, one row per RNA sample: ``SMTS, SMTSISCH, SMRIN, SMCENTER``

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].hist(samples.SMTSISCH, bins=40, color="#7570b3")
    axes[0].axvline(0, color="k", lw=0.8)
    axes[0].set_xlabel("SMTSISCH (minutes)")
    axes[0].set_title(f"ischemic time ({int((samples.SMTSISCH <= 0).sum())} values ≤ 0)")
    axes[1].scatter(np.log1p(samples.SMTSISCH.clip(lower=0)), samples.SMRIN, s=8, alpha=0.6)
    axes[1].set(xlabel="log(1 + ischemic time)", ylabel="SMRIN")
    sns.countplot(data=samples, x="SMCENTER", hue="SMTS", ax=axes[2])
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    return fig


def fading_scatter(fading: pd.DataFrame, r_ischemia: float, r_rin: float) -> plt.Figure:
    """Tissue optical density (centred per tissue) against log ischemic time and against RIN.

    Parameters
    ----------
    fading : DataFrame of :func:`histo_utils.truth.stain_fading`
    r_ischemia, r_rin : the correlations shown in the titles

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    sns.scatterplot(data=fading, x="log_isch", y="od_centred", hue="SMTS", s=12, ax=axes[0], legend=False)
    axes[0].set_title(f"r = {r_ischemia:.2f}")
    sns.scatterplot(data=fading, x="SMRIN", y="od_centred", hue="SMTS", s=12, ax=axes[1])
    axes[1].set_title(f"r = {r_rin:.2f}")
    axes[1].legend(fontsize=6)
    axes[0].set_ylabel("tissue optical density (centred)")
    fig.tight_layout()
    return fig
