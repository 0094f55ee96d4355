"""Benchmark: tiling and slide features, serial against a Dask LocalCluster, in one run.

Same slides, same parameters, each side on a fresh cache, measured one after
the other in this run and reported as wall times and their ratio (machine
speed cancels out; other jobs sharing the CPU do not):

* tiling (:func:`histo_utils.tiling.tile_slides`): one process, local worker
  processes (``scheduler=""``, ``--workers``) and a Dask LocalCluster of
  ``--workers`` processes with one thread each;
* slide features (:func:`histo_utils.features.extract_slide_features`) of an
  untrained network, tiles read from the slide files on both sides: this
  process (torch's default thread count, and one thread) against the
  LocalCluster; the tables are checked to be identical.

The cluster is started once before the timed runs (its start-up time is
printed separately): the ratio is the steady state of a notebook that keeps
its cluster, not of a one-off call with ``scheduler="local"``.

Usage::

    python benchmarks/bench_distributed.py [--slides 20] [--workers 2] [--data-dir runs/default/data]

Without ``--data-dir`` (or if it holds no ``slides/``) a synthetic cohort of
about ``--slides`` slides is made in a temporary folder first (not timed).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="an existing cohort (runs/default/data)")
    ap.add_argument("--slides", type=int, default=20, help="slides to use (and to make, without --data-dir)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tile-px", type=int, nargs="+", default=[256])
    ap.add_argument("--arch", default="compact")
    ap.add_argument("--input-px", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # bad slides are expected in the synthetic cohort
    import distributed  # noqa: F401  (configures its loggers on import: quieten them after)

    logging.getLogger("distributed").setLevel(logging.ERROR)

    import torch
    from histo_utils import features, models, tiling
    from histo_utils.distributed import client_for
    from histo_utils.synthetic import CohortParams, make_cohort
    from histo_utils.training import TileDataset

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    data = args.data_dir
    if data is None or not (data / "slides").is_dir():
        data = root / "data"
        per_tissue = math.ceil(args.slides / 5)
        print(f"making a synthetic cohort of ~{5 * per_tissue} slides in {data} (not timed)", file=sys.stderr)
        make_cohort(data, CohortParams(samples_per_tissue=per_tissue, tissues_per_donor=3), workers=2,
                    progress=False)
    slides = tiling.list_slides(data / "slides").head(args.slides)
    params = tiling.TilingParams(tile_px=tuple(args.tile_px), input_px=args.input_px)

    with contextlib.ExitStack() as stack:  # the LocalCluster: processes, one thread each, no dashboard
        t_start, client = _timed(lambda: stack.enter_context(client_for("local", args.workers)))
        # warm the workers (imports of histo_utils, torch) so no side pays for them inside its timing
        client.run(lambda: __import__("histo_utils.features") and None)

        t_serial, (tiles, report) = _timed(lambda: tiling.tile_slides(
            slides, params=params, cache_dir=root / "t_serial", workers=1, progress=False))
        t_procs, (tiles_p, _) = _timed(lambda: tiling.tile_slides(
            slides, params=params, cache_dir=root / "t_procs", workers=args.workers, progress=False))
        t_dask, (tiles_d, _) = _timed(lambda: tiling.tile_slides(
            slides, params=params, cache_dir=root / "t_dask", scheduler=client, progress=False))
        same_tiles = tiles.equals(tiles_p) and tiles.equals(tiles_d)

        torch.manual_seed(0)
        model = models.build_model(args.arch, 5).eval()
        layers = models.feature_layers(model, args.arch)
        px = args.tile_px[0]
        ds = TileDataset(tiles[tiles.tile_px == px], dict(zip(slides.image_id, slides.path)),
                         input_px=args.input_px)
        kw = dict(how="sum", p=1.0, batch_size=args.batch, device="cpu", progress=False)
        threads = torch.get_num_threads()
        t_f_serial, f_serial = _timed(lambda: features.extract_slide_features(model, layers, ds, **kw))
        torch.set_num_threads(1)
        t_f_serial1, f_serial1 = _timed(lambda: features.extract_slide_features(model, layers, ds, **kw))
        torch.set_num_threads(threads)
        t_f_dask, f_dask = _timed(lambda: features.extract_slide_features(model, layers, ds, scheduler=client, **kw))
        same_features = (np.array_equal(f_serial.to_numpy(), f_dask.to_numpy())
                         and np.array_equal(f_serial1.to_numpy(), f_dask.to_numpy())
                         and f_serial.index.equals(f_dask.index))

    n_ok = int((report.status == "ok").sum())
    rows = [
        ("slides (tiled ok / given)", f"{n_ok} / {len(slides)}"),
        ("tiles", f"{len(tiles)} ({', '.join(f'{p} px' for p in args.tile_px)})"),
        ("LocalCluster start-up (not in the times below)", f"{t_start:.1f} s"),
        ("tiling: one process", f"{t_serial:.2f} s"),
        (f"tiling: {args.workers} local processes", f"{t_procs:.2f} s ({t_serial / t_procs:.2f}x one process)"),
        (f"tiling: Dask LocalCluster, {args.workers} workers", f"{t_dask:.2f} s ({t_serial / t_dask:.2f}x one process)"),
        ("tiling: identical tile tables", str(same_tiles)),
        (f"features ({args.arch}, {args.input_px} px, {len(ds)} tiles): this process, "
         f"{threads} torch threads", f"{t_f_serial:.2f} s"),
        ("features: this process, 1 torch thread", f"{t_f_serial1:.2f} s"),
        (f"features: Dask LocalCluster, {args.workers} workers x 1 thread",
         f"{t_f_dask:.2f} s ({t_f_serial / t_f_dask:.2f}x {threads} threads, {t_f_serial1 / t_f_dask:.2f}x 1 thread)"),
        ("features: identical tables (bit for bit)", str(same_features)),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    tmp.cleanup()
    return 0 if same_tiles and same_features else 1


if __name__ == "__main__":  # the guard matters: LocalCluster workers are spawned processes
    sys.exit(main())
