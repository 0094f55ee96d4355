"""Spatially invariant layer/channel features (Badea & Stanescu 2020).

For layer ``l``, channel ``z`` and tile ``X``::

    f_lz(X) = mean over positions (x, y) of Y_lzxy(X) ** p

(Badea write the sum over positions; with a fixed tile size the number of
positions of a layer is constant, so the mean differs from the sum by a
constant factor per layer and every correlation is the same; the mean keeps
layers comparable.) ``p = 1`` is the spatial average Badea report; for a
non-integer ``p`` the odd extension ``sign(Y) |Y| ** p`` keeps negative
activations (conv outputs before their ReLU) defined.

All layers are read in one forward pass through hooks that reduce each
output to its per-channel value as soon as it is produced (a later in-place
ReLU cannot change it, and no activation map is kept). Slide values aggregate
the tiles' values: ``sum`` (Badea), ``mean`` or ``median`` (Jones). Features
are named ``<layer>_<channel>`` (``29_499``).
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .training import TileDataset, resolve_device

log = logging.getLogger(__name__)

__all__ = ["spatial_aggregate", "LayerRecorder", "extract_tile_features", "aggregate_slides",
           "extract_slide_features", "feature_names", "residualize", "layer_program_correlation"]


def spatial_aggregate(y: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """Per-channel mean over positions of ``y ** p``.

    Parameters
    ----------
    y : Tensor, shape (batch, channels, height, width) or (batch, channels)
    p : float, positive

    Returns
    -------
    Tensor, shape (batch, channels)
    """
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}.")
    if y.dim() == 2:
        y = y[:, :, None, None]
    if y.dim() != 4:
        raise ValueError(f"layer output must be (batch, channels, h, w), got shape {tuple(y.shape)}.")
    if p == 1:
        v = y
    elif float(p).is_integer():
        v = y.pow(int(p))
    else:
        v = y.sign() * y.abs().pow(p)
    return v.mean(dim=(2, 3))


class LayerRecorder:
    """Forward hooks that record :func:`spatial_aggregate` of chosen layers; removed on exit.

    Use as a context manager; after a forward pass, :meth:`collect` returns
    the (batch, n_features) matrix in layer order and clears the record.
    """

    def __init__(self, layers: Mapping[str, nn.Module], *, p: float = 1.0):
        self.layers = dict(layers)
        self.p = p
        self._out: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self.channels: dict[str, int] = {}

    def __enter__(self) -> "LayerRecorder":
        for name, mod in self.layers.items():
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name):
        def fn(_mod, _inp, out):
            self._out[name] = spatial_aggregate(out.detach(), self.p)
        return fn

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def collect(self) -> torch.Tensor:
        missing = [n for n in self.layers if n not in self._out]
        if missing:
            raise RuntimeError(f"Layers {missing[:3]} produced no output in the forward pass.")
        parts = [self._out[n] for n in self.layers]
        self.channels = {n: t.shape[1] for n, t in zip(self.layers, parts)}
        self._out = {}
        return torch.cat(parts, dim=1)


def feature_names(channels: Mapping[str, int]) -> list[str]:
    """``layer_channel`` names in the order of :meth:`LayerRecorder.collect`."""
    return [f"{layer}_{c}" for layer, n in channels.items() for c in range(n)]


@torch.no_grad()
def extract_tile_features(model: nn.Module, layers: Mapping[str, nn.Module], ds: TileDataset, *, p: float = 1.0,
                          batch_size: int = 64, device: str = "auto", num_workers: int = 0,
                          progress: bool = True) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Features of every tile of ``ds`` in one forward pass per batch.

    Returns
    -------
    features : ndarray, shape (n_tiles, n_features), float32
    names : list of str, ``layer_channel``
    logits : ndarray, shape (n_tiles, n_outputs), the network's output (same pass)
    """
    dev = resolve_device(device)
    model.to(dev).eval()
    feats, logits = [], []
    with LayerRecorder(layers, p=p) as rec:
        for x, _, _ in tqdm(DataLoader(ds, batch_size=batch_size, num_workers=num_workers),
                            desc="features", unit="batch", disable=not progress, leave=False):
            logits.append(model(x.to(dev)).float().cpu())
            feats.append(rec.collect().float().cpu())
    if not feats:
        return np.zeros((0, 0), np.float32), [], np.zeros((0, 0), np.float32)
    return torch.cat(feats).numpy(), feature_names(rec.channels), torch.cat(logits).numpy()


def aggregate_slides(tile_features: np.ndarray, image_ids: Sequence[str], *, how: str = "sum") -> pd.DataFrame:
    """Slide values from tile values: ``sum`` (Badea), ``mean`` or ``median`` (Jones).

    Returns
    -------
    DataFrame, shape (n_slides, n_features), indexed by ``image_id`` (sorted).
    """
    if how not in ("sum", "mean", "median"):
        raise ValueError(f"how must be 'sum', 'mean' or 'median', got '{how}'.")
    ids = np.asarray(image_ids)
    if len(ids) != len(tile_features):
        raise ValueError("image_ids must have one entry per tile.")
    df = pd.DataFrame(tile_features)
    df.index = pd.Index(ids, name="image_id")
    return getattr(df.groupby(level=0), how)()


def extract_slide_features(model: nn.Module, layers: Mapping[str, nn.Module], ds: TileDataset, *,
                           how: str = "sum", p: float = 1.0, batch_size: int = 64, device: str = "auto",
                           num_workers: int = 0, progress: bool = True) -> pd.DataFrame:
    """Slide x feature table: tile features aggregated per slide, columns named ``layer_channel``."""
    f, names, _ = extract_tile_features(model, layers, ds, p=p, batch_size=batch_size, device=device,
                                        num_workers=num_workers, progress=progress)
    out = aggregate_slides(f, ds.tiles["image_id"].to_numpy(), how=how)
    out.columns = names
    return out


def residualize(df: pd.DataFrame, groups: Sequence) -> pd.DataFrame:
    """Subtract each group's mean (e.g. tissue): what is left varies within groups only."""
    g = pd.Series(np.asarray(groups), index=df.index)
    return df - df.groupby(g).transform("mean")


def layer_program_correlation(features: pd.DataFrame, programs: pd.DataFrame, groups: Sequence, *,
                              permute_seed: int | None = None) -> pd.DataFrame:
    """For every layer and program, the feature that tracks the program best, within groups.

    Features and programs are centred within each group (tissue), then every
    feature is correlated with every program (one matrix product); per layer the
    feature with the largest |r| is reported. With ``permute_seed`` the program
    values are first shuffled within groups: the same maximum under no link,
    the chance level of a best-of-many-channels correlation.

    Parameters
    ----------
    features : DataFrame, shape (n_slides, n_features), columns ``layer_channel``
    programs : DataFrame, shape (n_slides, n_programs), same index
    groups : sequence, length n_slides

    Returns
    -------
    DataFrame with ``layer, program, feature, r, abs_r``, layers in network order.
    """
    if not features.index.equals(programs.index):
        raise ValueError("features and programs must have the same index (slides) in the same order.")
    groups = np.asarray(groups)
    prog = programs.copy()
    if permute_seed is not None:
        rng = np.random.default_rng(permute_seed)
        for g in np.unique(groups):
            idx = np.where(groups == g)[0]
            prog.iloc[idx] = prog.iloc[rng.permutation(idx)].to_numpy()
    f = residualize(features.astype(np.float64), groups).to_numpy()
    p = residualize(prog.astype(np.float64), groups).to_numpy()
    f = (f - f.mean(0)) / np.where(f.std(0) > 0, f.std(0), np.inf)
    p = (p - p.mean(0)) / np.where(p.std(0) > 0, p.std(0), np.inf)
    r = f.T @ p / len(f)  # (n_features, n_programs)
    layers = np.array([c.rsplit("_", 1)[0] for c in features.columns])
    order = list(dict.fromkeys(layers))
    rows = []
    for k, prog_name in enumerate(programs.columns):
        for layer in order:
            idx = np.where(layers == layer)[0]
            j = idx[np.argmax(np.abs(r[idx, k]))]
            rows.append({"layer": layer, "program": prog_name, "feature": features.columns[j],
                         "r": float(r[j, k]), "abs_r": float(abs(r[j, k]))})
    return pd.DataFrame(rows)
