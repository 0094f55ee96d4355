"""Figures saved with the table of numbers behind them, the compendium's one plotting style, and its output folders.

Every notebook writes under one output directory (the ``out_dir`` parameter)::

    <out_dir>/<notebook>/            derived data (tables, caches)
    <out_dir>/figures/<notebook>/    <name>.png + <name>.csv for every figure (+ .svg/.pdf with figure_format)

Style (:func:`set_style`, called once in each notebook's setup cell): colour-blind-safe
colours (Okabe & Ito's eight for categories, never a red/green pair; viridis for
sequential maps; purple-orange ``PuOr_r`` for diverging ones), tick labels of 8 pt,
titles of at least 9 pt (also enforced by :func:`save_figure` on every saved figure),
and the run's figure format and resolution.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from . import products
from .io import atomic_path, write_table
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["notebook_dir", "figure_dir", "save_figure", "show_empty", "show_tiles_on_thumbnail", "seeded_jitter",
           "set_style", "figure_formats", "CATEGORICAL", "SEQUENTIAL", "DIVERGING", "HIGHLIGHT", "MUTED",
           "FIGURE_FORMATS", "MIN_TITLE_PT"]

#: Okabe & Ito's colour-blind-safe palette (blue, orange, bluish green, reddish purple, sky blue,
#: vermillion, yellow, black): the colours of categories, in this order
CATEGORICAL = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: colour map of sequential values (perceptually uniform, readable in grey and by colour-blind readers)
SEQUENTIAL = "viridis"
#: colour map of signed values around 0 (purple-orange: no red/green, no red/blue)
DIVERGING = "PuOr_r"
#: the colour that marks a flagged or highlighted item (vermillion), and the colour of the rest
HIGHLIGHT, MUTED = "#D55E00", "#0072B2"
#: formats a figure can be saved in besides the PNG
FIGURE_FORMATS = ("png", "svg", "pdf")
#: smallest font size of a title, in points
MIN_TITLE_PT = 9.0
DEFAULT_DPI = 110

_output = {"formats": ("png",), "dpi": DEFAULT_DPI}


@products.reads()
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


@products.reads()
def figure_dir(out_dir: str | os.PathLike, notebook: str) -> Path:
    """``<out_dir>/figures/<notebook>/``, created."""
    p = products.figure_folder(out_dir, notebook)
    p.mkdir(parents=True, exist_ok=True)
    return p


def figure_formats(figure_format: str | Sequence[str]) -> tuple[str, ...]:
    """The formats a figure is written in: always ``png``, plus those named.

    Parameters
    ----------
    figure_format : ``"png"``, ``"svg"``, ``"pdf"``, several joined by commas (``"svg,pdf"``), or a list

    Returns
    -------
    tuple of format names, ``"png"`` first
    """
    names = figure_format.split(",") if isinstance(figure_format, str) else list(figure_format)
    names = [n.strip().lower().lstrip(".") for n in names if n.strip()]
    bad = [n for n in names if n not in FIGURE_FORMATS]
    if bad:
        raise InputError(f"figure_format {figure_format!r}: {bad} not available. Available: {list(FIGURE_FORMATS)} "
                         "(several joined by commas, e.g. 'svg,pdf'; the PNG is always written).")
    return ("png", *dict.fromkeys(n for n in names if n != "png"))


def set_style(*, figure_format: str | Sequence[str] = "png", dpi: int = DEFAULT_DPI) -> None:
    """Apply the compendium's plotting style and choose the format and resolution of saved figures.

    Call once per notebook, before the first figure (the notebooks do it in their setup cell with
    their ``figure_format`` and ``figure_dpi`` parameters). Sets matplotlib's colour cycle to
    :data:`CATEGORICAL` (seaborn takes its default palette from it), the default colour map to
    :data:`SEQUENTIAL`, font sizes (ticks 8 pt, labels 9 pt, titles 10 pt), text kept as text in
    SVG and PDF, and fixed SVG ids (the same figure gives the same file).

    Parameters
    ----------
    figure_format : written besides the PNG: ``"png"`` (PNG only), ``"svg"``, ``"pdf"`` or ``"svg,pdf"``
    dpi : resolution of the PNG (and of raster parts of SVG/PDF), e.g. 300 for print

    Returns
    -------
    None
    """
    formats = figure_formats(figure_format)
    if not isinstance(dpi, (int, np.integer)) or not 50 <= dpi <= 1200:
        raise InputError(f"figure_dpi must be an integer between 50 and 1200 (e.g. {DEFAULT_DPI} for the screen, "
                         f"300 for print), got {dpi!r}.")
    mpl.rcParams.update({
        "axes.prop_cycle": cycler(color=list(CATEGORICAL)),
        "image.cmap": SEQUENTIAL,
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.titlesize": 11,
        "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8,
        "savefig.dpi": int(dpi), "svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "histo_utils",
    })
    _output.update(formats=formats, dpi=int(dpi))
    log.info("plotting style set; figures saved as %s at %d dpi", "+".join(formats), dpi)


def _readable_titles(fig: plt.Figure) -> None:
    """Raise every title of ``fig`` (panel titles and the suptitle) to at least :data:`MIN_TITLE_PT`."""
    texts = [t for ax in fig.axes for t in (ax.title, getattr(ax, "_left_title", None),
                                             getattr(ax, "_right_title", None)) if t is not None]
    if getattr(fig, "_suptitle", None) is not None:
        texts.append(fig._suptitle)
    for t in texts:
        if t.get_text() and t.get_fontsize() < MIN_TITLE_PT:
            t.set_fontsize(MIN_TITLE_PT)


@products.reads()
def save_figure(fig: plt.Figure, table: pd.DataFrame, out_dir: str | os.PathLike, notebook: str, name: str, *,
                dpi: int | None = None, figure_format: str | Sequence[str] | None = None, index: bool = False,
                empty: str | None = None) -> Path:
    """Save ``fig`` as ``<name>.png`` (plus SVG/PDF) and the numbers behind it as ``<name>.csv``, atomically.

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
    name : file stem; a figure of a notebook declared in :mod:`histo_utils.products` must be declared there
        (:class:`histo_utils.products.ProductKeyError` otherwise: a figure nobody lists is a figure no test checks)
    empty : why an empty table is a valid result (shown in the figure), or None
    dpi : resolution of the PNG; None: the run's (:func:`set_style`, 110 unless set)
    figure_format : formats besides the PNG (see :func:`figure_formats`); None: the run's (:func:`set_style`)
    index : whether the CSV keeps the index

    Titles smaller than :data:`MIN_TITLE_PT` are enlarged to it before saving.

    Returns
    -------
    Path of the PNG
    """
    products.check_figure(notebook, name)
    if table is None or len(table) == 0:
        if table is None or empty is None:
            raise InputError(f"Figure '{name}': the table of numbers behind it is empty; save the data it plots "
                             "(or pass empty='why it is empty' when no rows is a valid result).")
        show_empty(fig, empty)
    formats = _output["formats"] if figure_format is None else figure_formats(figure_format)
    dpi = _output["dpi"] if dpi is None else int(dpi)
    _readable_titles(fig)
    d = figure_dir(out_dir, notebook)
    # no dates or software versions in the files: the same figure is the same file
    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}
    for fmt in formats:
        with atomic_path(d / f"{name}.{fmt}") as tmp, mpl.rc_context({"svg.hashsalt": "histo_utils"}):
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt, metadata=metadata[fmt])
    write_table(table, d / f"{name}.csv", index=index)
    png = d / f"{name}.png"
    log.info("saved %s (+ %s.csv, %d rows)", png, "".join(f".{f}, " for f in formats[1:]), len(table))
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
                            mask: np.ndarray | None = None, color: str = CATEGORICAL[0], title: str = "",
                            legend: bool = True) -> None:
    """Draw a thumbnail, its tissue mask outline and the kept tiles' squares, with a legend saying which is which.

    Parameters
    ----------
    ax : matplotlib Axes to draw on
    thumb : array, shape (h, w, 3), RGB thumbnail
    tiles : DataFrame with ``x, y, tile_px`` (level-0 pixels) of the kept tiles
    scale : level-0 pixels per thumbnail pixel
    mask : array of bool, shape (h', w'), the tissue mask (outlined; resized to the thumbnail)
    color, title : of the tile squares and the panel
    legend : name the mask outline (orange) and the tile squares in a legend

    Returns
    -------
    None
    """
    ax.imshow(thumb)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=CATEGORICAL[1], linewidths=0.8)
    for t in tiles.itertuples():
        ax.add_patch(Rectangle((t.x / scale, t.y / scale), t.size0 / scale, t.size0 / scale,
                               fill=False, ec=color, lw=0.7))
    ax.set_title(title, fontsize=MIN_TITLE_PT)
    if legend:
        handles = [Line2D([], [], color=CATEGORICAL[1], lw=1.2, label="tissue mask")] if mask is not None else []
        handles.append(Rectangle((0, 0), 1, 1, fill=False, ec=color, lw=1.0, label=f"kept tiles ({len(tiles)})"))
        ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.8)
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
