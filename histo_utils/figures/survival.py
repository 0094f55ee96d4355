"""The survival figures of notebook 08: Kaplan-Meier panels, HTI by bulk label and by subtype, Cox estimates.

Each function draws from a result of :mod:`histo_utils.survival` (the tests and the Kaplan-Meier fits are
done there) and returns the figure, with the result's table where the notebook saves one.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

__all__ = ["km_curve", "km_panel", "logrank_panels", "bulk_survival", "hti_by_subtype", "cox_hazard_ratios",
           "KM_COLOURS"]

#: colours of the low and the high group of a Kaplan-Meier panel (Okabe-Ito orange and blue)
KM_COLOURS = {"low": "#E69F00", "high": "#0072B2"}


def km_curve(ax, curve: pd.DataFrame, *, color: str, label: str) -> None:
    """One Kaplan-Meier estimate on ``ax``: the survival step function and its 95 % band.

    Parameters
    ----------
    ax : matplotlib Axes
    curve : one group's rows of a Kaplan-Meier table (:func:`histo_utils.survival.km_estimate`: ``time, survival,
        ci_lower, ci_upper``)
    color, label : of the line (the band takes the colour, lighter)
    """
    ax.step(curve.time, curve.survival, where="post", color=color, label=label)
    ax.fill_between(curve.time, curve.ci_lower, curve.ci_upper, step="post", alpha=0.25, color=color, linewidth=1.0)


def km_panel(ax, row, curves: pd.DataFrame) -> None:
    """One comparison on ``ax``: the Kaplan-Meier curves of its two groups with 95 % bands, log-rank p in the title.

    Parameters
    ----------
    ax : matplotlib Axes
    row : the comparison's row of :class:`histo_utils.survival.LogRankComparisons` ``table`` (``comparison, p,
        n_low, n_high``)
    curves : its ``curves`` (rows of other comparisons are ignored)

    Returns
    -------
    None
    """
    title = row["comparison"]
    cur = curves[curves.comparison == title]
    if cur.empty:  # one group only: no test (logrank_comparisons)
        ax.set_title(f"{title}\none group only (n = {int(row['n_low']) + int(row['n_high'])}): no test", fontsize=8)
        return
    for group in ("low", "high"):
        c = cur[cur.group == group]
        km_curve(ax, c, color=KM_COLOURS[group], label=f"{group} (n = {int(c.n.iloc[0])})")
    ax.set_title(f"{title}\nlog-rank p = {row['p']:.3g}", fontsize=8)
    ax.set_xlabel("months")
    ax.set_ylabel("survival probability")
    ax.legend(fontsize=7)


def logrank_panels(result):
    """One Kaplan-Meier panel per comparison (:func:`km_panel`).

    Parameters
    ----------
    result : :class:`histo_utils.survival.LogRankComparisons` (:func:`histo_utils.survival.logrank_comparisons`)

    Returns
    -------
    fig : the figure
    table : ``result.table``, one row per comparison: ``comparison, p, statistic, n_low, n_high``
    """
    n = len(result.table)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.6), sharey=True)
    for ax, (_, row) in zip(np.atleast_1d(axes), result.table.iterrows()):
        km_panel(ax, row, result.curves)
    fig.tight_layout()
    return fig, result.table


def bulk_survival(result):
    """Fig 5: survival split on bulk expression (above vs below median) and HTI by bulk label, per trait.

    Parameters
    ----------
    result : :class:`histo_utils.survival.BulkSurvival` (:func:`histo_utils.survival.bulk_survival`)

    Returns
    -------
    fig : two rows of panels (Kaplan-Meier; HTI by bulk label with the Mann-Whitney p in the title)
    table : ``result.table``, one row per trait: ``comparison, p, statistic, n_low, n_high, trait``
    """
    k = len(result.traits)
    fig, axes = plt.subplots(2, k, figsize=(4.2 * k, 6.6), squeeze=False)
    mw = result.mann_whitney.set_index("trait")
    for j, (t, (_, row)) in enumerate(zip(result.traits, result.table.iterrows())):
        km_panel(axes[0, j], row, result.curves[result.curves.trait == t])
        sns.boxplot(data=result.hti[result.hti.trait == t], x="bulk", y="hti0", order=["below median", "above median"],
                    ax=axes[1, j], color="#cccccc")
        axes[1, j].set_title(f"HTI by bulk {t} (Mann-Whitney p = {mw.loc[t, 'p']:.2g})", fontsize=8)
        axes[1, j].set_ylabel("HTI")
    fig.tight_layout()
    return fig, result.table


def hti_by_subtype(result):
    """HTI per molecular subtype, the Kruskal-Wallis p in the title when there are at least two subtypes.

    Parameters
    ----------
    result : :class:`histo_utils.survival.SubtypeHTI` (:func:`histo_utils.survival.hti_by_subtype`)

    Returns
    -------
    fig : matplotlib Figure
    table : ``result.table``, one row per subtype (empty when no patient has a subtype)
    empty : None, or the sentence saying why there is nothing to draw (for :func:`plotting.save_figure`)
    """
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if result.empty is not None:
        return fig, result.table, result.empty
    sns.boxplot(data=result.patients, x="subtype", y=result.value, color="#cccccc", ax=ax, order=result.order)
    title = "HTI by molecular subtype"
    if len(result.order) >= 2:
        title += f" (Kruskal-Wallis p = {result.kruskal_p:.2g})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("subtype")
    ax.set_ylabel("HTI")
    fig.tight_layout()
    return fig, result.table, None


def cox_hazard_ratios(cox: pd.DataFrame):
    """Log hazard ratios with 95 % CIs of each fit (crosses: planted values).

    Parameters
    ----------
    cox : :func:`histo_utils.survival.cox_table` output

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for i, (name, g) in enumerate(cox.groupby("fit", sort=False)):
        y = np.arange(len(g)) + 0.15 * i
        ax.errorbar(g.coef, y, xerr=[g.coef - g["coef lower 95%"], g["coef upper 95%"] - g.coef], fmt="o",
                    capsize=3, label=name)
        if "planted_coef" in g:
            ax.scatter(g.planted_coef, y, marker="x", color="k", zorder=3, label="planted" if i == 0 else None)
    ax.set_yticks(np.arange(len(g)) + 0.15, g.covariate)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("log hazard ratio (95 % CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
