"""The synthetic GTEx-like cohort: donors, samples, planted truth, files.

Generative model (all on the log2(1 + TPM) scale; documented in notebook 00)::

    x[g, s] = mu[g] + T[g, tissue(s)]                       tissue-specific genes
            + sum_k B[g, k] * P[s, k]                       program modules (image-coupled)
            + gamma[g] * z_isch[s]                          ischemia stress module
            + delta[g] * (SMRIN[s] - 7)                     RNA-degradation module
            + C[g, center(s)] + X[g] * female(s)            centre offset, sex genes
            + sigma[g] * eps[g, s]

``P[s, k]`` are the latent programs (``nuclear_density``, ``stroma_fraction``,
``lumen_size``): unit variance within tissue, 30 % of it shared by a donor's
tissues. The same ``P[s, k]`` drives the look of the sample's slide
(:mod:`histo_utils.synthetic.histology`), so image features can recover
them. Ischemic time fades the slide and drives the stress module (a true
confounder of image-expression associations); RIN drives its module and not
the image; the centre shifts stain colour and adds a small expression offset;
AGE has no planted effect (a null control).

Files are written exactly as GTEx ships them (see :mod:`histo_utils.io`), plus
``truth/`` with everything that was planted.
"""
from __future__ import annotations

import json
import logging
import os
import string
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..distributed import process_pool
from ..io import atomic_path, params_key, write_gct, write_gmt, write_json, write_table
from ..slides import write_aperio_svs
from .histology import PROGRAMS, TISSUES, SlideSpec, render_slide
from ..errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

__all__ = ["CohortParams", "design_cohort", "simulate_expression", "expression_only_cohort", "expression_only_log",
           "make_cohort", "render_truth", "ISCHEMIC_MAX_MIN", "ischemic_severity", "FILE_NAMES"]

#: file names of the synthetic cohort (GTEx v8 style, with 'Synthetic' in place of the release)
FILE_NAMES = {
    "expression": "GTEx_Synthetic_gene_tpm.gct.gz",
    "sample_attributes": "GTEx_Synthetic_Annotations_SampleAttributesDS.txt",
    "subject_phenotypes": "GTEx_Synthetic_Annotations_SubjectPhenotypesDS.txt",
    "gene_sets": "synthetic_gene_sets.gmt",
}
ISCHEMIC_MAX_MIN = 1800.0


@dataclass(frozen=True)
class CohortParams:
    """Size and effect sizes of the synthetic cohort (see notebook 00)."""

    seed: int = 0
    tissues: tuple[str, ...] = ("Thyroid", "Muscle", "Liver", "Adipose Tissue", "Pancreas")
    samples_per_tissue: int = 40
    tissues_per_donor: int = 3
    n_genes: int = 2000
    module_size: int = 30
    tissue_genes: int = 40
    frac_low: float = 0.15
    n_constant: int = 4
    n_decoys_per_size: int = 3
    program_loading: tuple[float, float] = (0.5, 1.0)
    donor_share: float = 0.3
    ischemia_loading: tuple[float, float] = (0.5, 1.0)
    rin_loading: tuple[float, float] = (0.25, 0.5)
    center_sd: float = 0.12
    noise_sd: tuple[float, float] = (0.25, 0.5)
    slide_width_um: float = 2560.0
    slide_height_um: float = 2048.0
    paint_um: float = 1.0
    mpp: float = 0.4990
    within_sd: float = 0.35
    n_slides_without_rna: int = 2
    n_rna_without_slide: int = 2
    n_duplicate_rna: int = 2
    n_corrupt_slides: int = 1

    def key(self) -> str:
        return params_key(self)


def ischemic_severity(minutes) -> np.ndarray:
    """Image-fading severity in [0, 1] from ischemic time: log1p(max(t, 0)) / log1p(1800)."""
    t = np.clip(np.asarray(minutes, float), 0, ISCHEMIC_MAX_MIN)
    return np.log1p(t) / np.log1p(ISCHEMIC_MAX_MIN)


def _code(rng, n, alphabet=string.digits + string.ascii_uppercase) -> str:
    return "".join(rng.choice(list(alphabet), n))


# --------------------------------------------------------------------------
# design: donors, samples, programs, confounders
# --------------------------------------------------------------------------
def design_cohort(p: CohortParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw donors and samples with their programs and confounders.

    Returns
    -------
    subjects : DataFrame, one row per donor (``SUBJID SEX AGE DTHHRDY``)
    samples : DataFrame, one row per RNA sample or slide, with GTEx IDs,
        tissue, programs, confounders, and the planted file problems
        (``has_slide``, ``has_rna``, ``duplicate_of``, ``corrupt``).
    """
    for t in p.tissues:
        if t not in TISSUES:
            raise InputError(f"Unknown tissue '{t}'. Available: {list(TISSUES)}")
    if p.tissues_per_donor > len(p.tissues):
        raise InputError(f"tissues_per_donor ({p.tissues_per_donor}) exceeds the number of tissues ({len(p.tissues)}).")
    rng = np.random.default_rng(np.random.SeedSequence([p.seed, 1]))
    n_t = len(p.tissues)
    n_donors = int(np.ceil(p.samples_per_tissue * n_t / p.tissues_per_donor))
    ids: set[str] = set()
    while len(ids) < n_donors:
        ids.add("GTEX-S" + _code(rng, 4))
    donors = sorted(ids)
    sex = rng.choice([1, 2], n_donors, p=[0.66, 0.34])
    age = rng.choice(["20-29", "30-39", "40-49", "50-59", "60-69", "70-79"], n_donors,
                     p=[0.08, 0.08, 0.16, 0.32, 0.30, 0.06])
    hardy = rng.choice([0, 1, 2, 3, 4, -1], n_donors, p=[0.35, 0.1, 0.3, 0.1, 0.1, 0.05])
    subjects = pd.DataFrame({"SUBJID": donors, "SEX": sex, "AGE": age,
                             "DTHHRDY": pd.array(np.where(hardy < 0, pd.NA, hardy), dtype="Int64")})
    donor_programs = rng.standard_normal((n_donors, len(PROGRAMS)))

    # each tissue gets exactly samples_per_tissue donors, donors get ~tissues_per_donor tissues
    load = np.zeros(n_donors)
    rows = []
    for t in p.tissues:
        order = np.lexsort((rng.random(n_donors), load))
        chosen = np.sort(order[: p.samples_per_tissue])
        load[chosen] += 1
        for d in chosen:
            rows.append((d, t))
    rows.sort()
    recs = []
    for d, t in rows:
        tt = TISSUES[t]
        img = f"{donors[d]}-{tt.site}"
        own = rng.standard_normal(len(PROGRAMS))
        prog = np.sqrt(p.donor_share) * donor_programs[d] + np.sqrt(1 - p.donor_share) * own
        # ischemic time: surgical (short) or post-mortem (long, skewed); a few <= 0 as in GTEx
        if rng.random() < 0.25:
            isch = rng.normal(90, 40)
        else:
            isch = rng.lognormal(np.log(600), 0.5)
        if rng.random() < 0.03:
            isch = -rng.integers(0, 60)
        isch = int(np.clip(round(isch), -59, ISCHEMIC_MAX_MIN))
        sev = float(ischemic_severity(isch))
        rin = float(np.clip(np.round(rng.normal(7.4 - 1.2 * (sev - 0.7), 0.9), 1), 3.0, 10.0))
        recs.append({
            "subject_index": d, "SUBJID": donors[d], "image_id": img,
            "SAMPID": f"{img}-SM-{_code(rng, 5)}",
            "SMTS": tt.smts, "SMTSD": tt.smtsd, "SMUBRID": tt.uberon, "tissue_key": t,
            **{f"program_{k}": float(v) for k, v in zip(PROGRAMS, prog)},
            "SMTSISCH": isch, "ischemic_severity": sev, "SMRIN": rin,
            "SMCENTER": rng.choice(["B1", "C1", "D1"], p=[0.45, 0.35, 0.20]),
            "SMATSSCR": int(np.clip(np.round(3 * sev * rng.uniform(0.6, 1.2) - 0.3), 0, 3)),
            "has_slide": True, "has_rna": True, "duplicate_of": "", "corrupt": False,
        })
    samples = pd.DataFrame(recs)
    # center is per donor (GTEx collection site): take the donor's first draw
    samples["SMCENTER"] = samples.groupby("SUBJID")["SMCENTER"].transform("first")
    samples["SMNABTCH"] = [f"BP-{int(v)}" for v in rng.integers(10000, 99999, len(samples))]

    # planted file problems, on distinct samples
    order = rng.permutation(len(samples))
    take = iter(order)
    for _ in range(p.n_slides_without_rna):
        samples.loc[next(take), "has_rna"] = False
    for _ in range(p.n_rna_without_slide):
        samples.loc[next(take), "has_slide"] = False
    corrupt_idx = [next(take) for _ in range(p.n_corrupt_slides)]
    samples.loc[corrupt_idx, "corrupt"] = True
    dups = []
    for _ in range(p.n_duplicate_rna):
        i = next(take)
        twin = samples.loc[i].copy()
        twin["SAMPID"] = f"{twin['image_id']}-SM-{_code(rng, 5)}"
        twin["SMRIN"] = float(np.clip(twin["SMRIN"] - rng.uniform(0.5, 2.0), 3.0, 10.0).round(1))
        twin["duplicate_of"] = samples.loc[i, "SAMPID"]
        twin["SMNABTCH"] = f"BP-{int(rng.integers(10000, 99999))}"
        dups.append(twin)
    if dups:
        samples = pd.concat([samples, pd.DataFrame(dups)], ignore_index=True)
    samples["slide_seed"] = [int(np.random.SeedSequence([p.seed, 2, i]).generate_state(1)[0])
                             for i in range(len(samples))]
    return subjects, samples.reset_index(drop=True)


# --------------------------------------------------------------------------
# expression
# --------------------------------------------------------------------------
def simulate_expression(p: CohortParams, subjects: pd.DataFrame, samples: pd.DataFrame, *,
                        decouple: bool | str = False, noise_stream: int | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """Draw TPM for every sample with RNA, from the model in the module docstring.

    With ``decouple=True`` every path from a sample's slide to its expression
    is cut: the programs, the ischemia stress, RIN and the centre offset of
    the expression are drawn independently of the values that paint the slide
    (a separate random stream; genes, coefficients and noise stay the same).
    The tissue-specific genes still follow the tissue. This is the null
    cohort of notebook 04: image features and expression share nothing
    within tissue. With ``decouple="programs"`` only the programs are
    redrawn: what image and expression still share comes from the technical
    confounders alone (the control of notebook 05).

    ``noise_stream`` draws the per-sample noise from a separate random
    stream (same genes and coefficients): for other samples of the same
    gene model, e.g. the expression-only cohort of notebook 09.

    Returns
    -------
    tpm : DataFrame, shape (n_genes, n_rna_samples)
        Indexed by versioned Ensembl-style IDs; ``attrs["description"]`` the symbols.
    genes : DataFrame, one row per gene
        Role and every planted coefficient (the truth).
    gene_sets : dict
        The GMT content: planted modules and same-size decoys.
    """
    rng = np.random.default_rng(np.random.SeedSequence([p.seed, 3]))
    n = p.n_genes
    ids = np.array([f"ENSG9{i:010d}.1" for i in rng.choice(10 ** 7, n, replace=False)])
    symbols = np.array([f"SG{i:05d}" for i in range(n)])
    perm = rng.permutation(n)  # role assignment in a random order
    role = np.array(["noise"] * n, dtype=object)
    pos = 0

    def take(k, name):
        nonlocal pos
        if pos + k > n:
            raise InputError(f"n_genes={n} is too small for the planted modules; raise it.")
        idx = perm[pos:pos + k]
        role[idx] = name
        pos += k
        return idx

    modules = {f"program_{k}": take(p.module_size, f"program_{k}") for k in PROGRAMS}
    modules["ischemia"] = take(p.module_size, "ischemia")
    modules["rin"] = take(p.module_size, "rin")
    sex_idx = take(10, "sex")
    tissue_idx = {t: take(p.tissue_genes, f"tissue_{t}") for t in p.tissues}
    const_idx = take(p.n_constant, "constant")
    low_idx = take(int(p.frac_low * n), "low")

    mu = rng.normal(3.5, 1.5, n).clip(0.8, 9)
    mu[low_idx] = rng.uniform(0.0, 0.25, len(low_idx))
    sigma = rng.uniform(*p.noise_sd, n)
    sigma[low_idx] *= 0.2
    B = np.zeros((n, len(PROGRAMS)))
    for k, prog in enumerate(PROGRAMS):
        B[modules[f"program_{prog}"], k] = rng.uniform(*p.program_loading, p.module_size)
    gamma = np.zeros(n)
    gamma[modules["ischemia"]] = rng.uniform(*p.ischemia_loading, p.module_size)
    delta = np.zeros(n)
    delta[modules["rin"]] = rng.uniform(*p.rin_loading, p.module_size)
    T = np.zeros((n, len(p.tissues)))
    for j, t in enumerate(p.tissues):
        T[tissue_idx[t], j] = rng.uniform(3, 6, p.tissue_genes)
        mu[tissue_idx[t]] = rng.uniform(0.0, 1.0, p.tissue_genes)
    X = np.zeros(n)
    X[sex_idx[:5]] = 5.0              # female-only (XIST-like)
    mu[sex_idx[5:]] += 4.0            # male-only (Y-like): on, minus 4 in females
    X[sex_idx[5:]] = -4.0
    mu[sex_idx[:5]] = 0.1
    centers = ["B1", "C1", "D1"]
    C = rng.normal(0, p.center_sd, (n, 3))
    C -= C.mean(1, keepdims=True)

    rna = samples[samples["has_rna"]].reset_index(drop=True)
    m = len(rna)
    P = rna[[f"program_{k}" for k in PROGRAMS]].to_numpy()
    lt = np.log1p(rna["SMTSISCH"].clip(lower=0).to_numpy(float))
    z_isch = (lt - lt.mean()) / (lt.std() + 1e-9)
    female = rna["SUBJID"].map(subjects.set_index("SUBJID")["SEX"]).to_numpy() == 2
    tj = rna["tissue_key"].map({t: j for j, t in enumerate(p.tissues)}).to_numpy()
    cj = rna["SMCENTER"].map({c: j for j, c in enumerate(centers)}).to_numpy()
    rin = rna["SMRIN"].to_numpy(dtype=np.float64)
    if decouple not in (False, True, "all", "programs"):
        raise InputError(f"decouple={decouple!r} not available: False, True/'all' or 'programs'.")
    if decouple:
        other = np.random.default_rng(np.random.SeedSequence([p.seed, 4]))
        P = other.standard_normal(P.shape)
        if decouple != "programs":
            z_isch = other.permutation(z_isch)
            cj = other.permutation(cj)
            rin = other.permutation(rin)  # RIN follows ischemia, which fades the slide: cut that path too
    noise_rng = rng if noise_stream is None else np.random.default_rng(np.random.SeedSequence([p.seed, 3, noise_stream]))
    x = (mu[:, None] + T[:, tj] + B @ P.T + gamma[:, None] * z_isch[None]
         + delta[:, None] * (rin - 7.0)[None]
         + C[:, cj] + X[:, None] * female[None] + sigma[:, None] * noise_rng.standard_normal((n, m)))
    x = np.clip(x, 0, None)
    tpm = np.exp2(x) - 1.0
    # one shift s on the log2(1 + TPM) scale so that samples sum to ~1e6 TPM: log2(1 + TPM) = x + s exactly,
    # so every planted effect stays linear on the scale the notebooks analyse (a multiplicative scale on TPM
    # would not: log2(1 + c(2^x - 1)) is steep near x = 0). x is floored at 0: a detection floor at s.
    # The low genes keep their sub-1-TPM level and the constant genes their value.
    scaled = np.ones(n, bool)
    scaled[low_idx] = scaled[const_idx] = False
    tpm[const_idx[:2]] = 0.0
    tpm[const_idx[2:]] = 5.0
    target = 1e6 - tpm[~scaled].sum(0).mean()
    shift = float(np.log2((target + scaled.sum()) / np.exp2(x[scaled]).sum(0).mean()))
    tpm[scaled] = np.exp2(x[scaled] + shift) - 1.0
    df = pd.DataFrame(tpm, index=pd.Index(ids, name="Name"), columns=rna["SAMPID"].to_numpy())
    df.attrs["description"] = pd.Series(symbols, index=df.index)

    genes = pd.DataFrame({"Name": ids, "Description": symbols, "role": role, "mu": mu,
                          "log2_shift": np.where(scaled, shift, 0.0), "noise_sd": sigma,
                          **{f"loading_{k}": B[:, i] for i, k in enumerate(PROGRAMS)},
                          "loading_ischemia": gamma, "loading_rin": delta,
                          **{f"tissue_effect_{t}": T[:, j] for j, t in enumerate(p.tissues)},
                          "female_effect": X})

    # gene sets: planted modules (by symbol), tissue sets, and decoys of the same sizes
    sets: dict[str, list[str]] = {}
    for name, idx in modules.items():
        sets[f"PLANTED_{name.upper()}"] = sorted(symbols[idx])
    for t, idx in tissue_idx.items():
        sets[f"PLANTED_TISSUE_{t.upper().replace(' ', '_')}"] = sorted(symbols[idx])
    pool = symbols[role == "noise"]
    if len(pool) < max(p.module_size, p.tissue_genes):
        raise InputError(f"n_genes={n} leaves {len(pool)} noise genes, too few to draw decoy sets of "
                         f"{max(p.module_size, p.tissue_genes)}; raise n_genes or lower the module sizes.")
    for size in sorted({p.module_size, p.tissue_genes}):
        for d in range(p.n_decoys_per_size * (len(modules) if size == p.module_size else 1)):
            sets[f"DECOY_{size}_{d + 1:02d}"] = sorted(rng.choice(pool, size, replace=False))
    return df, genes, sets


# --------------------------------------------------------------------------
# slides
# --------------------------------------------------------------------------
def slide_spec(p: CohortParams, row: pd.Series | dict) -> SlideSpec:
    """The :class:`SlideSpec` of one sample row of the design."""
    return SlideSpec(
        image_id=row["image_id"], tissue=row["tissue_key"], seed=int(row["slide_seed"]),
        programs={k: float(row[f"program_{k}"]) for k in PROGRAMS},
        width_um=p.slide_width_um, height_um=p.slide_height_um, px_um=p.paint_um,
        ischemic_severity=float(row["ischemic_severity"]), center=str(row["SMCENTER"]),
        within_sd=p.within_sd,
    )


_MALLOC_TUNED = False


def _reuse_freed_memory() -> None:
    """Keep freed slide-sized buffers in this process's heap for the next slide (glibc only).

    Painting a slide allocates and frees dozens of 20-60 MB arrays. glibc's
    defaults hand most of them back to the kernel on ``free`` and take fresh
    zeroed pages on the next allocation: ~50,000 page faults and ~0.2 s of
    system time per slide (about 12 % of a slide's CPU time). With a 32 MB
    mmap threshold and a 1 GB trim threshold the pages are reused instead
    (same peak memory). Called once per painting worker process, never in the
    caller's own process; a no-op where glibc's ``mallopt`` is not available.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 64 << 20)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): keep the allocator's defaults
        log.debug("mallopt not available; painting workers keep the default allocator settings")


def _write_slide_in_worker(p: CohortParams, row: dict, slides_dir: str, truth_dir: str, mask_um: float) -> str:
    """Pool worker entry: :func:`_write_slide` after :func:`_reuse_freed_memory`."""
    _reuse_freed_memory()
    return _write_slide(p, row, slides_dir, truth_dir, mask_um)


def _write_slide(p: CohortParams, row: dict, slides_dir: str, truth_dir: str, mask_um: float) -> str:
    """Worker: paint one slide, write the SVS and its true tissue mask (each skipped if present)."""
    dest = Path(slides_dir) / f"{row['image_id']}.svs"
    mask_path = Path(truth_dir) / "masks" / f"{row['image_id']}.png"
    if dest.exists() and mask_path.exists():
        return row["image_id"]
    r = render_slide(slide_spec(p, row))
    h, w = r.rgb.shape[:2]
    up = p.paint_um / p.mpp
    level0_img = Image.fromarray(r.rgb).resize((int(round(w * up)), int(round(h * up))), Image.BILINEAR)
    level0 = np.asarray(level0_img)
    ds = max(1, int(round(mask_um / p.paint_um)))
    if not mask_path.exists():  # a run killed between the mask and the slide left this slide's mask (deterministic): keep it
        mask = Image.fromarray(r.tissue.astype(np.uint8) * 255).reduce(ds)
        with atomic_path(mask_path) as tmp:
            mask.point(lambda v: 255 if v >= 128 else 0).save(tmp, format="PNG")
    if row.get("corrupt"):
        # a planted damaged file: a valid SVS cut short, as an interrupted download leaves it
        with atomic_path(dest) as tmp:
            write_aperio_svs(tmp, level0, mpp=p.mpp, objective_power=20, image=level0_img)
            data = tmp.read_bytes()
            tmp.write_bytes(data[: len(data) // 3])
    else:
        write_aperio_svs(dest, level0, mpp=p.mpp, objective_power=20, image=level0_img,
                         extra={"Filename": row["image_id"], "Synthetic": "histo_utils"})
    return row["image_id"]


def render_truth(p: CohortParams, row: pd.Series | dict):
    """Re-paint a slide of the cohort to get its true structure masks and program maps.

    Deterministic: the same pixels as the slide file (before JPEG), with
    ``structures`` (nuclei, stroma, lumen, ...) and ``fields`` at ``p.paint_um``.
    """
    return render_slide(slide_spec(p, row))


# --------------------------------------------------------------------------
# everything
# --------------------------------------------------------------------------
def make_cohort(out_dir: str | os.PathLike, params: CohortParams = CohortParams(), *, workers: int = 1,
                mask_um: float = 8.0, progress: bool = True) -> dict[str, Path]:
    """Write the synthetic cohort into ``out_dir`` in the GTEx layout, with its truth.

    A rerun with the same parameters only paints the slides that are missing;
    with other parameters it refuses to mix cohorts (delete the folder or
    choose another).

    Layout::

        out_dir/
          GTEx_Synthetic_gene_tpm.gct.gz
          GTEx_Synthetic_Annotations_SampleAttributesDS.txt
          GTEx_Synthetic_Annotations_SubjectPhenotypesDS.txt
          synthetic_gene_sets.gmt
          slides/<image id>.svs
          truth/cohort.json, samples.tsv, genes.tsv, gene_sets.tsv, masks/<image id>.png

    Parameters
    ----------
    out_dir : data directory to write (created)
    params : CohortParams (seed, tissues, sizes, effect sizes)
    workers : processes painting slides
    mask_um : resolution of the planted masks, microns per pixel
    progress : show a progress bar

    Returns
    -------
    dict of the written paths.
    """
    out = Path(out_dir)
    truth = out / "truth"
    slides_dir = out / "slides"
    stamp = truth / "cohort.json"
    if stamp.exists():
        old = json.loads(stamp.read_text()).get("key")
        if old != params.key():
            raise OutputExistsError(
                f"'{out}' holds a synthetic cohort made with other parameters (key {old}, now "
                f"{params.key()}). Delete the folder or set another data_dir."
            )
    subjects, samples = design_cohort(params)
    tpm, genes, sets = simulate_expression(params, subjects, samples)

    attrs = samples.copy()
    attrs["SMAFRZE"] = np.where(attrs["has_rna"], "RNASEQ", "EXCLUDE")
    attrs["SMGEBTCH"] = np.where(attrs["has_rna"], "LCSET-" + (attrs.index % 7 + 1).astype(str), "")
    attr_cols = ["SAMPID", "SMATSSCR", "SMCENTER", "SMRIN", "SMTS", "SMTSD", "SMUBRID", "SMTSISCH",
                 "SMNABTCH", "SMGEBTCH", "SMAFRZE"]
    write_gct(tpm, out / FILE_NAMES["expression"])
    write_table(attrs[attr_cols], out / FILE_NAMES["sample_attributes"])
    write_table(subjects, out / FILE_NAMES["subject_phenotypes"])
    desc = {k: ("planted module" if k.startswith("PLANTED") else "decoy: random noise genes") for k in sets}
    write_gmt(sets, out / FILE_NAMES["gene_sets"], descriptions=desc)
    write_table(genes, truth / "genes.tsv")
    write_table(samples, truth / "samples.tsv")
    write_table(pd.DataFrame([(k, len(v), k.startswith("PLANTED")) for k, v in sets.items()],
                             columns=["gene_set", "size", "planted"]), truth / "gene_sets.tsv")

    todo = samples[samples["has_slide"]].drop_duplicates("image_id")
    rows = todo.to_dict("records")
    bar = tqdm(total=len(rows), desc="painting slides", unit="slide", disable=not progress)
    if workers <= 1:
        for r in rows:
            _write_slide(params, r, str(slides_dir), str(truth), mask_um)
            bar.update()
    else:
        with process_pool(workers) as pool:
            futs = [pool.submit(_write_slide_in_worker, params, r, str(slides_dir), str(truth), mask_um) for r in rows]
            for f in as_completed(futs):
                f.result()
                bar.update()
    bar.close()
    write_json({"key": params.key(), "params": asdict(params), "mask_um": mask_um,
                "programs": list(PROGRAMS), "files": FILE_NAMES}, stamp)
    return {"data_dir": out, "slides": slides_dir, "truth": truth,
            **{k: out / v for k, v in FILE_NAMES.items()}}


def planted_coupling(tpm: pd.DataFrame, genes: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Within-tissue correlation of each planted module's mean log2(1+TPM) with each driver.

    A check that the written expression carries what was planted: each program
    module should correlate with its own program and not with the others; the
    ischemia module with log ischemic time; the RIN module with SMRIN.

    Parameters
    ----------
    tpm : DataFrame, shape (n_genes, n_samples), the written expression (GCT orientation)
    genes : DataFrame, ``truth/genes.tsv``
    samples : DataFrame, ``truth/samples.tsv``

    Returns
    -------
    DataFrame, one row per (tissue, module, driver) with Pearson ``r``.
    """
    logx = np.log2(1 + tpm)
    s = samples.set_index("SAMPID").loc[tpm.columns]
    drivers = {**{f"program_{k}": s[f"program_{k}"] for k in PROGRAMS},
               "log_ischemic_time": np.log1p(s["SMTSISCH"].clip(lower=0)), "SMRIN": s["SMRIN"]}
    sym = genes.set_index("Name")["role"].reindex(tpm.index)
    modules = [f"program_{k}" for k in PROGRAMS] + ["ischemia", "rin"]
    rows = []
    for tissue, idx in s.groupby("SMTS").groups.items():
        for mod in modules:
            score = logx.loc[sym == mod, idx].mean(0)
            for dname, d in drivers.items():
                r = np.corrcoef(score.to_numpy(float), d.loc[idx].to_numpy(float))[0, 1]
                rows.append((tissue, mod, dname, float(r)))
    return pd.DataFrame(rows, columns=["tissue", "module", "driver", "r"])


def expression_only_cohort(p: CohortParams, n_samples: int, *, stream: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Expression of new donors from the same gene model, without slides (an expression-only cohort).

    Donors, programs and confounders are drawn anew (seed stream ``stream``); genes, loadings and
    gene sets are those of the cohort made with ``p``. Returns ``(tpm, samples)`` with ``n_samples``
    samples spread over ``p.tissues``.
    """
    from dataclasses import replace

    per_tissue = max(1, int(np.ceil(n_samples / len(p.tissues))))
    q = replace(p, seed=int(np.random.SeedSequence([p.seed, 5, stream]).generate_state(1)[0]),
                samples_per_tissue=per_tissue, n_slides_without_rna=0, n_rna_without_slide=0, n_duplicate_rna=0,
                n_corrupt_slides=0)
    subjects, samples = design_cohort(q)
    samples = samples.iloc[:n_samples].reset_index(drop=True)
    tpm, _, _ = simulate_expression(p, subjects, samples, noise_stream=stream)
    return tpm, samples


def expression_only_log(data_dir: str | os.PathLike, n_samples: int, *, stream: int = 1) -> pd.DataFrame:
    """log2(1 + TPM) of :func:`expression_only_cohort` of the synthetic cohort in ``data_dir``, samples x genes.

    The autoencoder's pre-training samples of notebook 09 (``simulate`` of
    :func:`histo_utils.radiogenomics.pretraining_expression`).
    """
    pre_tpm, _ = expression_only_cohort(load_cohort_params(data_dir), n_samples, stream=stream)
    return np.log2(1 + pre_tpm.T)


def load_cohort_params(data_dir: str | os.PathLike) -> CohortParams:
    """The :class:`CohortParams` a synthetic data directory was made with."""
    d = json.loads((Path(data_dir) / "truth" / "cohort.json").read_text())["params"]
    return CohortParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
