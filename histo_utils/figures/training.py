"""The figures of notebook 02: the tissue classifier and layer-program tracking.

Each function draws one figure from a result table. Moved unchanged from the former ``histo_utils/figures.py``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

__all__ = ["training_curves", "layer_tracking_lines", "confusion_heatmaps"]


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
