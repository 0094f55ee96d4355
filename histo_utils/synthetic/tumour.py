"""A synthetic TCGA-like tumour cohort with spatial clones, for notebook 08 (Levy-Jurgenson et al. 2020).

Generative model (documented in notebook 08)::

    patient p: one tumour made of n_p clones (1-4), each clone c with a binary state s[c, j] for every
               trait j (high/low expression of a gene or miRNA), drawn independently
    slide:     the clones tile the tissue as a warped, weighted Voronoi partition (the clone map);
               trait j shifts the program it drives (``trait_programs[j]``) by +/- trait_effect[j] / 2
               inside its high/low clones, so each clone looks like its state
    bulk:      log2 expression of trait j = level_low + range * a[p, j] + noise,
               a[p, j] = sum_c area[c] * s[c, j]  (area fractions within the DX1 slide's tissue)
    truth:     true HTI of a slide = HTI of its clone combinations weighted by area (tiles with no
               positive trait left out, as in the paper)
    survival:  hazard = h0 * exp(log_hr_hti * HTI_true + log_hr_stage * (stage - 2) + log_hr_age * (age - 60) / 10),
               administrative censoring uniform over [censor_min, censor_max] months; the clinical subtype
               has no planted effect (the paper's Fig 6: subtypes are not associated with HTI)

The programs act locally in the painter for nuclear density and stroma; ``lumen_size`` also sets the
spacing of glands from the slide's mean, so a lumen clone looks different in a mixed slide than in a pure
one (its tiles are then harder to call): prefer the first two for traits.

How large a shift must be to show at the tile scale depends on the program. Nuclear density changes every
tile (+/-1 SD already separates 128 um tiles of high and low clones: the true nuclei mask gives a tile AUC
of 0.98). The Pancreas painter draws stroma only where a ~220 um noise field is near zero, in bands whose
width grows with ``exp(0.8 * stroma_fraction)``: at +/-1 SD they cover 1 % against 11 % of the tissue and
38 % of a high clone's tiles hold none (true stroma mask: tile AUC 0.78); at +/-3 SD a high clone is a
stroma-rich region (53 % stroma, 14 % of its tiles without any; tile AUC 0.94) and a low clone is
stroma-poor (0.2 %). Hence one ``trait_effect`` per trait, default ``(2.0, 6.0)``.

Files are written in the layout of :mod:`histo_utils.tcga`, plus ``truth/``: the clone maps (PNG, clone
label + 1 at ``map_um`` microns per pixel), one row per clone (state, area) and per slide (true mix, true
HTI, planted hazard).
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from ..distributed import process_pool
from ..hti import combination_codes, hti_from_proportions
from ..io import atomic_path, params_key, read_table, write_json, write_table
from ..slides import write_aperio_svs
from .histology import PROGRAMS, TISSUES, SlideSpec, render_slide, smooth_noise
from ..errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

__all__ = ["TumourParams", "design_tumours", "clone_map", "make_tumour_cohort", "tile_truth", "COHORT_NAME"]

COHORT_NAME = "TCGA-SYN"
_STAGES = np.array(["Stage I", "Stage II", "Stage III", "Stage IV"])
_SUBTYPES = np.array(["LumA", "LumB", "Her2", "Basal"])


@dataclass(frozen=True)
class TumourParams:
    """Size and planted effects of the tumour cohort (see the module docstring and notebook 08)."""

    seed: int = 0
    n_patients: int = 200
    traits: tuple[str, ...] = ("MKI67", "miR-17-5p")
    trait_programs: tuple[str, ...] = ("nuclear_density", "stroma_fraction")
    trait_effect: tuple[float, ...] = (2.0, 6.0)
    tissue: str = "Pancreas"
    clone_probs: tuple[float, ...] = (0.35, 0.3, 0.2, 0.15)
    second_slide_fraction: float = 0.1
    slide_width_um: float = 2048.0
    slide_height_um: float = 1536.0
    paint_um: float = 2.0
    mpp: float = 2.0
    map_um: float = 8.0
    within_sd: float = 0.25
    expr_low: float = 5.0
    expr_range: float = 3.0
    expr_noise: float = 0.25
    n_background_genes: int = 50
    log_hr_hti: float = 2.0
    log_hr_stage: float = 0.4
    log_hr_age: float = 0.2
    median_months: float = 60.0
    censor_months: tuple[float, float] = (24.0, 144.0)

    def __post_init__(self):
        if len(self.traits) < 2:
            raise InputError(f"A tumour cohort needs k >= 2 traits for HTI, got {list(self.traits)}.")
        if np.ndim(self.trait_effect) == 0:  # one shift for every trait
            object.__setattr__(self, "trait_effect", (float(self.trait_effect),) * len(self.traits))
        object.__setattr__(self, "trait_effect", tuple(float(e) for e in self.trait_effect))
        if len(self.trait_effect) != len(self.traits) or min(self.trait_effect) <= 0:
            raise InputError(f"trait_effect must be one positive shift per trait ({len(self.traits)}), got "
                             f"{list(self.trait_effect)}.")
        if len(self.trait_programs) != len(self.traits):
            raise InputError(f"trait_programs ({len(self.trait_programs)}) must name one program per trait "
                             f"({len(self.traits)}).")
        bad = [p for p in self.trait_programs if p not in PROGRAMS]
        if bad or len(set(self.trait_programs)) != len(self.trait_programs):
            raise InputError(f"trait_programs must be distinct programs of {list(PROGRAMS)}, got "
                             f"{list(self.trait_programs)}.")
        if self.tissue not in TISSUES:
            raise InputError(f"Tumour tissue '{self.tissue}' has no painter. Available: {list(TISSUES)}.")
        if abs(sum(self.clone_probs) - 1) > 1e-6:
            raise InputError(f"clone_probs must sum to 1, got {sum(self.clone_probs)}.")

    def key(self) -> str:
        return params_key(self)


def _barcode(rng) -> str:
    alphabet = list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")
    return "".join(rng.choice(alphabet, 4))


def _uuid(rng) -> str:
    h = "".join(rng.choice(list("0123456789ABCDEF"), 32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def design_tumours(p: TumourParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Draw patients, their clones and their slides.

    Returns
    -------
    patients : one row per patient: barcode, age, gender, stage, subtype
    clones : one row per (patient, clone): ``state_<trait>`` (0/1), ``weight`` (relative size)
    slides : one row per slide: ``image_id`` (slide barcode), ``file`` (``<barcode>.<uuid>.svs``), patient,
        ``dx``, ``seed``
    """
    rng = np.random.default_rng(np.random.SeedSequence([p.seed, 11]))
    codes: set[str] = set()
    while len(codes) < p.n_patients:
        codes.add(_barcode(rng))
    barcodes = [f"TCGA-SY-{c}" for c in sorted(codes)]
    n = len(barcodes)
    patients = pd.DataFrame({
        "bcr_patient_barcode": barcodes,
        "age_at_initial_pathologic_diagnosis": np.clip(np.round(rng.normal(58, 12, n)), 26, 90).astype(int),
        "gender": rng.choice(["FEMALE", "MALE"], n, p=[0.9, 0.1]),
        "ajcc_pathologic_tumor_stage": rng.choice(_STAGES, n, p=[0.2, 0.5, 0.22, 0.08]),
        "subtype": rng.choice(_SUBTYPES, n, p=[0.4, 0.25, 0.15, 0.2]),
    })
    k = len(p.traits)
    crow, srow = [], []
    for i, b in enumerate(barcodes):
        n_cl = int(rng.choice(np.arange(1, len(p.clone_probs) + 1), p=p.clone_probs))
        states = rng.integers(0, 2, (n_cl, k))
        weights = rng.uniform(0.5, 1.5, n_cl)
        for c in range(n_cl):
            crow.append({"patient": b, "clone": c, "weight": float(weights[c]),
                         **{f"state_{t}": int(states[c, j]) for j, t in enumerate(p.traits)}})
        n_dx = 2 if rng.random() < p.second_slide_fraction else 1
        for dx in range(1, n_dx + 1):
            iid = f"{b}-01Z-00-DX{dx}"
            srow.append({"image_id": iid, "file": f"{iid}.{_uuid(rng)}.svs", "patient": b, "dx": dx,
                         "seed": int(np.random.SeedSequence([p.seed, 12, i, dx]).generate_state(1)[0])})
    return patients, pd.DataFrame(crow), pd.DataFrame(srow)


def clone_map(shape: tuple[int, int], weights: np.ndarray, rng: np.random.Generator, *,
              warp_px: float = 6.0) -> np.ndarray:
    """A warped, weighted Voronoi partition of a (H, W) grid into ``len(weights)`` clones.

    Each clone grows from a random seed; a clone of larger weight claims more area (distances are divided
    by the weight) and smooth noise bends the borders. Returns int labels 0..n-1, shape (H, W); every clone
    owns at least one pixel.
    """
    h, w = shape
    n = len(weights)
    if n == 1:
        return np.zeros(shape, np.int16)
    ys = rng.uniform(0.15, 0.85, n) * h
    xs = rng.uniform(0.15, 0.85, n) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = warp_px * np.stack([smooth_noise(shape, max(h, w) / 4, rng) for _ in range(2)])
    d = np.stack([np.hypot(yy + warp[0] - y, xx + warp[1] - x) / wt for y, x, wt in zip(ys, xs, weights)])
    lab = d.argmin(0).astype(np.int16)
    for c in range(n):  # a seed swallowed by its neighbours still owns its own pixel
        if not (lab == c).any():
            lab[int(np.clip(ys[c], 0, h - 1)), int(np.clip(xs[c], 0, w - 1))] = c
    return lab


def _fields(p: TumourParams, labels: np.ndarray, states: np.ndarray, base: np.ndarray,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Program maps at paint resolution: the clone's trait shift plus smooth within-slide variation."""
    shape = labels.shape
    out = {}
    for k, prog in enumerate(PROGRAMS):
        f = np.full(shape, base[k], np.float32)
        if prog in p.trait_programs:
            j = p.trait_programs.index(prog)
            shift = (states[:, j].astype(np.float32) - 0.5) * p.trait_effect[j]
            f += ndi.gaussian_filter(shift[labels], 8.0 / p.paint_um)  # borders soft over ~10 um
        f += p.within_sd * smooth_noise(shape, 400 / p.paint_um, rng)
        out[prog] = f.astype(np.float32)
    return out


def _paint_one(p: TumourParams, slide: dict, clones: list[dict], base: list[float], slides_dir: str,
               truth_dir: str) -> dict:
    """Worker: paint one slide with its clones, write the SVS, its clone map and clone areas (skip if done)."""
    truth = Path(truth_dir)
    dest = Path(slides_dir) / slide["file"]
    area_path = truth / "clone_areas" / f"{slide['image_id']}.json"
    map_path = truth / "clone_maps" / f"{slide['image_id']}.png"
    if dest.exists() and area_path.exists() and map_path.exists():
        return json.loads(area_path.read_text())
    rng = np.random.default_rng(slide["seed"])
    shape = (int(round(p.slide_height_um / p.paint_um)), int(round(p.slide_width_um / p.paint_um)))
    ds = max(1, int(round(p.map_um / p.paint_um)))
    coarse = (-(-shape[0] // ds), -(-shape[1] // ds))
    weights = np.array([c["weight"] for c in clones])
    lab_coarse = clone_map(coarse, weights, rng)
    labels = np.repeat(np.repeat(lab_coarse, ds, 0), ds, 1)[: shape[0], : shape[1]]
    states = np.array([[c[f"state_{t}"] for t in p.traits] for c in clones])
    fields = _fields(p, labels, states, np.asarray(base, np.float32), rng)
    spec = SlideSpec(image_id=slide["image_id"], tissue=p.tissue, seed=int(slide["seed"]), programs={},
                     width_um=p.slide_width_um, height_um=p.slide_height_um, px_um=p.paint_um)
    r = render_slide(spec, fields=fields)
    counts = np.bincount(labels[r.tissue].ravel(), minlength=len(clones)).astype(float)
    area = counts / max(counts.sum(), 1.0)
    with atomic_path(map_path) as tmp:
        Image.fromarray((lab_coarse + 1).astype(np.uint8)).save(tmp, format="PNG")
    up = p.paint_um / p.mpp
    rgb = r.rgb if abs(up - 1) < 1e-9 else np.asarray(
        Image.fromarray(r.rgb).resize((int(round(shape[1] * up)), int(round(shape[0] * up))), Image.BILINEAR))
    write_aperio_svs(dest, rgb, mpp=p.mpp, objective_power=round(10 / p.mpp, 2),
                     downsamples=(1, 4), extra={"Filename": slide["image_id"], "Synthetic": "histo_utils"})
    info = {"image_id": slide["image_id"], "area": area.tolist(), "tissue_px": int(counts.sum())}
    write_json(info, area_path)
    return info


def _true_hti(areas: np.ndarray, states: np.ndarray) -> float:
    """HTI of a slide's clones, weighted by area (combination code of each clone's positive traits)."""
    props = np.bincount(combination_codes(states), weights=areas, minlength=2 ** states.shape[1])
    return hti_from_proportions(props, k=states.shape[1])


def make_tumour_cohort(out_dir: str | os.PathLike, params: TumourParams = TumourParams(), *, workers: int = 1,
                       progress: bool = True) -> dict[str, Path]:
    """Write the tumour cohort into ``out_dir`` (layout of :mod:`histo_utils.tcga`) with its truth.

    A rerun with the same parameters paints only missing slides; other parameters in the same folder are
    refused (delete it or choose another).

    Parameters
    ----------
    out_dir : the cohort's folder
    params : the cohort's size and planted effects
    workers : processes painting slides
    progress : show a progress bar

    Returns
    -------
    dict of paths: ``data_dir``, ``slides``, ``truth``, ``expression``, ``clinical``
    """
    out = Path(out_dir)
    truth = out / "truth"
    stamp = truth / "tumour.json"
    if stamp.exists():
        old = json.loads(stamp.read_text()).get("key")
        if old != params.key():
            raise OutputExistsError(f"'{out}' holds a tumour cohort made with other parameters (key {old}, now "
                                  f"{params.key()}). Delete the folder or set another tumour_dir.")
    patients, clones, slides = design_tumours(params)
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, 13]))
    base = {b: rng.normal(0, 0.3, len(PROGRAMS)).tolist() for b in patients.bcr_patient_barcode}
    by_patient = {b: g.to_dict("records") for b, g in clones.groupby("patient")}
    (out / "slides").mkdir(parents=True, exist_ok=True)
    rows = slides.to_dict("records")
    infos: dict[str, dict] = {}
    bar = tqdm(total=len(rows), desc="painting tumour slides", unit="slide", disable=not progress)
    args = [(params, s, by_patient[s["patient"]], base[s["patient"]], str(out / "slides"), str(truth))
            for s in rows]
    if workers <= 1:
        for a in args:
            info = _paint_one(*a)
            infos[info["image_id"]] = info
            bar.update()
    else:
        with process_pool(workers) as pool:
            for fut in as_completed([pool.submit(_paint_one, *a) for a in args]):
                info = fut.result()
                infos[info["image_id"]] = info
                bar.update()
    bar.close()

    # clone areas, true mixes and HTI per slide
    k = len(params.traits)
    crows, srows = [], []
    for s in rows:
        cl = by_patient[s["patient"]]
        area = np.asarray(infos[s["image_id"]]["area"])
        states = np.array([[c[f"state_{t}"] for t in params.traits] for c in cl])
        for c, a in zip(cl, area):
            crows.append({"image_id": s["image_id"], **c, "area": float(a)})
        srows.append({"image_id": s["image_id"], "file": s["file"], "patient": s["patient"], "dx": s["dx"],
                      "n_clones": len(cl), **{f"mix_{t}": float(area @ states[:, j]) for j, t in enumerate(params.traits)},
                      "true_hti": _true_hti(area, states)})
    truth_slides = pd.DataFrame(srows)
    dx1 = truth_slides[truth_slides.dx == 1].set_index("patient")

    # bulk expression from the DX1 slide's mixes; background genes
    erng = np.random.default_rng(np.random.SeedSequence([params.seed, 14]))
    samples = [f"{b}-01A" for b in patients.bcr_patient_barcode]
    expr = {}
    for t in params.traits:
        mix = dx1.loc[patients.bcr_patient_barcode, f"mix_{t}"].to_numpy()
        expr[t] = params.expr_low + params.expr_range * mix + erng.normal(0, params.expr_noise, len(mix))
    for g in range(params.n_background_genes):
        expr[f"SYNG{g:04d}"] = erng.normal(erng.uniform(2, 10), erng.uniform(0.3, 1.0), len(samples))
    emat = pd.DataFrame(expr, index=samples).T.round(4)
    emat.index.name = "gene"

    # survival from the true HTI of the DX1 slide and the clinical covariates
    srng = np.random.default_rng(np.random.SeedSequence([params.seed, 15]))
    # a tumour without any positive clone is homogeneous: HTI 0 (the index itself is undefined there)
    h_true = np.nan_to_num(dx1.loc[patients.bcr_patient_barcode, "true_hti"].to_numpy(), nan=0.0)
    stage = np.searchsorted(_STAGES, patients.ajcc_pathologic_tumor_stage.to_numpy()) + 1
    age = patients.age_at_initial_pathologic_diagnosis.to_numpy(float)
    lin = params.log_hr_hti * h_true + params.log_hr_stage * (stage - 2) + params.log_hr_age * (age - 60) / 10
    h0 = np.log(2) / params.median_months
    t_event = srng.exponential(1 / (h0 * np.exp(lin)))
    t_cens = srng.uniform(*params.censor_months, len(lin))
    months = np.minimum(t_event, t_cens)
    clinical = patients.assign(type="SYN", OS=(t_event <= t_cens).astype(int),
                               **{"OS.time": np.maximum(1, np.round(months * 30.44)).astype(int)})
    clinical = clinical[["bcr_patient_barcode", "type", "age_at_initial_pathologic_diagnosis", "gender",
                         "ajcc_pathologic_tumor_stage", "subtype", "OS", "OS.time"]]
    truth_slides = truth_slides.merge(pd.DataFrame({"patient": patients.bcr_patient_barcode, "planted_log_hazard": lin}),
                                      on="patient")

    paths = {"expression": out / f"{COHORT_NAME}.expression.tsv.gz", "clinical": out / f"{COHORT_NAME}.clinical.tsv"}
    write_table(emat, paths["expression"], index=True)
    write_table(clinical, paths["clinical"])
    write_table(truth_slides, truth / "slides.tsv")
    write_table(pd.DataFrame(crows), truth / "clones.tsv")
    write_json({"key": params.key(), "params": asdict(params), "cohort": COHORT_NAME}, stamp)
    return {"data_dir": out, "slides": out / "slides", "truth": truth, **paths}


def load_tumour_params(data_dir: str | os.PathLike) -> TumourParams:
    """The :class:`TumourParams` a synthetic tumour folder was made with (``truth/tumour.json``).

    Parameters
    ----------
    data_dir : the tumour cohort's folder

    Returns
    -------
    TumourParams
    """
    d = json.loads((Path(data_dir) / "truth" / "tumour.json").read_text())["params"]
    return TumourParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def tile_truth(tiles: pd.DataFrame, truth_dir: str | os.PathLike, *, mpp: float) -> pd.DataFrame:
    """True clone and trait states of each tile, from the clone map at the tile's centre.

    Parameters
    ----------
    tiles : DataFrame with ``image_id, x, y, size0`` (level-0 pixels)
    truth_dir : the cohort's ``truth/`` folder
    mpp : level-0 microns per pixel of the slides

    Returns
    -------
    DataFrame aligned with ``tiles``: ``clone`` and ``true_<trait>`` (0/1) columns.
    """
    truth_dir = Path(truth_dir)
    params = json.loads((truth_dir / "tumour.json").read_text())["params"]
    clones = read_table(truth_dir / "clones.tsv")
    traits = params["traits"]
    map_um = params["map_um"]
    out = pd.DataFrame(index=tiles.index, columns=["clone", *[f"true_{t}" for t in traits]], dtype=float)
    for iid, idx in tiles.groupby("image_id").groups.items():
        lab = np.asarray(Image.open(truth_dir / "clone_maps" / f"{iid}.png")).astype(int) - 1
        t = tiles.loc[idx]
        cy = ((t.y + t.size0 / 2) * mpp / map_um).astype(int).clip(0, lab.shape[0] - 1)
        cx = ((t.x + t.size0 / 2) * mpp / map_um).astype(int).clip(0, lab.shape[1] - 1)
        c = lab[cy.to_numpy(), cx.to_numpy()]
        st = clones[clones.image_id == iid].set_index("clone")
        out.loc[idx, "clone"] = c
        for tr in traits:
            out.loc[idx, f"true_{tr}"] = st.loc[c, f"state_{tr}"].to_numpy()
    return out.astype(int)
