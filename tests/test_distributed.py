"""Slide-by-slide work on a real Dask LocalCluster: same results as the serial run, resumable, fault tolerant."""
from __future__ import annotations

import math
import operator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("distributed")

from histo_utils import distributed as hd  # noqa: E402
from histo_utils import features, models, tiling  # noqa: E402
from histo_utils.training import TileDataset  # noqa: E402

TP = tiling.TilingParams(tile_px=(256,), input_px=64)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two worker processes for the whole module; tests connect by address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as lc:
        yield lc.scheduler_address


@pytest.fixture(scope="module")
def tiled(tiny_cohort, cluster, tmp_path_factory):
    """The tiny cohort tiled twice: serially in this process and on the cluster."""
    out, _ = tiny_cohort
    slides = tiling.list_slides(out / "slides")
    root = tmp_path_factory.mktemp("tiling")
    serial = tiling.tile_slides(slides, params=TP, cache_dir=root / "serial", workers=1, progress=False)
    dask = tiling.tile_slides(slides, params=TP, cache_dir=root / "dask", scheduler=cluster, progress=False)
    return slides, root, serial, dask


def test_tiling_on_dask_equals_serial_and_reports_the_bad_slide(tiled):
    slides, _, (tiles_s, report_s), (tiles_d, report_d) = tiled
    pd.testing.assert_frame_equal(tiles_d, tiles_s)
    assert tiles_d.image_id.nunique() >= 6
    pd.testing.assert_frame_equal(report_d.drop(columns="error"), report_s.drop(columns="error"))
    bad = report_d[report_d.status != "ok"]
    assert len(bad) == 1 and bad.stage.iloc[0] == "open"  # the cohort's planted damaged file: reported, not fatal
    assert len(report_d) == len(slides)


def test_tiling_rerun_on_dask_recomputes_only_the_missing_slide(tiled, cluster):
    slides, root, _, (tiles_d, report_d) = tiled
    cache = root / "dask" / TP.key()
    ok = list(report_d.loc[report_d.status == "ok", "image_id"])
    gone = ok[1]
    (cache / f"{gone}.info.tsv").unlink()  # the completion mark: the slide counts as missing
    stamps = {iid: (cache / f"{iid}.tiles.parquet").stat().st_mtime_ns for iid in ok}
    tiles2, report2 = tiling.tile_slides(slides, params=TP, cache_dir=root / "dask", scheduler=cluster,
                                         progress=False)
    rewritten = {iid for iid in ok if (cache / f"{iid}.tiles.parquet").stat().st_mtime_ns != stamps[iid]}
    assert rewritten == {gone}
    pd.testing.assert_frame_equal(tiles2, tiles_d)
    assert list(report2.status) == list(report_d.status)


def _dataset(tiled, *, bad_path: Path | None = None) -> TileDataset:
    slides, _, (tiles, _), _ = tiled
    paths = dict(zip(slides.image_id, slides.path))
    if bad_path is not None:
        paths[sorted(tiles.image_id.unique())[0]] = str(bad_path)
    return TileDataset(tiles, paths, input_px=32)


@pytest.fixture
def one_thread():
    """Torch on one thread here, as in the Dask workers (OMP_NUM_THREADS=1): fast on a shared 2-core CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _network():
    torch.manual_seed(0)
    model = models.build_model("compact", 4).eval()
    return model, models.feature_layers(model, "compact")


def test_slide_features_on_dask_equal_serial_resume_and_tolerate_a_bad_slide(tiled, cluster, tmp_path, one_thread):
    model, layers = _network()
    kw = dict(how="sum", p=1.0, batch_size=4, device="cpu", progress=False)
    ds = _dataset(tiled)
    serial = features.extract_slide_features(model, layers, ds, cache_dir=tmp_path / "serial", **kw)
    dask = features.extract_slide_features(model, layers, ds, scheduler=cluster, cache_dir=tmp_path / "dask", **kw)
    assert serial.shape[0] == ds.tiles.image_id.nunique() and serial.shape[1] > 100
    assert serial.dtypes.eq(np.float32).all()
    pd.testing.assert_frame_equal(dask, serial, check_exact=True)  # bit for bit
    assert np.array_equal(dask.to_numpy().view(np.uint32), serial.to_numpy().view(np.uint32))
    # the whole-dataset path (tile features of all slides, then aggregate_slides) agrees
    f, names, _ = features.extract_tile_features(model, layers, ds, batch_size=16, device="cpu", progress=False)
    whole = features.aggregate_slides(f, ds.tiles.image_id, how="sum")
    np.testing.assert_allclose(whole.to_numpy(), serial.to_numpy(), rtol=1e-5, atol=1e-6)
    # preloaded pixels in this process give the same numbers as workers reading the slide files
    pre = features.extract_slide_features(model, layers, _dataset(tiled).preload(progress=False), **kw)
    pd.testing.assert_frame_equal(pre, serial, check_exact=True)

    # a rerun after losing one slide's result computes only that slide
    cache = next(p for p in (tmp_path / "dask").iterdir() if p.is_dir())
    files = sorted(cache.glob("*.npz"))
    assert len(files) == len(serial)
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    files[2].unlink()
    again = features.extract_slide_features(model, layers, ds, scheduler=cluster, cache_dir=tmp_path / "dask", **kw)
    rewritten = {p.name for p in cache.glob("*.npz") if p.stat().st_mtime_ns != stamps.get(p.name)}
    assert rewritten == {files[2].name}
    pd.testing.assert_frame_equal(again, serial, check_exact=True)

    # other weights never reuse the cache
    trained = models.build_model("compact", 4).eval()
    other = features.extract_slide_features(trained, models.feature_layers(trained, "compact"), ds,
                                            cache_dir=tmp_path / "dask", **kw)
    assert len([p for p in (tmp_path / "dask").iterdir() if p.is_dir()]) == 2
    assert not np.allclose(other.to_numpy(), serial.to_numpy())

    # a slide whose file went bad is reported, the others are computed
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide" * 100)
    bad_ds = _dataset(tiled, bad_path=junk)
    part = features.extract_slide_features(model, layers, bad_ds, scheduler=cluster, **kw)
    bad_id = sorted(ds.tiles.image_id.unique())[0]
    assert list(part.attrs["failed_slides"]) == [bad_id]
    assert "SlideError" in part.attrs["failed_slides"][bad_id]
    pd.testing.assert_frame_equal(part, serial.drop(index=bad_id), check_exact=True)


def test_map_slides_reports_failures_locally_and_on_dask(cluster):
    items = {"a": 4.0, "b": -1.0, "c": 9.0}
    for scheduler, workers in (("", 1), ("", 2), (cluster, 2)):
        run = hd.map_slides(math.sqrt, items, scheduler=scheduler, workers=workers, progress=False)
        assert run.results == {"a": 2.0, "c": 3.0}, scheduler
        assert list(run.errors) == ["b"] and run.errors["b"].startswith("ValueError")
        assert run.ok == ["a", "c"]
    shared = hd.map_slides(int, [("x", "11"), ("y", "101")], scheduler=cluster, shared={"base": 2}, progress=False)
    assert shared.results == {"x": 3, "y": 5}  # shared keyword arguments reach every task
    with pytest.raises(ValueError, match="repeated slide IDs"):
        hd.map_slides(math.sqrt, [("a", 1.0), ("a", 4.0)], progress=False)
    assert hd.map_slides(math.sqrt, {}, scheduler="tcp://192.0.2.1:1").results == {}  # nothing to do: no connection


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # the module's cluster holds it
def test_client_for_local_none_and_unreachable_address():
    with hd.client_for("") as c:
        assert c is None
    with hd.client_for(None) as c:
        assert c is None
    with hd.client_for("local", workers=1) as c:
        assert c.submit(operator.mul, 6, 7).result() == 42
        assert len(c.scheduler_info()["workers"]) == 1
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:9"):
        with hd.client_for("tcp://127.0.0.1:9", timeout=1):
            pass


def test_one_torch_thread_restores_the_callers_setting_also_on_error():
    import torch

    from histo_utils.distributed import one_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with one_torch_thread():
                assert torch.get_num_threads() == 1
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_forked_pool_workers_inherit_the_state_and_the_parent_drops_it():
    from histo_utils.distributed import forked_pool, forked_state

    state = {"x": np.arange(5)}
    with forked_pool(2, state) as pool:
        got = list(pool.map(_worker_reads_state, range(3)))
    assert all(np.array_equal(g, state["x"]) for g in got)
    with pytest.raises(RuntimeError, match="only available in the workers of distributed.forked_pool"):
        forked_state()  # the parent's reference is gone once the pool is closed
    with pytest.raises(ZeroDivisionError):
        with forked_pool(1, state):
            1 / 0
    with pytest.raises(RuntimeError):
        forked_state()


def _worker_reads_state(_):
    from histo_utils.distributed import forked_state

    return forked_state()["x"]
