"""TCGA barcodes and the DX1 rule; the synthetic tumour cohort's planted truth."""
import json

import numpy as np
import pandas as pd
import pytest

from histo_utils import hti as ht
from histo_utils import io, tcga, tiling
from histo_utils.synthetic.tumour import TumourParams, clone_map, make_tumour_cohort, tile_truth


def test_barcodes_and_dx1_rule():
    f = "TCGA-A1-A0SB-01Z-00-DX1.B34C267B-CAAA-4AB6-AD5C-276C26F8A4B2"
    assert tcga.patient_barcode(f) == "TCGA-A1-A0SB"
    assert tcga.sample_barcode(f) == "TCGA-A1-A0SB-01"
    assert tcga.slide_number(f) == 1 and tcga.slide_number("TCGA-A1-A0SB-01A-01-TS1") is None
    with pytest.raises(ValueError, match="not a TCGA barcode"):
        tcga.patient_barcode("GTEX-1117F-0226")
    ch = tcga.choose_diagnostic_slides(["TCGA-AA-0001-01Z-00-DX2", "TCGA-AA-0001-01Z-00-DX1",
                                        "TCGA-AA-0002-01Z-00-DX3", "TCGA-AA-0002-01Z-00-DX2",
                                        "TCGA-AA-0003-01A-01-TS1"]).set_index("image_id")
    assert ch.chosen[ch.chosen].index.tolist() == ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX2"]


def test_locate_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tcga.locate_tcga_files(tmp_path / "nope")
    (tmp_path / "slides").mkdir()
    with pytest.raises(FileNotFoundError, match="expression"):
        tcga.locate_tcga_files(tmp_path)


def test_clone_map_gives_every_clone_area():
    rng = np.random.default_rng(0)
    lab = clone_map((60, 80), np.array([1.0, 0.5, 1.5, 0.7]), rng)
    assert lab.shape == (60, 80) and set(np.unique(lab)) == {0, 1, 2, 3}
    assert (clone_map((10, 10), np.array([1.0]), rng) == 0).all()


@pytest.fixture(scope="module")
def tumours(tmp_path_factory):
    out = tmp_path_factory.mktemp("tumour")
    p = TumourParams(seed=3, n_patients=24, slide_width_um=768.0, slide_height_um=640.0, n_background_genes=5)
    make_tumour_cohort(out, p, workers=1, progress=False)
    return out, p


def test_tumour_cohort_files_and_truth(tumours):
    out, p = tumours
    files = tcga.locate_tcga_files(out)
    expr = tcga.read_expression_matrix(files.expression, genes=list(p.traits))
    clin = tcga.read_clinical(files.clinical)
    truth = io.read_table(out / "truth" / "slides.tsv")
    clones = io.read_table(out / "truth" / "clones.tsv")
    assert len(clin) == p.n_patients == expr.shape[1] and set(clin.OS) <= {0, 1}
    with pytest.raises(KeyError, match="not rows"):
        tcga.read_expression_matrix(files.expression, genes=["NOPE"])
    # slide files named <barcode>.<uuid>.svs, one DX1 per patient
    listed = tiling.list_slides(files.slides_dir)
    assert set(listed.image_id) == set(truth.image_id)
    assert (tcga.choose_diagnostic_slides(listed.image_id).groupby(lambda i: 0).chosen.sum() == p.n_patients).all()
    # areas sum to one per slide; the true mix and HTI follow from clone states and areas
    for iid, g in clones.groupby("image_id"):
        assert g.area.sum() == pytest.approx(1.0)
        row = truth.set_index("image_id").loc[iid]
        for t in p.traits:
            assert row[f"mix_{t}"] == pytest.approx((g.area * g[f"state_{t}"]).sum())
        codes = sum(g[f"state_{t}"].to_numpy() << j for j, t in enumerate(p.traits))
        w = np.bincount(codes, weights=g.area, minlength=4)
        assert np.isnan(row.true_hti) if w[1:].sum() == 0 else row.true_hti == pytest.approx(
            ht.hti_from_proportions(w, k=2))
    # bulk expression is the DX1 slide's mix plus noise
    dx1 = truth[truth.dx == 1].set_index("patient")
    for t in p.traits:
        r = np.corrcoef(dx1.loc[[c[:12] for c in expr.columns], f"mix_{t}"], expr.loc[t])[0, 1]
        assert r > 0.9


def test_tumour_cohort_is_deterministic_and_refuses_other_params(tumours, tmp_path):
    out, p = tumours
    again = tmp_path / "again"
    make_tumour_cohort(again, p, workers=2, progress=False)
    for name in ("truth/slides.tsv", "truth/clones.tsv", "TCGA-SYN.clinical.tsv"):
        assert (out / name).read_text() == (again / name).read_text()
    assert io.read_table(out / "TCGA-SYN.expression.tsv.gz").equals(io.read_table(again / "TCGA-SYN.expression.tsv.gz"))
    with pytest.raises(FileExistsError, match="other parameters"):
        make_tumour_cohort(again, TumourParams(seed=4, n_patients=24), progress=False)


def test_tile_truth_reads_clone_under_tile(tumours):
    out, p = tumours
    truth = io.read_table(out / "truth" / "slides.tsv")
    slides = tiling.list_slides(out / "slides")
    tiles, rep = tiling.tile_slides(slides, params=tiling.TilingParams(tile_px=(32,), target_mpp=2.0, input_px=32),
                                    cache_dir=out / "tiles", progress=False)
    tt = tile_truth(tiles, out / "truth", mpp=p.mpp)
    assert len(tt) == len(tiles) and set(np.unique(tt[[f"true_{t}" for t in p.traits]])) <= {0, 1}
    # the HTI of the true tile states approaches the area-based true HTI
    th = ht.slide_hti(tt[[f"true_{t}" for t in p.traits]].to_numpy(), tiles.image_id)
    j = th.join(truth.set_index("image_id").true_hti).dropna(subset=["hti", "true_hti"])
    assert len(j) > 10
    assert np.corrcoef(j.hti, j.true_hti)[0, 1] > 0.85


def test_load_tumour_cohort_joins_slides_patients_and_truth(tumours):
    out, p = tumours
    cohort = tcga.load_tumour_cohort(out, list(p.traits))
    assert list(cohort.values.columns) == list(p.traits) and cohort.values.index.str.count("-").max() == 2
    assert cohort.slides.patient.isin(cohort.values.index).all()
    assert cohort.slides[cohort.slides.chosen].patient.is_unique
    assert (cohort.slides[cohort.slides.chosen].dx == 1).all()
    assert set(cohort.truth.index) == set(cohort.slides.image_id) and cohort.clinical.index.is_unique
    from histo_utils.synthetic.tumour import load_tumour_params

    assert load_tumour_params(out) == p  # the planted coefficients notebook 08 compares with


def test_trait_effect_per_trait_and_validation():
    assert TumourParams(trait_effect=1.5).trait_effect == (1.5, 1.5)
    assert TumourParams().trait_effect == (2.0, 6.0)
    with pytest.raises(ValueError, match="one positive shift per trait"):
        TumourParams(trait_effect=(2.0, 4.0, 1.0))


def _stroma_tile_auc(effect: float) -> float:
    """True stroma fraction of 128-um tiles of a high against a low stroma clone (left/right halves)."""
    from histo_utils.metrics import auc
    from histo_utils.synthetic.histology import SlideSpec, render_slide
    from histo_utils.synthetic.tumour import _fields

    p = TumourParams(trait_effect=(2.0, effect))
    shape = (384, 768)  # 768 x 1536 um at 2 um
    labels = np.zeros(shape, int)
    labels[:, 384:] = 1  # clone 1 is high for the stroma trait, clone 0 low; both low for MKI67
    f = _fields(p, labels, np.array([[0, 0], [0, 1]]), np.zeros(3, np.float32), np.random.default_rng(0))
    r = render_slide(SlideSpec(image_id="x", tissue=p.tissue, seed=1, programs={}, width_um=1536.0,
                               height_um=768.0, px_um=2.0), fields=f)
    frac, high = [], []
    for y in range(0, shape[0] - 63, 64):
        for x in range(0, shape[1] - 63, 64):
            if r.tissue[y:y + 64, x:x + 64].mean() > 0.5 and not 320 <= x < 384:  # skip the border column
                frac.append(r.structures["stroma"][y:y + 64, x:x + 64].mean())
                high.append(int(x >= 384))
    return auc(np.array(frac), np.array(high))


def test_default_stroma_clones_are_visible_at_the_tile_scale():
    # at the default shift a high clone is a stroma-rich region: its tiles separate from a low clone's by their
    # true stroma fraction; at +/-1 SD (the old default) the thin bands miss most tiles
    assert _stroma_tile_auc(TumourParams().trait_effect[1]) > 0.9
    assert _stroma_tile_auc(2.0) < _stroma_tile_auc(TumourParams().trait_effect[1]) - 0.05
