import numpy as np
import openslide
import pytest

from conftest import fixture_file
from histo_utils import slides, tiling
from histo_utils.slides import SlideError


def test_unsupported_file_names_file_and_fix():
    p = fixture_file("broken/random_bytes.svs")
    with pytest.raises(SlideError, match="random_bytes.svs") as e:
        slides.open_slide(p)
    assert e.value.stage == "open" and "download" in str(e.value)


def test_unopenable_tiff_reports_openslide_reason():
    p = fixture_file("broken/unopenable.tiff")
    with pytest.raises(SlideError, match="Unsupported TIFF compression"):
        slides.open_slide(p)


def test_missing_file():
    with pytest.raises(SlideError, match="does not exist"):
        slides.open_slide("/nonexistent/GTEX-XXXX-0001.svs")


def test_unreadable_slide_fails_at_read_not_later():
    p = fixture_file("broken/unreadable.svs")
    s = slides.open_slide(p)  # opens and its metadata read
    assert slides.slide_info(s, p).mpp == pytest.approx(0.499)
    s.close()
    with pytest.raises(SlideError, match="cannot be read") as e:
        tiling.tile_slide(p)
    assert e.value.stage == "read"


def test_fake_tiff_resolution_is_not_taken_as_mpp():
    p = fixture_file("slides/boxes.tiff")
    s = slides.open_slide(p)
    assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(352.8, rel=1e-3)
    with pytest.raises(SlideError, match="72-dpi") as e:
        slides.slide_info(s, p)
    assert "assume_mpp" in str(e.value) and e.value.stage == "resolution"
    info = slides.slide_info(s, p, assume_mpp=0.5)
    assert info.mpp == 0.5 and info.mpp_source == "assumed"
    s.close()


def test_assume_mpp_never_overrides_a_scanner_calibration():
    p = fixture_file("slides/small.svs")
    s = slides.open_slide(p)
    info = slides.slide_info(s, p, assume_mpp=0.25)
    assert info.mpp == pytest.approx(0.499) and info.mpp_source == "scanner"
    s.close()


def test_tiling_with_assumed_mpp_records_it():
    p = fixture_file("slides/boxes.tiff")
    res = tiling.tile_slide(p, params=tiling.TilingParams(tile_px=(16,), target_mpp=2.0, assume_mpp=1.0,
                                                          mask_mpp=4.0, min_tissue=0.0, min_object_um2=0,
                                                          blur_sigma_um=0))
    assert res.info["mpp_source"] == "assumed"
    assert (res.tiles.level == 1).all()  # level 1 is 2 um/px under the assumed 1 um/px
    assert len(res.tiles) == (150 // 16) * (125 // 16)


def test_write_aperio_svs_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    img = np.kron(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), np.ones((32, 32, 1), np.uint8))
    p = slides.write_aperio_svs(tmp_path / "t.svs", img, mpp=0.499, objective_power=20)
    s = slides.open_slide(p)
    assert s.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
    assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.499)
    assert float(s.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER]) == 20
    assert s.level_count == 3 and s.level_downsamples == pytest.approx((1, 4, 16))
    assert s.dimensions == (1600, 1280)
    assert "thumbnail" in s.associated_images
    back = slides.read_region(s, p, (320, 320), 0, (256, 256))
    assert np.abs(back.astype(int) - img[320:576, 320:576]).mean() < 6  # JPEG q85
    s.close()
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_read_region_rejects_missing_level():
    p = fixture_file("slides/small.svs")
    s = slides.open_slide(p)
    with pytest.raises(ValueError, match="Level 3 not available. Number of available levels: 1"):
        slides.read_region(s, p, (0, 0), 3, (4, 4))
    s.close()


def test_tiff_without_any_resolution(tmp_path):
    import tifffile

    img = np.full((512, 512, 3), 200, np.uint8)
    p = tmp_path / "plain.tiff"
    tifffile.imwrite(p, img, tile=(256, 256), photometric="rgb", compression="jpeg", resolution=None,
                     metadata=None)
    s = slides.open_slide(p)
    with pytest.raises(SlideError, match="records no microns-per-pixel"):
        slides.slide_info(s, p)
    s.close()
