"""GPU readiness: notebook 02's feature extraction and notebook 03's torch correlation engine, timed on CUDA.

What the ``gtex`` profile (``params/gtex.yaml``, read here; ``--profile`` for another) runs on a GPU
machine, measured in one run of a few minutes (``make gpu-check``):

1. **02, feature extraction.** :func:`histo_utils.features.extract_slide_features`, as notebook 02 calls it
   (every feature layer hooked, tiles reduced per slide by the profile's ``slide_aggregation``, batches of
   twice the profile's ``batch_size``, channels-last), for the profile's first network
   (``02_training.archs[0]``, VGG16) at its ``input_px`` (224), with random weights, on synthetic tiles held
   in memory (random pixels: a CNN's cost does not depend on them; nothing is read or downloaded). Printed:
   tiles, seconds and tiles/s (best of ``--repeats`` after a warm-up).
2. **03, correlation engine.** :func:`histo_utils.correlation.scan_pairs` with notebook 03's settings from
   the profile (``r_min = min(r_grid)``, ``fdr_keep = fdr_alpha``, a 200-bin histogram of every r,
   ``block_size``, the default float64) on the ``torch`` backend on the device against the ``numpy``
   backend, on random data of Badea's shapes (9,920 features x 56,202 genes x 334 samples at ``--scale 1``,
   with planted pairs; ``benchmarks/bench_correlation.py``'s generator). Printed: seconds of each (best of
   ``--repeats``, run alternately), the speed-up and whether both kept the same pairs.

Without CUDA the script says so and exits 0 (nothing to time). ``--device cpu --small`` runs the same
code on the CPU at a small size (a few tiles, ``--scale 0.02``), to check the script itself.

Usage::

    python benchmarks/gpu_check.py [--profile gtex] [--tiles 2048] [--scale 1] [--repeats 2]
    python benchmarks/gpu_check.py --device cpu --small
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling benchmarks, also when this file is imported by a test
    sys.path.insert(0, str(HERE))

#: classes of the tissue classifier's head: Badea's 39 detailed GTEx tissues with slides (SMTSD); the head's
#: size does not change the cost of the feature layers
N_CLASSES = 39
#: bins of notebook 03's histogram of every r (its scan_pairs call)
HISTOGRAM_BINS = 200
SMALL = {"tiles": 4, "tiles_per_slide": 2, "scale": 0.02, "repeats": 1}


def cpu_description() -> str:
    """CPU model, logical cores and vector flags (avx2, avx512*) from /proc/cpuinfo (Linux), else the platform."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    vector = sorted(f for f in flags if f == "avx2" or f.startswith("avx512"))
    return f"{model}, {os.cpu_count()} logical cores, flags: {' '.join(vector) or 'no avx2/avx512'}"


def profile_values(profile: str, notebooks: Sequence[str]) -> dict[str, dict]:
    """Notebooks' parameters under a profile: each notebook's declared defaults, then the profile's values.

    Parameters
    ----------
    profile : a profile name in ``params/`` (``gtex``) or a path to a profile YAML
    notebooks : notebook stems (``02_training``); the profile must have a section for each

    Returns
    -------
    dict, stem -> parameter values as papermill would pass them (``out_dir`` set to a placeholder)
    """
    from histo_utils import run

    path = Path(profile) if profile.endswith((".yaml", ".yml")) else run.PARAMS_DIR / f"{profile}.yaml"
    prof = run.load_profile(path)
    out = {}
    for stem in notebooks:
        if stem not in prof.notebooks:
            raise SystemExit(f"Profile '{path}' has no section for notebook {stem}; gpu-check times 02 and 03 "
                             "of a profile that runs them (e.g. --profile gtex).")
        values = {}
        for k, v in prof.declared[stem].items():  # papermill gives the defaults as source text
            try:
                values[k] = ast.literal_eval(v) if isinstance(v, str) else v
            except (ValueError, SyntaxError):
                values[k] = v
        values.update(run.resolve_parameters(prof, stem, Path(tempfile.gettempdir()) / "gpu_check"))
        out[stem] = values
    return out


def _synced(fn: Callable, device: "torch.device") -> Callable:
    """``fn`` followed by a CUDA synchronisation (so a timer around it sees the device's work)."""
    import torch

    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return call


def time_feature_extraction(p02: dict, *, device: "torch.device", n_tiles: int, tiles_per_slide: int, repeats: int,
                            seed: int = 0) -> dict:
    """Notebook 02's slide-feature extraction of the profile's first network on in-memory random tiles.

    Returns
    -------
    dict with ``arch, input_px, tiles, slides, batch, features, seconds, tiles_per_s``
    """
    import numpy as np
    import pandas as pd
    import torch
    from bench_correlation import _best

    from histo_utils import features, models, training

    arch, px = p02["archs"][0], int(p02["input_px"])
    batch = 2 * int(p02["batch_size"])  # notebook 02 extracts in batches of twice the training batch
    torch.manual_seed(seed)
    model = models.build_model(arch, N_CLASSES).eval()
    layers = models.feature_layers(model, arch)
    n_slides = max(1, -(-n_tiles // tiles_per_slide))
    ids = [f"GTEX-GPU{i:04d}-0001" for i in range(n_slides)]
    tiles = pd.DataFrame({"image_id": np.repeat(ids, tiles_per_slide)[:n_tiles], "x": 0, "y": 0, "level": 0,
                          "read_px": px})
    tiles["x"] = tiles.groupby("image_id").cumcount() * px
    ds = training.TileDataset(tiles, {i: f"/in-memory/{i}.svs" for i in ids}, input_px=px)
    # the pixels as .preload() leaves them (no slide files to read them from), as the package tests do
    ds._cache = np.random.default_rng(seed).integers(0, 256, (n_tiles, px, px, 3), dtype=np.uint8)
    kw = dict(how=p02["slide_aggregation"], p=float(p02["feature_p"]), batch_size=batch, device=str(device),
              progress=False)
    first = ds.subset(np.flatnonzero(tiles.image_id.to_numpy() == ids[0]))
    _synced(lambda: features.extract_slide_features(model, layers, first, **kw), device)()  # warm-up
    seconds, table = _best(_synced(lambda: features.extract_slide_features(model, layers, ds, **kw), device),
                           repeats)
    if table.shape[0] != n_slides or table.attrs.get("failed_slides"):
        raise RuntimeError(f"feature extraction gave {table.shape[0]} of {n_slides} slides "
                           f"({table.attrs.get('failed_slides')})")
    return {"arch": arch, "input_px": px, "tiles": n_tiles, "slides": n_slides, "batch": batch,
            "features": table.shape[1], "seconds": seconds, "tiles_per_s": n_tiles / seconds}


def time_correlation(p03: dict, *, device: "torch.device", scale: float, repeats: int, seed: int = 0) -> dict:
    """Notebook 03's scan on the torch backend (on ``device``) against NumPy, on random data of Badea's shapes.

    Returns
    -------
    dict with ``features, genes, samples, numpy_s, torch_s, speedup, kept_numpy, kept_torch, same_pairs``
    """
    from bench_correlation import REF_FEATURES, REF_GENES, REF_SAMPLES, _load, phase_data
    from bench_features import _time_pair

    from histo_utils import correlation

    nf, ng = max(2, round(REF_FEATURES * scale)), max(2, round(REF_GENES * scale))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        phase_data(tmp, nf, ng, REF_SAMPLES, min(20, nf, ng), 0.9, 30, 0.0, seed)
        f, g, _, _ = _load(tmp)
    kw = dict(r_min=min(p03["r_grid"]), fdr_keep=float(p03["fdr_alpha"]), histogram_bins=HISTOGRAM_BINS,
              block_size=int(p03["block_size"]))
    last = {}

    def scan(backend, **extra):
        def run():
            last[backend] = correlation.scan_pairs(f, g, backend=backend, **kw, **extra)
        return _synced(run, device)

    correlation.scan_pairs(f[:, :16], g[:, :256], backend="torch", device=str(device), **kw)  # device warm-up
    t_numpy, t_torch = _time_pair(scan("numpy"), scan("torch", device=str(device)), repeats)
    pairs = {b: set(zip(r.pairs.feature.tolist(), r.pairs.gene.tolist())) for b, r in last.items()}
    return {"features": nf, "genes": ng, "samples": REF_SAMPLES, "numpy_s": t_numpy, "torch_s": t_torch,
            "speedup": t_numpy / t_torch, "kept_numpy": len(pairs["numpy"]), "kept_torch": len(pairs["torch"]),
            "same_pairs": pairs["numpy"] == pairs["torch"]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--profile", default="gtex", help="profile whose 02 and 03 settings are timed")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cuda (the check; without CUDA: a message, exit 0) or cpu (to test the script)")
    ap.add_argument("--small", action="store_true",
                    help=f"a small run to check the script: {SMALL} unless given")
    ap.add_argument("--tiles", type=int, default=None, help="synthetic tiles for 02 (default 2048)")
    ap.add_argument("--tiles-per-slide", type=int, default=None, help="tiles per synthetic slide (default 256)")
    ap.add_argument("--scale", type=float, default=None,
                    help="multiplies Badea's 9,920 features and 56,202 genes for 03 (default 1)")
    ap.add_argument("--repeats", type=int, default=None, help="best of this many timed runs (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    full = {"tiles": 2048, "tiles_per_slide": 256, "scale": 1.0, "repeats": 2}
    for k, v in (SMALL if args.small else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.tiles < 1 or args.tiles_per_slide < 1 or args.repeats < 1 or args.scale <= 0:
        ap.error("--tiles, --tiles-per-slide and --repeats must be at least 1, --scale above 0.")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"gpu-check: no CUDA device on this machine (torch {torch.__version__}, {built}; "
              "torch.cuda.is_available() is False): nothing to time. Run 'make gpu-check' on the GPU machine "
              "(a CUDA torch: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126); "
              "'python benchmarks/gpu_check.py --device cpu --small' checks this script on the CPU.")
        return 0
    device = torch.device(args.device)
    wall = time.perf_counter()
    params = profile_values(args.profile, ["02_training", "03_feature_correlation"])
    p02, p03 = params["02_training"], params["03_feature_correlation"]
    if args.device == "cuda":
        prop = torch.cuda.get_device_properties(device)
        where = f"{prop.name}, {prop.total_memory / 1024 ** 3:.1f} GB, CUDA {torch.version.cuda}"
    else:
        where = f"CPU, {torch.get_num_threads()} torch threads"
    print(f"gpu-check: profile {args.profile}; device {args.device} ({where}); torch {torch.__version__}")
    print(f"CPU: {cpu_description()}")
    if args.small:
        print(f"NB: --small ({args.tiles} tiles, --scale {args.scale:g}): checks the script, the figures are "
              "not the machine's")

    fx = time_feature_extraction(p02, device=device, n_tiles=args.tiles, tiles_per_slide=args.tiles_per_slide,
                                 repeats=args.repeats, seed=args.seed)
    print(f"02 feature extraction: {fx['arch']} at {fx['input_px']} px, {fx['tiles']} tiles in {fx['slides']} "
          f"slides, batch {fx['batch']}, {fx['features']:,} features: {fx['seconds']:.3f} s, "
          f"{fx['tiles_per_s']:.1f} tiles/s")
    cr = time_correlation(p03, device=device, scale=args.scale, repeats=args.repeats, seed=args.seed)
    shape = f"{cr['features']:,} features x {cr['genes']:,} genes x {cr['samples']} samples"
    print(f"03 correlation numpy: {shape}: {cr['numpy_s']:.3f} s")
    print(f"03 correlation torch ({args.device}): {shape}: {cr['torch_s']:.3f} s, {cr['speedup']:.2f}x numpy; "
          f"pairs kept {cr['kept_torch']:,} (numpy {cr['kept_numpy']:,}), "
          f"{'the same pairs' if cr['same_pairs'] else 'NOT the same pairs'}")
    if args.device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 1024 ** 3:.2f} GB")
    print(f"total {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
