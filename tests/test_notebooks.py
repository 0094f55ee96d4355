"""End to end: notebooks 00 and 01 through papermill on the tiny profile."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import io, run, tiling

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    prof = run.load_profile(run.PARAMS_DIR / "tiny.yaml")
    records = run.run_profile(prof, out, only=["00", "01"])
    return out, prof, records


def test_figures_each_with_their_numbers(tiny_run):
    out, _, records = tiny_run
    assert [r["status"] for r in records] == ["ran", "ran"]
    for nb, names in {"00_synthetic_cohort": ["tissue_gallery", "programs_low_high", "planted_expression_coupling",
                                              "confounders", "ischemia_fading", "planted_summary"],
                      "01_tiling": ["tiles_per_tissue_split", "masks_and_tiles", "mask_agreement"]}.items():
        for n in names:
            png, csv = out / "figures" / nb / f"{n}.png", out / "figures" / nb / f"{n}.csv"
            assert png.stat().st_size > 5000 and len(pd.read_csv(csv)) > 0, f"{nb}/{n}"


def test_tiling_outputs_match_planted_truth(tiny_run):
    out, _, _ = tiny_run
    tiles, samples = tiling.load_tiling(out)
    truth = io.read_table(out / "data" / "truth" / "samples.tsv")
    slides = io.read_table(out / "01_tiling" / "slides.tsv")
    # the planted damaged slide is reported and skipped, all others tiled
    corrupt = set(truth.loc[truth.corrupt, "image_id"])
    assert set(slides.loc[slides.status == "error", "image_id"]) == corrupt
    # the join finds exactly the planted problems
    usable = truth[truth.has_slide & truth.has_rna & ~truth.corrupt & (truth.duplicate_of.fillna("") == "")]
    assert set(samples.image_id) == set(usable.image_id)
    dup = io.read_table(out / "01_tiling" / "duplicate_rna.tsv")
    assert set(dup.image_id) == set(truth.loc[truth.duplicate_of.fillna("") != "", "image_id"])
    # no subject in two splits; tiles only from usable slides; effective resolution recorded
    assert samples.groupby("subject_id").split.nunique().max() == 1
    assert set(tiles.image_id) >= set(samples.image_id)
    assert np.allclose(tiles.effective_mpp, 0.9884, rtol=0.01)
    agree = io.read_table(out / "01_tiling" / "mask_agreement.tsv")
    assert set(agree.threshold) == {"otsu", "multiotsu"}
    assert agree[agree.threshold == "multiotsu"].dice.min() > 0.8


def test_rerun_skips_and_param_change_reruns(tiny_run, tmp_path):
    out, prof, _ = tiny_run
    assert [r["status"] for r in run.run_profile(prof, out, only=["00", "01"])] == ["skipped", "skipped"]
    prof.notebooks["01_tiling"] = {**prof.notebooks["01_tiling"], "min_tissue": 0.9}
    recs = run.run_profile(prof, out, only=["00", "01"])
    assert [r["status"] for r in recs] == ["skipped", "ran"]
    tiles, _ = tiling.load_tiling(out)
    assert tiles.tissue_fraction.min() >= 0.9
