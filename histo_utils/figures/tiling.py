"""The figures of notebook 01: slides, tiles and scanner resolution.

Each function draws one figure from a result table. Moved unchanged from the former ``histo_utils/figures.py``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..plotting import HIGHLIGHT, MUTED

__all__ = ["tiles_and_slides_per_tissue", "resolution_overview"]


def tiles_and_slides_per_tissue(counts: pd.DataFrame, *, title: str, tissue_col: str = "SMTS") -> plt.Figure:
    """Slides and tiles per tissue and split (Badea's S1 Table as bars).

    Parameters
    ----------
    counts : DataFrame of :func:`histo_utils.tiling.tiles_per_group` (``SMTS, split, slides, tiles``)
    title : title of the tiles panel
    tissue_col : the tissue label column of ``counts`` (``SMTS`` or ``SMTSD``, notebook 01's ``label_column``)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.barplot(data=counts, x=tissue_col, y="slides", hue="split", ax=axes[0])
    sns.barplot(data=counts, x=tissue_col, y="tiles", hue="split", ax=axes[1])
    for a in axes:
        a.tick_params(axis="x", rotation=30, labelsize=7)
    axes[1].set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def resolution_overview(survey: pd.DataFrame) -> plt.Figure:
    """Scanner mpp of every slide against the cohort median (±tolerance band), objective powers, mpp sources.

    Parameters
    ----------
    survey : DataFrame of :func:`histo_utils.tiling.resolution_survey` (its ``attrs`` give the median and
        the tolerance)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    median, tol = survey.attrs.get("median_mpp", survey["mpp"].median()), survey.attrs.get("tolerance", 0.1)
    order = survey.sort_values(["mpp", "image_id"]).reset_index(drop=True)
    colours = np.where(order["flagged"], HIGHLIGHT, MUTED)
    axes[0].scatter(np.arange(len(order)), order["mpp"], c=colours, s=14)
    axes[0].axhspan(median * (1 - tol), median * (1 + tol), color="0.85", zorder=0)
    axes[0].axhline(median, color="0.4", lw=0.8)
    axes[0].set(xlabel="slide (sorted by mpp)", ylabel="level-0 µm/px",
                title=f"median {median:.3g} µm/px, ±{100 * tol:.0f} % band; vermillion: flagged "
                      f"({int(survey['flagged'].sum())} of {len(survey)})")
    axes[0].title.set_fontsize(8)
    power = survey["objective_power"].map(lambda v: "unknown" if pd.isna(v) else f"{v:g}x").value_counts()
    axes[1].bar(power.index, power.to_numpy(), color="tab:gray")
    axes[1].set(ylabel="slides", title="objective power")
    source = survey["mpp_source"].value_counts()
    axes[2].bar(source.index, source.to_numpy(), color="tab:gray")
    axes[2].set(ylabel="slides", title="mpp source")
    for a in axes[1:]:
        a.title.set_fontsize(9)
    fig.tight_layout()
    return fig
