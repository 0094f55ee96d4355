"""The figures of notebooks 00-05: each function draws one figure from a result table and returns it.

The notebook saves it with the same table (:func:`histo_utils.plotting.save_figure`), so the numbers
behind every figure are on disk beside it. Drawing only: nothing here computes a result.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .plotting import CATEGORICAL, DIVERGING, HIGHLIGHT, MUTED, seeded_jitter
from .correlation import fisher_z

__all__ = ["shared_vs_null_dots", "excess_by_layer", "excess_strips", "pc_cross_heatmaps", "correlation_histogram",
           "count_heatmaps", "stacked_layer_bars", "reproducibility_scatter", "training_curves",
           "confusion_heatmaps", "variance_bars", "confounder_diagnostics", "residual_grid", "bars_by_tissue",
           "technical_scatter", "planted_scatter_and_roles", "tiles_and_slides_per_tissue", "resolution_overview", "confounder_overview",
           "fading_scatter", "expression_floor_histogram", "within_tissue_power", "layer_tracking_lines",
           "network_comparison_bars"]


# --------------------------------------------------------------------------------------------- 02
def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss and tile accuracy per epoch, train and validation, with the best epochs so far marked.

    Parameters
    ----------
    history : DataFrame of :func:`histo_utils.training.train_classifier` (``epoch, train_loss, val_loss,
        train_acc, val_acc, best``), optionally with an ``arch`` column (one colour per architecture, train
        dashed, validation solid)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    groups = list(history.groupby("arch", sort=False)) if "arch" in history.columns else [("", history)]
    for k, (arch, h) in enumerate(groups):
        colour = f"C{k}"
        name = f"{arch} " if arch else ""
        axes[0].plot(h.epoch, h.train_loss, ls="--", color=colour, label=f"{name}train")
        axes[0].plot(h.epoch, h.val_loss, color=colour, label=f"{name}validation")
        axes[1].plot(h.epoch, h.train_acc, ls="--", color=colour, label=f"{name}train")
        axes[1].plot(h.epoch, h.val_acc, color=colour, label=f"{name}validation")
        best = h.best.astype(bool)
        axes[1].scatter(h.epoch[best], h.val_acc[best], color=colour, edgecolor="k", zorder=3, s=14,
                        label="best so far" if k == len(groups) - 1 else None)
    axes[0].set_ylabel("cross-entropy")
    axes[1].set_ylabel("tile accuracy")
    for a in axes:
        a.set_xlabel("epoch")
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def layer_tracking_lines(lp: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Best within-tissue |r| per layer and planted program, one line per network, chance levels in grey.

    Parameters
    ----------
    lp : DataFrame of :func:`histo_utils.features.layer_program_tracking` for one tile size (``layer_index,
        abs_r, network, program``; networks ``<name> (shuffled)`` are the chance levels)
    title : figure title

    Returns
    -------
    matplotlib Figure, one panel per program
    """
    programs = list(dict.fromkeys(lp.program))
    nets = [n for n in dict.fromkeys(lp.network) if not n.endswith("(shuffled)")]
    fig, axes = plt.subplots(1, len(programs), figsize=(3.6 * len(programs), 3), squeeze=False, sharey=True)
    for ax, prog in zip(axes[0], programs):
        d = lp[lp.program == prog]
        for k, net in enumerate(nets):
            for name, style in ((net, dict(color=f"C{k}", lw=1.6)),
                                (f"{net} (shuffled)", dict(color=f"C{k}", lw=0.8, ls=":", alpha=0.7))):
                e = d[d.network == name].sort_values("layer_index")
                if len(e):
                    ax.plot(e.layer_index, e.abs_r, label=name, **style)
        ax.set(title=prog, xlabel="layer (network order)")
    axes[0, 0].set_ylabel("best |r| within tissue")
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig


def confusion_heatmaps(confusion: dict[str, pd.DataFrame], *, split: str = "test") -> plt.Figure:
    """One annotated confusion matrix per level (tile, slide), titled with its accuracy.

    Parameters
    ----------
    confusion : dict, panel name (level, or ``"<arch> <level>"``) -> DataFrame, shape (n_classes, n_classes)
        (:func:`histo_utils.training.confusion_tables`); two panels per row
    split : name in the titles

    Returns
    -------
    matplotlib Figure
    """
    ncols = min(len(confusion), 2)
    nrows = -(-len(confusion) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4 * nrows), squeeze=False)
    for ax, (level, cm) in zip(axes.ravel(), confusion.items()):
        sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", ax=ax, cbar=False)
        ax.set(xlabel="predicted", ylabel="true")
        # class names are long ("Adipose Tissue"): slanted x labels do not run into each other
        ax.set_xticks(ax.get_xticks(), [t.get_text() for t in ax.get_xticklabels()], rotation=30, ha="right")
        ax.tick_params(axis="y", rotation=0)
        ax.set_title(f"{split} {level}s: accuracy {np.trace(cm.to_numpy()) / max(cm.to_numpy().sum(), 1):.3f}")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- 03
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


# --------------------------------------------------------------------------------------------- 04, 05
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


def variance_bars(summary: pd.DataFrame) -> plt.Figure:
    """Fraction of variance each confounder explains (type II), raw and chance-corrected, expression and
    image features side by side.

    Parameters
    ----------
    summary : DataFrame indexed by term, columns (``fraction_of_variance`` | ``fraction_adjusted``) ×
        (``expression`` | ``image features``), a row ``(all)``

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
    order = summary["fraction_adjusted"].drop(index="(all)").sort_values("expression").index
    for ax, col, label in zip(axes, ("fraction_of_variance", "fraction_adjusted"), ("raw", "chance-corrected")):
        summary[col].loc[order].plot.barh(ax=ax)
        ax.set_xlabel(f"fraction of variance, type II, {label}")
        ax.set_title(f"{label}, all together: expression {summary.loc['(all)', (col, 'expression')]:.1%}, image "
                     f"features {summary.loc['(all)', (col, 'image features')]:.1%}", fontsize=8)
        ax.axvline(0, color="k", lw=0.5)
    fig.suptitle("Variance explained by the confounders, mean over tissues (Jones: 51.1 % expression, 40.6 % image)",
                 fontsize=9, y=1.03)
    fig.tight_layout()
    return fig


def confounder_diagnostics(diagnostics, symbols: pd.Series, *, numeric: Sequence[str], source_columns: dict,
                           seed: int = 0) -> plt.Figure:
    """The gene (top row) and feature (bottom row) each confounder explains most, against it.

    Parameters
    ----------
    diagnostics : :class:`histo_utils.confounders.Diagnostics`
    symbols : Series, gene -> symbol (titles)
    numeric : terms drawn as scatter plots (the others as strip plots)
    source_columns : term -> column name (x labels)
    seed : seed of the jitter

    Returns
    -------
    matplotlib Figure
    """
    chosen, scatter = diagnostics.chosen, diagnostics.scatter
    n = chosen.confounder.nunique()
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.8), squeeze=False)
    for ax, top in zip(axes.T.ravel(), chosen.itertuples()):
        d = scatter[(scatter.confounder == top.confounder) & (scatter.kind == top.kind)]
        if top.confounder in numeric:
            ax.scatter(d.x.astype(float), d.y, s=8)
        else:
            with seeded_jitter(seed):
                sns.stripplot(x=d.x, y=d.y, ax=ax, size=3)
        label = symbols.get(top.column, top.column) if top.kind == "gene" else top.column
        ax.set_title(f"{top.confounder}: {top.kind} {label}\n{top.tissue}, unique R² {top.unique_r2:.2f}", fontsize=8)
        ax.set_xlabel(source_columns[top.confounder])
        ax.set_ylabel("log2(1+TPM)" if top.kind == "gene" else "feature value")
    fig.tight_layout()
    return fig


def residual_grid(fitted: pd.DataFrame) -> plt.Figure:
    """Residuals against fitted values of the full model, one panel per confounder × kind.

    Parameters
    ----------
    fitted : DataFrame, ``confounder, kind, fitted, residual`` (:class:`histo_utils.confounders.Diagnostics`)

    Returns
    -------
    matplotlib Figure
    """
    g = sns.FacetGrid(fitted, col="confounder", row="kind", height=2.4, sharex=False, sharey=False)
    g.map_dataframe(sns.scatterplot, x="fitted", y="residual", s=10)
    g.map(plt.axhline, y=0, color="k", lw=0.6)
    g.figure.suptitle("Residuals against fitted values (full model)", y=1.02)
    return g.figure


def bars_by_tissue(table: pd.DataFrame, columns: Sequence[str], *, hue: str) -> plt.Figure:
    """One bar panel per column, tissues on x, bars coloured by ``hue``.

    Parameters
    ----------
    table : DataFrame with ``tissue``, ``hue`` and ``columns``
    columns : values to draw, one panel each
    hue : grouping column (e.g. ``model_choice``)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, len(columns), figsize=(11 * len(columns) / 3, 3), squeeze=False)
    for ax, col in zip(axes[0], columns):
        sns.barplot(data=table, x="tissue", y=col, hue=hue, ax=ax, legend=(col == columns[-1]))
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_xlabel("")
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def technical_scatter(both: pd.DataFrame, var_fractions: Sequence[float]) -> plt.Figure:
    """Technical part of the shared expression variance (total − residual) against the total, per fraction.

    Parameters
    ----------
    both : DataFrame of :func:`histo_utils.crossvariance.technical_share`
    var_fractions : one panel each

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, len(var_fractions), figsize=(4 * len(var_fractions), 3.6), squeeze=False)
    for ax, vf in zip(axes[0], var_fractions):
        sns.scatterplot(data=both[both.var_fraction == vf], x="expression_shared_total", y="expression_technical",
                        hue="tissue", style="tile_px", ax=ax, s=14, legend=(vf == var_fractions[-1]))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{vf:.1%} of the variance", fontsize=9)
        ax.set(xlabel="total shared S_expression", ylabel="technical part (total − residual)")
    if axes[0, -1].get_legend():
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1, 1), fontsize=6)
    fig.tight_layout()
    return fig


def planted_scatter_and_roles(comparison: pd.DataFrame, by_role: pd.DataFrame) -> plt.Figure:
    """Planted against recovered variance fractions (genes off the detection floor), and the mean
    chance-corrected unique R² of each confounder by planted gene role.

    Parameters
    ----------
    comparison : DataFrame of :func:`histo_utils.truth.planted_vs_recovered`
    by_role : DataFrame of :func:`histo_utils.truth.r2_by_role`

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.2]})
    off = comparison[~comparison.at_floor]
    sns.scatterplot(data=off, x="planted", y="recovered", hue="term", style="tissue", s=18, ax=axes[0])
    lim = float(max(off.planted.max(), comparison.recovered.max())) * 1.05
    axes[0].plot([0, lim], [0, lim], "k", lw=0.6)
    axes[0].set(xlabel="planted type-II fraction (from the truth)", ylabel="recovered unique R² (chance-corrected)")
    axes[0].legend(fontsize=6)
    sns.heatmap(by_role, annot=True, fmt=".2f", cmap="viridis", ax=axes[1], cbar=False, annot_kws={"fontsize": 7})
    axes[1].set_title("mean chance-corrected unique R² by planted gene role", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- 01
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


# --------------------------------------------------------------------------------------------- 00
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


# --------------------------------------------------------------------------------------------- 03
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
