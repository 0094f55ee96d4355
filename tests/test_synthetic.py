"""The synthetic cohort: real formats, planted truth present in the files, determinism."""
import hashlib
import os

import numpy as np
import pandas as pd
import openslide
import pytest

from histo_utils import gtex, io, slides
from histo_utils.synthetic import (PROGRAMS, CohortParams, design_cohort, expression_only_log, make_cohort,
                                   planted_coupling, render_truth, simulate_expression)
from histo_utils.synthetic.cohort import expression_only_cohort


def test_files_in_gtex_layout_and_formats(tiny_cohort):
    out, params = tiny_cohort
    files = gtex.locate_gtex_files(out)
    tpm = io.read_gct(files.expression)
    attrs = gtex.read_sample_attributes(files.sample_attributes)
    subj = gtex.read_subject_phenotypes(files.subject_phenotypes)
    truth = io.read_table(out / "truth" / "samples.tsv")
    assert tpm.shape[0] == params.n_genes and (tpm.to_numpy() >= 0).all()
    assert tpm.index.str.match(r"^ENSG\d{11}\.\d+$").all()
    assert tpm.sum(0).mean() == pytest.approx(1e6, rel=2e-3)  # TPM-scaled (written to 4 digits)
    assert set(tpm.columns) == set(attrs.SAMPID[attrs.SMAFRZE == "RNASEQ"])
    assert {"SAMPID", "SMTS", "SMTSD", "SMTSISCH", "SMRIN", "SMCENTER", "SMAFRZE", "SMATSSCR"} <= set(attrs.columns)
    assert list(subj.columns) == ["SUBJID", "SEX", "AGE", "DTHHRDY"]
    assert set(truth.SUBJID) <= set(subj.SUBJID)
    # planted file problems
    assert not set(truth.loc[~truth.has_rna, "SAMPID"]) & set(tpm.columns)
    no_slide = truth.loc[~truth.has_slide, "image_id"]
    assert not any((files.slides_dir / f"{i}.svs").exists() for i in no_slide)
    gmt = io.read_gmt(files.gene_sets)
    assert all(len(v) == params.module_size for k, v in gmt.items() if k.startswith("PLANTED_PROGRAM"))
    assert sum(k.startswith("DECOY") for k in gmt) >= 3


def test_expression_only_log_is_the_log_of_the_expression_only_cohort(tiny_cohort):
    out, params = tiny_cohort
    tpm, _ = expression_only_cohort(params, 9, stream=2)
    pd.testing.assert_frame_equal(expression_only_log(out, 9, stream=2), np.log2(1 + tpm.T))


def test_slides_are_aperio_at_20x(tiny_cohort):
    out, params = tiny_cohort
    truth = io.read_table(out / "truth" / "samples.tsv")
    good = truth[truth.has_slide & ~truth.corrupt].image_id.iloc[0]
    s = slides.open_slide(out / "slides" / f"{good}.svs")
    assert s.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
    assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.499)
    assert s.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "20"
    assert s.level_count >= 3
    assert s.dimensions[0] == pytest.approx(params.slide_width_um / 0.499, abs=2)
    s.close()
    bad = truth[truth.corrupt].image_id.iloc[0]
    with pytest.raises(slides.SlideError):
        s = slides.open_slide(out / "slides" / f"{bad}.svs")
        slides.read_region(s, bad, (0, 0), s.level_count - 1, s.level_dimensions[-1])


def test_expression_carries_planted_modules():
    p = CohortParams(seed=3, samples_per_tissue=30, tissues=("Thyroid", "Liver"), tissues_per_donor=2,
                     n_genes=800, module_size=20, tissue_genes=20)
    subjects, samples = design_cohort(p)
    tpm, genes, sets = simulate_expression(p, subjects, samples)
    c = planted_coupling(tpm, genes, samples).groupby(["module", "driver"]).r.mean().unstack()
    for k in PROGRAMS:
        own = c.loc[f"program_{k}", f"program_{k}"]
        others = [c.loc[f"program_{k}", f"program_{j}"] for j in PROGRAMS if j != k]
        assert own > 0.6 and max(abs(o) for o in others) < 0.3, (k, own, others)
    assert c.loc["ischemia", "log_ischemic_time"] > 0.6
    assert c.loc["rin", "SMRIN"] > 0.5
    # tissue-specific genes peak in their tissue; low genes stay low; constant genes are constant
    logx = np.log2(1 + tpm)
    tissue = samples.set_index("SAMPID").loc[tpm.columns, "SMTS"]
    thy = genes.role.eq("tissue_Thyroid").to_numpy()
    assert (logx[thy].T.groupby(tissue.to_numpy()).mean().T.idxmax(axis=1) == "Thyroid").all()
    assert (tpm[genes.role.eq("low").to_numpy()].median(axis=1) < 0.5).all()
    assert (tpm[genes.role.eq("constant").to_numpy()].nunique(axis=1) == 1).all()


def test_same_seed_same_cohort_any_worker_count(tmp_path):
    p = CohortParams(seed=11, tissues=("Muscle", "Adipose Tissue"), samples_per_tissue=2, tissues_per_donor=1,
                     n_genes=400, module_size=15, tissue_genes=15, slide_width_um=600.0, slide_height_um=600.0,
                     n_corrupt_slides=0, n_duplicate_rna=0, n_rna_without_slide=0, n_slides_without_rna=0)
    make_cohort(tmp_path / "a", p, workers=1, progress=False)
    make_cohort(tmp_path / "b", p, workers=2, progress=False)

    def digest(d):
        h = {}
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.name != "cohort.json":
                h[str(f.relative_to(d))] = hashlib.sha256(f.read_bytes()).hexdigest()
        return h
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    # the pool workers keep freed memory for the next slide; the caller's own process (workers=1 painted
    # above, in this process) keeps glibc's defaults
    from histo_utils.synthetic import cohort as cohort_module
    assert cohort_module._MALLOC_TUNED is False
    # a run killed between a slide's mask and its SVS: the rerun paints the slide and keeps the finished mask
    slide = sorted((tmp_path / "a").rglob("*.svs"))[0]
    mask = next((tmp_path / "a").rglob(f"masks/{slide.stem}.png"))
    slide.unlink()
    os.utime(mask, ns=(1_000_000_000, 1_000_000_000))
    make_cohort(tmp_path / "a", p, workers=1, progress=False)
    assert mask.stat().st_mtime_ns == 1_000_000_000 and digest(tmp_path / "a") == digest(tmp_path / "b")
    other = CohortParams(**{**p.__dict__, "seed": 12})
    _, s1 = design_cohort(p)
    _, s2 = design_cohort(other)
    assert not np.allclose(s1.program_nuclear_density, s2.program_nuclear_density)
    # another cohort in the same folder is refused, not mixed
    with pytest.raises(FileExistsError, match="other parameters"):
        make_cohort(tmp_path / "a", other, progress=False)


def test_programs_change_the_picture():
    """Nuclear density program up => more haematoxylin-dense pixels in the true nuclei mask."""
    p = CohortParams(slide_width_um=700.0, slide_height_um=700.0)
    base = {"image_id": "GTEX-SXXXX-0126", "tissue_key": "Thyroid", "slide_seed": 5, "ischemic_severity": 0.0,
            "SMCENTER": "B1", **{f"program_{k}": 0.0 for k in PROGRAMS}}
    frac = {}
    for v in (-1.5, 1.5):
        r = render_truth(p, {**base, "program_nuclear_density": v})
        frac[v] = r.structures["nuclei"].sum() / r.tissue.sum()
    assert frac[1.5] > 1.8 * frac[-1.5]
    lum = {}
    for v in (-1.5, 1.5):
        r = render_truth(p, {**base, "program_lumen_size": v})
        lab = __import__("scipy.ndimage", fromlist=["label"]).label(r.structures["lumen"])[0]
        lum[v] = r.structures["lumen"].sum() / max(lab.max(), 1)
    assert lum[1.5] > 1.5 * lum[-1.5]  # larger follicles


def test_cohort_params_validated():
    with pytest.raises(ValueError, match="Unknown tissue 'Brain'"):
        design_cohort(CohortParams(tissues=("Brain",)))
    with pytest.raises(ValueError, match="too small|too few"):
        subjects, samples = design_cohort(CohortParams(samples_per_tissue=2, tissues_per_donor=1))
        simulate_expression(CohortParams(n_genes=100), subjects, samples)


def _reference_render(spec):
    """render_slide written plainly (new arrays, no in-place tricks), drawing from the generator in the same order."""
    from scipy import ndimage as ndi

    from histo_utils.synthetic import histology as H

    rng = np.random.default_rng(spec.seed)
    shape = (int(round(spec.height_um / spec.px_um)), int(round(spec.width_um / spec.px_um)))
    fields = H.program_fields(spec, shape, rng)
    lay = H.TISSUES[spec.tissue].painter(shape, {k: v.copy() for k, v in fields.items()}, spec.px_um, rng)
    piece, holes, soft = H._outline(shape, spec, rng)
    s = float(np.clip(spec.ischemic_severity, 0, 1))
    hema = ndi.gaussian_filter(lay.hema, 1.6 * s / spec.px_um) if s > 0 else lay.hema
    hema = hema * soft * np.float32(1 - 0.45 * s)
    eosin = lay.eosin * soft * np.float32(1 - 0.25 * s)
    debris = H._debris(shape, piece, spec, rng)
    hema, eosin = hema + debris, eosin + np.float32(0.6) * debris
    hv, ev, sh, se = H._stain_vectors(spec.center, rng)
    rgb = np.empty((*shape, 3), np.uint8)
    for c in range(3):
        od = hema * np.float32(1.1 * sh * hv[c]) + eosin * np.float32(1.1 * se * ev[c]) + np.float32(0.04)
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(2.5)
        rgb[..., c] = np.clip(np.exp(-od) * np.float32(250.0) + noise, 0, 255)
    return rgb, piece & ~holes, fields


@pytest.mark.parametrize("tissue,severity,center", [("Thyroid", 0.0, "B1"), ("Muscle", 0.7, "C1"),
                                                    ("Liver", 0.4, "D1"), ("Adipose Tissue", 0.9, "B1"),
                                                    ("Pancreas", 0.2, "C1")])
def test_render_slide_equals_plain_reference(tissue, severity, center):
    """The in-place painting (fewer full-size arrays, negation folded into the stain vectors) gives the very
    same pixels as the formula written plainly, and leaves program maps passed in untouched."""
    from histo_utils.synthetic import SlideSpec, render_slide
    from histo_utils.synthetic.histology import program_fields

    spec = SlideSpec(image_id="X", tissue=tissue, seed=9, programs={"nuclear_density": 0.8, "stroma_fraction": -0.5,
                     "lumen_size": 0.6}, width_um=480.0, height_um=360.0, ischemic_severity=severity, center=center)
    rgb, tissue_mask, fields = _reference_render(spec)
    r = render_slide(spec)
    assert r.rgb.dtype == np.uint8 and np.array_equal(r.rgb, rgb)
    assert np.array_equal(r.tissue, tissue_mask)
    assert all(np.array_equal(r.fields[k], fields[k]) for k in fields)
    given = program_fields(spec, rgb.shape[:2], np.random.default_rng(1))
    kept = {k: v.copy() for k, v in given.items()}
    render_slide(spec, fields=given)
    assert all(np.array_equal(given[k], kept[k]) for k in kept)
