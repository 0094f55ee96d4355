"""The figure of the robustness study (:mod:`histo_utils.robustness`): every headline per seed against its goal.

Draws from the study's long table (``seed, notebook, headline, value, goal, threshold, direction, holds``);
nothing is computed here.
"""
from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..plotting import HIGHLIGHT, MUTED

__all__ = ["headline_panels", "HOLDS_COLOURS"]

#: point colours: the goal reached (blue), missed (vermillion), no goal (grey); Okabe-Ito, no red/green pair
HOLDS_COLOURS = {True: MUTED, False: HIGHLIGHT, None: "#7f7f7f"}


def _colour(holds) -> str:
    return HOLDS_COLOURS[None] if pd.isna(holds) else HOLDS_COLOURS[bool(holds)]


def headline_panels(headlines: pd.DataFrame, *, ncols: int = 6, width: float = 2.3, height: float = 1.7
                    ) -> plt.Figure:
    """One small panel per headline: a point per seed, the goal as a dashed line.

    Parameters
    ----------
    headlines : DataFrame ``seed, notebook, headline, value, threshold, holds`` (one row per seed and headline;
        :func:`histo_utils.robustness.seed_headlines`)
    ncols : panels per row
    width, height : of one panel, in inches

    Returns
    -------
    matplotlib Figure (one empty axes when ``headlines`` has no row; the caller saves it with its reason)
    """
    keys = list(dict.fromkeys(zip(headlines.notebook, headlines.headline)))
    if not keys:
        fig, _ = plt.subplots(figsize=(4, 2))
        return fig
    seeds = sorted(headlines.seed.unique())
    ncols = min(ncols, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6), squeeze=False)
    for ax, (nb, name) in zip(axes.flat, keys):
        g = headlines[(headlines.notebook == nb) & (headlines.headline == name)]
        x = [seeds.index(s) for s in g.seed]
        ax.scatter(x, g.value, c=[_colour(h) for h in g.holds], s=22, zorder=3)
        threshold = g.threshold.iloc[0]
        if pd.notna(threshold):
            ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, zorder=2)
        values = np.append(g.value.to_numpy(dtype=float), threshold if pd.notna(threshold) else np.nan)
        finite = values[np.isfinite(values)]
        if len(finite):  # the points and the goal inside the panel, off its edges
            lo, hi = finite.min(), finite.max()
            whole = bool(np.all(finite == np.round(finite)))  # ranks, counts, 0/1
            pad = max(0.12 * (hi - lo), 0.5 if whole else 0.02)
            ax.set_ylim(lo - pad, hi + pad)
        if not np.isfinite(g.value.to_numpy(dtype=float)).any():
            ax.text(0.5, 0.5, "no value in any seed", transform=ax.transAxes, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set_xlim(-0.5, len(seeds) - 0.5)
        ax.set_title(textwrap.fill(f"{nb[:2]} · {name}", 30), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_axis_off()
    handles = [Line2D([], [], marker="o", linestyle="", color=HOLDS_COLOURS[k], label=label)
               for k, label in ((True, "goal reached"), (False, "goal missed"), (None, "no goal"))]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8, label="goal"))
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.supxlabel("seed", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return fig
