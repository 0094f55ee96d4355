"""The figures of notebook 06: association counts, running enrichment scores, heatmaps, planted sets vs decoys.

Drawing only, from the tables of :mod:`histo_utils.enrichment` and :mod:`histo_utils.truth`.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..errors import InputError

__all__ = ["association_counts", "enrichment_curves", "annotated_heatmap", "planted_vs_decoys"]


def association_counts(counts: pd.DataFrame, per_feature: pd.DataFrame, *, fdr: float = 0.05):
    """Bar chart of the BH-significant pairs per scope and histogram of associated genes per feature.

    Parameters
    ----------
    counts : :func:`histo_utils.enrichment.associations_by_scope` counts
    per_feature : :func:`histo_utils.enrichment.associations_per_feature` output
    fdr : the BH level (axis label)

    Returns
    -------
    matplotlib Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
    sns.barplot(data=counts, x="scope", y="associations_bh", hue="table", ax=axes[0])
    axes[0].set_ylabel(f"gene–feature pairs, BH q < {fdr}")
    axes[0].tick_params(axis="x", labelrotation=30, labelsize=7)
    if len(per_feature):
        sns.histplot(data=per_feature, x="associations", hue="table", bins=40, ax=axes[1], element="step")
    else:
        axes[1].text(0.5, 0.5, "no association at this FDR", ha="center", transform=axes[1].transAxes)
    axes[1].set_xlabel("associated genes per feature (pooled)")
    fig.tight_layout()
    return fig


def enrichment_curves(gsea: pd.DataFrame, curves: Mapping[str, Mapping], *, n: int = 6):
    """Running enrichment score and hits of the top set of up to ``n`` lists (smallest FDR first).

    Parameters
    ----------
    gsea : :func:`histo_utils.enrichment.prerank_many` table with a ``rank`` column
    curves : :func:`histo_utils.enrichment.prerank_many` curves

    Returns
    -------
    fig : the figure
    table : DataFrame ``list, term, rank, RES`` (empty when no list has a set)
    """
    show = gsea[gsea["rank"] == 1].sort_values("fdr").head(n)
    fig = plt.figure(figsize=(4.2 * len(show), 4.6))
    rows = []
    for i, (_, row) in enumerate(show.iterrows()):
        c = curves[row.list][row.term]
        ax = fig.add_subplot(1, len(show), i + 1)
        ax.plot(c["RES"], color="#1b9e77")
        ax.vlines(c["hits"], ymin=min(c["RES"]) - 0.05, ymax=min(c["RES"]), color="k", lw=0.4)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{row.list}\n{row.term}\nNES {row.nes:.2f}, FDR {row.fdr:.3f}", fontsize=7)
        ax.set_xlabel("gene rank")
        ax.set_ylabel("running enrichment score" if i == 0 else "")
        rows.append(pd.DataFrame({"list": row.list, "term": row.term, "rank": np.arange(len(c["RES"])),
                                  "RES": c["RES"]}))
    fig.tight_layout()
    return fig, (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame())


def annotated_heatmap(table: pd.DataFrame, *, title: str, fmt: str = ".2f", **kwargs):
    """An annotated heatmap of a small table (seaborn) with small tick labels.

    Parameters
    ----------
    table : DataFrame, shape (n_rows, n_columns)
    title : figure title
    fmt : format of the annotations
    **kwargs : ``figsize`` and ``labelsize`` (tick labels) of the figure; the rest goes to ``seaborn.heatmap``
        (e.g. ``cmap``, ``vmin``, ``center``)

    Returns
    -------
    matplotlib Figure
    """
    figsize = kwargs.pop("figsize", (0.5 * len(table) + 3, 0.5 * len(table) + 2))
    fontsize = kwargs.pop("labelsize", 6)
    fig, ax = plt.subplots(figsize=figsize)
    sns.heatmap(table, annot=True, fmt=fmt, ax=ax, annot_kws={"fontsize": 6}, **kwargs)
    ax.tick_params(labelsize=fontsize)
    ax.set_title(title, fontsize=9)
    return fig


def planted_vs_decoys(table: pd.DataFrame):
    """Each ranking's planted set against its decoys: NES of every tested set, the planted one marked with its rank.

    Parameters
    ----------
    table : :func:`histo_utils.truth.gsea_planted_vs_decoys` output (``ranking, expected, kind, term, rank, nes,
        n_sets, decoys_above``)

    Returns
    -------
    matplotlib Figure: one row per ranking (feature rankings, then confounder rankings); decoys as grey
    circles, other sets as open circles, the planted set as a filled diamond labelled ``rank r/n``.
    """
    if table.empty:
        raise InputError("No ranking with a planted set to show (is the GMT the synthetic cohort's, with "
                         "PLANTED_* and DECOY* sets?).")
    order = list(dict.fromkeys(table.ranking))
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(order) + 1.6))
    y = {r: len(order) - 1 - i for i, r in enumerate(order)}
    style = {"decoy": dict(marker="o", color="#999999", s=14, label="decoy sets (random genes)"),
             "other": dict(marker="o", facecolors="none", edgecolors="#0072B2", s=14, label="other sets"),
             "planted": dict(marker="D", color="#D55E00", s=40, zorder=3, label="expected planted set")}
    for kind, st in style.items():
        d = table[table.kind == kind]
        ax.scatter(d.nes, d.ranking.map(y), **st)
    for r in table[table.kind == "planted"].itertuples():
        ax.annotate(f"rank {r.rank:.0f}/{r.n_sets}", (r.nes, y[r.ranking]), xytext=(0, 6),
                    textcoords="offset points", ha="center", fontsize=7)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(list(y.values()), [f"{r}\n→ {table[table.ranking == r].expected.iloc[0]}" for r in y],
                  fontsize=7)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_xlabel("normalised enrichment score (NES)")
    ax.set_title("Planted gene set vs decoys in each ranking that should find it", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14 - 0.6 / len(order)), ncol=3, frameon=False)
    fig.tight_layout()
    return fig
