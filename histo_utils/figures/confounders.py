"""The figures of notebook 05: confounder regression and variance partition.

Each function draws one figure from a result table. Moved unchanged from the former ``histo_utils/figures.py``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..plotting import seeded_jitter

__all__ = ["variance_bars", "confounder_diagnostics", "residual_grid", "bars_by_tissue", "technical_scatter",
           "planted_scatter_and_roles"]


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
    """Technical part of the shared expression variance (the excess over chance that the regression removes)
    against the total, per fraction.

    Parameters
    ----------
    both : DataFrame of :func:`histo_utils.confounders.technical_share`
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
        ax.set(xlabel="total shared S_expression", ylabel="technical part\n(excess total − excess residual)")
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
