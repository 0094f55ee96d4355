"""CLAM/HEST-style coordinate files and the dataset-wide resolution check, on a mixed 20x/40x set of small SVS."""
import h5py
import numpy as np
import openslide
import pandas as pd
import pytest

from histo_utils import figures, tiling
from histo_utils.plotting import save_figure
from histo_utils.slides import write_aperio_svs

FIELD_UM = 640.0  # side of every slide, µm


def _tissue(mpp: float, seed: int) -> np.ndarray:
    """A pink tissue block with texture on glass, ``FIELD_UM`` a side at ``mpp``."""
    n = int(round(FIELD_UM / mpp))
    rng = np.random.default_rng(seed)
    img = np.full((n, n, 3), 240, np.uint8)
    a, b = int(n * 0.15), int(n * 0.85)
    img[a:b, a:b] = (185, 95, 165)
    img[a:b, a:b] = np.clip(img[a:b, a:b] + rng.integers(-25, 25, (b - a, b - a, 1)), 0, 255)
    return img


@pytest.fixture(scope="module")
def mixed_slides(tmp_path_factory):
    """Four 20x slides (0.5 µm/px), one at 40x (0.25) and one 20x slide whose recorded mpp is 12 % off."""
    d = tmp_path_factory.mktemp("mixed")
    spec = {"S20a": (0.5, 20), "S20b": (0.502, 20), "S20c": (0.497, 20), "S20d": (0.5, 20),
            "S40": (0.25, 40), "Sodd": (0.56, 20)}
    rows = []
    for i, (iid, (mpp, power)) in enumerate(spec.items()):
        p = write_aperio_svs(d / f"{iid}.svs", _tissue(mpp, i), mpp=mpp, objective_power=power,
                             downsamples=(1, 4), tile=128)
        rows.append({"image_id": iid, "path": str(p)})
    slides = pd.DataFrame(rows)
    params = tiling.TilingParams(tile_px=(64, 128), target_mpp=1.0, input_px=32, min_tissue=0.5,
                                 mask_mpp=4.0, blur_sigma_um=4.0, min_object_um2=2000.0, fill_holes_um2=2000.0,
                                 check_reads=1)
    tiles, report = tiling.tile_slides(slides, params=params, cache_dir=d / "cache", workers=1, progress=False)
    return d, slides, params, tiles, report


def test_coords_h5_open_as_clam_does_and_match_the_tile_table(mixed_slides, tmp_path):
    _, slides, params, tiles, report = mixed_slides
    assert (report.status == "ok").all() and len(tiles)
    written = tiling.write_coords_h5(tiles, report, tmp_path)
    assert len(written) == tiles.groupby(["image_id", "tile_px"]).ngroups == 2 * len(slides)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic: no temporary left
    for (iid, px), t in tiles.groupby(["image_id", "tile_px"]):
        path = tiling.coords_path(tmp_path, iid, px)
        assert path == tmp_path / "coords" / f"{px}px" / f"{iid}.h5"
        # as CLAM's Whole_Slide_Bag_FP: the dataset, its length, patch_level and patch_size from its attrs
        with h5py.File(path, "r") as f:
            dset = f["coords"]
            patch_level = int(f["coords"].attrs["patch_level"])
            patch_size = int(f["coords"].attrs["patch_size"])
            length = len(dset)
            coords = dset[:]
            attrs = dict(dset.attrs)
        assert coords.shape == (len(t), 2) and np.issubdtype(coords.dtype, np.integer)
        np.testing.assert_array_equal(coords, t[["x", "y"]].to_numpy())
        assert length == len(t)
        assert patch_level == t.level.iloc[0] and patch_size == t.read_px.iloc[0]
        assert attrs["patch_size_level0"] == t.size0.iloc[0]
        assert attrs["target_patch_size"] == params.input_px and attrs["tile_px"] == px
        assert attrs["target_mpp"] == params.target_mpp
        assert attrs["effective_mpp"] == pytest.approx(t.effective_mpp.iloc[0])
        info = report.set_index("image_id").loc[iid]
        assert attrs["mpp"] == pytest.approx(info.mpp) and attrs["objective_power"] == info.objective_power
        assert attrs["image_id"] == iid and attrs["name"] == iid and attrs["slide_path"] == info.path
        # the level-0 side covers tile_px * target_mpp microns on every slide, 20x or 40x
        assert attrs["patch_size_level0"] * attrs["mpp"] == pytest.approx(px * params.target_mpp, rel=0.03)
        # a CLAM reader's pixels are the tile's pixels
        with openslide.OpenSlide(info.path) as s:
            got = np.asarray(s.read_region(tuple(int(v) for v in coords[0]), patch_level,
                                           (patch_size, patch_size)).convert("RGB"))
            row = t.iloc[0]
            want = np.asarray(s.read_region((int(row.x), int(row.y)), int(row.level),
                                            (int(row.read_px), int(row.read_px))).convert("RGB"))
        np.testing.assert_array_equal(got, want)


def test_coords_h5_refuses_tiles_of_slides_missing_from_the_report(mixed_slides, tmp_path):
    _, _, _, tiles, report = mixed_slides
    with pytest.raises(ValueError, match="not 'ok' in the report"):
        tiling.write_coords_h5(tiles, report[report.image_id != "S40"], tmp_path)


def test_resolution_survey_flags_the_40x_and_the_miscalibrated_slide(mixed_slides, tmp_path):
    _, _, params, tiles, report = mixed_slides
    res = tiling.resolution_survey(report, tiles, tolerance=0.10)
    assert list(res.columns) == tiling.RESOLUTION_COLUMNS and len(res) == 6
    flagged = set(res.loc[res.flagged, "image_id"])
    assert flagged == {"S40", "Sodd"}
    r = res.set_index("image_id")
    assert r.loc["S40", "power_differs"] and r.loc["S40", "mpp_outlier"]
    assert r.loc["Sodd", "mpp_outlier"] and not r.loc["Sodd", "power_differs"]
    assert r.loc["Sodd", "mpp_ratio"] == pytest.approx(0.56 / 0.5)
    assert res.attrs["median_mpp"] == pytest.approx(0.5) and res.attrs["usual_power"] == 20
    assert "40x" in r.loc["S40", "reason"] and r.loc["S20a", "reason"] == ""
    # every slide's tiles stand for the target resolution, whatever the scan
    np.testing.assert_allclose(r["effective_mpp"], params.target_mpp, rtol=0.03)
    # the 40x slide is read from a finer level (relative to its pyramid) than the 20x ones
    assert (r["mpp"] * 4 ** r["read_level"]).max() <= params.target_mpp * 1.02
    # a wider tolerance accepts the 12 % miscalibration but not the other objective
    assert set(tiling.resolution_survey(report, tiles, tolerance=0.15).query("flagged").image_id) == {"S40"}
    png = save_figure(figures.resolution_overview(res), res, tmp_path, "01_tiling", "slide_resolution")
    assert png.exists() and png.with_suffix(".csv").exists()


def test_resolution_survey_validates_input():
    with pytest.raises(ValueError, match="tolerance"):
        tiling.resolution_survey(pd.DataFrame({"image_id": [], "mpp": [], "mpp_source": [], "objective_power": []}),
                                 tolerance=10)
    with pytest.raises(ValueError, match="objective_power"):
        tiling.resolution_survey(pd.DataFrame({"image_id": ["a"], "mpp": [0.5], "mpp_source": ["scanner"]}))
