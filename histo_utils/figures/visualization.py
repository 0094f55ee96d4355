"""The figures of notebook 07: what a feature looks at (feature panels, linked view, program panels, localisation).

Each function draws from a result of :mod:`histo_utils.visualization` (guided backpropagation, feature maps and
AUROCs are computed there, with the network) and returns the figure with the result's table.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..plotting import seeded_jitter, show_tiles_on_thumbnail

__all__ = ["feature_panels", "linked_view", "program_panels", "localisation"]


def feature_panels(result):
    """Badea's Figs 4–6: per feature, its best tile, gBP on it, its synthetic image (and the planted truth).

    Parameters
    ----------
    result : :class:`histo_utils.visualization.FeaturePanels` (:func:`histo_utils.visualization.feature_panel_maps`)

    Returns
    -------
    fig : the figure, one row per feature
    table : ``result.table``, one row per feature: ``feature, gene, symbol, r, tile, feature_value, am_start,
        am_end, truth_structure``
    """
    has_truth = result.truth_masks is not None
    n = len(result.table)
    ncol = 4 if has_truth else 3
    fig, axes = plt.subplots(n, ncol, figsize=(2.6 * ncol, 2.7 * n), squeeze=False)
    for i, ((_, row), (_, r0)) in enumerate(zip(result.table.iterrows(), result.tile_rows.iterrows())):
        axes[i, 0].imshow(result.tiles[i])
        axes[i, 0].set_title(f"{row.feature} – {row.symbol} (r = {row.r:.2f})\n"
                             f"{r0.tissue} {r0.image_id} ({int(r0.x)},{int(r0.y)})", fontsize=6)
        axes[i, 1].imshow(result.gbp[i])
        axes[i, 1].set_title("guided backpropagation", fontsize=7)
        s = result.synth[i]
        axes[i, 2].imshow(s.image)
        axes[i, 2].set_title(f"synthetic, from {s.start} (f: {s.history[0]:.2g} → {s.history[-1]:.2g})", fontsize=7)
        if has_truth:
            axes[i, 3].imshow(result.truth_masks[i], cmap="gray")
            axes[i, 3].set_title(f"planted truth: {row.truth_structure}\n(gene role: {result.roles[i] or 'n/a'})",
                                 fontsize=7)
        for a in axes[i]:
            a.axis("off")
    fig.tight_layout()
    return fig, result.table


def linked_view(result):
    """A gene's best-correlated features: where their representative tiles lie, the synthetic image, gBP.

    Parameters
    ----------
    result : :class:`histo_utils.visualization.LinkedView` (:func:`histo_utils.visualization.linked_view_maps`)

    Returns
    -------
    fig : one row per feature: thumbnail with the tiles, synthetic image, the tiles with gBP overlaid (half each)
    table : ``result.table``, one row per tile shown: ``gene, symbol, feature, r, scan, image_id, x, y, value``
    """
    n_tiles = result.n_tiles
    fig, axes = plt.subplots(len(result.pairs), 2 + n_tiles, figsize=(2.4 * (2 + n_tiles), 2.6 * len(result.pairs)),
                             squeeze=False)
    for i, (_, pr) in enumerate(result.pairs.iterrows()):
        f = pr.feature
        rt = result.reps[f]
        first = rt.iloc[0]
        thumb, scale = result.thumbnails[first.image_id]
        show_tiles_on_thumbnail(axes[i, 0], thumb, rt[rt.image_id == first.image_id], scale=scale,
                                title=f"{first.image_id}\n{f} ({pr.scan}, r = {pr.r:.2f})")
        axes[i, 1].imshow(result.synth[f].image)
        axes[i, 1].set_title("synthetic image", fontsize=7)
        for j, (_, tr) in enumerate(rt.iterrows()):
            ax = axes[i, 2 + j]
            ax.imshow(0.5 * result.tiles[f][j] / 255 + 0.5 * result.gbp[f][j])
            ax.set_title(f"{tr.tissue}, {tr.subject_id}\nvalue {tr.value:.3g}", fontsize=6)
        for a in axes[i]:
            a.axis("off")
    fig.suptitle(f"Linked view of {result.symbol or result.gene} ({result.gene})", y=1.01)
    fig.tight_layout()
    return fig, result.table


def program_panels(result):
    """One row per planted program: its tracking channel on a representative tile (Badea's Figs 4–6 layout).

    Columns: the tile, gBP of the tracker on it, the tracker's feature map, the synthetic image (activation
    maximisation of the tracker), and the program's own true structure mask under the tile.

    Parameters
    ----------
    result : :class:`histo_utils.visualization.ProgramPanels` (:func:`histo_utils.visualization.program_panel_maps`)

    Returns
    -------
    fig : the figure
    table : ``result.table``, one row per program (with ``map_auroc``, unflipped, ``r_program, r_sign, fires``,
        ``am_start, am_end``)

    The feature map's title says where the map fires against the program's structure (its AUROC, > 0.5 on the
    structure, < 0.5 off it) and, separately, the sign of the channel's across-sample correlation with the
    program: e.g. "fires on lumen: AUROC 0.77 · r = −0.74".
    """
    fig, axes = plt.subplots(len(result.table), 5, figsize=(12.5, 2.7 * len(result.table)), squeeze=False)
    for i, (_, p) in enumerate(result.table.iterrows()):
        axes[i, 0].imshow(result.tiles[i])
        axes[i, 0].set_title(f"{p.program}: tracker {p.feature} (r = {_signed(p.r_program)})\n"
                             f"{p.tissue} {p.image_id} ({int(p.x)},{int(p.y)})", fontsize=7)
        axes[i, 1].imshow(result.gbp[i])
        axes[i, 1].set_title("guided backpropagation", fontsize=7)
        im = axes[i, 2].imshow(result.feature_maps[i], cmap="viridis")
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046, pad=0.02)
        axes[i, 2].set_title(f"feature map: {_fires_text(p.fires, p.structure)}\n"
                             f"AUROC {p.map_auroc:.2f} · r = {_signed(p.r_program)}", fontsize=7)
        s = result.synth[i]
        axes[i, 3].imshow(s.image)
        axes[i, 3].set_title(f"synthetic, from {s.start}\n(f: {s.history[0]:.2g} → {s.history[-1]:.2g})", fontsize=7)
        axes[i, 4].imshow(result.masks[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 4].set_title(f"planted truth: {p.structure}\n(white, {p.mask_fraction:.0%} of the tile)", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    return fig, result.table


def _fires_text(fires: str, structure: str) -> str:
    """``fires on lumen``, ``fires off lumen`` or ``no preference for lumen`` (``fires``: ``on``/``off``/other)."""
    return f"fires {fires} {structure}" if fires in ("on", "off") else f"no preference for {structure}"


def _signed(x: float) -> str:
    """``x`` with two decimals and a typographic minus (−0.74)."""
    return f"{x:.2f}".replace("-", "\u2212")


def localisation(scores: pd.DataFrame, *, n_random: int, n_tiles: int, seed: int = 0,
                 column: str = "map_auroc"):
    """Each channel's localisation score per program: the program trackers against random channels.

    The points' horizontal jitter is drawn with ``seed`` (:func:`histo_utils.plotting.seeded_jitter`): cosmetic,
    the same picture each run; no number depends on it.

    Parameters
    ----------
    scores : :func:`histo_utils.visualization.channel_scores` output (``program, kind, feature, <column>``)
    n_random, n_tiles : numbers of random channels and of tiles (title)
    seed : seed of the strip plot's jitter
    column : the AUROC column scored

    Returns
    -------
    fig : the figure
    table : ``scores``
    """
    fig, ax = plt.subplots(figsize=(7, 3.2))
    with seeded_jitter(seed):
        sns.stripplot(data=scores, x="program", y=column, hue="kind", hue_order=["random", "tracks"],
                      palette={"random": "#999999", "tracks": "#D55E00"}, dodge=True, ax=ax, size=5)
    ax.axhline(0.5, color="k", lw=0.6)
    ax.set_xlabel("planted program")
    ax.set_ylabel("AUROC of the feature map against the true\nstructure mask (> 0.5: fires on it)"
                  if column.startswith("map")
                  else f"{column} (|gBP|)")
    ax.set_title(f"Program-tracking channel vs {n_random} random channels, {n_tiles} test tiles away from edges",
                 fontsize=9)
    return fig, scores
