"""Whole-slide images: opening them safely, their resolution, writing Aperio SVS.

Reading goes through OpenSlide; every failure is turned into a
:class:`SlideError` that names the file and says what to do. Writing (the
synthetic cohort) goes through tifffile, as a tiled, JPEG-compressed,
pyramidal TIFF with an Aperio ``ImageDescription`` so that OpenSlide reads it
as an Aperio slide with its microns-per-pixel and objective power.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import openslide
from PIL import Image

from .io import atomic_path
from .errors import InputError, StateError

log = logging.getLogger(__name__)

__all__ = [
    "SLIDE_SUFFIXES",
    "SlideError",
    "SlideInfo",
    "open_slide",
    "slide_info",
    "choose_level",
    "read_region",
    "read_region_rgba",
    "read_region_premultiplied",
    "premultiplied_to_rgb",
    "rgba_to_rgb",
    "write_aperio_svs",
    "DICOM_SUFFIX",
    "dicom_slide_file",
    "is_dicom_wsi",
]

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".svslide", ".bif")

#: microns per pixel of a plausible level 0 (a 100x oil scan to a 1.25x overview)
PLAUSIBLE_MPP = (0.05, 10.0)
#: resolutions that TIFF writers put in by default (dots per inch), not scanner calibrations
_DEFAULT_DPI = (72.0, 96.0, 150.0, 200.0, 300.0, 600.0)


class SlideError(StateError):
    """A slide that cannot be used, with the file named and a fix suggested."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str, *, stage: str = "open"):
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        self.stage = stage
        super().__init__(f"Slide '{self.path.name}' ({self.path}): {problem} {fix}")


@dataclass(frozen=True)
class SlideInfo:
    """What the compendium needs to know of a slide.

    ``mpp`` is microns per pixel at level 0; ``mpp_source`` says where it came
    from (``"scanner"``: the file's calibration, ``"assumed"``: the
    ``assume_mpp`` parameter).
    """

    path: str
    vendor: str
    width: int
    height: int
    level_count: int
    level_downsamples: tuple[float, ...]
    mpp: float
    mpp_source: str
    objective_power: float | None


def _permission_error(path: Path) -> SlideError:
    return SlideError(
        path, "the file cannot be read: permission denied.",
        f"Fix its permissions (e.g. chmod a+r '{path}'), or run as a user allowed to read it.",
    )


def open_slide(path: str | os.PathLike) -> openslide.OpenSlide:
    """Open a whole-slide image, raising :class:`SlideError` with a fix when it cannot be opened.

    A file the process may not read is reported as such (OpenSlide itself reports it as an unsupported
    format); a DICOM whole-slide image is opened by any one of its ``.dcm`` files (OpenSlide finds the other
    files of the series in the same folder).
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(path, "the file does not exist.", "Check the path and the slides folder of data_dir.")
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except PermissionError:
            raise _permission_error(path) from None
    try:
        return openslide.OpenSlide(str(path))
    except PermissionError:
        raise _permission_error(path) from None
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(
            path, "OpenSlide does not recognise this file as a slide (unsupported or missing image format).",
            "Check that it is a whole-slide image (Aperio .svs, Hamamatsu, generic tiled TIFF, ...) and not a "
            "truncated download; download or export it again.",
        ) from None
    except openslide.OpenSlideError as e:
        raise SlideError(
            path, f"OpenSlide cannot open it: {e}.",
            "The file uses a format variant OpenSlide does not support or is damaged; re-export it "
            "(e.g. as a JPEG-compressed pyramidal TIFF) or download it again.",
        ) from None


#: DICOM whole-slide images (VL Whole Slide Microscopy Image Storage), read by OpenSlide >= 4.0: one ``.dcm``
#: file per pyramid level and associated image, usually a folder per slide. Kept apart from
#: :data:`SLIDE_SUFFIXES` (which ``tcga.list_slides`` also uses for GDC's SVS
#: downloads).
DICOM_SUFFIX = ".dcm"


def is_dicom_wsi(path: str | os.PathLike) -> bool:
    """Whether OpenSlide reads ``path`` as a DICOM whole-slide image file (a level or associated image of
    one), from its header only.

    Raises
    ------
    PermissionError
        The file cannot be read (OpenSlide would only say it is not a slide).
    """
    with open(path, "rb") as fh:
        fh.read(1)
    return openslide.OpenSlide.detect_format(str(path)) == "dicom"


def dicom_slide_file(folder: str | os.PathLike) -> Path | None:
    """The ``.dcm`` file of a DICOM whole-slide image folder to hand to OpenSlide, or None.

    OpenSlide opens a DICOM WSI by any one of its files and reads the other files of the same series from
    that folder; the largest file that OpenSlide detects as DICOM WSI is returned (the base level, usually),
    so that other DICOM objects of the folder (annotations, a DICOMDIR) are never the one opened. Files that
    cannot be read are passed over.
    """
    folder = Path(folder)
    files = [f for f in folder.iterdir() if f.suffix.lower() == DICOM_SUFFIX and f.is_file()
             and not f.name.startswith(".")]
    for f in sorted(files, key=lambda f: (-f.stat().st_size, f.name)):
        try:
            if is_dicom_wsi(f):
                return f
        except PermissionError:
            log.warning("DICOM slide folder '%s': '%s' cannot be read (permission denied); passed over",
                        folder, f.name)
    return None


def _scanner_mpp(slide: openslide.OpenSlide) -> tuple[float | None, str]:
    """The level-0 mpp from the file, or None with the reason it is not usable."""
    props = slide.properties
    raw = props.get(openslide.PROPERTY_NAME_MPP_X)
    if raw is None:
        return None, "the file records no microns-per-pixel"
    mpp = float(raw)
    unit = props.get("tiff.ResolutionUnit")
    xres = props.get("tiff.XResolution")
    vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "")
    if vendor == "generic-tiff" and unit in ("inch", "centimeter") and xres is not None:
        dpi = float(xres) * (2.54 if unit == "centimeter" else 1.0)
        if any(abs(dpi - d) < 0.01 for d in _DEFAULT_DPI):
            return None, (f"openslide.mpp-x = {mpp:.4g} comes from a {dpi:.0f}-dpi TIFF resolution tag, "
                          "a writer's default rather than a scanner calibration")
    if not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
        return None, (f"openslide.mpp-x = {mpp:.4g} is outside the range of microscope scans "
                      f"({PLAUSIBLE_MPP[0]}-{PLAUSIBLE_MPP[1]} um/px)")
    return mpp, "scanner"


def slide_info(slide: openslide.OpenSlide, path: str | os.PathLike, *,
               assume_mpp: float | None = None) -> SlideInfo:
    """Describe an open slide; the mpp must be known or explicitly assumed.

    Parameters
    ----------
    slide, path
        The open slide and its file (for messages).
    assume_mpp
        Microns per pixel at level 0 to use for slides that record none (or a
        fake one, such as the 72-dpi default of generic TIFF writers). Never
        used for slides with a scanner calibration.

    Raises
    ------
    SlideError
        If the slide records no usable mpp and ``assume_mpp`` is None.
    """
    mpp, why = _scanner_mpp(slide)
    source = "scanner"
    if mpp is None:
        if assume_mpp is None:
            raise SlideError(
                path, f"no usable resolution: {why}.",
                "Pass assume_mpp=<microns per pixel at level 0> if you know the scan's resolution "
                "(e.g. 0.25 for 40x, 0.5 for 20x), or use a slide with a calibrated scan.",
                stage="resolution",
            )
        if assume_mpp <= 0:
            raise InputError(f"assume_mpp must be positive, got {assume_mpp}.")
        mpp, source = float(assume_mpp), "assumed"
        log.warning("Slide '%s': %s; using assume_mpp = %g um/px", Path(path).name, why, mpp)
    power = slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    w, h = slide.dimensions
    return SlideInfo(
        path=str(path), vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
        width=int(w), height=int(h), level_count=int(slide.level_count),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        mpp=float(mpp), mpp_source=source,
        objective_power=float(power) if power else None,
    )


def choose_level(info: SlideInfo, target_mpp: float, *, tolerance: float = 0.02) -> int:
    """The coarsest pyramid level that is at least as fine as ``target_mpp``.

    Reading from that level and shrinking never upsamples by more than
    ``tolerance``: a 40x scan's 4x level (1.0 um/px) serves Badea's 10x
    (0.9884 um/px) with a 1.2 % stretch instead of reading 16 times the pixels
    at level 0. GTEx's 20x scans (0.4942 um/px, levels 4x and 16x apart) are
    read at level 0 and shrunk 2x.
    """
    if target_mpp <= 0:
        raise InputError(f"target_mpp must be positive, got {target_mpp}.")
    if target_mpp < info.mpp * (1 - tolerance):
        raise InputError(
            f"Target resolution {target_mpp} um/px is finer than level 0 of '{Path(info.path).name}' "
            f"({info.mpp:.4g} um/px); the slide cannot be read at that resolution without upsampling."
        )
    best = 0
    for level, ds in enumerate(info.level_downsamples):
        if info.mpp * ds <= target_mpp * (1 + tolerance):
            best = level
    return best


def read_region_rgba(slide: openslide.OpenSlide, path: str | os.PathLike, location: tuple[int, int],
                     level: int, size: tuple[int, int]) -> Image.Image:
    """Read a region as openslide-python gives it: an RGBA PIL image, *not* premultiplied.

    Raises :class:`SlideError` (stage ``"read"``) when the pixels cannot be decoded.
    """
    _check_level(slide, level)
    try:
        return slide.read_region(location, level, size)
    except openslide.OpenSlideError as e:
        raise _read_error(path, level, location, e) from None


def _check_level(slide: openslide.OpenSlide, level: int) -> None:
    if not 0 <= level < slide.level_count:
        raise InputError(f"Level {level} not available. Number of available levels: {slide.level_count}")


def _read_error(path: str | os.PathLike, level: int, location: tuple[int, int], e: Exception) -> SlideError:
    return SlideError(
        path, f"it opens, but its pixels cannot be read at level {level} {location}: {e}.",
        "The image data are damaged; download or export the slide again.", stage="read",
    )


def _native_reader():
    """OpenSlide's C ``openslide_read_region`` as openslide-python binds it, or ``None`` if this version of
    openslide-python does not expose it (then :func:`read_region_premultiplied` takes the public path)."""
    import ctypes

    from openslide import lowlevel

    fn = getattr(lowlevel, "_read_region", None)
    return (fn, ctypes.POINTER(ctypes.c_uint32)) if fn is not None else None


_NATIVE = _native_reader()


def read_region_premultiplied(slide: openslide.OpenSlide, path: str | os.PathLike, location: tuple[int, int],
                              level: int, size: tuple[int, int]) -> np.ndarray:
    """Read a region as OpenSlide's C library makes it: premultiplied colour, channels B, G, R, A.

    Premultiplied pixels can be averaged (resized) channel by channel and then flattened onto white with
    :func:`premultiplied_to_rgb`, which is both the correct order for pixels at the edge of the scan and
    the cheap one: openslide-python's conversion to a non-premultiplied PIL image, and its copy into
    NumPy, are skipped.

    Parameters
    ----------
    slide : an open ``openslide.OpenSlide``
    path : the slide's file, for error messages
    location : (x, y) of the top-left corner, level-0 pixels
    level : pyramid level
    size : (width, height) at ``level``

    Returns
    -------
    ndarray, shape (height, width, 4), uint8: premultiplied B, G, R, A (each colour value <= its alpha;
    outside the scan all four are 0)
    """
    _check_level(slide, level)
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise InputError(f"Region size {size} of slide '{Path(path).name}' must be positive.")
    osr = getattr(slide, "_osr", None)
    if _NATIVE is not None and osr is not None:
        fn, ptr = _NATIVE
        words = np.empty((h, w), np.uint32)  # one native-endian 0xAARRGGBB word per pixel
        try:
            fn(osr, words.ctypes.data_as(ptr), int(location[0]), int(location[1]), int(level), w, h)
        except openslide.OpenSlideError as e:
            raise _read_error(path, level, location, e) from None
        bgra = words.view(np.uint8).reshape(h, w, 4)
        return bgra if np.little_endian else np.ascontiguousarray(bgra[..., ::-1])
    return _premultiply(np.asarray(read_region_rgba(slide, path, location, level, size)))


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    """openslide-python's RGBA (not premultiplied), shape (h, w, 4), as premultiplied B, G, R, A, rounded."""
    x = rgba.astype(np.uint16)
    x[..., :3] = (x[..., :3] * x[..., 3:] + 127) // 255
    return np.ascontiguousarray(x[..., [2, 1, 0, 3]].astype(np.uint8))


def premultiplied_to_rgb(bgra: np.ndarray) -> np.ndarray:
    """Composite premultiplied B, G, R, A (:func:`read_region_premultiplied`) onto white.

    ``rgb = colour + (255 - alpha)``: a transparent pixel (outside the scan) becomes white, an opaque one
    keeps its colour, a partly covered one (a resized edge) is the mix of both.

    Parameters
    ----------
    bgra : ndarray, shape (h, w, 4), uint8, premultiplied

    Returns
    -------
    ndarray, shape (h, w, 3), uint8, R, G, B
    """
    rgb = np.empty(bgra.shape[:-1] + (3,), np.uint8)
    for c in range(3):  # three plain channel copies: several times faster than one reversed-stride copy
        rgb[..., c] = bgra[..., 2 - c]
    alpha = bgra[..., 3]
    if alpha.min() < 255:
        rgb = np.minimum(rgb, alpha[..., None])  # premultiplied colour never exceeds alpha (rounding guard)
        rgb += (255 - alpha)[..., None]
    return rgb


def read_region(slide: openslide.OpenSlide, path: str | os.PathLike, location: tuple[int, int],
                level: int, size: tuple[int, int]) -> np.ndarray:
    """Read an RGB region as ``(h, w, 3)`` uint8, parts outside the scan white."""
    return premultiplied_to_rgb(read_region_premultiplied(slide, path, location, level, size))


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA as openslide-python gives it (not premultiplied) onto white; ``(h, w, 3)`` uint8.

    ``rgb = colour * alpha / 255 + (255 - alpha)``.
    """
    if rgba.shape[-1] == 3:
        return rgba
    if rgba[..., 3].min() == 255:  # fully opaque: the usual case inside a scan
        return np.ascontiguousarray(rgba[..., :3])
    return premultiplied_to_rgb(_premultiply(rgba))


def write_aperio_svs(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    mpp: float,
    objective_power: float,
    downsamples: Sequence[int] = (1, 4, 16),
    tile: int = 256,
    quality: int = 85,
    thumbnail_px: int = 768,
    extra: dict[str, str] | None = None,
    image: Image.Image | None = None,
) -> Path:
    """Write an RGB image as a pyramidal Aperio-style SVS that OpenSlide opens.

    Parameters
    ----------
    path
        Destination ``.svs`` (written under a temporary name, then renamed).
    rgb : ndarray, shape (H, W, 3), uint8
        Level 0.
    mpp, objective_power
        Microns per pixel at level 0 and the objective magnification (``AppMag``).
    downsamples
        Pyramid levels as downsample factors of level 0 (Aperio uses 4x steps).
    tile, quality
        JPEG tile size and quality.
    thumbnail_px
        Longest side of the stripped thumbnail stored as the second image, as
        Aperio does (OpenSlide lists it as the ``thumbnail`` associated image).
    extra
        More ``key = value`` pairs for the description (kept by OpenSlide as
        ``aperio.<key>`` properties).
    image
        The same pixels as ``rgb`` as a PIL RGB image, when the caller has one
        (the pyramid levels are reduced from it; saves a full-size copy).
    """
    import tifffile

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}.")
    if list(downsamples)[0] != 1:
        raise InputError("The first downsample must be 1 (level 0).")
    h, w = rgb.shape[:2]
    kv = {"AppMag": f"{objective_power:g}", "MPP": f"{mpp:.4f}", **(extra or {})}
    meta = "|".join(f"{k} = {v}" for k, v in kv.items())
    head = "Aperio Image Library v12.0.15"
    if image is not None and (image.mode != "RGB" or image.size != (w, h)):
        raise InputError(f"image must be the RGB {w}x{h} copy of rgb, got {image.mode} {image.size[0]}x{image.size[1]}.")
    base = Image.fromarray(rgb) if image is None else image
    opts = dict(compression="jpeg", compressionargs={"level": quality}, photometric="rgb",
                metadata=None, subsampling=(2, 2))
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=False) as tw:
        tw.write(rgb, tile=(tile, tile), description=f"{head}\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) "
                 f"JPEG/RGB Q={quality}|{meta}", **opts)
        scale = thumbnail_px / max(h, w)
        thumb = np.asarray(base.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX))
        tw.write(thumb, description=f"{head}\r\n{w}x{h} -> {thumb.shape[1]}x{thumb.shape[0]} - |{meta}",
                 **opts)
        for ds in list(downsamples)[1:]:
            lw, lh = w // ds, h // ds
            level = np.asarray(base.resize((lw, lh), Image.BOX))
            tw.write(level, tile=(tile, tile),
                     description=f"{head}\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) -> {lw}x{lh} JPEG/RGB "
                     f"Q={quality}|{meta}", **opts)
    return Path(path)


def read_field_of_view(path: str | os.PathLike, *, center_frac: tuple[float, float] = (0.5, 0.5),
                       size_um: float = 512.0, out_mpp: float = 1.0) -> np.ndarray:
    """Read a square field of view of ``size_um`` microns at ``out_mpp`` um/px.

    Parameters
    ----------
    path
        The slide.
    center_frac
        Centre of the field as fractions (x, y) of the slide's width and height.
    size_um, out_mpp
        Side of the field in microns and the resolution it is returned at.

    Returns
    -------
    ndarray, shape (n, n, 3), uint8, ``n = round(size_um / out_mpp)``
    """
    slide = open_slide(path)
    try:
        info = slide_info(slide, path)
        level = choose_level(info, out_mpp)
        ds = info.level_downsamples[level]
        size0 = size_um / info.mpp
        x0 = int(np.clip(center_frac[0] * info.width - size0 / 2, 0, max(0, info.width - size0)))
        y0 = int(np.clip(center_frac[1] * info.height - size0 / 2, 0, max(0, info.height - size0)))
        n_level = int(round(size0 / ds))
        rgb = read_region(slide, path, (x0, y0), level, (n_level, n_level))
    finally:
        slide.close()
    n = int(round(size_um / out_mpp))
    return np.asarray(Image.fromarray(rgb).resize((n, n), Image.BILINEAR))


def read_thumbnail(path: str | os.PathLike, *, max_px: int = 512) -> tuple[np.ndarray, float]:
    """RGB thumbnail whose longest side is ``max_px``, and its level-0 pixels per thumbnail pixel."""
    slide = open_slide(path)
    try:
        try:
            thumb = np.asarray(slide.get_thumbnail((max_px, max_px)).convert("RGB"))
        except openslide.OpenSlideError as e:
            raise SlideError(path, f"its pixels cannot be read for a thumbnail: {e}.",
                             "The image data are damaged; download or export the slide again.",
                             stage="read") from None
        return thumb, slide.dimensions[0] / thumb.shape[1]
    finally:
        slide.close()
