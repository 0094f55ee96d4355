"""The figures of notebook 09: model comparison, autoencoder loss, gene masking, saliency GSEA.

Drawing only, from the tables of :mod:`histo_utils.radiogenomics`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..plotting import seeded_jitter

__all__ = ["model_comparison", "training_loss", "gene_masking", "saliency_heatmap"]


def model_comparison(fold_auc: pd.DataFrame, bootstrap: pd.DataFrame, order: Sequence[str], *, seed: int = 0):
    """Fig 2: (a) fold AUCs of every model per trait, (b) bootstrap AUC(nn) - AUC(model).

    The fold points' horizontal jitter is drawn with ``seed`` (:func:`histo_utils.plotting.seeded_jitter`):
    cosmetic, the same picture each run; no number depends on it.

    Parameters
    ----------
    fold_auc : :func:`histo_utils.radiogenomics.compare_models` fold AUCs (``trait, model, fold, auc``)
    bootstrap : :func:`histo_utils.radiogenomics.compare_models` bootstrap (``trait, model, resample, difference``)
    order : models in plotting order
    seed : seed of the strip plot's jitter

    Returns
    -------
    matplotlib Figure
    """
    n_folds = fold_auc["fold"].nunique()
    n_boot = bootstrap["resample"].nunique()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    with seeded_jitter(seed):
        sns.boxplot(data=fold_auc, x="trait", y="auc", hue="model", hue_order=order, ax=axes[0], fliersize=0)
        sns.stripplot(data=fold_auc, x="trait", y="auc", hue="model", hue_order=order, dodge=True, ax=axes[0],
                      size=2, color="k", legend=False)
    axes[0].axhline(0.5, color="grey", ls=":", lw=0.8)
    axes[0].set_title(f"(a) {n_folds}-fold cross-validation AUC", fontsize=9)
    sns.boxplot(data=bootstrap, x="trait", y="difference", hue="model", ax=axes[1], fliersize=1)
    axes[1].axhline(0, color="grey", ls=":", lw=0.8)
    axes[1].set_title(f"(b) AUC(nn) - AUC(model), {n_boot} bootstrap resamples", fontsize=9)
    for a in axes:
        a.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def training_loss(history: pd.DataFrame, *, title: str):
    """Loss by epoch of a training run.

    Parameters
    ----------
    history : DataFrame ``epoch, loss``
    title : figure title

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.plot(history.epoch, history.loss)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction MSE (standardised)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def gene_masking(masking: pd.DataFrame, *, target: Mapping[str, str] | None = None, top: int = 12):
    """The ``top`` gene sets of each trait by masked AUC.

    Parameters
    ----------
    masking : :func:`histo_utils.radiogenomics.mask_gene_sets` table (``trait, gene_set, auc, planted``), ranked
        per trait
    target : trait -> its planted set (orange); other planted sets are purple
    top : sets shown per trait

    Returns
    -------
    matplotlib Figure, one panel per trait
    """
    target = target or {}
    traits = list(dict.fromkeys(masking.trait))
    fig, axes = plt.subplots(1, len(traits), figsize=(4.3 * len(traits), 4), sharex=True)
    for ax, t in zip(np.atleast_1d(axes), traits):
        m = masking[masking.trait == t].head(top).iloc[::-1]
        colours = ["#d95f02" if g == target.get(t) else ("#7570b3" if p else "#bbbbbb")
                   for g, p in zip(m.gene_set, m.planted)]
        ax.barh(m.gene_set, m.auc, color=colours)
        ax.axvline(0.5, color="grey", ls=":", lw=0.8)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("AUC of masked network output")
        ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return fig


def saliency_heatmap(sal: pd.DataFrame, traits: pd.DataFrame, *, n_decoys: int = 6):
    """NES of the planted sets and ``n_decoys`` decoys in every sample's saliency ranking, positives first.

    Parameters
    ----------
    sal : :func:`histo_utils.radiogenomics.saliency_gsea` table (``trait, SAMPID, term, nes``)
    traits : DataFrame, shape (n_samples, n_traits), 0/1
    n_decoys : decoy sets shown

    Returns
    -------
    fig : one heatmap per trait, samples sorted positives first
    table : DataFrame ``SAMPID, term, nes, trait`` (what the heatmaps show)
    """
    fig, axes = plt.subplots(1, len(traits.columns), figsize=(5 * len(traits.columns), 4.5))
    tables = []
    for ax, t in zip(np.atleast_1d(axes), traits.columns):
        m = sal[sal.trait == t].pivot(index="SAMPID", columns="term", values="nes")
        keep = ([c for c in m.columns if c.startswith("PLANTED")]
                + [c for c in m.columns if c.startswith("DECOY")][:n_decoys])
        m = m.loc[traits[t].loc[m.index].sort_values(ascending=False).index, keep]
        sns.heatmap(m.T, cmap="PuOr_r", center=0, ax=ax, xticklabels=False, cbar_kws={"label": "NES"})
        ax.axvline(int(traits[t].sum()), color="k", lw=1)
        ax.set_title(f"{t}: positive samples left of the line", fontsize=8)
        ax.set_xlabel("samples")
        ax.tick_params(axis="y", labelsize=6)
        tables.append(m.reset_index().melt(id_vars="SAMPID", var_name="term", value_name="nes").assign(trait=t))
    fig.tight_layout()
    return fig, pd.concat(tables, ignore_index=True)
