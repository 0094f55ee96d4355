"""Painting synthetic H&E tissue whose look follows planted latent programs.

Each tissue type has a painter that draws, on a grid of ``px_um`` microns per
pixel, the two stain concentration maps (haematoxylin: nuclei; eosin:
cytoplasm, colloid, fibres, stroma) and the true structure masks. Three
latent programs change the drawing, pixel by pixel, through *fields* (2-D maps
of program values):

``nuclear_density``
    density of nuclei (multiplied by ``exp(0.45 * value)``).
``stroma_fraction``
    width of the stroma between the tissue's units (septa, endomysium,
    interstitium, fibrous bands).
``lumen_size``
    size of the tissue's repeating unit: follicles (thyroid), fibre calibre
    (muscle), hepatocyte plates (liver), fat cells (adipose), acini (pancreas).

Stains are mixed by the Beer-Lambert law with Ruifrok & Johnston's
haematoxylin and eosin optical-density vectors; the ischemic-time severity
fades both stains and smudges nuclei (autolysis), and the collection centre
shifts the stain colours. A slide is a tissue piece with an irregular
outline, holes and debris on white glass.

Everything is a function of a seeded ``numpy.random.Generator``: the same
:class:`SlideSpec` always gives the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from ..errors import InputError

__all__ = [
    "PROGRAMS",
    "TISSUES",
    "TissueType",
    "SlideSpec",
    "RenderedSlide",
    "render_slide",
    "program_fields",
    "CENTER_STAINS",
]

PROGRAMS = ("nuclear_density", "stroma_fraction", "lumen_size")

# Ruifrok & Johnston optical-density vectors (R, G, B), normalised
_H = np.array([0.650, 0.704, 0.286], np.float32)
_E = np.array([0.072, 0.990, 0.105], np.float32)
_H /= np.linalg.norm(_H)
_E /= np.linalg.norm(_E)

#: per collection centre: (haematoxylin vector tilt, eosin vector tilt, H strength, E strength)
CENTER_STAINS = {
    "B1": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1.00, 1.00),
    "C1": ((-0.10, 0.00, 0.12), (0.05, -0.05, 0.10), 1.12, 0.85),
    "D1": ((0.08, -0.04, -0.06), (0.00, 0.05, -0.04), 0.90, 1.18),
}


# --------------------------------------------------------------------------
# small drawing primitives
# --------------------------------------------------------------------------
def smooth_noise(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field of unit SD with correlation length ~``scale_px``."""
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / scale_px)) + 2), max(2, int(np.ceil(w / scale_px)) + 2)
    low = rng.standard_normal((gh, gw)).astype(np.float32)
    low = ndi.gaussian_filter(low, 0.6, mode="wrap")
    up = np.asarray(Image.fromarray(low, mode="F").resize((w, h), Image.BICUBIC))
    sub = up[::4, ::4]  # the field is smooth: its moments from a 1/16 subsample
    out = up - np.float32(sub.mean())  # in place from here: one full-size array, not two
    out *= np.float32(1.0 / (sub.std() + 1e-6))
    return out


def jittered_seeds(shape: tuple[int, int], spacing: float, jitter: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points on a square grid of ``spacing`` px, each moved by up to ``jitter`` x spacing."""
    h, w = shape
    ys, xs = np.mgrid[-spacing:h + spacing:spacing, -spacing:w + spacing:spacing]
    ys = ys.ravel() + rng.uniform(-jitter, jitter, ys.size) * spacing
    xs = xs.ravel() + rng.uniform(-jitter, jitter, xs.size) * spacing
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    return ys[keep].astype(int), xs[keep].astype(int)


def voronoi(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, *, coarse: int = 2
            ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-seed label (index into the seeds) and distance to it (px), per pixel.

    Computed on a grid ``coarse`` times coarser and upsampled (labels by
    nearest neighbour, distances bilinearly): a quarter of the work at
    ``coarse=2``, with cell borders placed to within one pixel.
    """
    h, w = shape
    ch, cw = -(-h // coarse), -(-w // coarse)
    cy, cx = np.minimum(ys // coarse, ch - 1), np.minimum(xs // coarse, cw - 1)
    free = np.ones((ch, cw), bool)
    free[cy, cx] = False
    label_img = np.full((ch, cw), -1, np.int32)
    label_img[cy, cx] = np.arange(len(ys), dtype=np.int32)
    dist, (iy, ix) = ndi.distance_transform_edt(free, return_indices=True)
    lab = label_img[iy, ix]
    if coarse > 1:
        lab = np.repeat(np.repeat(lab, coarse, 0), coarse, 1)[:h, :w]
        d = Image.fromarray(dist.astype(np.float32) * coarse, mode="F").resize((cw * coarse, ch * coarse),
                                                                              Image.BILINEAR)
        dist = np.asarray(d)[:h, :w]
    return lab, dist.astype(np.float32, copy=False)


def label_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    b = np.zeros(labels.shape, bool)
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return b


def scatter(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli points with per-pixel probability ``prob``."""
    return rng.random(prob.shape, dtype=np.float32) < prob


def nuclei(points: np.ndarray, sigma_um: tuple[float, float], px_um: float,
           rng: np.random.Generator) -> np.ndarray:
    """Haematoxylin of nuclei centred on ``points``: blobs with a sharp rim and chromatin texture."""
    sy, sx = sigma_um[0] / px_um, sigma_um[1] / px_um
    body = ndi.gaussian_filter(points, (sy, sx), output=np.float32)  # = of points.astype(float32), one copy less
    body *= 2 * np.pi * sy * sx  # in place (float32 throughout): clip((img - 0.22) / 0.18, 0, 1) x chromatin
    body -= 0.22
    body /= 0.18
    np.clip(body, 0.0, 1.0, out=body)
    chromatin = rng.random(points.shape, dtype=np.float32)
    chromatin *= 0.3
    chromatin += 0.85
    body *= chromatin
    return body


def fibrous(shape, px_um, rng, angle: float | None = None) -> np.ndarray:
    """Streaky texture in [0, 1] for collagen-rich stroma (drawn at half resolution)."""
    h, w = shape
    n = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    a = rng.uniform(0, np.pi) if angle is None else angle
    long, short = 3.0 / px_um, 0.5 / px_um
    t = ndi.gaussian_filter(n, (long, short) if np.sin(a) ** 2 > 0.5 else (short, long))
    t = np.asarray(Image.fromarray(t, mode="F").resize((w, h), Image.BILINEAR))
    return np.clip(0.5 + t / (t.std() * 4 + 1e-6), 0, 1)


def smoothstep(x, lo, hi):
    """Hermite step from 0 at ``lo`` to 1 at ``hi``: ``t^2 (3 - 2t)``, ``t = clip((x - lo) / (hi - lo))``."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    s = 2 * t  # in place: the same arithmetic as t * t * (3 - 2 * t), fewer full-size arrays
    np.subtract(3, s, out=s)
    t *= t
    t *= s
    return t


@dataclass
class Layers:
    """Stain concentrations and true structure masks of painted tissue."""

    hema: np.ndarray
    eosin: np.ndarray
    structures: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------
# painters, one per tissue type
# --------------------------------------------------------------------------
def _growth(f):
    """``exp(0.45 * nuclear_density)``, once per painter (every nucleus density of a tissue scales with it)."""
    return np.exp(0.45 * f["nuclear_density"])


def _density(growth, base_per_um2, px_um):
    """Nuclei per pixel: ``clip(base_per_um2 * px_um^2 * growth, 0, 0.5)``, ``growth`` from :func:`_growth`."""
    return np.clip(base_per_um2 * px_um * px_um * growth, 0, 0.5)


def paint_follicles(shape, f, px_um, rng) -> Layers:
    """Thyroid-like: round follicles of pink colloid lined by one layer of nuclei."""
    mean_l = float(f["lumen_size"].mean())
    spacing = 80.0 * np.exp(0.25 * mean_l) / px_um
    ys, xs = jittered_seeds(shape, spacing, 0.3, rng)
    lab, d = voronoi(shape, ys, xs)
    size_jit = rng.uniform(0.8, 1.1, len(ys)).astype(np.float32)[lab]
    gap = 0.5 * spacing * (0.06 + 0.22 / (1 + np.exp(-1.3 * f["stroma_fraction"])))
    r_out = (0.5 * spacing - gap) * size_jit * np.exp(0.15 * (f["lumen_size"] - mean_l))
    epi_w = 7.0 / px_um
    inner = r_out - epi_w
    lumen = d < inner
    stroma = d >= r_out
    epi = ~(lumen | stroma)
    colloid = 0.55 + 0.08 * smooth_noise(shape, 40 / px_um, rng)
    retraction = np.subtract(inner, d, out=inner)  # (r_out - epi_w - d), in place
    retraction *= px_um / 2.5
    np.clip(retraction, 0.0, 1.0, out=retraction)
    retraction *= colloid
    eosin = retraction.astype(np.float32)
    eosin[~lumen] = 0.0
    eosin[epi] = 0.35
    fib = 0.42 * (0.6 + 0.8 * fibrous(shape, px_um, rng))
    eosin[stroma] = fib[stroma]
    g = _growth(f)
    p = np.where(epi, _density(g, 0.016, px_um), 0) + np.where(stroma, _density(g, 0.0015, px_um), 0)
    hema = nuclei(scatter(p, rng), (2.2, 2.2), px_um, rng)
    return Layers(hema, eosin, {"lumen": lumen, "stroma": stroma, "nuclei": hema > 0.3})


def paint_fibres(shape, f, px_um, rng) -> Layers:
    """Skeletal-muscle-like: long eosinophilic fibres with peripheral elongated nuclei."""
    vertical = rng.random() < 0.5
    if vertical:  # paint horizontally on the transposed canvas
        shape = shape[::-1]
        f = {k: v.T for k, v in f.items()}
    h, w = shape
    yy = np.arange(h, dtype=np.float32)[:, None]  # broadcast (h, 1) and (1, w): the x terms once per column
    xx = np.arange(w, dtype=np.float32)[None, :]
    lam = rng.uniform(400, 900) / px_um
    v = yy + (25.0 / px_um) * np.sin(2 * np.pi * xx / lam + rng.uniform(0, 6.3)) + rng.uniform(-0.15, 0.15) * xx
    mean_l = float(f["lumen_size"].mean())
    widths = 45.0 / px_um * np.exp(0.25 * mean_l) * rng.uniform(0.75, 1.25, 4 * int(h / 20) + 400)
    vmin, vmax = float(v.min()), float(v.max())
    bounds = vmin - widths[0] + np.cumsum(widths)
    bounds = bounds[: np.searchsorted(bounds, vmax) + 2]
    idx = np.clip(np.searchsorted(bounds, v), 1, len(bounds) - 1)
    dist = np.minimum(v - bounds[idx - 1], bounds[idx] - v)
    gap = 2.0 / px_um * np.exp(0.7 * f["stroma_fraction"])
    fascicle = (idx % 7 == 0) & (dist < 3 * gap)
    stroma = (dist < gap) | fascicle
    fibre = ~stroma
    tone = rng.uniform(0.85, 1.1, len(bounds) + 1).astype(np.float32)[idx]
    striation = 0.06 * np.sin(2 * np.pi * xx * px_um / 3.0)
    eosin = np.where(fibre, 0.85 * tone + striation, 0.28 * (0.6 + 0.8 * fibrous(shape, px_um, rng, 0.0)))
    near_edge = fibre & (dist < gap + 4.0 / px_um)
    g = _growth(f)
    p = np.where(near_edge, _density(g, 0.006, px_um), 0) + np.where(stroma, _density(g, 0.002, px_um), 0)
    hema = nuclei(scatter(p, rng), (1.4, 4.5), px_um, rng)
    lay = Layers(hema, eosin.astype(np.float32), {"lumen": np.zeros(shape, bool), "stroma": stroma,
                                                   "nuclei": hema > 0.3, "fibre": fibre})
    if vertical:
        lay = Layers(lay.hema.T, lay.eosin.T, {k: m.T for k, m in lay.structures.items()})
    return lay


def paint_cords(shape, f, px_um, rng) -> Layers:
    """Liver-like: plates of polygonal cells with central nuclei, sinusoids and fibrous bands."""
    mean_l = float(f["lumen_size"].mean())
    cell = 22.0 * np.exp(0.2 * mean_l) / px_um
    ys, xs = jittered_seeds(shape, cell, 0.3, rng)
    lab, d = voronoi(shape, ys, xs)
    membrane = ndi.binary_dilation(label_borders(lab))
    h, w = shape
    yy = np.arange(h, dtype=np.float32)[:, None]  # broadcast (h, 1) and (1, w)
    xx = np.arange(w, dtype=np.float32)[None, :]
    a = rng.uniform(0, np.pi)
    warp = 60.0 / px_um * smooth_noise(shape, 250 / px_um, rng)
    u = xx * np.cos(a) + yy * np.sin(a) + warp
    period = 2.6 * cell
    sinus = np.abs(np.sin(np.pi * u / period)) < 0.10 + 0.04 * np.tanh(f["lumen_size"])
    band = np.abs(smooth_noise(shape, 300 / px_um, rng))
    fib = band < 0.05 * np.exp(0.8 * f["stroma_fraction"])
    granular = 0.9 + 0.2 * rng.random(shape, dtype=np.float32)
    eosin = np.where(membrane, 0.75, 0.6 * granular)
    eosin = np.where(sinus, 0.06, eosin)
    eosin = np.where(fib, 0.5 * (0.6 + 0.8 * fibrous(shape, px_um, rng)), eosin).astype(np.float32)
    pts = np.zeros(shape, bool)
    keep = rng.random(len(ys)) < np.clip(0.55 * np.exp(0.45 * f["nuclear_density"][ys, xs]), 0, 1)
    pts[ys[keep], xs[keep]] = True
    pts &= ~(sinus | fib)
    d4 = _density(_growth(f), 0.004, px_um)  # the same density in the fibrous bands and the sinusoids
    pts |= scatter(np.where(fib, d4, 0), rng)
    hema = nuclei(pts, (2.8, 2.8), px_um, rng) + 0.5 * nuclei(
        scatter(np.where(sinus, d4, 0), rng), (1.2, 3.0), px_um, rng)
    return Layers(hema.astype(np.float32), eosin,
                  {"lumen": sinus, "stroma": fib, "nuclei": hema > 0.3})


def paint_adipocytes(shape, f, px_um, rng) -> Layers:
    """Adipose-like: large empty cells with thin membranes and fibrous septa."""
    mean_l = float(f["lumen_size"].mean())
    spacing = 75.0 * np.exp(0.25 * mean_l) / px_um
    ys, xs = jittered_seeds(shape, spacing, 0.4, rng)
    lab, _ = voronoi(shape, ys, xs)
    membrane = ndi.binary_dilation(label_borders(lab), iterations=max(1, int(round(1.0 / px_um))))
    band = np.abs(smooth_noise(shape, 350 / px_um, rng))
    septa = band < 0.04 * np.exp(0.9 * f["stroma_fraction"])
    eosin = np.where(membrane, 0.6, 0.02)
    eosin = np.where(septa, 0.5 * (0.6 + 0.8 * fibrous(shape, px_um, rng)), eosin).astype(np.float32)
    d4 = _density(_growth(f), 0.004, px_um)  # the same density on membranes and in septa
    p = np.where(membrane, d4, 0) + np.where(septa, d4, 0)
    hema = nuclei(scatter(p, rng), (1.5, 2.5), px_um, rng)
    lumen = ~(membrane | septa)
    return Layers(hema, eosin, {"lumen": lumen, "stroma": septa, "nuclei": hema > 0.3})


def paint_acini(shape, f, px_um, rng) -> Layers:
    """Pancreas-like: lobules of small basophilic cells around tiny lumens."""
    mean_l = float(f["lumen_size"].mean())
    acinus = 45.0 * np.exp(0.25 * mean_l) / px_um
    ys, xs = jittered_seeds(shape, acinus, 0.35, rng)
    lab, d = voronoi(shape, ys, xs)
    cell = 11.0 / px_um
    cys, cxs = jittered_seeds(shape, cell, 0.3, rng)  # cell centres (nuclei); no cell tessellation is drawn
    band = np.abs(smooth_noise(shape, 220 / px_um, rng))
    stroma = band < 0.05 * np.exp(0.8 * f["stroma_fraction"])
    edge = ndi.binary_dilation(label_borders(lab), iterations=max(1, int(round(1.5 / px_um))))
    lumen = d < 3.0 / px_um * np.exp(0.3 * (f["lumen_size"] - mean_l)) + 1.5
    cyto = ~(stroma | edge | lumen)
    eosin = np.where(cyto, 0.45 + 0.15 * rng.random(shape, dtype=np.float32), 0.05)
    eosin = np.where(stroma, 0.45 * (0.6 + 0.8 * fibrous(shape, px_um, rng)), eosin).astype(np.float32)
    # basophilic (RNA-rich) cytoplasm at the cell base: haematoxylin outside the nucleus
    base_h = np.where(cyto, 0.28 * smoothstep(d, 4.0 / px_um, 0.45 * acinus), 0)
    pts = np.zeros(shape, bool)
    keep = rng.random(len(cys)) < np.clip(0.45 * np.exp(0.45 * f["nuclear_density"][cys, cxs]), 0, 1)
    pts[cys[keep], cxs[keep]] = True
    pts &= cyto & (d > 0.35 * acinus)
    pts |= scatter(np.where(stroma, _density(_growth(f), 0.002, px_um), 0), rng)
    hema = (nuclei(pts, (2.0, 2.0), px_um, rng) + base_h).astype(np.float32)
    return Layers(hema, eosin, {"lumen": lumen, "stroma": stroma, "nuclei": hema > 0.3})


@dataclass(frozen=True)
class TissueType:
    """A synthetic tissue: GTEx names, site code in the sample ID, Uberon ID, painter."""

    smts: str
    smtsd: str
    site: str
    uberon: str
    painter: Callable


TISSUES: dict[str, TissueType] = {
    "Thyroid": TissueType("Thyroid", "Thyroid", "0126", "0002046", paint_follicles),
    "Muscle": TissueType("Muscle", "Muscle - Skeletal", "0326", "0011907", paint_fibres),
    "Liver": TissueType("Liver", "Liver", "0526", "0002107", paint_cords),
    "Adipose Tissue": TissueType("Adipose Tissue", "Adipose - Subcutaneous", "0726", "0002190",
                                 paint_adipocytes),
    "Pancreas": TissueType("Pancreas", "Pancreas", "0926", "0001264", paint_acini),
}


# --------------------------------------------------------------------------
# a whole slide
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SlideSpec:
    """Everything that determines one synthetic slide's pixels.

    Attributes
    ----------
    image_id, tissue
        GTEx image ID and a key of :data:`TISSUES`.
    seed
        Seed of this slide's generator.
    programs
        Sample-level value of each program in :data:`PROGRAMS` (SD 1 across samples).
    width_um, height_um
        Physical size of the slide.
    px_um
        Resolution the tissue is painted at (level 0 is this, upsampled to ``mpp``).
    ischemic_severity
        0 (none) to 1 (longest ischemic time): stain fading and smudged nuclei.
    center
        Collection centre (``SMCENTER``): stain colours, see :data:`CENTER_STAINS`.
    within_sd
        SD of the smooth within-slide variation of each program around its value.
    tissue_cover
        Fraction of the glass covered by tissue.
    """

    image_id: str
    tissue: str
    seed: int
    programs: dict
    width_um: float = 2560.0
    height_um: float = 2048.0
    px_um: float = 1.0
    ischemic_severity: float = 0.0
    center: str = "B1"
    within_sd: float = 0.35
    tissue_cover: float = 0.55


@dataclass
class RenderedSlide:
    """A painted slide at ``spec.px_um`` microns per pixel."""

    spec: SlideSpec
    rgb: np.ndarray          # (H, W, 3) uint8
    tissue: np.ndarray       # (H, W) bool, true tissue (holes and debris excluded)
    structures: dict         # name -> (H, W) bool, within tissue
    fields: dict             # program -> (H, W) float32


def program_fields(spec: SlideSpec, shape: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each program's map: its sample value plus smooth within-slide variation (~500 um)."""
    out = {}
    for p in PROGRAMS:  # value + sd * noise, in place on the float32 noise
        f = smooth_noise(shape, 500 / spec.px_um, rng)
        f *= np.float32(spec.within_sd)
        f += np.float32(spec.programs[p])
        out[p] = f
    return out


def _outline(shape, spec, rng, *, coarse: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(piece, holes, soft): an irregular piece of tissue, the holes in it, and a soft-edged cover.

    Drawn at 1/``coarse`` resolution and upsampled, which also softens the edges.
    """
    h, w = shape
    ch, cw = max(8, h // coarse), max(8, w // coarse)
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    r2 = ((yy - ch / 2) / (ch / 2)) ** 2 + ((xx - cw / 2) / (cw / 2)) ** 2
    f = smooth_noise((ch, cw), 500 / spec.px_um / coarse, rng) - 1.6 * r2
    piece = f > np.quantile(f, 1 - spec.tissue_cover)
    lab, n = ndi.label(piece)
    if n > 1:  # keep the largest piece and at most two fragments
        sizes = ndi.sum_labels(piece, lab, index=np.arange(1, n + 1))
        keep = np.argsort(sizes)[::-1][:3] + 1
        piece = np.isin(lab, keep)
    g = smooth_noise((ch, cw), 220 / spec.px_um / coarse, rng)  # tears of ~0.1-0.5 mm
    # smooth the coarse binary masks before upsampling, so outlines come out round, not stair-stepped
    cover = ndi.gaussian_filter((piece & ~(g > 2.0)).astype(np.float32), 1.0)
    piece_f = ndi.gaussian_filter(piece.astype(np.float32), 1.0)
    piece_up = np.asarray(Image.fromarray(piece_f, mode="F").resize((w, h), Image.BICUBIC))
    soft = np.asarray(Image.fromarray(cover, mode="F").resize((w, h), Image.BICUBIC))
    soft = np.clip((soft - 0.5) * 6 + 0.5, 0, 1)
    piece_full = piece_up > 0.5
    return piece_full, piece_full & (soft <= 0.5), soft


def _debris(shape, piece, spec, rng) -> np.ndarray:
    """Specks of dust and detached cells on the glass, away from the tissue."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    r_max = int(np.ceil(18 / spec.px_um))
    yy, xx = np.mgrid[-r_max:r_max + 1, -r_max:r_max + 1]
    for _ in range(int(rng.integers(8, 25))):
        y, x = int(rng.integers(r_max, h - r_max)), int(rng.integers(r_max, w - r_max))
        win = (slice(y - r_max, y + r_max + 1), slice(x - r_max, x + r_max + 1))
        if piece[win].any():
            continue
        r = rng.uniform(3, 15) / spec.px_um
        out[win] = np.maximum(out[win], np.clip((r - np.hypot(yy, xx)) / 2.0, 0, 1))
    return out


def _stain_vectors(center: str, rng) -> tuple[np.ndarray, np.ndarray, float, float]:
    dh, de, sh, se = CENTER_STAINS[center]
    hv = _H + np.asarray(dh, np.float32) + rng.normal(0, 0.015, 3).astype(np.float32)
    ev = _E + np.asarray(de, np.float32) + rng.normal(0, 0.015, 3).astype(np.float32)
    hv, ev = np.abs(hv) / np.linalg.norm(hv), np.abs(ev) / np.linalg.norm(ev)
    return hv, ev, sh * rng.uniform(0.95, 1.05), se * rng.uniform(0.95, 1.05)


def render_slide(spec: SlideSpec, *, fields: dict[str, np.ndarray] | None = None) -> RenderedSlide:
    """Paint one slide from its spec (deterministic).

    Parameters
    ----------
    spec
        The slide.
    fields
        Program maps to paint with, shape (H, W) each, instead of
        :func:`program_fields` (the tumour cohort passes its clone maps here).
    """
    if spec.tissue not in TISSUES:
        raise InputError(f"Unknown tissue '{spec.tissue}'. Available: {list(TISSUES)}")
    if spec.center not in CENTER_STAINS:
        raise InputError(f"Unknown centre '{spec.center}'. Available: {list(CENTER_STAINS)}")
    rng = np.random.default_rng(spec.seed)
    shape = (int(round(spec.height_um / spec.px_um)), int(round(spec.width_um / spec.px_um)))
    if fields is None:
        fields = program_fields(spec, shape, rng)
    lay = TISSUES[spec.tissue].painter(shape, fields, spec.px_um, rng)
    piece, holes, soft = _outline(shape, spec, rng)
    tissue = piece & ~holes
    s = float(np.clip(spec.ischemic_severity, 0, 1))
    hema = lay.hema  # the painter's own arrays, multiplied in place (structures are already thresholded)
    if s > 0:
        hema = ndi.gaussian_filter(hema, 1.6 * s / spec.px_um)
    hema *= soft
    hema *= np.float32(1 - 0.45 * s)
    eosin = lay.eosin
    eosin *= soft
    eosin *= np.float32(1 - 0.25 * s)
    debris = _debris(shape, piece, spec, rng)
    hema += debris
    eosin += np.float32(0.6) * debris
    hv, ev, sh, se = _stain_vectors(spec.center, rng)
    rgb = np.empty((*shape, 3), np.uint8)
    od = np.empty(shape, np.float32)
    tmp = np.empty(shape, np.float32)
    for c in range(3):  # Beer-Lambert per channel, in place: exp(-(h a + e b + 0.04)) as exp(h (-a) + e (-b) - 0.04)
        np.multiply(hema, -np.float32(1.1 * sh * hv[c]), out=od)  # IEEE negation is exact: the same bits
        np.multiply(eosin, -np.float32(1.1 * se * ev[c]), out=tmp)
        od += tmp
        od += -np.float32(0.04)
        np.exp(od, out=od)
        od *= np.float32(250.0)
        rng.standard_normal(dtype=np.float32, out=tmp)
        tmp *= np.float32(2.5)
        od += tmp
        np.clip(od, 0, 255, out=od)
        rgb[..., c] = od
    structures = {k: m & tissue for k, m in lay.structures.items()}
    return RenderedSlide(spec=spec, rgb=rgb, tissue=tissue, structures=structures, fields=fields)
