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
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import HistoUtilsError, InputError, StateError
from .features import LayerRecorder, feature_names
from .metrics import auc
from .training import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

__all__ = ["guided_backprop", "guided_backprop_features", "activation_maximization", "select_representative_tiles", "localisation_auroc",
           "denormalize", "feature_channel", "crop_structures", "candidate_pairs", "choose_features",
           "tile_feature_values", "channel_values", "gbp_rgb", "Synthesis", "synthesize", "sample_tiles", "find_gene", "interior_tiles", "feature_maps",
           "channel_scores", "firing_side", "FeaturePanels", "feature_panel_maps", "LinkedView",
           "linked_view_maps", "ProgramPanels", "program_panel_maps"]


def feature_channel(feature: str, layers: dict) -> tuple[nn.Module, int]:
    """The module and channel of a ``layer_channel`` feature name, with a clear error.

    Parameters
    ----------
    feature : ``layer_channel``, e.g. ``"29_499"`` or ``"layer3.2_17"``
    layers : layer name -> module (:func:`histo_utils.models.feature_layers`)

    Returns
    -------
    module : the layer
    channel : int
    """
    layer, _, ch = str(feature).rpartition("_")
    if layer not in layers:
        raise InputError(f"Layer {layer!r} of feature {feature!r} not available. Available layers: "
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


class _StopForward(HistoUtilsError):
    """Raised by a forward hook once every wanted layer has run: the rest of the network is not needed."""


def _layer_outputs(model: nn.Module, modules: Sequence[nn.Module], x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The outputs of ``modules`` on one forward pass of ``x``, keyed by ``id(module)``.

    The pass stops as soon as the last of them has run (the layers after it cannot change them), so a feature
    of an early layer costs only the layers up to it. Each feature layer runs once per pass (true of every
    architecture of :func:`histo_utils.models.feature_layers`). Outputs are cloned: a following in-place ReLU
    would otherwise turn them into its own output. Gradients flow through them when ``x`` requires them.
    """
    wanted = {id(m): m for m in modules}
    out: dict[int, torch.Tensor] = {}

    def hook(mod, _inp, o):
        out[id(mod)] = o.clone()
        if len(out) == len(wanted):
            raise _StopForward

    handles = [m.register_forward_hook(hook) for m in wanted.values()]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [k for k in wanted if k not in out]
    if missing:
        raise StateError(f"{len(missing)} of the feature layers produced no output in the forward pass.")
    return out


def _channel_mean(y: torch.Tensor, channel: int) -> torch.Tensor:
    if channel >= y.shape[1]:
        raise InputError(f"Channel {channel} not available: the layer has {y.shape[1]} channels.")
    return y[:, channel].flatten(1).mean(1)


def _feature_value(model: nn.Module, module: nn.Module, channel: int, x: torch.Tensor) -> torch.Tensor:
    """Spatial mean of ``channel`` of ``module``'s output for each image of x, shape (batch,)."""
    return _channel_mean(_layer_outputs(model, [module], x)[id(module)], channel)


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


def guided_backprop_features(model: nn.Module, layers: dict, features: Sequence[str], images: torch.Tensor, *,
                             device: str = "cpu", reduce: str | None = None) -> np.ndarray:
    """gBP of several features on the same images: one forward pass, one backward pass per feature.

    Equal to :func:`guided_backprop` of each feature in turn (each backward pass sees only its own
    feature's graph), without repeating the forward pass.

    Parameters
    ----------
    model, layers : the network and its feature layers (:func:`histo_utils.models.feature_layers`)
    features : ``layer_channel`` names, n_features
    images : tensor, shape (batch, 3, H, W), normalised as the network's input
    reduce : None keeps the colours; ``"abs_sum"`` returns |gBP| summed over the colours

    Returns
    -------
    array, shape (n_features, batch, 3, H, W), or (n_features, batch, H, W) with ``reduce="abs_sum"``
    """
    if reduce not in (None, "abs_sum"):
        raise InputError(f"reduce must be None or 'abs_sum', got {reduce!r}.")
    chans = [feature_channel(f, layers) for f in features]
    model.eval()
    x = images.detach().to(device).clone().requires_grad_(True)
    out = []
    with _guided(model):
        ys = _layer_outputs(model, [m for m, _ in chans], x)
        values = [_channel_mean(ys[id(m)], ch) for m, ch in chans]
        for k, f in enumerate(values):
            grad, = torch.autograd.grad(f.sum(), x, retain_graph=k < len(values) - 1)
            g = grad.cpu().numpy()
            out.append(np.abs(g).sum(1) if reduce == "abs_sum" else g)
    return np.stack(out)


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
    The chosen rows of ``tiles`` (with a ``value`` column; original index), in the order chosen.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(tiles):
        raise InputError(f"values has {len(values)} entries for {len(tiles)} tiles.")
    if subject_col not in tiles:
        raise InputError(f"tiles need a {subject_col!r} column to spread the choice over donors.")
    t = tiles.assign(value=values)  # the original index is kept (the tile's index in the dataset)
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
        raise InputError(f"saliency {np.shape(saliency)} and mask {np.shape(mask)} differ in shape.")
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


# --------------------------------------------------------------------------
# notebook 07: choosing features, their values on tiles, synthetic images and panels
# --------------------------------------------------------------------------
def candidate_pairs(within: pd.DataFrame, pooled: pd.DataFrame) -> pd.DataFrame:
    """Notebook 03's gene-feature pairs of both scans, with ``scan`` and ``abs_r``.

    Parameters
    ----------
    within : ``within_tissue_pairs.parquet`` (direct associations)
    pooled : ``pairs.parquet``; only its permutation-tested pairs are kept

    Returns
    -------
    DataFrame: the pairs of both, ``scan`` = ``within tissue`` or ``pooled``, ``abs_r`` = |r|.
    """
    cand = pd.concat([within.assign(scan="within tissue"), pooled[pooled.perm_p.notna()].assign(scan="pooled")],
                     ignore_index=True)
    cand["abs_r"] = cand.r.abs()
    return cand


def choose_features(cand: pd.DataFrame, layers: dict, *, n_features: int = 4,
                    named: Sequence[str] = ()) -> pd.DataFrame:
    """Features to show: the named ones, else the strongest pairs spread over the network.

    Without names, the layers (in network order) are split into ``n_features`` bands from early to late
    and the strongest pair of each band is taken, alternating which scan is preferred: within tissue
    (direct associations) in even bands, pooled (Badea's) in odd ones; a feature is taken once.

    Parameters
    ----------
    cand : :func:`candidate_pairs` output (``feature, layer, abs_r, scan``)
    layers : layer name -> module, in network order (:func:`histo_utils.models.feature_layers`); every chosen
        feature must be a channel of one of them (checked with :func:`feature_channel`)
    n_features : bands (features) when none are named
    named : ``layer_channel`` features; each keeps its strongest pair (a row without pair if it has none)

    Returns
    -------
    DataFrame, one row per chosen feature (the pair's columns), index 0..n-1.
    """
    if named:
        chosen = cand[cand.feature.isin(named)].sort_values("abs_r", ascending=False).drop_duplicates("feature")
        chosen = pd.concat([chosen, pd.DataFrame({"feature": [f for f in named if f not in set(chosen.feature)]})])
    else:
        chosen = _spread_over_layers(cand, list(layers), n_features)
    chosen = chosen.reset_index(drop=True)
    for f in chosen.feature:
        feature_channel(f, layers)  # a clear error for an unknown layer
    return chosen


def _spread_over_layers(cand: pd.DataFrame, layer_order: list[str], n_features: int) -> pd.DataFrame:
    """The strongest pair of each of ``n_features`` layer bands, alternating the preferred scan."""
    band = cand.layer.astype(str).map({name: i * n_features // len(layer_order) for i, name in enumerate(layer_order)})
    picks = []
    for b in range(n_features):
        pref = ["within tissue", "pooled"] if b % 2 == 0 else ["pooled", "within tissue"]
        for scan in pref:
            c = cand[(band == b) & (cand.scan == scan) & ~cand.feature.isin([p.feature for p in picks])]
            if len(c):
                picks.append(c.nlargest(1, "abs_r").iloc[0])
                break
    return pd.DataFrame(picks)


def tile_feature_values(model: nn.Module, ds, layers: dict, features: Sequence[str] | None = None, *,
                        device: str = "cpu", batch_size: int = 64) -> pd.DataFrame:
    """The value of each feature (spatial mean of a channel) on every tile of a dataset, in one pass.

    Parameters
    ----------
    model : the network, in eval mode on ``device``
    ds : :class:`~histo_utils.training.TileDataset`, n_tiles tiles
    layers : layer name -> module (:func:`histo_utils.models.feature_layers`)
    features : ``layer_channel`` names; None: every channel of every layer (one pass serves every later
        look-up, e.g. a gene's best features chosen after this pass)

    Returns
    -------
    DataFrame, shape (n_tiles, n_features), columns ``features`` (None: ``layer_channel`` of every channel in
    layer order).
    """
    if features is None:
        sel = dict(layers)
    else:
        sel = {name: layers[name] for name in dict.fromkeys(str(f).rpartition("_")[0] for f in features)}
    with torch.no_grad(), LayerRecorder(sel) as rec:
        vals = []
        for x, _, _ in torch.utils.data.DataLoader(ds, batch_size=batch_size):
            model(x.to(device))
            vals.append(rec.collect().cpu())
        names = feature_names(rec.channels)
    table = pd.DataFrame(torch.cat(vals).numpy(), columns=names)
    return table if features is None else table[list(features)]


def channel_values(model: nn.Module, module: nn.Module, channel: int, ds, *, device: str = "cpu",
                   batch_size: int = 64) -> np.ndarray:
    """One feature's value (spatial mean of ``channel`` of ``module``) on every tile.

    Parameters
    ----------
    model : the network, in eval mode on ``device``
    module, channel : the feature (:func:`feature_channel`)
    ds : tile dataset yielding (image, label, index), n_tiles tiles
    batch_size : tiles per forward pass

    Returns
    -------
    array, shape (n_tiles,)
    """
    with torch.no_grad():
        v = [_feature_value(model, module, channel, x.to(device)).cpu()
             for x, _, _ in torch.utils.data.DataLoader(ds, batch_size=batch_size)]
    return torch.cat(v).numpy()


def gbp_rgb(g: np.ndarray) -> np.ndarray:
    """Positive part of a (3, H, W) guided gradient as an (H, W, 3) RGB image in [0, 1]."""
    g = np.clip(g, 0, None)
    return (g / (g.max() + 1e-12)).transpose(1, 2, 0)


@dataclass(frozen=True)
class Synthesis:
    """A synthetic image of a feature: ``image`` (H, W, 3) uint8, the feature's ``history`` over the
    ascent, and where it started (``noise`` or ``best tile``)."""

    image: np.ndarray
    history: np.ndarray
    start: str


def synthesize(model: nn.Module, layers: dict, feature: str, ds, start_tile: int, *, device: str = "cpu",
               **kwargs) -> Synthesis:
    """Activation maximisation of a feature from noise; from its best tile when noise leaves it at zero.

    Parameters
    ----------
    model, layers : the network and its feature layers
    feature : ``layer_channel``
    ds : the tile dataset; ``ds[start_tile][0]`` is the fallback start (normalised (3, H, W))
    **kwargs : options of :func:`activation_maximization` (size, steps, lr, jitter, blur_every, blur_sigma,
        tv_weight, seed)

    Returns
    -------
    Synthesis

    Examples
    --------
    >>> s = synthesize(model, layers, "layer3_17", ds, 0, steps=50, seed=0)   # doctest: +SKIP
    >>> s.image.shape, s.start                                              # doctest: +SKIP
    ((128, 128, 3), 'noise')
    """
    module, ch = feature_channel(feature, layers)
    img, hist = activation_maximization(model, module, ch, device=device, **kwargs)
    start = "noise"
    if hist[-1] <= 0:
        img, hist = activation_maximization(model, module, ch, init=ds[int(start_tile)][0], device=device, **kwargs)
        start = "best tile"
    return Synthesis(img, hist, start)


def sample_tiles(tiles: pd.DataFrame, n: int, *, min_tissue: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """About ``n`` tiles spread over slides.

    The same number is drawn from each slide (tiles with tissue fraction >= ``min_tissue``), the draw is
    shuffled, the first ``n`` are kept and sorted by slide (so that slides are rendered one at a time).

    Parameters
    ----------
    tiles : tile table (``image_id, tissue_fraction``)
    n : tiles wanted
    min_tissue : smallest tissue fraction of a tile
    seed : ``random_state`` of the draws

    Returns
    -------
    DataFrame, at most ``n`` rows of ``tiles`` (original index kept)
    """
    pool = tiles[tiles.tissue_fraction >= min_tissue]
    per_slide = max(1, n // max(1, pool.image_id.nunique()) + 1)
    return (pool.groupby("image_id", group_keys=False).apply(lambda d: d.sample(min(len(d), per_slide),
                                                                                random_state=seed))
            .sample(frac=1.0, random_state=seed).head(n).sort_values("image_id"))


def channel_scores(loc: pd.DataFrame, *, column: str = "map_auroc", per_tissue: bool = False) -> pd.DataFrame:
    """Each channel's localisation score per program: mean AUROC over a tissue's tiles, then mean over tissues.

    The default score, ``map_auroc``, is where the channel's feature map fires: its AUROC against the structure
    mask as computed, never flipped by the sign of the channel's across-sample correlation (> 0.5: it fires on
    the structure, < 0.5: off it, 0.5: no relation).

    Parameters
    ----------
    loc : :func:`histo_utils.truth.structure_localisation` table (tiles with NaN in ``column`` are left out)
    column : the AUROC column
    per_tissue : keep one score per tissue (no mean over tissues)

    Returns
    -------
    DataFrame ``program, [tissue,] kind, feature, <column>``
    """
    d = loc.dropna(subset=[column])
    score = d.groupby(["program", "tissue", "kind", "feature"], sort=False)[column].mean()
    if not per_tissue:
        score = score.groupby(["program", "kind", "feature"], sort=False).mean()
    return score.reset_index()


def firing_side(auroc: float) -> str:
    """Where a map with this AUROC against a structure mask fires: ``"on"`` (> 0.5), ``"off"`` (< 0.5), ``"neither"``.

    Parameters
    ----------
    auroc : AUROC of the map against the mask (NaN: ``"neither"``)

    Returns
    -------
    str
    """
    if not np.isfinite(auroc) or auroc == 0.5:
        return "neither"
    return "on" if auroc > 0.5 else "off"


def find_gene(gene: str, cand: pd.DataFrame, symbols: pd.Series) -> str:
    """The gene ID (``Name``) of a gene given by ID or symbol that has a pair in notebook 03.

    Parameters
    ----------
    gene : a ``Name`` of ``cand`` or a symbol
    cand : :func:`candidate_pairs` output (``gene``)
    symbols : Series, Name -> symbol

    Returns
    -------
    str, the Name
    """
    if gene in set(cand.gene):
        return gene
    if (symbols == gene).any():
        return symbols[symbols == gene].index[0]
    raise InputError(f"Gene {gene!r} has no pair in notebook 03 (give a symbol or Name from pairs.parquet).")


# --------------------------------------------------------------------------
# notebook 07: tiles away from edges, feature maps, one panel per planted program
# --------------------------------------------------------------------------
def interior_tiles(tiles: pd.DataFrame, *, min_tissue: float = 0.9) -> pd.DataFrame:
    """The tiles away from slide and tissue edges: all 8 grid neighbours are tiles of the same slide.

    A tile table holds only tiles on tissue, so a tile whose eight neighbours (steps of ``size0`` level-0 px in
    x and y) are all in it lies inside the tissue, not at a border of the slide or of the tissue. When no tile
    has all eight (slides a few tiles wide), the tiles with the most neighbours are kept, with a warning.

    Parameters
    ----------
    tiles : tile table (``image_id, tile_px, x, y, size0, tissue_fraction``), one row per tile
    min_tissue : smallest tissue fraction of a kept tile

    Returns
    -------
    DataFrame, the kept rows of ``tiles`` (original index)
    """
    need = {"image_id", "tile_px", "x", "y", "size0", "tissue_fraction"}
    if not need <= set(tiles.columns):
        raise InputError(f"tiles need columns {sorted(need)}; missing {sorted(need - set(tiles.columns))} "
                         "(pass notebook 01's tile table).")
    key = tiles[["image_id", "tile_px", "x", "y"]].copy()
    have = pd.MultiIndex.from_frame(key)
    n_nb = np.zeros(len(tiles), int)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                nb = key.assign(x=tiles.x + dx * tiles.size0, y=tiles.y + dy * tiles.size0)
                n_nb += pd.MultiIndex.from_frame(nb).isin(have)
    ok = tiles.tissue_fraction.to_numpy() >= min_tissue
    need = min(8, int(n_nb[ok].max())) if ok.any() else 8
    if need < 8:
        log.warning("No tile has all 8 neighbours on tissue (small slides): keeping the tiles with %d.", need)
    return tiles[ok & (n_nb >= need)]


def feature_maps(model: nn.Module, layers: dict, features: Sequence[str], images: torch.Tensor, *,
                 device: str = "cpu") -> np.ndarray:
    """Each feature's channel map on each image, upsampled (bilinear) to the image size.

    One forward pass; the feature value of notebook 02 is the spatial mean of this map before upsampling.

    Parameters
    ----------
    model : the network
    layers : layer name -> module (:func:`histo_utils.models.feature_layers`)
    features : ``layer_channel`` names, n_features
    images : tensor, shape (n_images, 3, H, W), normalised

    Returns
    -------
    array, shape (n_features, n_images, H, W), float32
    """
    chans = [feature_channel(f, layers) for f in features]
    model.eval()
    with torch.no_grad():
        out = _layer_outputs(model, [m for m, _ in chans], images.to(device))
    maps = []
    for m, ch in chans:
        y = out[id(m)]
        if ch >= y.shape[1]:
            raise InputError(f"Channel {ch} not available: the layer has {y.shape[1]} channels.")
        maps.append(nn.functional.interpolate(y[:, ch:ch + 1].float(), size=tuple(images.shape[-2:]),
                                              mode="bilinear", align_corners=False)[:, 0].cpu().numpy())
    return np.stack(maps).astype(np.float32)


# --------------------------------------------------------------------------
# results drawn by histo_utils.figures (feature_panels, linked_view, program_panels)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class FeaturePanels:
    """Per feature, the arrays of Badea's Figs 4–6 panels, as drawn by :func:`histo_utils.figures.feature_panels`.

    ``table``: one row per feature, ``feature, gene, symbol, r, tile, feature_value, am_start, am_end,
    truth_structure``; ``tile_rows``: the feature's best tile (``tissue, image_id, x, y, value``, one row per
    feature, index = tile index of the dataset); ``roles``: each feature's gene role ('' when unknown);
    ``tiles``: RGB of the tile (uint8, (H, W, 3)); ``gbp``: guided backpropagation on it as RGB in [0, 1]
    (:func:`gbp_rgb`); ``synth``: the feature's :class:`Synthesis`; ``truth_masks``: the planted structure under
    the tile, or None without planted structures.
    """

    table: pd.DataFrame
    tile_rows: pd.DataFrame
    roles: list
    tiles: list
    gbp: list
    synth: list
    truth_masks: list | None


def feature_panel_maps(model: nn.Module, layers: dict, ds, chosen: pd.DataFrame, reps: dict, synth: dict, *,
                       device: str = "cpu", structures=None, gene_roles: pd.Series | None = None) -> FeaturePanels:
    """Badea's Figs 4–6: per feature, its best tile, gBP on it, its synthetic image (and the planted truth).

    Parameters
    ----------
    model, layers, ds : the network, its feature layers and the test-tile dataset
    chosen : :func:`choose_features` output (``feature`` and, when known, ``gene, symbol, r``)
    reps : feature -> representative tiles (:func:`select_representative_tiles`, index = tile index of ``ds``)
    synth : feature -> :class:`Synthesis`
    structures : callable, tile row -> {structure: mask}, whose ``structure_of(role)`` names the structure shown
        for a gene of that planted role (synthetic cohort: :class:`histo_utils.truth.PlantedStructures`), or
        None
    gene_roles : Series, gene -> planted role (``truth/genes.tsv``), or None

    Returns
    -------
    FeaturePanels
    """
    has_truth = structures is not None
    gene_roles = pd.Series(dtype=str) if gene_roles is None else gene_roles
    rows, tile_rows, roles, tiles, gbps, syn, masks = [], [], [], [], [], [], []
    for _, row in chosen.iterrows():
        f = row.feature
        module, ch = feature_channel(f, layers)
        r0 = reps[f].iloc[0]
        x = ds[int(r0.name)][0].unsqueeze(0)
        g = guided_backprop(model, module, ch, x, device=device)[0]
        tiles.append(ds.read_rgb(int(r0.name)))
        gbps.append(gbp_rgb(g))
        s = synth[f]
        role = str(gene_roles.get(row.get("gene", ""), ""))
        structure = structures.structure_of(role) if has_truth else ""
        if has_truth:
            masks.append(structures(r0)[structure])
        tile_rows.append(r0)
        roles.append(role)
        syn.append(s)
        rows.append({"feature": f, "gene": row.get("gene", ""), "symbol": row.get("symbol", ""),
                     "r": row.get("r", np.nan), "tile": f"{r0.image_id}_{int(r0.x)}_{int(r0.y)}",
                     "feature_value": r0.value, "am_start": s.history[0], "am_end": s.history[-1],
                     "truth_structure": structure})
    return FeaturePanels(table=pd.DataFrame(rows), tile_rows=pd.DataFrame(tile_rows), roles=roles, tiles=tiles,
                         gbp=gbps, synth=syn, truth_masks=masks if has_truth else None)


@dataclass(frozen=True)
class LinkedView:
    """A gene's best-correlated features and their tiles, as drawn by :func:`histo_utils.figures.linked_view`.

    ``pairs``: the gene's pairs shown (``feature, scan, r``), one row per feature; ``reps``: feature ->
    representative tiles (``image_id, subject_id, tissue, x, y, value``); ``thumbnails``: image_id ->
    (thumbnail, level-0 px per thumbnail px); ``synth``: feature -> :class:`Synthesis`; ``tiles``: feature ->
    RGB of its tiles (uint8); ``gbp``: feature -> gBP on each tile as RGB in [0, 1]; ``table``: one row per tile,
    ``gene, symbol, feature, r, scan, image_id, x, y, value``.
    """

    gene: str
    symbol: str
    n_tiles: int
    pairs: pd.DataFrame
    reps: dict
    thumbnails: dict
    synth: dict
    tiles: dict
    gbp: dict
    table: pd.DataFrame


def linked_view_maps(model: nn.Module, layers: dict, ds, gene: str, gene_pairs: pd.DataFrame, reps: dict,
                     synth: dict, thumbnails: dict, *, n_tiles: int, symbol: str = "", device: str = "cpu"
                     ) -> LinkedView:
    """A gene's best-correlated features: their representative tiles, synthetic images and gBP on the tiles.

    Parameters
    ----------
    model, layers, ds : the network, its feature layers and the test-tile dataset
    gene : the gene (Name); ``symbol`` its symbol for the titles
    gene_pairs : the gene's pairs, one per feature (``feature, scan, r``)
    reps : feature -> representative tiles (index = tile index of ``ds``; ``image_id, subject_id, tissue, x, y,
        value``)
    synth : feature -> :class:`Synthesis`
    thumbnails : image_id -> (thumbnail, scale) of each feature's first representative slide
    n_tiles : tile columns of the figure (the number of representative tiles asked for)

    Returns
    -------
    LinkedView
    """
    rows, tiles, gbps = [], {}, {}
    for _, pr in gene_pairs.iterrows():
        f = pr.feature
        module, ch = feature_channel(f, layers)
        rt = reps[f]
        g = guided_backprop(model, module, ch, torch.stack([ds[int(j)][0] for j in rt.index]), device=device)
        tiles[f] = [ds.read_rgb(int(idx)) for idx in rt.index]
        gbps[f] = [gbp_rgb(g[j]) for j in range(len(rt))]
        rows += [{"gene": gene, "symbol": symbol, "feature": f, "r": pr.r, "scan": pr.scan, "image_id": tr.image_id,
                  "x": tr.x, "y": tr.y, "value": tr.value} for _, tr in rt.iterrows()]
    feats = list(gene_pairs.feature)
    return LinkedView(gene=gene, symbol=symbol, n_tiles=n_tiles, pairs=gene_pairs, reps={f: reps[f] for f in feats},
                      thumbnails=thumbnails, synth={f: synth[f] for f in feats}, tiles=tiles, gbp=gbps,
                      table=pd.DataFrame(rows))


@dataclass(frozen=True)
class ProgramPanels:
    """One planted program per row, as drawn by :func:`histo_utils.figures.program_panels`.

    ``table``: one row per program, ``program, structure, feature, r_program, r_sign, image_id, tissue, x, y,
    value, mask_fraction, map_auroc`` (of this tile, unflipped: > 0.5 the map fires on the structure), ``fires``
    (:func:`firing_side`), ``am_start, am_end``; ``tiles``: RGB of the program's
    tile; ``gbp``: gBP of the tracker on it as RGB in [0, 1]; ``feature_maps``: the tracker's map (H, W);
    ``synth``: the tracker's :class:`Synthesis`; ``masks``: the program's true structure mask under the tile.
    """

    table: pd.DataFrame
    tiles: list
    gbp: list
    feature_maps: list
    synth: list
    masks: list


def program_panel_maps(model: nn.Module, layers: dict, ds, panels: pd.DataFrame, synth: dict, masks: dict, *,
                       device: str = "cpu") -> ProgramPanels:
    """Per planted program: its tracking channel on a representative tile (gBP, feature map, AUROC vs the mask).

    Parameters
    ----------
    model, layers, ds : the network, its feature layers and the test-tile dataset
    panels : one row per program (:func:`histo_utils.truth.program_panel_tiles`): ``program, structure, feature,
        r_program, tile`` (index of ``ds``), ``image_id, tissue, x, y, value, mask_fraction``
    synth : feature -> :class:`Synthesis`
    masks : program -> bool array (H, W), the structure mask under the program's tile

    Returns
    -------
    ProgramPanels (``map_auroc``: AUROC of the map against the mask, not flipped by the sign of ``r_program``,
    which is reported beside it as ``r_sign``)
    """
    rows, tiles, gbps, fmaps, syn, mks = [], [], [], [], [], []
    for _, p in panels.iterrows():
        module, ch = feature_channel(p.feature, layers)
        x = ds[int(p.tile)][0].unsqueeze(0)
        g = guided_backprop(model, module, ch, x, device=device)[0]
        fmap = feature_maps(model, layers, [p.feature], x, device=device)[0, 0]
        a = auc(np.asarray(fmap).ravel(), np.asarray(masks[p.program], bool).ravel())
        tiles.append(ds.read_rgb(int(p.tile)))
        gbps.append(gbp_rgb(g))
        fmaps.append(fmap)
        s = synth[p.feature]
        syn.append(s)
        mks.append(masks[p.program])
        rows.append({"program": p.program, "structure": p.structure, "feature": p.feature, "r_program": p.r_program,
                     "r_sign": int(np.sign(p.r_program)), "image_id": p.image_id, "tissue": p.tissue, "x": p.x,
                     "y": p.y, "value": p.value, "mask_fraction": p.mask_fraction, "map_auroc": a,
                     "fires": firing_side(a), "am_start": s.history[0], "am_end": s.history[-1]})
    return ProgramPanels(table=pd.DataFrame(rows), tiles=tiles, gbp=gbps, feature_maps=fmaps, synth=syn, masks=mks)
