"""What a feature looks at: guided backpropagation, activation maximisation, representative tiles (Badea).

A feature ``f = (layer, channel)`` is the spatial mean of that channel's output
(notebook 02's aggregate with p = 1). Guided backpropagation
``gBP(f, X) = grad+_X f`` passes a gradient through a ReLU only where both the
forward input and the incoming gradient are positive (Springenberg et al.);
activation maximisation finds an input that makes ``f`` large, from noise,
with jitter, blur and clipping to the normalised image range as regularisers.
Every function leaves the model as it found it: hooks removed, in-place ReLUs
restored, eval mode.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .metrics import auc
from .training import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

__all__ = ["guided_backprop", "activation_maximization", "select_representative_tiles", "localisation_auroc",
           "denormalize", "feature_channel", "crop_structures"]


def feature_channel(feature: str, layers: dict) -> tuple[nn.Module, int]:
    """The module and channel of a ``layer_channel`` feature name, with a clear error."""
    layer, _, ch = str(feature).rpartition("_")
    if layer not in layers:
        raise ValueError(f"Layer {layer!r} of feature {feature!r} not available. Available layers: "
                         f"{', '.join(list(layers)[:8])}{' ...' if len(layers) > 8 else ''}")
    return layers[layer], int(ch)


@contextlib.contextmanager
def _guided(model: nn.Module) -> Iterator[None]:
    """ReLUs pass only positive gradients (guided backpropagation); everything restored on exit."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    inplace = [m.inplace for m in relus]
    handles = []
    try:
        for m in relus:
            m.inplace = False  # backward hooks cannot see through in-place operations
            handles.append(m.register_full_backward_hook(lambda mod, gin, gout: (gin[0].clamp(min=0),)))
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(relus, inplace):
            m.inplace = flag


def _feature_value(model: nn.Module, module: nn.Module, channel: int, x: torch.Tensor) -> torch.Tensor:
    """Spatial mean of ``channel`` of ``module``'s output for each image of x, shape (batch,)."""
    out = {}
    h = module.register_forward_hook(lambda m, i, o: out.__setitem__("y", o))
    try:
        model(x)
    finally:
        h.remove()
    y = out["y"]
    if channel >= y.shape[1]:
        raise ValueError(f"Channel {channel} not available: the layer has {y.shape[1]} channels.")
    return y[:, channel].flatten(1).mean(1)


def guided_backprop(model: nn.Module, module: nn.Module, channel: int, images: torch.Tensor, *,
                    device: str = "cpu") -> np.ndarray:
    """gBP(f, X) for a batch of images.

    Parameters
    ----------
    model : the network (put in eval mode here)
    module, channel : the feature (see :func:`feature_channel`)
    images : tensor, shape (batch, 3, H, W), normalised as the network's input

    Returns
    -------
    array, shape (batch, 3, H, W): the guided gradient of the feature with respect to each image.
    """
    model.eval()
    x = images.detach().to(device).clone().requires_grad_(True)
    with _guided(model):
        f = _feature_value(model, module, channel, x)
        grad, = torch.autograd.grad(f.sum(), x)
    return grad.cpu().numpy()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(2 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = nn.functional.conv2d(nn.functional.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                             groups=c)
    return nn.functional.conv2d(nn.functional.pad(x, (0, 0, r, r), mode="reflect"),
                                k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def activation_maximization(model: nn.Module, module: nn.Module, channel: int, *, size: int = 128,
                            steps: int = 200, lr: float = 0.05, jitter: int = 4, blur_every: int = 4,
                            blur_sigma: float = 0.5, tv_weight: float = 0.0, seed: int = 0,
                            init: torch.Tensor | None = None, device: str = "cpu",
                            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic input that maximises the feature, from noise.

    Gradient ascent (Adam) on the normalised input, with random shifts of up to ``jitter`` px each step, a
    Gaussian blur every ``blur_every`` steps, an optional total-variation penalty, and clipping to the range
    of normalised images ([0, 1] RGB after ImageNet normalisation). ``init`` (a normalised (3, H, W) image)
    replaces the noise start: a channel that is zero on noise has zero gradient there and cannot be grown.

    Returns
    -------
    image : array, shape (size, size, 3), uint8 RGB (de-normalised)
    history : array, shape (steps + 1,), the feature value of the (unjittered) image before each step and
        at the end
    """
    model.eval()
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    if init is None:
        x = ((0.5 + 0.1 * torch.randn(1, 3, size, size, generator=g)).to(device) - mean) / std
    else:  # start from a given (normalised) image plus a little noise, e.g. when noise leaves the channel at 0
        x = init.reshape(1, 3, *init.shape[-2:]).to(device) + 0.1 * torch.randn(1, 3, *init.shape[-2:],
                                                                                 generator=g).to(device)
    x = x.clamp(lo, hi).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    for step in tqdm(range(steps), desc="activation maximisation", disable=not progress):
        with torch.no_grad():
            history.append(float(_feature_value(model, module, channel, x)))
        dx, dy = (int(v) for v in rng.integers(-jitter, jitter + 1, 2)) if jitter else (0, 0)
        opt.zero_grad()
        f = _feature_value(model, module, channel, torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
        loss = -f.sum()
        if tv_weight:
            loss = loss + tv_weight * ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                                       + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())
        loss.backward()
        opt.step()
        with torch.no_grad():
            if blur_every and (step + 1) % blur_every == 0 and blur_sigma > 0:
                x.copy_(_blur(x, blur_sigma))
            x.copy_(torch.max(torch.min(x, hi), lo))
    with torch.no_grad():
        history.append(float(_feature_value(model, module, channel, x)))
    return denormalize(x.detach().cpu()[0]), np.asarray(history)


def denormalize(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A normalised (3, H, W) tensor as (H, W, 3) uint8 RGB."""
    x = torch.as_tensor(x, dtype=torch.float32)
    rgb = x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def select_representative_tiles(tiles: pd.DataFrame, values: Sequence[float], *, k: int = 4,
                                top_fraction: float = 0.1, per_subject: int = 1, min_distance_px: float = 0.0,
                                subject_col: str = "subject_id") -> pd.DataFrame:
    """A few tiles that show what a feature responds to, spread over donors and not near-duplicates.

    Rules, in order: (1) candidates are the tiles whose feature value is in the top ``top_fraction`` (at
    least ``k`` tiles); (2) they are taken greedily by decreasing value; (3) at most ``per_subject`` tiles
    per donor; (4) on the same slide, no two chosen tiles closer than ``min_distance_px`` (level-0 px
    between corners). If the rules leave fewer than ``k`` tiles, fewer are returned.

    Parameters
    ----------
    tiles : DataFrame with ``image_id, x, y`` and ``subject_col``, one row per tile
    values : the feature value of each tile

    Returns
    -------
    The chosen rows of ``tiles`` (with a ``value`` column), in the order chosen.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(tiles):
        raise ValueError(f"values has {len(values)} entries for {len(tiles)} tiles.")
    if subject_col not in tiles:
        raise ValueError(f"tiles need a {subject_col!r} column to spread the choice over donors.")
    t = tiles.reset_index(drop=True).assign(value=values)
    n_cand = max(k, int(np.ceil(top_fraction * len(t))))
    cand = t.iloc[np.argsort(-values, kind="stable")[:n_cand]]
    chosen, per = [], {}
    for i, row in cand.iterrows():
        if per.get(row[subject_col], 0) >= per_subject:
            continue
        if min_distance_px > 0 and any(
                c.image_id == row.image_id and np.hypot(c.x - row.x, c.y - row.y) < min_distance_px for c in chosen):
            continue
        chosen.append(row)
        per[row[subject_col]] = per.get(row[subject_col], 0) + 1
        if len(chosen) == k:
            break
    return pd.DataFrame(chosen)


def localisation_auroc(saliency: np.ndarray, mask: np.ndarray) -> float:
    """AUROC of a saliency map for a true structure mask: P(saliency of a mask pixel > of a non-mask pixel).

    NaN when the mask is all true or all false.
    """
    s = np.asarray(saliency, dtype=np.float64).ravel()
    m = np.asarray(mask, dtype=bool).ravel()
    if s.shape != m.shape:
        raise ValueError(f"saliency {np.shape(saliency)} and mask {np.shape(mask)} differ in shape.")
    return auc(s, m)


def crop_structures(rendered, tile, *, level0_mpp: float, out_px: int) -> dict[str, np.ndarray]:
    """The true structure masks under a tile, resized to ``out_px`` (synthetic cohort).

    Parameters
    ----------
    rendered : :class:`histo_utils.synthetic.histology.RenderedSlide` (painted at ``spec.px_um``)
    tile : a tile-table row (``x, y, size0`` in level-0 pixels)
    level0_mpp : microns per level-0 pixel of the slide file
    """
    from PIL import Image

    f = level0_mpp / rendered.spec.px_um  # level-0 px -> painted px
    x0, y0, s = int(round(tile["x"] * f)), int(round(tile["y"] * f)), max(1, int(round(tile["size0"] * f)))
    out = {}
    for name, m in rendered.structures.items():
        crop = np.zeros((s, s), bool)
        part = m[y0:y0 + s, x0:x0 + s]
        crop[:part.shape[0], :part.shape[1]] = part
        out[name] = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize((out_px, out_px),
                                                                                  Image.NEAREST)) > 127
    return out
