"""The cartography figures of notebook 08: planted clones, example cartographies, estimated against true HTI.

Each function draws from a result of :mod:`histo_utils.hti` (thumbnails read, maps built, correlations and
Kaplan-Meier fits computed there) and returns the figure with the result's table.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from ..hti import combination_names
from .survival import km_curve

__all__ = ["COMBINATION_COLOURS", "TRAIT_MAP_COLOURS", "SET_COLOURS", "combination_cmap", "planted_clones",
           "cartographies", "hti_vs_truth"]

#: colour of each combination code (0: no positive trait), for up to three traits (Okabe-Ito)
COMBINATION_COLOURS = ("#f0f0f0", "#E69F00", "#56B4E9", "#CC79A7", "#0072B2", "#D55E00", "#009E73", "#000000")
#: colours of a single-trait cartography: tile called low, tile called high (no tile: background)
TRAIT_MAP_COLOURS = ("#d9d9d9", "#252525")
#: marker colour of each slide set (:data:`histo_utils.hti.SLIDE_SETS`) in :func:`hti_vs_truth`
SET_COLOURS = {"test": "#0072b2", "OOD": "#e69f00", "unused": "#009e73", "train": "#999999",
               "validation": "#cc79a7"}


def combination_cmap(k: int) -> ListedColormap:
    """Matplotlib colormap of the 2^k combination codes (draw with ``vmin=-0.5, vmax=2**k - 0.5``)."""
    return ListedColormap(list(COMBINATION_COLOURS[: 2 ** k]))


def _combination_legend(fig, traits: Sequence[str], y: float, *, trait_maps: bool = False) -> None:
    k = len(traits)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COMBINATION_COLOURS[c]) for c in range(2 ** k)]
    labels = [f"heterogeneity map: {n}" if c == 0 else n for c, n in enumerate(combination_names(traits))]
    if trait_maps:
        handles += [plt.Rectangle((0, 0), 1, 1, color=c, ec="k", lw=0.3) for c in TRAIT_MAP_COLOURS]
        handles.append(plt.Rectangle((0, 0), 1, 1, color="white", ec="k", lw=0.3))
        labels += ["trait map: tile called low", "tile called high", "no tile (background)"]
    fig.legend(handles, labels, loc="upper center", ncol=min(len(handles), 4), fontsize=8,
               bbox_to_anchor=(0.5, y))


def planted_clones(result):
    """What the synthetic tumour cohort planted: clone maps, true HTI, mixes against bulk, survival by true HTI.

    Parameters
    ----------
    result : :class:`histo_utils.hti.PlantedClones` (:func:`histo_utils.hti.planted_clones`)

    Returns
    -------
    fig : the figure (top: four DX1 slides from low to high true HTI with their clones coloured by
        combination; bottom: true HTI histogram, true high-clone area against bulk expression, Kaplan-Meier)
    table : ``result.table``, one row per DX1 slide
    """
    k = len(result.traits)
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.5), gridspec_kw={"height_ratios": [1, 0.9]})
    for ax, (_, r), thumb, cmap in zip(axes[0], result.examples.iterrows(), result.thumbnails, result.clone_maps):
        ax.imshow(thumb)
        ax.imshow(cmap, cmap=combination_cmap(k), vmin=-0.5, vmax=2 ** k - 0.5, alpha=0.35,
                  extent=(0, thumb.shape[1], thumb.shape[0], 0), interpolation="nearest")
        ax.set_title(f"{r.image_id[:12]}  {int(r.n_clones)} clone(s), true HTI {r.true_hti0:.2f}", fontsize=8)
        ax.set_axis_off()
    axes[1, 0].hist(result.slides.true_hti0, bins=20, color="#7570b3")
    axes[1, 0].set_xlabel("true HTI (DX1 slides)")
    for j, t in enumerate(result.traits[:2]):
        axes[1, 1 + j].scatter(result.slides[f"mix_{t}"], result.slides[f"bulk_{t}"], s=6)
        axes[1, 1 + j].set_xlabel(f"true high-clone area, {t}")
        axes[1, 1 + j].set_ylabel("bulk log2 expression")
    for (group, c), col in zip(result.curves.groupby("group", sort=False), ("#d95f02", "#1f78b4")):
        km_curve(axes[1, 3], c, color=col, label=group)
    axes[1, 3].set_xlabel("months")
    axes[1, 3].legend(fontsize=7)
    _combination_legend(fig, result.traits, 1.03)
    fig.tight_layout()
    return fig, result.table


def cartographies(result):
    """Example slides: thumbnail, one cartography per trait, the heterogeneity map (and the true one).

    Parameters
    ----------
    result : :class:`histo_utils.hti.CartographyExamples` (:func:`histo_utils.hti.cartography_examples`)

    Returns
    -------
    fig : the figure, one row per example slide
    table : ``result.table``, one row per tile shown: ``image_id, set, x, y, combination`` and the calls per trait
    """
    traits = list(result.traits)
    k = len(traits)
    cmap = combination_cmap(k)
    tcmap = ListedColormap(list(TRAIT_MAP_COLOURS))
    with_truth = result.true_maps is not None
    ncol = k + 2 + with_truth
    n = len(result.slides)
    fig, axes = plt.subplots(n, ncol, figsize=(2.3 * ncol, 2.0 * n))
    axes = np.atleast_2d(axes)
    for r, (_, h) in enumerate(result.slides.iterrows()):
        which = "" if h.set is None else f" ({h.set})"
        axes[r, 0].imshow(result.thumbnails[r])
        axes[r, 0].set_title(h.image_id[:12] + which, fontsize=9)
        cart = result.trait_maps[r]
        for j, t in enumerate(traits):
            axes[r, 1 + j].imshow(np.ma.masked_invalid(cart[..., j]), cmap=tcmap, vmin=0, vmax=1,
                                  interpolation="nearest")
            axes[r, 1 + j].set_title(f"{t} calls", fontsize=9)
        axes[r, 1 + k].imshow(np.ma.masked_invalid(result.combination_maps[r]), cmap=cmap, vmin=-0.5,
                              vmax=2 ** k - 0.5, interpolation="nearest")
        axes[r, 1 + k].set_title(f"HTI {h.hti0:.2f} [{h.hti_low:.2f}, {h.hti_high:.2f}]", fontsize=9)
        if with_truth:
            axes[r, 2 + k].imshow(np.ma.masked_invalid(result.true_maps[r]), cmap=cmap, vmin=-0.5,
                                  vmax=2 ** k - 0.5, interpolation="nearest")
            true_h = "undefined (no high clone)" if np.isnan(h.true_hti) else f"{h.true_hti:.2f}"
            axes[r, 2 + k].set_title(f"true clones: HTI {true_h}", fontsize=9)
    for a in axes.ravel():
        a.set_axis_off()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    _combination_legend(fig, traits, 1.0, trait_maps=True)
    return fig, result.table


def hti_vs_truth(result):
    """The paper's and the corrected HTI against the true HTI, on held-out and on training/validation slides.

    Parameters
    ----------
    result : :class:`histo_utils.hti.HTIvsTruth` (:func:`histo_utils.hti.hti_vs_truth`)

    Returns
    -------
    fig : one scatter panel per set of slides and estimator (marker colour = set; bars: the estimator's
        interval) with Pearson r, interval coverage and mean width in the titles
    table : ``result.table``, one row per slide with a true HTI: both estimates, their intervals and whether
        each ``covers`` the true HTI
    """
    n = len(result.panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 4.0), sharey=True, squeeze=False)
    for ax, (_, p) in zip(axes[0], result.panels.iterrows()):
        pts = result.points[result.points.panel == p.panel]
        for s, g in pts.groupby("set"):
            yerr = np.vstack([(g.estimate - g.low).clip(lower=0), (g.high - g.estimate).clip(lower=0)])
            ax.errorbar(g.true_hti.to_numpy(), g.estimate.to_numpy(), yerr=yerr, fmt="o", ms=3, alpha=0.7,
                        elinewidth=0.5, color=SET_COLOURS[s], label=f"{s} ({len(g)})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{p.slides} (n = {p.n})\n{p.estimator}: r = {p.r:.2f}, covered {100 * p.coverage:.0f} %, "
                     f"width {p.width:.2f}", fontsize=8.5)
        ax.set_xlabel("true HTI (clone areas)")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("estimated HTI")
    fig.tight_layout()
    return fig, result.table
