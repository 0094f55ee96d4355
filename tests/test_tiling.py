import numpy as np
import pandas as pd
import pytest

from conftest import fixture_file
from histo_utils import tiling
from histo_utils.slides import SlideInfo, choose_level, open_slide, read_region


def test_grid_keeps_full_squares_only():
    xs, ys = tiling.grid_origins(1000, 700, 300)
    assert len(xs) == 3 * 2
    assert xs.max() + 300 <= 1000 and ys.max() + 300 <= 700
    assert list(zip(xs[:4], ys[:4])) == [(0, 0), (300, 0), (600, 0), (0, 300)]
    assert len(tiling.grid_origins(299, 299, 300)[0]) == 0


def test_tissue_fraction_exact_on_block_masks():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # left half tissue; each mask pixel = 4 level-0 px
    xs = np.array([0, 10, 20, 8])
    ys = np.array([0, 0, 0, 4])
    f = tiling.tissue_fractions(mask, xs, ys, size=10, scale=4)
    # [0,10): fully tissue (mask cols 0-2.5); [10,20): cols 2.5-5: tissue; [20,30): cols 5-7.5: none
    np.testing.assert_allclose(f[:3], [1.0, 1.0, 0.0])
    # a square straddling the edge: x in [8,18) -> cols 2..4.5 all tissue
    assert f[3] == pytest.approx(1.0)
    f2 = tiling.tissue_fractions(mask, np.array([15]), np.array([0]), size=10, scale=4)
    assert f2[0] == pytest.approx(0.5)  # x in [15,25): 5 px tissue of 10


def test_tissue_fraction_matches_brute_force():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 50)) < 0.4
    scale = 3
    full = np.kron(mask, np.ones((scale, scale), bool))
    xs, ys = tiling.grid_origins(150, 120, 17)
    f = tiling.tissue_fractions(mask, xs, ys, 17, scale)
    brute = [full[y:y + 17, x:x + 17].mean() for x, y in zip(xs, ys)]
    np.testing.assert_allclose(f, brute, atol=1e-9)


def _white_with(shape=(200, 200)):
    img = np.full((*shape, 3), 242, np.uint8)
    return img


def test_tissue_mask_otsu_removes_specks_fills_small_holes_keeps_tears():
    img = _white_with()
    img[40:160, 40:160] = (180, 100, 170)  # tissue block
    img[90:96, 90:96] = 242  # small pale hole (lumen): filled
    img[50:80, 120:150] = 242  # large tear: stays background
    img[10:13, 10:13] = (60, 30, 90)  # dark speck: removed
    mask, thr = tiling.tissue_mask(img, mpp=8.0, blur_sigma_um=8.0, min_object_um2=64 * 30,
                                   fill_holes_um2=64 * 100)
    assert 0 < thr < 1
    assert mask[100, 100] and mask[93, 93]
    assert not mask[65, 135]
    assert not mask[11, 11]
    assert not mask[5, 195]


def test_tissue_mask_of_blank_image_is_empty():
    mask, thr = tiling.tissue_mask(_white_with(), mpp=8.0)
    assert not mask.any() and np.isnan(thr)


def _info(mpp=0.25, ds=(1, 4, 16)):
    return SlideInfo(path="x.svs", vendor="aperio", width=10000, height=8000, level_count=len(ds),
                     level_downsamples=tuple(float(d) for d in ds), mpp=mpp, mpp_source="scanner",
                     objective_power=40)


def test_choose_level_never_upsamples():
    assert choose_level(_info(0.25), 0.9884) == 1             # 1.0 um/px: within 2 % of the target
    assert choose_level(_info(0.25, (1, 2, 4)), 0.9884) == 2
    assert choose_level(_info(0.26, (1, 4, 16)), 0.9884) == 0  # 1.04 um/px would upsample 5 %
    assert choose_level(_info(0.4942, (1, 4, 16)), 0.9884) == 0
    assert choose_level(_info(0.4942, (1, 2, 8)), 0.9884) == 1
    with pytest.raises(ValueError, match="finer than level 0"):
        choose_level(_info(0.5), 0.25)


def test_tile_real_aperio_slide():
    path = fixture_file("slides/CMU-1-Small-Region.svs")
    res = tiling.tile_slide(path, params=tiling.TilingParams(tile_px=(256, 512)))
    t = res.tiles
    assert list(t.columns) == tiling.TILE_COLUMNS
    assert res.info["mpp"] == pytest.approx(0.499) and res.info["mpp_source"] == "scanner"
    # 512 px at 0.9884 um/px read at level 0 (0.499 um/px): 1014 px squares; 2220x2967 holds 2x2 of them
    t512 = t[t.tile_px == 512]
    assert (t512.read_px == 1014).all() and (t512.level == 0).all()
    assert t512.effective_mpp.iloc[0] == pytest.approx(0.9884, rel=2e-3)
    assert 1 <= len(t512) <= 4
    assert len(t[t.tile_px == 256]) >= 4 * len(t512) - 4
    assert (t.tissue_fraction >= 0.5).all()
    assert ((t.x + t.size0 <= 2220) & (t.y + t.size0 <= 2967)).all()


def test_read_tile_matches_raw_read(tiny_cohort):
    out, _ = tiny_cohort
    path = sorted((out / "slides").glob("*.svs"))[0]
    res = tiling.tile_slide(path, params=tiling.TilingParams(tile_px=(256,), input_px=256))
    row = res.tiles.iloc[0]
    slide = open_slide(path)
    tile = tiling.read_tile(slide, row, path=path)
    raw = read_region(slide, path, (int(row.x), int(row.y)), int(row.level), (int(row.read_px),) * 2)
    slide.close()
    assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
    assert raw.shape[0] == row.read_px
    small = tiling.read_tile(open_slide(path), row, path=path, out_px=64)
    assert small.shape == (64, 64, 3)
    # rescaled tile keeps the mean colour of the raw read
    assert abs(float(tile.mean()) - float(raw.mean())) < 2.0


def _float_reference_tile(rgba: np.ndarray, out_px: int) -> np.ndarray:
    """A tile made the slow, plain way: premultiply in float, shrink each channel with PIL's antialiased
    bilinear filter in 32-bit float, flatten onto white."""
    from PIL import Image

    a = rgba[..., 3].astype(np.float32) / 255
    chans = [rgba[..., c].astype(np.float32) * a for c in range(3)] + [a]
    small = [np.asarray(Image.fromarray(c, mode="F").resize((out_px, out_px), Image.BILINEAR)) for c in chans]
    return np.stack([small[c] + 255 * (1 - small[3]) for c in range(3)], axis=-1)


def test_read_tile_equals_the_plain_float_shrink_inside_and_at_the_edge_of_the_scan(tiny_cohort):
    """read_tile (premultiplied OpenSlide pixels, torch's uint8 antialiased bilinear) gives what the plain
    float computation gives, to rounding; past the edge of the scan the tile is white, and a tile pixel half
    over the edge is the half-white mix, not white (the former flattening of a resized non-premultiplied
    RGBA image clipped such pixels to white) and not dark."""
    out, _ = tiny_cohort
    path = sorted((out / "slides").glob("*.svs"))[0]
    slide = open_slide(path)
    w, h = slide.dimensions
    inside = {"x": w // 3, "y": h // 3, "level": 0, "read_px": 300, "size0": 300, "input_px": 128}
    for row in (inside, dict(inside, x=w - 151)):  # the second reaches 149 px past the right edge of the scan
        rgba = np.asarray(slide.read_region((row["x"], row["y"]), 0, (300, 300)))
        tile = tiling.read_tile(slide, row, path=path, level="table")
        assert tile.shape == (128, 128, 3) and tile.dtype == np.uint8
        ref = _float_reference_tile(rgba, 128)
        assert np.abs(tile - ref).max() <= 1.5, row
    assert (tile[:, -60:] == 255).all()      # outside the scan: white, not black
    assert tile[:, :50].mean() < 250         # inside: the slide's pixels
    edge = int(np.argmax(rgba[0, :, 3] == 0) * 128 / 300)  # the output column over the edge
    assert (tile[:, edge] < 254).any() and np.abs(tile[:, edge] - ref[:, edge]).max() <= 1.5
    slide.close()


def test_premultiplied_reads_equal_openslide_python_reads(tiny_cohort, monkeypatch):
    """The native read (OpenSlide's premultiplied words, no conversion) equals openslide-python's public
    read_region premultiplied again, inside the scan and past its edge; and the public path is what runs
    when openslide-python does not expose the native function."""
    from histo_utils import slides

    out, _ = tiny_cohort
    path = sorted((out / "slides").glob("*.svs"))[1]
    slide = open_slide(path)
    w, h = slide.dimensions
    assert slides._NATIVE is not None  # the pinned openslide-python exposes it: the fast path is in use
    for loc, level in (((w // 4, h // 4), 0), ((w - 100, h - 60), 0), ((0, 0), slide.level_count - 1)):
        native = slides.read_region_premultiplied(slide, path, loc, level, (200, 120))
        rgba = np.asarray(slide.read_region(loc, level, (200, 120))).astype(int)
        assert native.shape == (120, 200, 4) and native.dtype == np.uint8
        np.testing.assert_array_equal(native[..., 3], rgba[..., 3])
        colour = np.round(rgba[..., :3] * rgba[..., 3:] / 255)
        assert np.abs(native[..., 2::-1] - colour).max() <= 1  # un- and re-premultiplying round
        monkeypatch.setattr(slides, "_NATIVE", None)
        np.testing.assert_allclose(slides.read_region_premultiplied(slide, path, loc, level, (200, 120)), native,
                                   atol=1)
        monkeypatch.undo()
        rgb = slides.read_region(slide, path, loc, level, (200, 120))
        np.testing.assert_array_equal(rgb, slides.premultiplied_to_rgb(native))
    slide.close()


def test_rgba_to_rgb_composites_non_premultiplied_pixels():
    """openslide-python gives non-premultiplied RGBA: half-covered red is pink, not clipped to white."""
    from histo_utils.slides import premultiplied_to_rgb, rgba_to_rgb

    px = np.array([[[200, 100, 50, 128], [10, 20, 30, 255], [0, 0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(rgba_to_rgb(px), [[[227, 177, 152], [10, 20, 30], [255, 255, 255]]])
    pre = np.array([[[25, 50, 100, 128], [30, 20, 10, 255], [0, 0, 0, 0]]], np.uint8)  # B, G, R, A
    np.testing.assert_array_equal(premultiplied_to_rgb(pre), [[[227, 177, 152], [10, 20, 30], [255, 255, 255]]])


def test_tile_slides_reports_bad_slides_and_resumes(tiny_cohort, tmp_path, monkeypatch):
    out, _ = tiny_cohort
    good = sorted((out / "slides").glob("*.svs"))[:2]
    bad = [fixture_file("broken/random_bytes.svs"), fixture_file("broken/unreadable.svs"),
           fixture_file("broken/unopenable.tiff"), fixture_file("slides/boxes.tiff")]
    df = pd.DataFrame({"image_id": [p.name.split(".")[0] for p in good + bad], "path": [str(p) for p in good + bad]})
    params = tiling.TilingParams(tile_px=(256,))
    tiles, report = tiling.tile_slides(df, params=params, cache_dir=tmp_path, workers=2, progress=False)
    status = report.set_index("image_id")["status"]
    assert (status[[p.name.split(".")[0] for p in good]] == "ok").all()
    assert (status[["random_bytes", "unreadable", "unopenable", "boxes"]] == "error").all()
    stages = report.set_index("image_id")["stage"]
    assert stages["unreadable"] == "read" and stages["boxes"] == "resolution" and stages["random_bytes"] == "open"
    assert set(tiles.image_id) == {p.name.split(".")[0] for p in good}
    # a rerun does not tile finished slides again
    calls = []
    monkeypatch.setattr(tiling, "tile_slide", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(RuntimeError))
    tiles2, report2 = tiling.tile_slides(df.iloc[:2], params=params, cache_dir=tmp_path, workers=1, progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(tiles2, tiles[tiles.image_id.isin(df.image_id[:2])].reset_index(drop=True))
    # other parameters never reuse the cache
    tiles3, _ = tiling.tile_slides(df.iloc[:1], params=tiling.TilingParams(tile_px=(128,)),
                                   cache_dir=tmp_path, workers=1, progress=False)
    assert len(calls) == 1  # it tried to tile (the patched tiler fails, so the slide is reported)
    assert tiles3.empty


def test_mask_agreement_on_synthetic_slides(tiny_cohort):
    from PIL import Image

    out, _ = tiny_cohort
    scores = []
    for path in sorted((out / "slides").glob("*.svs")):
        try:
            res = tiling.tile_slide(path, params=tiling.TilingParams(tile_px=(256,)))
        except Exception:
            continue  # the planted damaged slide
        truth = np.asarray(Image.open(out / "truth" / "masks" / f"{path.stem}.png")) > 127
        scores.append(tiling.mask_agreement(res.mask, truth)["dice"])
    assert len(scores) >= 6
    assert np.median(scores) > 0.95
    assert min(scores) > 0.8


def test_mask_agreement_metric():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    assert tiling.mask_agreement(a, a) == {"dice": 1.0, "iou": 1.0, "accuracy": 1.0}
    b = np.zeros((10, 10), bool)
    b[:, :5] = True
    m = tiling.mask_agreement(a, b)
    assert m["dice"] == pytest.approx(0.5) and m["iou"] == pytest.approx(25 / 75)


def test_deepest_point_avoids_holes_and_glass():
    mask = np.zeros((100, 200), bool)
    mask[10:90, 120:190] = True
    fx, fy = tiling.deepest_point(mask)
    assert 120 / 200 < fx < 190 / 200 and 10 / 100 < fy < 90 / 100
    assert tiling.deepest_point(np.zeros((5, 5), bool)) == (0.5, 0.5)


def test_threshold_method_validated():
    with pytest.raises(ValueError, match="threshold must be one of"):
        tiling.TilingParams(threshold="triangle")
    with pytest.raises(ValueError, match="min_tissue"):
        tiling.TilingParams(min_tissue=1.5)


def test_two_class_otsu_loses_pale_tissue_next_to_dense_tissue():
    """Why multiotsu is the default: glass, pale fat and dense septa are three grey populations."""
    img = np.full((200, 200, 3), 242, np.uint8)
    img[20:180, 20:180] = 225      # pale tissue (fat): a little darker than glass
    img[90:110, 20:180] = (150, 60, 140)  # a dense septum
    kw = dict(mpp=8.0, blur_sigma_um=8.0, min_object_um2=0, fill_holes_um2=0)
    two, _ = tiling.tissue_mask(img, threshold="otsu", **kw)
    three, _ = tiling.tissue_mask(img, threshold="multiotsu", **kw)
    assert not two[50, 50] and two[100, 100]   # Otsu keeps only the septum
    assert three[50, 50] and three[100, 100] and not three[5, 5]


def test_read_tile_reads_the_coarsest_level_that_holds_the_output(tiny_cohort):
    """A 512 px tile shown at 128 px is read from the 4x level: same extent, same picture, fewer pixels."""
    out, _ = tiny_cohort
    path = sorted((out / "slides").glob("*.svs"))[0]
    res = tiling.tile_slide(path, params=tiling.TilingParams(tile_px=(512,), input_px=128, min_tissue=0.3))
    assert len(res.tiles)
    slide = open_slide(path)
    ds = slide.level_downsamples
    row = res.tiles.iloc[0]
    assert row.level == 0 and len(ds) > 1 and ds[1] <= row.size0 / 128
    lv, size = tiling.read_plan(slide, row, 128)
    assert lv >= 1 and abs(size * ds[lv] / row.size0 - 1) <= 0.02  # same extent within 2 %
    assert tiling.read_plan(slide, row, int(row.read_px)) == (0, int(row.read_px))  # full size: the table's level
    auto = tiling.read_tile(slide, row, path=path)
    table = tiling.read_tile(slide, row, path=path, level="table")
    assert auto.shape == table.shape == (128, 128, 3)
    a, b = auto.astype(float), table.astype(float)
    assert abs(a.mean() - b.mean()) < 3.0 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="Choose 'auto' or 'table'"):
        tiling.read_tile(slide, row, path=path, level=2)
    slide.close()


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "small.svs", "boxes.tiff"])
def test_premultiplied_reads_of_real_slides(name):
    """On real files (two Aperio SVS, a generic pyramidal TIFF whose lower levels have partly covered edge
    pixels) the native read equals openslide-python's read premultiplied again, at every level and corner."""
    import openslide

    from histo_utils import slides

    path = fixture_file(f"slides/{name}")
    s = openslide.OpenSlide(str(path))
    w, h = s.dimensions
    partial = 0
    for lv in range(s.level_count):
        ds, (lw, lh) = s.level_downsamples[lv], s.level_dimensions[lv]
        size = (min(200, lw), min(150, lh))
        for loc in ((0, 0), (w // 2, h // 2), (max(0, w - int(100 * ds)), max(0, h - int(80 * ds)))):
            native = slides.read_region_premultiplied(s, path, loc, lv, size).astype(int)
            rgba = np.asarray(s.read_region(loc, lv, size)).astype(int)
            np.testing.assert_array_equal(native[..., 3], rgba[..., 3])
            assert np.abs(native[..., 2::-1] - np.round(rgba[..., :3] * rgba[..., 3:] / 255)).max() <= 1
            partial += int(((rgba[..., 3] > 0) & (rgba[..., 3] < 255)).sum())
    s.close()
    assert (partial > 0) == (name == "boxes.tiff")
