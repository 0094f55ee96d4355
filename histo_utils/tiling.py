"""Tiling whole-slide images into tiles kept as coordinates.

Method (Badea & Stanescu 2020; Jones):

1. Tissue mask on a thumbnail at ``mask_mpp`` microns per pixel: grey level,
   Gaussian blur, Otsu threshold (tissue is darker than the glass), small
   specks removed, small holes filled (Jones: "grayscaling ... Gaussian blur
   ... followed by Otsu thresholding"). Plain two-class Otsu assumes the
   thumbnail has two grey populations; a slide with pale fat *and* dense
   septa has three, and Otsu then splits septa from fat, losing the fat. The
   default ``threshold="multiotsu"`` takes the upper of the three-class Otsu
   thresholds (glass vs everything darker); ``"otsu"`` is Jones' exact method.
2. A grid of square tiles of ``tile_px`` pixels at the target resolution
   (Badea: 512 px at 10x = 0.9884 um/px, 506 um a side); only full squares
   (Badea removed "tiles with a shape factor other than 1").
3. Tiles with at least ``min_tissue`` of their area in the mask are kept
   (Badea: 50 %).

A tile is stored as a row of coordinates (slide, level-0 x/y, pyramid level to
read, read size, tissue fraction, effective resolution), never as an image
file unless asked: the reference study's 579,488 tiles took 72 GB as JPEG.
:func:`read_tile` turns a row back into pixels when a model needs them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from skimage import filters, morphology
from tqdm.auto import tqdm

from .io import atomic_path, params_key, read_table, write_table
from .slides import (DICOM_SUFFIX, SlideError, choose_level, dicom_slide_file, is_dicom_wsi, open_slide,
                     premultiplied_to_rgb, read_region, read_region_premultiplied, slide_info)
from . import products
from .data import TILES_PER_SIZE
from .errors import InputError, InputPermissionError, MissingInputError
from .slides import SLIDE_SUFFIXES
from .distributed import SchedulerSpec, map_slides

log = logging.getLogger(__name__)

__all__ = [
    "TilingParams",
    "tissue_mask",
    "background_grey",
    "check_brightfield",
    "grid_origins",
    "tissue_fractions",
    "tile_slide",
    "tile_slides",
    "read_tile",
    "read_plan",
    "tiles_per_size",
    "mask_agreement",
    "deepest_point",
    "TILE_COLUMNS",
    "write_coords_h5",
    "coords_path",
    "resolution_survey",
    "RESOLUTION_COLUMNS",
]

#: columns of a tile table, in order
TILE_COLUMNS = [
    "image_id", "tile_px", "x", "y", "level", "read_px", "size0", "tissue_fraction",
    "target_mpp", "effective_mpp", "input_px", "input_mpp",
]


MASK_THRESHOLDS = ("multiotsu", "otsu")


@dataclass(frozen=True)
class TilingParams:
    """Parameters of :func:`tile_slide` (all keyword-only in the functions).

    Attributes
    ----------
    tile_px
        Tile sides in pixels at ``target_mpp``; several give several grids
        (Jones' patch sizes, 128-4096 px). Badea: 512.
    target_mpp
        Resolution the tiles are cut at, um/px. Badea's 10x: 0.9884.
    input_px
        Side the tiles are rescaled to for a network, the network's input (Badea: 224).
    min_tissue
        Minimum tissue fraction of a kept tile (Badea: 0.5).
    mask_mpp
        Resolution of the thumbnail the tissue mask is computed on, um/px.
    blur_sigma_um
        Gaussian blur before Otsu, in microns (Jones' 51x51 kernel).
    min_object_um2
        Connected tissue pieces smaller than this are dropped (dust, debris).
    fill_holes_um2
        Holes in the mask smaller than this are filled: the pale interiors of
        fat cells, vessels and lumens are tissue; tears larger than this stay out.
    threshold
        ``"multiotsu"`` (upper threshold of a three-class Otsu; robust to pale
        tissue such as fat) or ``"otsu"`` (two classes, Jones' method).
    assume_mpp
        Level-0 um/px for slides that record none; never used otherwise.
    check_reads
        After tiling, read this many kept tiles of each slide at full
        resolution, so a slide whose pixels cannot be decoded is reported now
        rather than in the middle of training.
    """

    tile_px: tuple[int, ...] = (512,)
    target_mpp: float = 0.9884
    input_px: int = 224
    min_tissue: float = 0.5
    mask_mpp: float = 8.0
    blur_sigma_um: float = 16.0
    min_object_um2: float = 20000.0
    fill_holes_um2: float = 20000.0
    threshold: str = "multiotsu"
    assume_mpp: float | None = None
    check_reads: int = 2

    def __post_init__(self):
        sizes = tuple(int(s) for s in np.atleast_1d(self.tile_px))
        object.__setattr__(self, "tile_px", sizes)
        if not sizes or min(sizes) < 16:
            raise InputError(f"tile_px must be a non-empty list of sizes >= 16 px, got {sizes}.")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise InputError(f"min_tissue must be between 0 and 1, got {self.min_tissue}.")
        for name in ("target_mpp", "mask_mpp"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.threshold not in MASK_THRESHOLDS:
            raise InputError(f"threshold must be one of {MASK_THRESHOLDS}, got '{self.threshold}'.")
        if self.assume_mpp is not None and (isinstance(self.assume_mpp, bool) or not isinstance(
                self.assume_mpp, (int, float)) or not self.assume_mpp > 0):
            raise InputError(f"assume_mpp must be None or a positive number of µm/px (e.g. 0.5), got "
                             f"{type(self.assume_mpp).__name__} {self.assume_mpp!r}.")
        if self.input_px < 8:
            raise InputError(f"input_px must be at least 8, got {self.input_px}.")

    def key(self) -> str:
        """A short hash of the parameters (per-slide results are cached under it)."""
        return params_key(self)


# --------------------------------------------------------------------------
# mask and grid arithmetic (pure functions, tested directly)
# --------------------------------------------------------------------------
def tissue_mask(thumb: np.ndarray, *, mpp: float, blur_sigma_um: float = 16.0,
                min_object_um2: float = 20000.0, fill_holes_um2: float = 20000.0,
                threshold: str = "multiotsu") -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB thumbnail: grey, Gaussian blur, Otsu threshold.

    Parameters
    ----------
    thumb : ndarray, shape (h, w, 3), uint8
        Thumbnail of the slide.
    mpp
        Microns per pixel of the thumbnail.
    blur_sigma_um, min_object_um2, fill_holes_um2
        Blur scale, smallest kept tissue piece and largest filled hole, in microns.
    threshold
        ``"multiotsu"``: the upper threshold of a three-class Otsu (falls back
        to two-class Otsu on a thumbnail with too few grey levels);
        ``"otsu"``: two-class Otsu.

    Returns
    -------
    mask : ndarray, shape (h, w), bool
        True on tissue.
    threshold : float
        Otsu's threshold on the blurred grey image (0-1). ``nan`` for a
        uniform thumbnail (no tissue found).
    """
    if thumb.ndim != 3 or thumb.shape[2] < 3:
        raise InputError(f"thumb must be (h, w, 3), got shape {thumb.shape}.")
    grey = thumb[..., :3].astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32) / 255.0
    blurred = filters.gaussian(grey, sigma=max(blur_sigma_um / mpp, 0.0), preserve_range=True)
    if float(blurred.max() - blurred.min()) < 1e-3:
        return np.zeros(grey.shape, bool), float("nan")
    if threshold == "multiotsu":
        try:
            thr = float(filters.threshold_multiotsu(blurred, classes=3)[-1])
        except ValueError:  # too few distinct grey levels for three classes
            thr = float(filters.threshold_otsu(blurred))
    elif threshold == "otsu":
        thr = float(filters.threshold_otsu(blurred))
    else:
        raise InputError(f"threshold must be one of {MASK_THRESHOLDS}, got '{threshold}'.")
    mask = blurred < thr
    min_px = int(round(min_object_um2 / (mpp * mpp)))
    if min_px > 1:
        mask = morphology.remove_small_objects(mask, max_size=min_px - 1)
    hole_px = int(round(fill_holes_um2 / (mpp * mpp)))
    if hole_px > 1:
        mask = morphology.remove_small_holes(mask, max_size=hole_px - 1)
    return mask, thr


#: a thumbnail whose border is darker than this (grey 0-1) is not brightfield glass
DARK_BACKGROUND_GREY = 0.5


def background_grey(thumb: np.ndarray, *, border: float = 0.05) -> float:
    """Median grey level (0-1) of a thumbnail's border ring: the glass of a brightfield slide.

    Parameters
    ----------
    thumb : ndarray, shape (h, w, 3), uint8
    border
        Width of the ring as a fraction of the thumbnail's shorter side (at least one pixel).

    Returns
    -------
    float
        About 0.9-1.0 on brightfield glass; near 0 on the black background of
        a dark-field or fluorescence scan.
    """
    grey = thumb[..., :3].astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32) / 255.0
    b = max(1, int(border * min(grey.shape)))
    ring = np.concatenate([grey[:b].ravel(), grey[-b:].ravel(), grey[b:-b, :b].ravel(), grey[b:-b, -b:].ravel()])
    return float(np.median(ring))


def check_brightfield(thumb: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse a slide whose background is dark (dark-field, fluorescence): the tissue mask would be inverted.

    The tissue mask keeps what is darker than the glass; on a black background
    it keeps the background and drops the signal. Brightfield H&E is the input
    these methods assume.

    Raises
    ------
    SlideError
        stage ``"brightfield"``, with the measured background grey level.
    """
    bg = background_grey(thumb)
    if bg < DARK_BACKGROUND_GREY:
        raise SlideError(
            path, f"its background is dark (median grey {bg:.2f} of 1 on the thumbnail's border; brightfield "
                  f"glass is above 0.8): a dark-field or fluorescence scan, not brightfield H&E. The tissue mask "
                  f"(tissue darker than the glass) would keep the background and drop the tissue.",
            "Leave it out of the slides folder, or scan the H&E section in brightfield.", stage="brightfield")


def grid_origins(width: int, height: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of the full ``size`` x ``size`` squares tiling a ``width`` x ``height`` image.

    Partial squares at the right and bottom edges are left out.

    Returns
    -------
    xs, ys : ndarray, shape (n_tiles,), int64
        Row-major order (all x of the first row, then the next row).
    """
    if size <= 0:
        raise InputError(f"size must be positive, got {size}.")
    nx, ny = width // size, height // size
    gx, gy = np.meshgrid(np.arange(nx, dtype=np.int64) * size, np.arange(ny, dtype=np.int64) * size)
    return gx.ravel(), gy.ravel()


def tissue_fractions(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: float,
                     scale: float) -> np.ndarray:
    """Fraction of each square that lies on tissue, from a low-resolution mask.

    Parameters
    ----------
    mask : ndarray, shape (h, w), bool
        Tissue mask; mask pixel (i, j) covers level-0 pixels
        ``[j*scale, (j+1)*scale) x [i*scale, (i+1)*scale)``.
    xs, ys : ndarray, shape (n,)
        Level-0 top-left corners of the squares.
    size
        Level-0 side of the squares.
    scale
        Level-0 pixels per mask pixel.

    Returns
    -------
    ndarray, shape (n,), float
        Area-weighted fraction of each square on tissue (partial mask pixels
        at the square's border count by their overlap), computed with a
        summed-area table: O(1) per square.
    """
    m = mask.astype(np.float64)
    # summed-area table with a zero first row/column
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    sat[1:, 1:] = m.cumsum(0).cumsum(1)

    def area(x0, y0, x1, y1):
        # integral of the mask (piecewise constant per pixel) over [x0,x1) x [y0,y1) in mask units
        return _integral(sat, x1, y1) - _integral(sat, x0, y1) - _integral(sat, x1, y0) + _integral(sat, x0, y0)

    x0, y0 = np.asarray(xs) / scale, np.asarray(ys) / scale
    s = size / scale
    return np.clip(area(x0, y0, x0 + s, y0 + s) / (s * s), 0.0, 1.0)


def _integral(sat: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Integral of a piecewise-constant mask over [0, x) x [0, y) (bilinear in the SAT)."""
    h, w = sat.shape[0] - 1, sat.shape[1] - 1
    x = np.clip(x, 0, w)
    y = np.clip(y, 0, h)
    xi = np.minimum(np.floor(x).astype(int), w - 1)
    yi = np.minimum(np.floor(y).astype(int), h - 1)
    fx, fy = x - xi, y - yi
    s00 = sat[yi, xi]
    s01 = sat[yi, xi + 1]
    s10 = sat[yi + 1, xi]
    s11 = sat[yi + 1, xi + 1]
    return s00 * (1 - fx) * (1 - fy) + s01 * fx * (1 - fy) + s10 * (1 - fx) * fy + s11 * fx * fy


def deepest_point(mask: np.ndarray) -> tuple[float, float]:
    """The point of a mask furthest from its edge, as fractions (x, y) of the mask's width and height.

    A field of view centred there lies on tissue (not on a hole or the glass)
    whenever the tissue is wide enough.
    """
    if not mask.any():
        return 0.5, 0.5
    from scipy import ndimage as ndi

    d = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return (x + 0.5) / mask.shape[1], (y + 0.5) / mask.shape[0]


def mask_agreement(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU and pixel accuracy of a predicted mask against a true one.

    The true mask is resized (nearest neighbour) to the predicted mask's shape
    when they differ.
    """
    if truth.shape != predicted.shape:
        truth = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize(
            predicted.shape[::-1], Image.NEAREST)) > 127
    p, t = predicted.astype(bool), truth.astype(bool)
    inter = np.logical_and(p, t).sum()
    union = np.logical_or(p, t).sum()
    denom = p.sum() + t.sum()
    return {
        "dice": float(2 * inter / denom) if denom else 1.0,
        "iou": float(inter / union) if union else 1.0,
        "accuracy": float((p == t).mean()),
    }


# --------------------------------------------------------------------------
# one slide
# --------------------------------------------------------------------------
@dataclass
class SlideTiling:
    """Result of tiling one slide."""

    image_id: str
    tiles: pd.DataFrame
    info: dict
    mask: np.ndarray = field(repr=False)
    thumb: np.ndarray = field(repr=False)


def tile_slide(path: str | os.PathLike, *, params: TilingParams = TilingParams(),
               image_id: str | None = None) -> SlideTiling:
    """Tile one slide: tissue mask, grid per tile size, tissue fraction, kept tiles.

    Parameters
    ----------
    path
        The slide file.
    params
        See :class:`TilingParams`.
    image_id
        Name used in the table (default: the file name without suffix).

    Returns
    -------
    SlideTiling
        ``tiles`` with :data:`TILE_COLUMNS` (coordinates at level 0, the level
        to read from and the read size there), ``info`` (slide metadata and
        the effective mask resolution), the mask and the thumbnail.

    Raises
    ------
    SlideError
        The slide cannot be opened, has no usable resolution, or its pixels
        cannot be decoded.
    """
    path = Path(path)
    image_id = image_id or path.name.split(".")[0]
    slide = open_slide(path)
    try:
        info = slide_info(slide, path, assume_mpp=params.assume_mpp)
        # thumbnail at ~mask_mpp (never finer than the coarsest level allows cheaply)
        ds_mask = max(params.mask_mpp / info.mpp, 1.0)
        tw, th = max(1, int(info.width / ds_mask)), max(1, int(info.height / ds_mask))
        thumb = _thumbnail(slide, path, info, (tw, th))
        check_brightfield(thumb, path)
        scale_x, scale_y = info.width / thumb.shape[1], info.height / thumb.shape[0]
        mask_mpp = info.mpp * (scale_x + scale_y) / 2
        mask, thr = tissue_mask(thumb, mpp=mask_mpp, blur_sigma_um=params.blur_sigma_um,
                                min_object_um2=params.min_object_um2, fill_holes_um2=params.fill_holes_um2,
                                threshold=params.threshold)
        frames = []
        for tile_px in params.tile_px:
            level = choose_level(info, params.target_mpp)
            level_mpp = info.mpp * info.level_downsamples[level]
            read_px = int(round(tile_px * params.target_mpp / level_mpp))
            size0 = int(round(read_px * info.level_downsamples[level]))
            xs, ys = grid_origins(info.width, info.height, size0)
            frac = tissue_fractions(mask, xs, ys, size0, (scale_x + scale_y) / 2)
            keep = frac >= params.min_tissue
            eff = read_px * level_mpp / tile_px
            frames.append(pd.DataFrame({
                "image_id": image_id, "tile_px": tile_px, "x": xs[keep], "y": ys[keep],
                "level": level, "read_px": read_px, "size0": size0,
                "tissue_fraction": frac[keep].astype(np.float32),
                "target_mpp": params.target_mpp, "effective_mpp": eff,
                "input_px": params.input_px, "input_mpp": eff * tile_px / params.input_px,
            }))
        tiles = pd.concat(frames, ignore_index=True)[TILE_COLUMNS]
        if params.check_reads and len(tiles):
            idx = np.linspace(0, len(tiles) - 1, min(params.check_reads, len(tiles))).astype(int)
            for row in tiles.iloc[idx].itertuples():
                read_region(slide, path, (int(row.x), int(row.y)), int(row.level),
                            (int(row.read_px), int(row.read_px)))
        meta = {
            "image_id": image_id, "path": str(path), "vendor": info.vendor,
            "width": info.width, "height": info.height, "levels": info.level_count,
            "mpp": info.mpp, "mpp_source": info.mpp_source, "objective_power": info.objective_power,
            "mask_mpp": mask_mpp, "otsu_threshold": thr, "tissue_area_mm2":
                float(mask.sum() * mask_mpp * mask_mpp / 1e6),
            "n_tiles": int(len(tiles)),
        }
        return SlideTiling(image_id=image_id, tiles=tiles, info=meta, mask=mask, thumb=thumb)
    finally:
        slide.close()


def _thumbnail(slide, path, info, size) -> np.ndarray:
    """RGB thumbnail of (w, h) = size, read from the coarsest level that is fine enough."""
    ds = info.width / size[0]
    level = max((lv for lv, d in enumerate(info.level_downsamples) if d <= ds), default=0)
    lw, lh = slide.level_dimensions[level]
    region = read_region(slide, path, (0, 0), level, (lw, lh))
    return np.asarray(Image.fromarray(region).resize(size, Image.BOX))


# --------------------------------------------------------------------------
# many slides, in parallel, resumable
# --------------------------------------------------------------------------
def _tile_one(path: str, image_id: str, params: TilingParams, cache_dir: str) -> dict:
    """Worker: tile one slide, write its tiles/mask to the cache, return metadata or the error."""
    cache = Path(cache_dir)
    try:
        res = tile_slide(path, params=params, image_id=image_id)
    except SlideError as e:
        return {"image_id": image_id, "path": str(path), "status": "error", "stage": e.stage, "error": str(e)}
    except Exception as e:  # an unexpected failure of one slide must not stop the others
        return {"image_id": image_id, "path": str(path), "status": "error", "stage": "unexpected",
                "error": f"{type(e).__name__}: {e}"}
    with atomic_path(cache / f"{image_id}.mask.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, mask=res.mask, thumb=res.thumb)  # a file object: numpy would add .npz to a name
    write_table(res.tiles, cache / f"{image_id}.tiles.parquet")
    info = {**res.info, "status": "ok", "stage": "", "error": ""}
    write_table(pd.DataFrame([info]), cache / f"{image_id}.info.tsv")  # written last: marks completion
    return info


def _tile_item(item: tuple[str, str], *, params: TilingParams, cache_dir: str) -> dict:
    """:func:`~histo_utils.distributed.map_slides` task: ``item`` is ``(path, image_id)``."""
    path, image_id = item
    return _tile_one(path, image_id, params, cache_dir)


def tile_slides(slides: pd.DataFrame, *, params: TilingParams, cache_dir: str | os.PathLike,
                workers: int = 1, progress: bool = True,
                scheduler: "SchedulerSpec" = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tile many slides in worker processes or on a Dask cluster; resume from finished slides.

    Parameters
    ----------
    slides : DataFrame with columns ``image_id``, ``path``
    params
        Tiling parameters; per-slide results are cached under
        ``cache_dir/<params.key()>/``, so changed parameters never reuse old tiles.
    cache_dir
        Where per-slide results go (tiles, mask, metadata), one set of files
        per slide; a slide whose files are complete is not tiled again. With
        a Dask scheduler the workers write here: it must be on a file system
        they all see.
    workers
        Local worker processes (1: in this process), or the worker processes
        of a ``scheduler="local"`` cluster.
    progress
        Show a progress bar (slides tiled).
    scheduler
        ``""`` (local worker processes, the default), ``"local"`` (a Dask
        LocalCluster of ``workers`` processes), the address of a running Dask
        scheduler (``"tcp://host:8786"``) or a :class:`distributed.Client`;
        see :func:`histo_utils.distributed.client_for`. One task per slide;
        the results are the same whichever runs them.

    Returns
    -------
    tiles : DataFrame
        All kept tiles (:data:`TILE_COLUMNS`) of the slides that tiled, slide
        by slide in image-ID order.
    report : DataFrame, one row per slide
        ``status`` ``ok`` or ``error``, with the stage and message of the
        error; slide metadata (mpp and its source, levels, tissue area, tile
        count) for the others. A bad slide is reported and skipped (and
        tried again by a rerun); a task lost with its worker is reported
        with stage ``worker``.
    """
    if not {"image_id", "path"} <= set(slides.columns):
        raise InputError(f"slides must have columns image_id and path, got {list(slides.columns)}.")
    cache = Path(cache_dir) / params.key()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "params.json").write_text(json.dumps(asdict(params), indent=2))
    infos: list[dict] = []
    todo: dict[str, tuple[str, str]] = {}
    for row in slides.itertuples():
        done = cache / f"{row.image_id}.info.tsv"
        if done.exists():
            infos.append(read_table(done).iloc[0].to_dict())
        else:
            todo[row.image_id] = (str(row.path), row.image_id)
    if infos:
        log.info("Resuming: %d of %d slides already tiled", len(infos), len(slides))
    run = map_slides(_tile_item, todo, scheduler=scheduler, workers=workers,
                     shared={"params": params, "cache_dir": str(cache)}, desc="tiling", progress=progress)
    infos.extend(run.results.values())
    infos.extend({"image_id": iid, "path": todo[iid][0], "status": "error", "stage": "worker", "error": err}
                 for iid, err in run.errors.items())
    unusable = slides.attrs.get("unusable")  # files list_slides found but could not take (reported, not tiled)
    if unusable is not None and len(unusable):  # (one row per image: a file beside a real slide is only logged)
        infos.extend(unusable[~unusable.image_id.isin(slides.image_id)].drop_duplicates("image_id")
                     .to_dict("records"))
    report = pd.DataFrame(infos).sort_values("image_id").reset_index(drop=True)
    bad = report[report["status"] != "ok"]
    for r in bad.itertuples():
        log.warning("Skipped slide %s (%s): %s", r.image_id, r.stage, r.error)
    ok_ids = report.loc[report["status"] == "ok", "image_id"]
    frames = [read_table(cache / f"{iid}.tiles.parquet") for iid in ok_ids]
    tiles = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame({c: pd.Series(dtype=float) for c in TILE_COLUMNS}))
    per_size = tiles_per_size(tiles, report, params)
    write_table(per_size, Path(cache_dir) / TILES_PER_SIZE)
    report.attrs["tiles_per_size"] = per_size
    return tiles, report



def tiles_per_size(tiles: pd.DataFrame, report: pd.DataFrame, params: TilingParams) -> pd.DataFrame:
    """How many slides got tiles of each size, logged; a size that no slide could hold is a loud warning.

    Returns
    -------
    DataFrame, one row per tile size: ``tile_px, side_um, slides_tiled, slides_ok, tiles``
    """
    n_ok = int((report["status"] == "ok").sum()) if "status" in report else 0
    rows = []
    for px in params.tile_px:
        t = tiles[tiles["tile_px"] == px]
        rows.append({"tile_px": int(px), "side_um": round(px * params.target_mpp, 1),
                     "slides_tiled": int(t["image_id"].nunique()), "slides_ok": n_ok, "tiles": int(len(t))})
    out = pd.DataFrame(rows, columns=["tile_px", "side_um", "slides_tiled", "slides_ok", "tiles"])
    for r in out.itertuples():
        log.info("tile size %d px (%.0f µm): %d of %d slides have tiles, %d tiles", r.tile_px, r.side_um,
                 r.slides_tiled, r.slides_ok, r.tiles)
        if r.slides_ok and not r.tiles:
            log.warning("TILE SIZE %d px (%.0f µm at %g µm/px) GOT NO TILE: no slide holds such a square with at least "
                        "%.0f %% tissue. Notebooks that use this grid will stop; choose a smaller size in "
                        "tile_px, a lower min_tissue, or a finer target_mpp (fewer µm per tile).", r.tile_px,
                        r.side_um,
                        params.target_mpp, 100 * params.min_tissue)
    return out



def load_mask(cache_dir: str | os.PathLike, params: TilingParams, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The (mask, thumbnail) that :func:`tile_slides` saved for one slide."""
    with np.load(Path(cache_dir) / params.key() / f"{image_id}.mask.npz") as z:
        return z["mask"], z["thumb"]


# --------------------------------------------------------------------------
# reading tiles back
# --------------------------------------------------------------------------
def read_plan(slide, tile: pd.Series | dict, out_px: int, *, tolerance: float = 0.02) -> tuple[int, int]:
    """Pyramid level and read size for a tile shown at ``out_px``: the coarsest level still fine enough.

    The tile covers ``size0`` level-0 pixels shown at ``out_px``; any level whose downsample is at most
    ``size0 / out_px * (1 + tolerance)`` holds that detail (the output is never upsampled by more than
    ``tolerance``), and a coarser level means fewer pixels to decode and to shrink: a 512 px tile shown
    at 224 px is read from a 4x level as ~253 px instead of ~1014 px at level 0. Never finer than the table's
    level. The region read is ``round(size0 / downsample)`` pixels (its extent within half a pixel of that
    level of ``size0``).

    Returns
    -------
    level, read_px
    """
    level = int(tile["level"])
    read_px = int(tile["read_px"])
    ds = slide.level_downsamples
    size0 = float(tile["size0"]) if "size0" in tile else read_px * ds[level]
    limit = size0 / out_px * (1 + tolerance)
    best = level
    for lv in range(level + 1, len(ds)):
        if ds[lv] <= limit:
            best = lv
    if best == level:
        return level, read_px
    return best, max(1, int(round(size0 / ds[best])))


#: how :func:`read_tile` turns a region into a tile; part of every cache key of pixels read through it, so
#: a change of the resampling never reuses features or checkpoints made from the former pixels
TILE_RESAMPLING = "premultiplied-bilinear-antialias"


def read_tile(slide, tile: pd.Series | dict, *, path: str | os.PathLike = "", out_px: int | None = None,
              level: str = "auto") -> np.ndarray:
    """Read one tile of the table from an open slide, rescaled to its output size.

    The region is read as OpenSlide makes it (premultiplied, :func:`~histo_utils.slides.read_region_premultiplied`),
    shrunk with an antialiased bilinear filter (PIL's ``Image.BILINEAR`` resize: a triangle filter widened
    by the shrink factor, so every source pixel counts; :func:`shrink_premultiplied`), then flattened onto
    white: pixels past the edge of the scan are white, and a tile pixel half over the edge is half white.

    Parameters
    ----------
    slide
        An open ``openslide.OpenSlide`` of the tile's slide.
    tile
        A row of a tile table (``x, y, level, read_px, size0, input_px``).
    path
        The slide's file, for error messages.
    out_px
        Output side (default: the row's ``input_px``).
    level
        ``"auto"``: the coarsest pyramid level that still holds the output's detail (:func:`read_plan`; the
        same tile extent and output resolution, fewer pixels read and shrunk); ``"table"``: the row's
        ``level`` and ``read_px`` (the pixels of the tiling's resolution, then shrunk).

    Returns
    -------
    ndarray, shape (out_px, out_px, 3), uint8
    """
    out = int(out_px or tile["input_px"])
    if level == "auto":
        lv, size = read_plan(slide, tile, out)
    elif level == "table":
        lv, size = int(tile["level"]), int(tile["read_px"])
    else:
        raise InputError(f"level={level!r} not available. Choose 'auto' or 'table'.")
    bgra = read_region_premultiplied(slide, path, (int(tile["x"]), int(tile["y"])), lv, (size, size))
    return premultiplied_to_rgb(shrink_premultiplied(bgra, out))


def shrink_premultiplied(pixels: np.ndarray, out_px: int) -> np.ndarray:
    """Resize premultiplied pixels to ``out_px`` x ``out_px`` with an antialiased bilinear filter.

    The filter is PIL's ``BILINEAR`` resize (a triangle widened by the scale factor when shrinking), as
    torch implements it for uint8 channels-last images (``interpolate(..., antialias=True)``, the kernel
    behind torchvision's ``resize``), about four times faster than PIL on 4-channel tiles. Channels are
    filtered alike, so premultiplied colour stays premultiplied.

    Parameters
    ----------
    pixels : ndarray, shape (h, w, c), uint8 (c = 3 or 4)
    out_px : output side

    Returns
    -------
    ndarray, shape (out_px, out_px, c), uint8 (``pixels`` itself when it already has that size)
    """
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise InputError(f"pixels must be (h, w, channels) uint8, got shape {pixels.shape} {pixels.dtype}.")
    if out_px < 1:
        raise InputError(f"out_px must be at least 1, got {out_px}.")
    if pixels.shape[:2] == (out_px, out_px):
        return pixels
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # a channels-last view, no copy
    y = F.interpolate(x, size=(out_px, out_px), mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).numpy()


def write_tile_images(tiles: pd.DataFrame, slide_paths: dict[str, str], out_dir: str | os.PathLike, *,
                      quality: int = 90, progress: bool = True) -> int:
    """Write tiles as JPEG files ``out_dir/<image_id>/<image_id>_<tile_px>_<x>_<y>.jpg`` (optional export).

    Existing files are kept (a rerun resumes).

    Parameters
    ----------
    tiles : DataFrame of tiles (``image_id, tile_px, x, y, ...``)
    slide_paths : dict, image ID -> slide file
    out_dir : destination folder
    quality, progress : JPEG quality; show a progress bar

    Returns
    -------
    int, the number of files written
    """
    out_dir = Path(out_dir)
    n = 0
    for iid, group in tqdm(tiles.groupby("image_id"), desc="writing tiles", disable=not progress):
        slide = open_slide(slide_paths[iid])
        try:
            for _, t in group.iterrows():
                dest = out_dir / iid / f"{iid}_{t.tile_px}_{t.x}_{t.y}.jpg"
                if dest.exists():
                    continue
                with atomic_path(dest) as tmp:
                    Image.fromarray(read_tile(slide, t, path=slide_paths[iid])).save(tmp, "JPEG",
                                                                                      quality=quality)
                n += 1
        finally:
            slide.close()
    return n



def list_slides(slides_dir: str | os.PathLike, *, suffixes: Sequence[str] = SLIDE_SUFFIXES) -> pd.DataFrame:
    """Slide files of a folder as ``image_id, path`` (image ID = file name before the first dot).

    Hidden files (among them the temporary files of an interrupted write,
    ``.<name>.<random>.tmp``) and folders without ``.dcm`` files (an MRXS
    slide's data folder) are ignored. A DICOM whole-slide image (``.dcm``,
    :data:`histo_utils.slides.DICOM_SUFFIX`) is a folder named by the image
    ID that holds its ``.dcm`` files, as converters and DICOM archives write
    it (the path listed is one of them: :func:`histo_utils.slides.dicom_slide_file`),
    or a single ``.dcm`` file named by the image ID. Files that cannot be
    slides are not dropped silently: a dangling symbolic link, a file of an
    unsupported format (``.jpg``) or a folder of ``.dcm`` files none of which
    is a whole-slide image is logged and listed in ``df.attrs["unusable"]``
    (columns ``image_id, path, status, stage, error``), which
    :func:`tile_slides` adds to its slide report.

    Raises
    ------
    FileNotFoundError
        No slide in the folder.
    PermissionError
        The folder cannot be listed (named, with the fix).
    ValueError
        Several slides with one image ID.
    """
    slides_dir = Path(slides_dir)
    accepted = tuple(suffixes) + (DICOM_SUFFIX,)
    paths, unusable = [], []
    try:
        entries = sorted(slides_dir.iterdir())
    except PermissionError as e:
        raise InputPermissionError(f"Slides folder '{slides_dir}' cannot be listed: permission denied ({e.strerror}). "
                              f"Fix its permissions (e.g. chmod a+rx '{slides_dir}').") from None
    for p in entries:
        if p.name.startswith("."):
            continue
        iid = p.name.split(".")[0]
        if p.is_symlink() and not p.exists():
            unusable.append((iid, p, f"'{p.name}' is a symbolic link to '{os.readlink(p)}', which does not "
                                     "exist. Fix or remove the link."))
        elif p.is_dir():
            try:
                has_dcm = any(f.suffix.lower() == DICOM_SUFFIX for f in p.iterdir())
            except PermissionError:
                unusable.append((iid, p, f"folder '{p.name}' cannot be listed: permission denied. Fix its "
                                         f"permissions (e.g. chmod a+rx '{p}')."))
                continue
            if not has_dcm:
                continue  # an MRXS slide's data folder, or anything else that is not a slide
            found = dicom_slide_file(p)
            if found is None:
                unusable.append((iid, p, f"folder '{p.name}' holds .dcm files but none that OpenSlide reads as a "
                                         "DICOM whole-slide image (VL Whole Slide Microscopy Image Storage). "
                                         "Convert the slide to DICOM WSI or another slide format, or move the "
                                         "folder out of the slides folder."))
            else:
                paths.append((iid, found))
        elif p.suffix.lower() == DICOM_SUFFIX:
            try:
                ok = is_dicom_wsi(p)
            except PermissionError:
                unusable.append((iid, p, f"'{p.name}' cannot be read: permission denied. Fix its permissions "
                                         f"(e.g. chmod a+r '{p}')."))
                continue
            if ok:
                paths.append((iid, p))
            else:
                unusable.append((iid, p, f"'{p.name}' (suffix '{p.suffix}') is not a DICOM whole-slide image that "
                                         "OpenSlide reads (VL Whole Slide Microscopy Image Storage, uncompressed, "
                                         "JPEG or JPEG 2000 frames). Convert it or move it out of the slides "
                                         "folder."))
        elif p.suffix.lower() not in accepted:
            unusable.append((iid, p, f"'{p.name}' is not a slide format OpenSlide reads (suffix "
                                     f"'{p.suffix or '(none)'}'; supported: {', '.join(accepted)}, DICOM WSI as a "
                                     "folder of .dcm files). Convert it or move it out of the slides folder."))
        else:
            paths.append((iid, p))
    for _, _, msg in unusable:
        log.warning("Slides folder '%s': %s", slides_dir, msg)
    if not paths:
        raise MissingInputError(f"No slide files ({', '.join(accepted)}, or DICOM WSI folders) in '{slides_dir}'"
                                + (f"; unusable: {[str(u[1].name) for u in unusable][:5]}." if unusable else "."))
    df = pd.DataFrame({"image_id": [i for i, _ in paths], "path": [str(p) for _, p in paths]})
    dup = df[df.image_id.duplicated(keep=False)]
    if len(dup):
        dcm = " (a DICOM slide's .dcm files go together in one folder named by its image ID)" \
            if dup.path.str.lower().str.endswith(DICOM_SUFFIX).any() else ""
        raise InputError(f"Several slide files share an image ID in '{slides_dir}': {sorted(dup.path)[:4]}. "
                         f"Keep one file per image{dcm}.")
    df.attrs["unusable"] = pd.DataFrame(
        [{"image_id": i, "path": str(p), "status": "error", "stage": "listing", "error": m} for i, p, m in unusable],
        columns=["image_id", "path", "status", "stage", "error"])
    return df


def compare_masks_with_truth(image_ids: Iterable[str], *, cache_dir: str | os.PathLike, params: TilingParams,
                             truth_masks_dir: str | os.PathLike,
                             thresholds: Sequence[str] = MASK_THRESHOLDS) -> pd.DataFrame:
    """Dice, IoU and accuracy of each slide's mask against its planted true mask (PNG).

    The mask is recomputed from the cached thumbnail with each method in
    ``thresholds`` (the other parameters as in ``params``), so the methods are
    compared on the same pixels.

    Returns
    -------
    DataFrame, one row per (slide, threshold method).
    """
    rows = []
    for iid in image_ids:
        truth_png = Path(truth_masks_dir) / f"{iid}.png"
        if not truth_png.exists():
            continue
        _, thumb = load_mask(cache_dir, params, iid)
        truth = np.asarray(Image.open(truth_png)) > 127
        mpp = float(read_table(Path(cache_dir) / params.key() / f"{iid}.info.tsv")["mask_mpp"].iloc[0])
        for method in thresholds:
            mask, _ = tissue_mask(thumb, mpp=mpp, blur_sigma_um=params.blur_sigma_um,
                                  min_object_um2=params.min_object_um2, fill_holes_um2=params.fill_holes_um2,
                                  threshold=method)
            rows.append({"image_id": iid, "threshold": method, **mask_agreement(mask, truth)})
    return pd.DataFrame(rows, columns=["image_id", "threshold", "dice", "iou", "accuracy"])



def tiles_per_group(tiles: pd.DataFrame, samples: pd.DataFrame, by: Sequence[str] = ("SMTS", "split")) -> pd.DataFrame:
    """Numbers of slides and tiles per tissue and split (Badea's S1 Table).

    Parameters
    ----------
    tiles : DataFrame of tiles (``image_id, tile_px, x, ...``)
    samples : DataFrame with ``image_id`` and the ``by`` columns
    by : columns to count by

    Returns
    -------
    DataFrame, ``<by>, tile_px, slides, tiles``
    """
    merged = tiles.merge(samples[["image_id", *by]], on="image_id", how="inner")
    out = merged.groupby([*by, "tile_px"]).agg(slides=("image_id", "nunique"), tiles=("x", "size"))
    return out.reset_index()


# --------------------------------------------------------------------------
# outputs other tools read: CLAM/HEST/TRIDENT-style coordinate files
# --------------------------------------------------------------------------
#: folder (beside ``tiles.parquet``) of the per-slide coordinate files, one sub-folder per tile size
COORDS_DIR = products.file_name("01_tiling", "coords")


def coords_path(out_dir: str | os.PathLike, image_id: str, tile_px: int) -> Path:
    """Where :func:`write_coords_h5` puts the coordinates of one slide and tile size.

    ``<out_dir>/coords/<tile_px>px/<image_id>.h5``: each ``<tile_px>px`` folder is laid out as CLAM's
    ``patches/`` folder (one ``<slide_id>.h5`` per slide), so it can be passed to CLAM's or TRIDENT's
    feature extraction as is.
    """
    return Path(out_dir) / COORDS_DIR / f"{int(tile_px)}px" / f"{image_id}.h5"


def write_coords_h5(tiles: pd.DataFrame, report: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Write the tile coordinates of every slide and tile size as a CLAM/HEST-style HDF5 file, atomically.

    Each file holds one dataset ``coords``, int64 of shape (n_tiles, 2): the level-0 (x, y) of each tile's
    top-left corner, in the order of the tile table. Its attributes are those CLAM's ``Whole_Slide_Bag_FP``
    reads (``patch_level``, ``patch_size``: the read size in pixels *at that level*) and those of CLAM's
    ``create_patches_fp`` and TRIDENT (``downsample``, ``level_dim``, ``name``, ``patch_size_level0``),
    plus the resolution the tiles stand for: ``mpp`` (level 0, µm/px), ``mpp_source``, ``objective_power``
    (-1 when the slide records none), ``target_mpp``, ``effective_mpp`` (µm per pixel of a ``tile_px`` tile),
    ``tile_px``, ``target_patch_size`` (the side the networks see, ``input_px``), ``image_id`` and
    ``slide_path``. A reader thus gets pixels with ``slide.read_region(coords[i], patch_level,
    (patch_size, patch_size))`` and resizes them to ``target_patch_size``, as :func:`read_tile` does.

    Parameters
    ----------
    tiles : DataFrame (:data:`TILE_COLUMNS`), the tile table of :func:`tile_slides`
    report : DataFrame, the per-slide report of :func:`tile_slides` (``image_id, path, width, height, mpp,
        mpp_source, objective_power``)
    out_dir : the tiling notebook's output folder; files go to :func:`coords_path`

    Returns
    -------
    list of Path, the files written (a slide without tiles of a size gets no file for that size)
    """
    import h5py

    need = {"image_id", "tile_px", "x", "y", "level", "read_px", "size0", "target_mpp", "effective_mpp", "input_px"}
    if not need <= set(tiles.columns):
        raise InputError(f"tiles lacks columns {sorted(need - set(tiles.columns))}; pass the tile table of "
                         "tiling.tile_slides.")
    meta_cols = ["image_id", "path", "width", "height", "mpp", "mpp_source", "objective_power"]
    if not set(meta_cols) <= set(report.columns):
        raise InputError(f"report lacks columns {sorted(set(meta_cols) - set(report.columns))}; pass the slide "
                         "report of tiling.tile_slides.")
    meta = report.loc[report.get("status", pd.Series("ok", index=report.index)) == "ok", meta_cols]
    meta = meta.drop_duplicates("image_id").set_index("image_id")
    missing = set(tiles["image_id"]) - set(meta.index)
    if missing:
        raise InputError(f"{len(missing)} slides of the tile table are not 'ok' in the report "
                         f"(e.g. {sorted(missing)[:3]}); pass the report that came with these tiles.")
    written = []
    for (iid, px), t in tiles.groupby(["image_id", "tile_px"], sort=True):
        m = meta.loc[iid]
        first = t.iloc[0]
        for col in ("level", "read_px", "size0"):
            if t[col].nunique() != 1:
                raise InputError(f"Slide {iid}, {px} px tiles: '{col}' varies within one grid; a coordinate "
                                 "file holds one patch level and size.")
        level, read_px, size0 = int(first["level"]), int(first["read_px"]), int(first["size0"])
        downsample = size0 / read_px
        power = m["objective_power"]
        attrs = {
            "patch_level": level, "patch_size": read_px, "patch_size_level0": size0,
            "downsample": np.array([downsample, downsample]),
            "level_dim": np.array([int(m["width"]), int(m["height"])]),  # level 0 (the grid's frame)
            "downsampled_level_dim": np.array([int(round(m["width"] / downsample)),
                                               int(round(m["height"] / downsample))]),
            "name": str(iid), "image_id": str(iid), "slide_path": str(m["path"]),
            "tile_px": int(px), "target_patch_size": int(first["input_px"]),
            "mpp": float(m["mpp"]), "mpp_source": str(m["mpp_source"]),
            "objective_power": float(power) if pd.notna(power) else -1.0,
            "level0_magnification": float(power) if pd.notna(power) else -1.0,
            "target_mpp": float(first["target_mpp"]), "effective_mpp": float(first["effective_mpp"]),
        }
        coords = t[["x", "y"]].to_numpy(np.int64)
        dest = coords_path(out_dir, iid, px)
        with atomic_path(dest) as tmp:
            with h5py.File(tmp, "w") as fh:
                ds = fh.create_dataset("coords", data=coords)
                ds.attrs.update(attrs)
        written.append(dest)
    log.info("Wrote %d coordinate files under %s", len(written), Path(out_dir) / COORDS_DIR)
    return written


# --------------------------------------------------------------------------
# dataset-wide resolution check (B7)
# --------------------------------------------------------------------------
#: columns of :func:`resolution_survey`
RESOLUTION_COLUMNS = ["image_id", "vendor", "mpp", "mpp_source", "objective_power", "read_level", "effective_mpp",
                      "mpp_ratio", "mpp_outlier", "power_differs", "flagged", "reason"]


def resolution_survey(report: pd.DataFrame, tiles: pd.DataFrame | None = None, *,
                      tolerance: float = 0.10) -> pd.DataFrame:
    """Scanner resolution of every tiled slide against the cohort, with the slides that disagree flagged.

    A cohort scanned at mixed objectives (20x at ~0.5 µm/px and 40x at ~0.25) is tiled at one target
    resolution all the same, but from different pyramid levels and after different resampling; a slide
    whose recorded mpp is wrong is tiled at the wrong physical size. Both are made visible here.

    Parameters
    ----------
    report : DataFrame, the per-slide report of :func:`tile_slides` (``image_id, mpp, mpp_source,
        objective_power``; slides whose ``status`` is not ``ok`` are left out)
    tiles : DataFrame (:data:`TILE_COLUMNS`) or None; gives each slide's read level and the effective mpp
        of its tiles (the median over its tiles, all sizes)
    tolerance : a slide's level-0 mpp is an outlier when ``|mpp / median - 1| > tolerance`` (median over
        the slides)

    Returns
    -------
    DataFrame, one row per slide (:data:`RESOLUTION_COLUMNS`): ``mpp_ratio`` = mpp / cohort median,
    ``mpp_outlier``, ``power_differs`` (objective power recorded and not the cohort's most common one),
    ``flagged`` (either) and ``reason`` in words. ``attrs["median_mpp"]`` and ``attrs["usual_power"]``
    hold the cohort references.
    """
    if not 0 < tolerance < 1:
        raise InputError(f"tolerance must be a fraction between 0 and 1 (e.g. 0.1 for ±10 %), got {tolerance}.")
    need = {"image_id", "mpp", "mpp_source", "objective_power"}
    if not need <= set(report.columns):
        raise InputError(f"report lacks columns {sorted(need - set(report.columns))}; pass the slide report "
                         "of tiling.tile_slides.")
    ok = report[report["status"] == "ok"] if "status" in report else report
    res = ok[["image_id", *(["vendor"] if "vendor" in ok else []), "mpp", "mpp_source", "objective_power"]].copy()
    if "vendor" not in res:
        res["vendor"] = ""
    res["mpp"] = res["mpp"].astype(float)
    res["objective_power"] = pd.to_numeric(res["objective_power"], errors="coerce")
    if tiles is not None and len(tiles):
        per = tiles.groupby("image_id").agg(read_level=("level", "min"), effective_mpp=("effective_mpp", "median"))
        res = res.merge(per, left_on="image_id", right_index=True, how="left")
    else:
        res["read_level"], res["effective_mpp"] = np.nan, np.nan
    median = float(res["mpp"].median()) if len(res) else float("nan")
    powers = res["objective_power"].dropna()
    usual = float(powers.mode().min()) if len(powers) else float("nan")
    res["mpp_ratio"] = res["mpp"] / median
    res["mpp_outlier"] = (res["mpp_ratio"] - 1).abs() > tolerance
    res["power_differs"] = res["objective_power"].notna() & (res["objective_power"] != usual)
    res["flagged"] = res["mpp_outlier"] | res["power_differs"]
    reasons = []
    for r in res.itertuples():
        why = []
        if r.mpp_outlier:
            why.append(f"mpp {r.mpp:.4g} is {r.mpp_ratio:.2f}x the cohort median {median:.4g}")
        if r.power_differs:
            why.append(f"objective {r.objective_power:g}x, cohort mostly {usual:g}x")
        reasons.append("; ".join(why))
    res["reason"] = reasons
    res = res[RESOLUTION_COLUMNS].sort_values("image_id").reset_index(drop=True)
    res.attrs.update(median_mpp=median, usual_power=usual, tolerance=tolerance)
    for r in res[res["flagged"]].itertuples():
        log.warning("Slide %s: resolution differs from the cohort: %s", r.image_id, r.reason)
    log.info("Resolution: %d slides, median mpp %.4g, %d flagged (±%.0f %% or another objective)", len(res),
             median, int(res["flagged"].sum()), 100 * tolerance)
    return res
