"""Figures saved with the table of numbers behind them, and the compendium's output folders.

Every notebook writes under one output directory (the ``out_dir`` parameter)::

    <out_dir>/<notebook>/            derived data (tables, caches)
    <out_dir>/figures/<notebook>/    <name>.png + <name>.csv for every figure
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from .io import atomic_path, write_table

log = logging.getLogger(__name__)

__all__ = ["notebook_dir", "figure_dir", "save_figure", "show_empty", "show_tiles_on_thumbnail", "seeded_jitter"]


def notebook_dir(out_dir: str | os.PathLike, notebook: str) -> Path:
    """``<out_dir>/<notebook>/``, created: where a notebook keeps its derived data.

    Parameters
    ----------
    out_dir : output directory of the run
    notebook : notebook name, e.g. ``"03_feature_correlation"``

    Returns
    -------
    Path of the folder
    """
    p = Path(out_dir) / notebook
    p.mkdir(parents=True, exist_ok=True)
    return p


def figure_dir(out_dir: str | os.PathLike, notebook: str) -> Path:
    """``<out_dir>/figures/<notebook>/``, created."""
    p = Path(out_dir) / "figures" / notebook
    p.mkdir(parents=True, exist_ok=True)
    return p


def save_figure(fig: plt.Figure, table: pd.DataFrame, out_dir: str | os.PathLike, notebook: str, name: str, *,
                dpi: int = 110, index: bool = False, empty: str | None = None) -> Path:
    """Save ``fig`` as ``<name>.png`` and the numbers behind it as ``<name>.csv``, atomically.

    A figure without its table cannot be checked or re-plotted, so ``table``
    is required. An empty table is refused unless ``empty`` says why it may
    be empty (e.g. ``"no correlated gene is in any annotation set"``): the
    figure then shows that sentence instead of axes, and the table is saved
    with its columns only. An empty result is a result; a silently blank
    figure is not.

    Parameters
    ----------
    fig : the figure (closed after saving)
    table : DataFrame, the numbers drawn (empty only with ``empty``)
    out_dir, notebook : the run's output directory and the notebook; files go to
        ``<out_dir>/figures/<notebook>/``
    name : file stem
    empty : why an empty table is a valid result (shown in the figure), or None
    dpi, index : resolution of the PNG; whether the CSV keeps the index

    Returns
    -------
    Path of the PNG
    """
    if table is None or len(table) == 0:
        if table is None or empty is None:
            raise ValueError(f"Figure '{name}': the table of numbers behind it is empty; save the data it plots "
                             "(or pass empty='why it is empty' when no rows is a valid result).")
        show_empty(fig, empty)
    d = figure_dir(out_dir, notebook)
    png = d / f"{name}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png", metadata={"Software": None})
    write_table(table, d / f"{name}.csv", index=index)
    log.info("saved %s (+ .csv, %d rows)", png, len(table))
    return png


def show_empty(fig: plt.Figure, message: str) -> plt.Figure:
    """Replace a figure's axes by one sentence saying why there is nothing to plot."""
    for ax in list(fig.axes):
        ax.remove()
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"Nothing to plot: {message}", ha="center", va="center", wrap=True, fontsize=10)
    return fig


def show_tiles_on_thumbnail(ax, thumb: np.ndarray, tiles: pd.DataFrame, *, scale: float,
                            mask: np.ndarray | None = None, color: str = "#1b9e77", title: str = "") -> None:
    """Draw a thumbnail, its tissue mask outline and the kept tiles' squares.

    Parameters
    ----------
    ax : matplotlib Axes to draw on
    thumb : array, shape (h, w, 3), RGB thumbnail
    tiles : DataFrame with ``x, y, tile_px`` (level-0 pixels) of the kept tiles
    scale : level-0 pixels per thumbnail pixel
    mask : array of bool, shape (h', w'), the tissue mask (outlined; resized to the thumbnail)
    color, title : of the tile squares and the panel

    Returns
    -------
    None
    """
    ax.imshow(thumb)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="#d95f02", linewidths=0.8)
    for t in tiles.itertuples():
        ax.add_patch(Rectangle((t.x / scale, t.y / scale), t.size0 / scale, t.size0 / scale,
                               fill=False, ec=color, lw=0.7))
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


@contextlib.contextmanager
def seeded_jitter(seed: int = 0) -> Iterator[None]:
    """Make seaborn's strip-plot jitter reproducible.

    seaborn draws the jitter from NumPy's global random state; this seeds it
    for the block and restores the previous state afterwards, so the figures
    of a run are the same file every time and nothing else is affected.

    Parameters
    ----------
    seed : seed of NumPy's global state inside the block

    Yields
    ------
    None
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
