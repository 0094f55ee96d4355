"""The figures of notebook 04 (and 05): shared variance of principal components.

Each function draws one figure from a result table. Moved unchanged from the former ``histo_utils/figures.py``.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..plotting import CATEGORICAL, DIVERGING, seeded_jitter

__all__ = ["pc_cross_heatmaps", "shared_vs_null_dots", "excess_by_layer", "excess_strips"]


def pc_cross_heatmaps(by_tissue: dict, *, title: str) -> plt.Figure:
    """Image PCs against expression PCs, one heatmap of correlations per tissue.

    Parameters
    ----------
    by_tissue : dict, tissue -> :class:`histo_utils.crossvariance.SharedVariance`
    title : figure title

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, len(by_tissue), figsize=(3.2 * len(by_tissue), 3.4), squeeze=False)
    for ax, (t, res) in zip(axes[0], by_tissue.items()):
        sns.heatmap(res.cross, cmap=DIVERGING, vmin=-1, vmax=1, ax=ax, cbar=False, xticklabels=False,
                    yticklabels=False)
        ax.set_title(f"{t}\nS_img {res.image:.2f}, S_expr {res.expression:.2f}", fontsize=8)
        ax.set_xlabel(f"{res.n_pc_expression} expression PCs")
        ax.set_ylabel(f"{res.n_pc_image} image PCs")
    fig.suptitle(title, y=1.05)
    return fig


def shared_vs_null_dots(grid: pd.DataFrame, var_fractions: Sequence[float]) -> plt.Figure:
    """Shared variance per tissue and table (dots) beside the 95th percentile of its null (grey dashes);
    rows: image and expression side, columns: variance fractions.

    Parameters
    ----------
    grid : DataFrame of :func:`histo_utils.crossvariance.shared_variance_grid` with a ``table`` label column
    var_fractions : the fractions, one column of panels each

    Returns
    -------
    matplotlib Figure
    """
    table_names, tissue_names = sorted(grid.table.unique()), sorted(grid.tissue.unique())
    offsets = np.linspace(-0.3, 0.3, len(table_names)) if len(table_names) > 1 else np.zeros(1)
    colours = {t: CATEGORICAL[i % len(CATEGORICAL)] for i, t in enumerate(table_names)}
    fig, axes = plt.subplots(2, len(var_fractions), figsize=(4 * len(var_fractions), 6.5), squeeze=False,
                             sharey="row")
    for (r, side), (c, vf) in itertools.product(enumerate(["image", "expression"]), enumerate(var_fractions)):
        ax = axes[r, c]
        for off, tab in zip(offsets, table_names):
            dt = grid[(grid.var_fraction == vf) & (grid.table == tab)].set_index("tissue").reindex(tissue_names)
            xs = np.arange(len(tissue_names)) + off
            ax.scatter(xs, dt[f"{side}_shared"], s=22, color=colours[tab], label=tab, zorder=3)
            ax.scatter(xs, dt[f"{side}_null_q95"], s=60, marker="_", color="grey", zorder=2)
        ax.set_xticks(range(len(tissue_names)))
        ax.set_xticklabels(tissue_names, rotation=30, fontsize=7)
        ax.set_title(f"S_{side}, {vf:.1%} of the variance", fontsize=9)
        ax.set_ylabel(f"S_{side}")
    axes[0, -1].legend(fontsize=6, bbox_to_anchor=(1, 1))
    fig.suptitle("Shared variance (dots) and the 95th percentile of its shuffled null (grey dash beside each)",
                 y=1.01)
    fig.tight_layout()
    return fig


def excess_by_layer(grid: pd.DataFrame, var_fractions: Sequence[float], layer_order: Sequence[str]) -> plt.Figure:
    """Excess of the shared expression variance over its null mean per layer, one line per table.

    Parameters
    ----------
    grid : per-layer rows of :func:`histo_utils.crossvariance.shared_variance_grid` with a ``table`` column
    var_fractions : one panel each
    layer_order : x order

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, len(var_fractions), figsize=(4.5 * len(var_fractions), 3.2), squeeze=False)
    for ax, vf in zip(axes[0], var_fractions):
        sns.pointplot(data=grid[grid.var_fraction == vf], x="layer", y="expression_excess", hue="table",
                      order=list(layer_order), ax=ax, markersize=3, errorbar=None, legend=(vf == var_fractions[-1]))
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"{vf:.1%} of the variance", fontsize=9)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_ylabel("S_expression − null mean")
    fig.tight_layout()
    return fig


def excess_strips(grid: pd.DataFrame, *, hue: str, title: str, seed: int = 0, boxes: bool = False) -> plt.Figure:
    """Excess of shared variance over its null mean by variance fraction, one panel per side, points
    coloured by ``hue`` (and boxes under them when ``boxes``).

    Parameters
    ----------
    grid : DataFrame with ``var_fraction``, ``image_excess``, ``expression_excess`` and ``hue``
    hue : column that tells the groups apart (e.g. cohort, stage)
    title : figure title
    seed : seed of the jitter
    boxes : draw box plots with small black points (True) or coloured points only

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, side in zip(axes, ["image", "expression"]):
        y = f"{side}_excess"
        if boxes:
            sns.boxplot(data=grid, x="var_fraction", y=y, hue=hue, ax=ax, fliersize=2)
        with seeded_jitter(seed):
            if boxes:
                sns.stripplot(data=grid, x="var_fraction", y=y, hue=hue, dodge=True, ax=ax, size=2.5, color="k",
                              legend=False)
            else:
                sns.stripplot(data=grid, x="var_fraction", y=y, hue=hue, dodge=True, ax=ax, size=5)
        ax.axhline(0, color="k", lw=0.6)
        ax.set(ylabel=f"S_{side} − null mean", xlabel="PCA variance fraction")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
