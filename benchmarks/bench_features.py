"""Benchmark: feature extraction (hooks on every layer) against a plain forward pass.

Same network, same tiles (random tensors of the input size: reading is not
part of either side), same batches, in one run; the ratio is extraction time
over plain forward time (goal: <= 1.2). A timm ViT (``timm:<name>``, random weights of its full
depth) is measured the same way: its features are the patch-token mean of every block and the final
class token (:mod:`histo_utils.models`). Both sides run as the package runs them: network and batches
channels-last (:func:`histo_utils.training.to_device`); the last column is the same extraction with NCHW
tensors over the channels-last one (what the memory order buys on this machine).

Usage::

    python benchmarks/bench_features.py [--arch compact vgg16 timm:vit_small_patch16_224]
        [--input-px 96 224 224] [--tiles 512]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from histo_utils import features, models, training


def _time_pair(a, b, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` times of ``a`` and ``b``, run alternately so both see the same machine state."""
    a(), b()  # warm-up
    ta = tb = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a()
        ta = min(ta, time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb = min(tb, time.perf_counter() - t)
    return ta, tb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=["compact_bn", "vgg16", "timm:vit_small_patch16_224"])
    ap.add_argument("--input-px", nargs="+", type=int, default=[128, 224, 224])
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    goal = 1.2
    print(f"{'arch':<28} {'input':>5} {'features':>8} {'plain tiles/s':>14} {'extract tiles/s':>16} {'ratio':>6}"
          f"  goal         {'NCHW/channels-last':>18}")
    for arch, px in zip(args.arch, args.input_px):
        model = models.build_model(arch, 5).eval()
        layers = models.feature_layers(model, arch)
        n = args.tiles if arch.startswith("compact") else max(args.batch, args.tiles // 8)
        nchw = [torch.randn(args.batch, 3, px, px) for _ in range(max(1, n // args.batch))]
        cpu = torch.device("cpu")
        batches = [training.to_device(x, cpu) for x in nchw]
        training.to_device(model, cpu)

        @torch.no_grad()
        def plain():
            for x in batches:
                model(x)

        @torch.no_grad()
        def extract():
            with features.LayerRecorder(layers) as rec:
                for x in batches:
                    model(x)
                    rec.collect()

        tp, te = _time_pair(plain, extract, args.repeats)
        model.to(memory_format=torch.contiguous_format)
        batches, cl_batches = nchw, batches
        _, te_nchw = _time_pair(plain, extract, max(1, args.repeats // 2))
        batches = cl_batches
        training.to_device(model, cpu)
        n_tiles = len(batches) * args.batch
        with torch.no_grad(), features.LayerRecorder(layers) as rec:
            model(batches[0][:1])
            n_feat = rec.collect().shape[1]
        verdict = "ok" if te / tp <= goal else "OVER"
        print(f"{arch:<28} {px:>5} {n_feat:>8} {n_tiles / tp:>14.1f} {n_tiles / te:>16.1f} {te / tp:>6.2f}"
              f"  <= {goal} {verdict:<4} {te_nchw / te:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
