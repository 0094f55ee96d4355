"""The figures of notebook 03: gene-feature correlations.

Each function draws one figure from a result table. Moved unchanged from the former ``histo_utils/figures.py``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..plotting import CATEGORICAL, seeded_jitter
from ..correlation import fisher_z

__all__ = ["expression_floor_histogram", "correlation_histogram", "count_heatmaps", "network_comparison_bars",
           "stacked_layer_bars", "reproducibility_scatter", "within_tissue_power"]


def expression_floor_histogram(floor: pd.DataFrame, e_grid: Sequence[float], e_threshold: float, *,
                               hue: str | None = None) -> plt.Figure:
    """Histogram of the genes' expression floor with the E_T grid (dotted) and the chosen E_T (solid).

    Parameters
    ----------
    floor : DataFrame of :func:`histo_utils.correlation.expression_floor` (``max_median``)
    e_grid, e_threshold : the thresholds drawn
    hue : column stacking the bars (e.g. the planted gene ``group``), or None

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.histplot(data=floor, x="max_median", hue=hue, multiple="stack", bins=50, ax=ax)
    for et in e_grid:
        ax.axvline(et, color="k", lw=0.6, ls=":" if et != e_threshold else "-")
    ax.set_xlabel("log2(1 + median TPM) in the tissue of maximal expression")
    ax.set_title(f"Expression floor; lines: E_T grid, solid: E_T = {e_threshold:g}")
    return fig


def correlation_histogram(scan, null_density: np.ndarray, null_r: np.ndarray, tested: pd.DataFrame, *,
                          n_permutations: int, r_min: float) -> plt.Figure:
    """Left: the histogram of all gene–feature correlations over the density of no correlation. Right:
    analytic against permutation p-values of the tested pairs.

    Parameters
    ----------
    scan : :class:`histo_utils.correlation.ScanResult` (``bins``, ``histogram``, ``n_samples``)
    null_density, null_r : arrays, shape (m,): the density of r without correlation at ``null_r``
    tested : DataFrame of the permutation-tested pairs (``p``, ``perm_p``)
    n_permutations, r_min : the number of permutations (dotted line at 1/(N+1)) and the |r| floor (title)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    centres = (scan.bins[:-1] + scan.bins[1:]) / 2
    axes[0].bar(centres, scan.histogram / scan.histogram.sum() / np.diff(scan.bins), width=np.diff(scan.bins),
                color="#7570b3", alpha=0.7, label="all gene–feature pairs")
    axes[0].plot(null_r, null_density, "k", lw=1, label=f"no correlation (n = {scan.n_samples})")
    axes[0].set(xlabel="r", ylabel="density")
    axes[0].legend(fontsize=7)
    axes[1].scatter(-np.log10(tested.p), -np.log10(tested.perm_p), s=3, alpha=0.3)
    axes[1].axhline(-np.log10(1 / (n_permutations + 1)), color="k", lw=0.6, ls=":")
    axes[1].set(xlabel="analytic  -log10 p", ylabel="permutation  -log10 p")
    axes[1].set_title(f"{len(tested):,} pairs with |r| >= {r_min}; dotted: 1/(N+1)", fontsize=9)
    fig.tight_layout()
    return fig


def count_heatmaps(grid: pd.DataFrame, *, title: str, values: Sequence[str] = ("pairs", "genes", "features")
                   ) -> plt.Figure:
    """One annotated R_T × E_T heatmap per count of a threshold grid (Badea's Table 5).

    Parameters
    ----------
    grid : DataFrame of :func:`histo_utils.correlation.threshold_grid` (``R_T, E_T`` and the counts)
    title : figure title
    values : counts to show

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3), squeeze=False)
    for ax, what in zip(axes[0], values):
        sns.heatmap(grid.pivot(index="R_T", columns="E_T", values=what), annot=True, fmt="d", cmap="viridis",
                    cbar=False, ax=ax)
        ax.set_title(f"{what}")
    fig.suptitle(title, y=1.04)
    return fig


def network_comparison_bars(comparison: pd.DataFrame, *, counts: Sequence[str] = ("genes", "pairs"),
                            title: str = "") -> plt.Figure:
    """Correlated-gene counts per network at every R_T (Badea's Table 4 as bars), one panel per count.

    Parameters
    ----------
    comparison : DataFrame of :func:`histo_utils.correlation.network_comparison` (index ``arch, weights,
        tile_px``; columns ``<count> @ R_T <r>``)
    counts : which counts to draw (``genes``, ``pairs``, ``features``, ``tissues``)
    title : figure title

    Returns
    -------
    matplotlib Figure; bars grouped by R_T, one colour per network and tile size (untrained hatched)
    """
    fig, axes = plt.subplots(1, len(counts), figsize=(5.2 * len(counts), 3.4), squeeze=False)
    rows = list(comparison.index)
    width = 0.8 / max(len(rows), 1)
    for ax, count in zip(axes[0], counts):
        cols = [c for c in comparison.columns if c.startswith(f"{count} @ R_T ")]
        r_values = [c.rsplit(" ", 1)[1] for c in cols]
        x = np.arange(len(cols))
        for k, (arch, weights, px) in enumerate(rows):
            ax.bar(x + (k - (len(rows) - 1) / 2) * width, comparison.loc[(arch, weights, px), cols].to_numpy(float),
                   width, color=f"C{k}", hatch="//" if weights == "untrained" else None, edgecolor="white",
                   label=f"{arch} {weights}, {px} px")
        ax.set_xticks(x, [f"R_T {r}" for r in r_values])
        ax.set_ylabel(f"significant {count}")
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def stacked_layer_bars(counts: pd.DataFrame, *, ylabel: str, legend_title: str = "", title: str = "",
                       colormap: str | None = None, ax=None) -> plt.Figure:
    """Stacked bars of genes per layer (rows of ``counts``), one colour per column.

    Parameters
    ----------
    counts : DataFrame, shape (n_layers, n_groups) (:func:`histo_utils.correlation.genes_per_layer`)
    ylabel, legend_title, title : labels
    colormap : colour map of the columns; None: the compendium's colour-blind-safe categories
    ax : Axes to draw on (default: a new figure)

    Returns
    -------
    matplotlib Figure
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2))
    if counts.shape[1]:
        if colormap is None:
            colours = [CATEGORICAL[i % len(CATEGORICAL)] for i in range(counts.shape[1])]
            counts.plot.bar(stacked=True, ax=ax, width=0.8, color=colours)
        else:
            counts.plot.bar(stacked=True, ax=ax, width=0.8, colormap=colormap)
    else:
        ax.text(0.5, 0.5, "no significant pair at these thresholds", ha="center", transform=ax.transAxes)
    ax.set(xlabel="layer", ylabel=ylabel)
    ax.legend(title=legend_title or None, fontsize=7, title_fontsize=7, bbox_to_anchor=(1, 1))
    ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


def reproducibility_scatter(sample: pd.DataFrame, reported: pd.DataFrame, summary: dict, *, split: str,
                            replicate_split: str) -> plt.Figure:
    """Fisher z of the correlations on two splits: all pairs (hexbin of a sample) and the reported pairs.

    Parameters
    ----------
    sample : DataFrame, ``r_a`` (replicate split), ``r_b`` (:class:`histo_utils.correlation.Reproducibility`)
    reported : DataFrame, ``r`` and ``r_replicate`` of the reported pairs
    summary : dict with ``z_correlation`` and ``reported_z_correlation``
    split, replicate_split : axis labels

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    axes[0].hexbin(fisher_z(sample.r_b), fisher_z(sample.r_a), gridsize=40, cmap="Greys", bins="log")
    axes[0].set(xlabel=f"z(r), {split}", ylabel=f"z(r), {replicate_split}")
    axes[0].set_title(f"all pairs ({len(sample):,} shown): R = {summary['z_correlation']:.3f}", fontsize=9)
    axes[1].scatter(fisher_z(reported.r), fisher_z(reported.r_replicate), s=3, alpha=0.4)
    axes[1].set_xlabel(f"z(r), {split}")
    axes[1].set_title(f"reported pairs: R = {summary['reported_z_correlation']:.3f}", fontsize=9)
    fig.tight_layout()
    return fig


def within_tissue_power(best: pd.DataFrame, *, weakest: float, r_keep: float, fdr_alpha: float, seed: int = 0
                        ) -> plt.Figure:
    """Each gene group's strongest within-tissue |r|, found genes coloured, with the weakest significant |r|
    (dashed) and the screening floor (dotted).

    Parameters
    ----------
    best : DataFrame of :func:`histo_utils.truth.best_within_tissue_r`
    weakest, r_keep, fdr_alpha : the lines and the level in the title
    seed : seed of the jitter

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = plt.subplots(figsize=(6, 3.2))
    with seeded_jitter(seed):
        sns.stripplot(data=best, x="group", y="best_abs_r_within", hue="found", size=2.5, jitter=0.3, ax=ax,
                      order=["program", "ischemia", "tissue", "null"])
    ax.axhline(weakest, color="k", lw=0.8, ls="--")
    ax.axhline(r_keep, color="grey", lw=0.6, ls=":")
    ax.set_ylabel("best |r(g, f | tissue)| over features")
    ax.set_title(f"dashed: weakest pair with q < {fdr_alpha} (|r| = {weakest:.2f}); dotted: p = {fdr_alpha}",
                 fontsize=8)
    fig.tight_layout()
    return fig
