"""Benchmark: tiling and tile reading against raw OpenSlide reads, and the tile table's disk use.

Everything is measured in one run on the same slides and the same regions, and
reported as ratios (machine speed cancels out):

* coordinate tiling (mask + grid + tissue fraction + check reads) in tiles per
  second, against raw ``OpenSlide.read_region`` of the kept tiles' regions;
* tile extraction (``tiling.read_tile``: region read + rescale to ``input_px``,
  from the coarsest pyramid level that holds the output's detail) against the
  raw reads of the table's regions, overall and per tile size (goal: >= 0.9x
  the raw read rate), the same at the table's level (the former behaviour), and
  the extent of the region read against the tile's (goal: within 2 %);
* bytes of the tile table (Parquet) against the JPEG files the same tiles
  would take (Badea's 579,488 tiles took 72 GB).

Usage::

    python benchmarks/bench_tiling.py [--data runs/default/data] [--tile-px 512] [--max-slides 24]

Without ``--data`` (or if it does not exist) a cohort of the default slide size
is made in a temporary folder first (not timed).
"""
from __future__ import annotations

import argparse
import io as pyio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from histo_utils import tiling
from histo_utils.slides import open_slide, read_region
from histo_utils.synthetic import CohortParams, make_cohort

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "default" / "data")
    ap.add_argument("--tile-px", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--out-px", type=int, default=224)
    ap.add_argument("--max-slides", type=int, default=24,
                    help="slides timed (make bench: 24; more for a steadier figure)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    data = args.data
    if not (data / "slides").is_dir():
        data = Path(tmp.name) / "data"
        print(f"no cohort at {args.data}; making one in {data} (not timed)", file=sys.stderr)
        make_cohort(data, CohortParams(samples_per_tissue=12, tissues_per_donor=3), workers=2, progress=False)
    slides = tiling.list_slides(data / "slides").head(args.max_slides)
    params = tiling.TilingParams(tile_px=tuple(args.tile_px), input_px=args.out_px)

    # 1. coordinate tiling (fresh cache, one process, like-for-like with the sequential raw reads)
    t0 = time.perf_counter()
    tiles, report = tiling.tile_slides(slides, params=params, cache_dir=Path(tmp.name) / "cache", workers=1,
                                       progress=False)
    t_tiling = time.perf_counter() - t0
    ok = report[report.status == "ok"]
    paths = dict(zip(slides.image_id, slides.path))

    def raw_reads(sub):
        for iid, group in sub.groupby("image_id"):
            s = open_slide(paths[iid])
            for r in group.itertuples():
                s.read_region((int(r.x), int(r.y)), int(r.level), (int(r.read_px), int(r.read_px)))
            s.close()

    def tile_reads(sub, level):
        for iid, group in sub.groupby("image_id"):
            s = open_slide(paths[iid])
            for r in group.to_dict("records"):
                tiling.read_tile(s, r, path=paths[iid], level=level)
            s.close()

    def best_of(fn, *a):
        best = np.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn(*a)
            best = min(best, time.perf_counter() - t)
        return best

    # per tile size: raw reads of the table's regions, read_tile (auto level) and read_tile at the table's level
    per_size = {}
    for px, sub in tiles.groupby("tile_px"):
        per_size[px] = {"n": len(sub), "raw": best_of(raw_reads, sub), "auto": best_of(tile_reads, sub, "auto"),
                        "table": best_of(tile_reads, sub, "table")}
    t_raw = sum(v["raw"] for v in per_size.values())
    t_tile = sum(v["auto"] for v in per_size.values())
    t_table = sum(v["table"] for v in per_size.values())
    n = len(tiles)
    # levels read_tile chooses and the extent of what it reads against the tile's (effective resolution)
    plans, extent = [], []
    for iid, group in tiles.groupby("image_id"):
        s = open_slide(paths[iid])
        for r in group.to_dict("records"):
            lv, size = tiling.read_plan(s, r, int(r["input_px"]))
            plans.append((r["tile_px"], lv))
            extent.append(size * s.level_downsamples[lv] / r["size0"])
        s.close()
    extent = np.abs(np.array(extent) - 1)
    levels = {px: sorted({lv for p, lv in plans if p == px}) for px in per_size}

    # 4. disk: tile table vs JPEG tiles (JPEG size measured on a sample at the stored tile size)
    table = Path(tmp.name) / "tiles.parquet"
    tiles.to_parquet(table, index=False)
    sample = tiles.sample(min(200, n), random_state=0)
    jpeg_bytes = []
    for r in sample.to_dict("records"):
        s = open_slide(paths[r["image_id"]])
        rgb = read_region(s, paths[r["image_id"]], (int(r["x"]), int(r["y"])), int(r["level"]),
                          (int(r["read_px"]), int(r["read_px"])))
        s.close()
        img = Image.fromarray(rgb).resize((int(r["tile_px"]), int(r["tile_px"])), Image.BILINEAR)
        buf = pyio.BytesIO()
        img.save(buf, "JPEG", quality=90)
        jpeg_bytes.append(buf.tell())
    jpeg_total = float(np.mean(jpeg_bytes)) * n

    rows = [
        ("slides tiled", f"{len(ok)} of {len(slides)}"),
        ("tiles kept", f"{n} ({', '.join(f'{p} px: {(tiles.tile_px == p).sum()}' for p in args.tile_px)})"),
        ("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"),
        ("raw read_region rate", f"{n / t_raw:.1f} tiles/s"),
        ("coordinate tiling rate / raw read rate", f"{(n / t_tiling) / (n / t_raw):.2f}x"),
        ("read_tile rate / raw read rate (goal >= 0.9)", f"{t_raw / t_tile:.2f}x  "
                                                          f"{'met' if t_raw / t_tile >= 0.9 else 'NOT met'}"),
    ]
    for px, v in per_size.items():
        rows.append((f"  {px} px tiles ({v['n']}; read at level {levels[px]}): read_tile / raw (goal >= 0.9)",
                     f"{v['raw'] / v['auto']:.2f}x  {'met' if v['raw'] / v['auto'] >= 0.9 else 'NOT met'}"))
    rows += [
        ("read_tile at the table's level / raw (before: level='table')", f"{t_raw / t_table:.2f}x"),
        ("largest extent difference of the region read (goal <= 2 %)",
         f"{extent.max():.2%}  {'met' if extent.max() <= 0.02 else 'NOT met'}"),
        ("tile table bytes", f"{table.stat().st_size:,} ({table.stat().st_size / n:.1f} B/tile)"),
        ("JPEG tiles would take", f"{jpeg_total:,.0f} B ({np.mean(jpeg_bytes):,.0f} B/tile, q90 at tile_px)"),
        ("JPEG bytes / tile table bytes", f"{jpeg_total / table.stat().st_size:,.0f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
