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

import copy
import hashlib
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import products
from .data import FeatureKey
from .distributed import SchedulerSpec, is_local, map_slides
from .errors import InputError, StateError
from .io import atomic_path, write_table
from .models import feature_layers
from .store import OBS_COLUMNS  # sample-table columns that go to ``obs`` of the AnnData tables
from .training import TileDataset, resolve_device, to_device

log = logging.getLogger(__name__)

__all__ = ["spatial_aggregate", "token_aggregate", "write_feature_h5ad", "LayerRecorder", "extract_tile_features", "reduce_tiles", "aggregate_slides",
           "slide_feature_vector", "extract_slide_features", "network_key", "feature_names", "residualize",
           "layer_program_correlation", "write_feature_tables", "layer_program_tracking"]


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
        raise InputError(f"p must be positive, got {p}.")
    if y.dim() == 2:
        y = y[:, :, None, None]
    if y.dim() != 4:
        raise InputError(f"layer output must be (batch, channels, h, w), got shape {tuple(y.shape)}.")
    if p == 1:
        v = y
    elif float(p).is_integer():
        v = y.pow(int(p))
    else:
        v = y.sign() * y.abs().pow(p)
    return v.mean(dim=(2, 3))


def token_aggregate(y: torch.Tensor, tokens: tuple[str, int], p: float = 1.0) -> torch.Tensor:
    """Per-channel value of a transformer layer's token output (the ViT analogue of :func:`spatial_aggregate`).

    Parameters
    ----------
    y : Tensor, shape (batch, tokens, dim)
    tokens : ``("patch_mean", n_prefix)``: mean of ``y ** p`` over the patch tokens (the first ``n_prefix``
        tokens, class and register, left out); ``("cls", 0)``: the class token (``y[:, 0]``, ``p`` not applied)
        (set by :func:`histo_utils.models.feature_layers` on the module)
    p : float, positive

    Returns
    -------
    Tensor, shape (batch, dim)
    """
    if y.dim() != 3:
        raise InputError(f"transformer layer output must be (batch, tokens, dim), got shape {tuple(y.shape)}.")
    how, n_prefix = tokens
    if how == "cls":
        return y[:, 0]
    if how != "patch_mean":
        raise InputError(f"token reduction must be 'patch_mean' or 'cls', got {how!r}.")
    patches = y[:, n_prefix:].transpose(1, 2)  # (batch, dim, n_patches): channels first, as a CNN map
    return spatial_aggregate(patches[..., None], p)


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
        tokens = getattr(self.layers[name], "feature_tokens", None)

        def fn(_mod, _inp, out):
            self._out[name] = (spatial_aggregate(out.detach(), self.p) if tokens is None
                               else token_aggregate(out.detach(), tokens, self.p))
        return fn

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def collect(self) -> torch.Tensor:
        missing = [n for n in self.layers if n not in self._out]
        if missing:
            raise StateError(f"Layers {missing[:3]} produced no output in the forward pass.")
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
    to_device(model, dev).eval()
    feats, logits = [], []
    with LayerRecorder(layers, p=p) as rec:
        for x, _, _ in tqdm(ds.batches(batch_size, num_workers=num_workers),
                            desc="features", unit="batch", disable=not progress, leave=False):
            logits.append(model(to_device(x, dev)).float().cpu())
            feats.append(rec.collect().float().cpu())
    if not feats:
        return np.zeros((0, 0), np.float32), [], np.zeros((0, 0), np.float32)
    return torch.cat(feats).numpy(), feature_names(rec.channels), torch.cat(logits).numpy()


def reduce_tiles(values: np.ndarray, how: str = "sum") -> np.ndarray:
    """One slide's value of every feature from its tiles' values: ``sum`` (Badea), ``mean`` or ``median`` (Jones).

    The reduction every slide-level path uses (serial, worker processes,
    Dask), so they agree bit for bit: the tiles are accumulated in float64 in
    the order given and the result is rounded once to the input's float type.

    Parameters
    ----------
    values : ndarray, shape (n_tiles, n_features)
        The tiles of one slide, in tile-table order.
    how
        ``sum``, ``mean`` or ``median``.

    Returns
    -------
    ndarray, shape (n_features,), the input's float type (float32 stays float32).
    """
    if how not in ("sum", "mean", "median"):
        raise InputError(f"how must be 'sum', 'mean' or 'median', got '{how}'.")
    values = np.asarray(values)
    if values.ndim != 2:
        raise InputError(f"values must be (n_tiles, n_features), got shape {values.shape}.")
    out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    if len(values) == 0:
        return np.full(values.shape[1], np.nan, out_dtype)
    v = values.astype(np.float64, copy=False)
    if how == "sum":
        r = np.add.reduce(v, axis=0)
    elif how == "mean":
        r = np.add.reduce(v, axis=0) / len(v)
    else:
        r = np.median(v, axis=0)
    return r.astype(out_dtype)


def aggregate_slides(tile_features: np.ndarray, image_ids: Sequence[str], *, how: str = "sum") -> pd.DataFrame:
    """Slide values from tile values: ``sum`` (Badea), ``mean`` or ``median`` (Jones).

    Each slide is reduced by :func:`reduce_tiles` over its tiles in the
    order given.

    Returns
    -------
    DataFrame, shape (n_slides, n_features), indexed by ``image_id`` (sorted).
    """
    if how not in ("sum", "mean", "median"):
        raise InputError(f"how must be 'sum', 'mean' or 'median', got '{how}'.")
    ids = np.asarray(image_ids)
    f = np.asarray(tile_features)
    if len(ids) != len(f):
        raise InputError("image_ids must have one entry per tile.")
    order = np.argsort(ids, kind="stable")  # stable: each slide's tiles keep their order
    uniq, starts = np.unique(ids[order], return_index=True)
    bounds = [*starts[1:], len(order)]
    rows = [reduce_tiles(f[order[a:b]], how) for a, b in zip(starts, bounds)]
    n_feat = f.shape[1] if f.ndim == 2 else 0
    values = np.vstack(rows) if rows else np.zeros((0, n_feat), f.dtype)
    return pd.DataFrame(values, index=pd.Index(uniq, name="image_id"))


@torch.no_grad()
def slide_feature_vector(model: nn.Module, layers: Mapping[str, nn.Module], ds: TileDataset, *, how: str = "sum",
                         p: float = 1.0, batch_size: int = 64, device: str = "auto",
                         num_workers: int = 0) -> tuple[np.ndarray, list[str]]:
    """The feature vector of one slide: its tiles' features, reduced by :func:`reduce_tiles`.

    The single per-slide computation behind :func:`extract_slide_features`,
    whichever way the slides are distributed: batches start at the slide's
    first tile and follow the tile table, so the numbers do not depend on
    which other slides are computed alongside.

    Parameters
    ----------
    model, layers
        The network and the layers whose channels are features
        (:func:`histo_utils.models.feature_layers`).
    ds
        The tiles of one slide.
    how, p, batch_size, device, num_workers
        As in :func:`extract_slide_features`.

    Returns
    -------
    values : ndarray, shape (n_features,), float32
    names : list of str, ``layer_channel``
    """
    ids = pd.unique(ds.tiles["image_id"])
    if len(ids) != 1:
        raise InputError(f"slide_feature_vector needs the tiles of exactly one slide, got {len(ids)} slides.")
    f, names, _ = extract_tile_features(model, layers, ds, p=p, batch_size=batch_size, device=device,
                                        num_workers=num_workers, progress=False)
    return reduce_tiles(f, how), names


class _Network:
    """A network and its feature layers, pickled together (the layers stay the network's own modules)."""

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module]):
        self.model = model
        self.layers = dict(layers)
        self.token = uuid.uuid4().hex  # one per extraction call: tells worker-side copies apart


_OWNERS: dict[str, int] = {}
_OWNERS_LOCK = threading.Lock()
_THREAD = threading.local()


def _network_for_thread(net: _Network) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The network for the calling thread: the shipped one for the first thread, a private copy for others.

    Feature hooks are registered on the modules, so two threads of one Dask
    worker must not run the same module object at once.
    """
    tid = threading.get_ident()
    with _OWNERS_LOCK:
        owner = _OWNERS.setdefault(net.token, tid)
    if owner == tid:
        return net.model, net.layers
    mine = getattr(_THREAD, "net", None)
    if mine is None or mine[0] != net.token:
        model, layers = copy.deepcopy((net.model, net.layers))  # one deepcopy keeps the layers inside the model
        _THREAD.net = mine = (net.token, model, layers)
    return mine[1], mine[2]


def network_key(model: nn.Module, layers: Mapping[str, nn.Module], **params) -> str:
    """A short hash of a network's class, weights and feature layers and of the extraction parameters.

    Slide feature files are cached under it: other weights (a new
    checkpoint) or other parameters never reuse them.
    """
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps({"layers": list(layers), **params}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _tiles_key(tiles: pd.DataFrame, path: str) -> str:
    """A short hash of one slide's tile rows and of its file (path, size, modification time)."""
    cols = [c for c in ("tile_px", "x", "y", "level", "read_px") if c in tiles.columns]
    h = hashlib.sha256(pd.util.hash_pandas_object(tiles[cols], index=False).to_numpy().tobytes())
    try:
        st = os.stat(path)
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    except OSError:
        h.update(f"{path}:missing".encode())
    return h.hexdigest()[:12]


def _read_cached(path: Path) -> tuple[np.ndarray, list[str]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["values"], [str(n) for n in z["names"]]
    except Exception:  # unreadable (e.g. truncated by a crash): computed again
        return None


def _slide_features_task(item: tuple[str, TileDataset | np.ndarray, str], *, net: _Network, how: str, p: float,
                         batch_size: int, device: str, num_workers: int, cache_dir: str | None,
                         ds: TileDataset | None = None) -> tuple[np.ndarray, list[str]]:
    """:func:`~histo_utils.distributed.map_slides` task: one slide's features, written to the cache.

    ``item`` is ``(image_id, tiles, tiles_key)`` with ``tiles`` the slide's
    own :class:`TileDataset` (Dask) or the positions of its tiles in ``ds``
    (this process: the subset, with its preloaded pixels, is made when the
    slide's turn comes).
    """
    image_id, tiles, tiles_key = item
    slide_ds = tiles if isinstance(tiles, TileDataset) else ds.subset(tiles)
    model, layers = _network_for_thread(net)
    values, names = slide_feature_vector(model, layers, slide_ds, how=how, p=p, batch_size=batch_size, device=device,
                                         num_workers=num_workers)
    if cache_dir:
        with atomic_path(Path(cache_dir) / f"{image_id}.{tiles_key}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, values=values, names=np.asarray(names, dtype=str))  # numpy adds .npz to a name
    return values, names


def extract_slide_features(model: nn.Module, layers: Mapping[str, nn.Module], ds: TileDataset, *,
                           how: str = "sum", p: float = 1.0, batch_size: int = 64, device: str = "auto",
                           num_workers: int = 0, progress: bool = True, scheduler: "SchedulerSpec" = "",
                           workers: int = 2, cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Slide x feature table: tile features aggregated per slide, columns named ``layer_channel``.

    Every slide is one call of :func:`slide_feature_vector` (its own batches,
    the deterministic :func:`reduce_tiles`), in this process or as one Dask
    task per slide; both give the same numbers bit for bit as long as the
    forward pass itself does (same device and library; on the CPU torch's
    convolutions gave identical results with 1 and 2 threads in our tests).

    Parameters
    ----------
    model, layers
        The network and its feature layers.
    ds
        Tiles of many slides (a preloaded dataset is used as it is in this
        process; Dask workers read the tiles from the slide files, which they
        must see at the same paths).
    how
        Tiles to slide: ``sum`` (Badea), ``mean`` or ``median`` (Jones).
    p
        Exponent of the spatial aggregate.
    batch_size, device, num_workers
        Forward-pass batches, device (``auto``, ``cpu``, ``cuda``) and tile-reading
        processes (this process only; Dask tasks read in the task).
    progress
        Show a progress bar (slides done).
    scheduler
        ``""`` (this process, the default), ``"local"`` (a Dask LocalCluster of
        ``workers`` processes), a Dask scheduler address or a
        :class:`distributed.Client`; see :func:`histo_utils.distributed.client_for`.
        The network is pickled and scattered to every worker once.
    workers
        Worker processes of a ``"local"`` cluster.
    cache_dir
        When given, each slide's vector is written to
        ``cache_dir/<network_key>/<image_id>.<tiles key>.npz`` (the key
        covers the weights, layers, ``how``, ``p``, ``batch_size``, input
        size and read mode; the tiles key the slide's tile rows and file), and slides already
        there are read back instead of computed: a rerun computes only what
        is missing.

    Returns
    -------
    DataFrame, shape (n_slides, n_features), float32, indexed by ``image_id``
    (sorted). Slides whose computation failed are left out, logged, and
    listed in ``attrs["failed_slides"]`` (``{image_id: error}``).
    """
    if how not in ("sum", "mean", "median"):
        raise InputError(f"how must be 'sum', 'mean' or 'median', got '{how}'.")
    tiles = ds.tiles
    groups = tiles.groupby("image_id", sort=True).indices
    keys = {iid: _tiles_key(tiles.iloc[idx], str(ds.paths[iid])) for iid, idx in groups.items()}
    cache: Path | None = None
    cached: dict[str, tuple[np.ndarray, list[str]]] = {}
    if cache_dir is not None:
        cache = Path(cache_dir) / network_key(model, layers, how=how, p=p, batch_size=batch_size, **ds.read_key)
        cache.mkdir(parents=True, exist_ok=True)
        for iid, k in keys.items():
            f = cache / f"{iid}.{k}.npz"
            if f.exists() and (hit := _read_cached(f)) is not None:
                cached[iid] = hit
        if cached:
            log.info("Slide features: %d of %d slides read from %s", len(cached), len(groups), cache)
    todo = [iid for iid in groups if iid not in cached]
    shared = {"how": how, "p": p, "batch_size": batch_size, "device": device,
              "cache_dir": str(cache) if cache is not None else None}
    if is_local(scheduler):  # this process, the dataset as it is (preloaded pixels included)
        items = {iid: (iid, groups[iid], keys[iid]) for iid in todo}
        shared.update(net=_Network(model, layers), ds=ds, num_workers=num_workers)
        run = map_slides(_slide_features_task, items, scheduler="", workers=1, shared=shared,
                         desc="slide features", progress=progress)
    else:  # one Dask task per slide, reading its tiles from the slide file; the network scattered once
        if todo and any(t.device.type != "cpu" for t in model.state_dict().values()):
            model, layers = copy.deepcopy((model, dict(layers)))  # workers may have no GPU: ship a CPU copy
            model.cpu()
        items = {iid: (iid, TileDataset(tiles.iloc[groups[iid]], {iid: ds.paths[iid]}, input_px=ds.input_px,
                                        level=ds.level), keys[iid]) for iid in todo}
        shared.update(net=_Network(model, layers), num_workers=0)  # Dask workers cannot fork loaders
        run = map_slides(_slide_features_task, items, scheduler=scheduler, workers=workers, shared=shared,
                         desc="slide features", progress=progress)
    results = {**cached, **run.results}
    ok = [iid for iid in groups if iid in results]
    names = results[ok[0]][1] if ok else []
    values = (np.vstack([results[iid][0] for iid in ok]) if ok else np.zeros((0, len(names)), np.float32))
    out = pd.DataFrame(values, index=pd.Index(ok, name="image_id"), columns=names)
    out.attrs["failed_slides"] = dict(run.errors)
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
        raise InputError("features and programs must have the same index (slides) in the same order.")
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


def write_feature_tables(networks: Mapping[str, nn.Module], datasets: Mapping[int, TileDataset],
                         out_dir: str | os.PathLike, *, arch: str | Mapping[str, str], tile_mpp: Mapping[int, float],
                         how: str = "sum",
                         p: float = 1.0, batch_size: int = 64, device: str = "auto",
                         scheduler: "SchedulerSpec" = "", cache_dir: str | os.PathLike | None = None
                         ) -> tuple[dict, dict]:
    """Slide feature tables of every network on every tile grid, written as notebook 02's catalogue.

    Each table is :func:`extract_slide_features` of one network on one grid, written to
    ``out_dir/features_<network>_<px>px.parquet`` (see :class:`histo_utils.data.FeatureKey`).

    Parameters
    ----------
    networks : dict, network name (``trained``, ``untrained``, ``<arch>-trained``) -> model
    datasets : dict, tile size -> TileDataset of that grid
    out_dir : folder of the tables (notebook 02's output folder)
    arch : architecture name of every network, or dict network name -> architecture name (their feature
        layers: :func:`histo_utils.models.feature_layers`; recorded as ``arch`` in the listing)
    tile_mpp : dict, tile size -> microns per pixel of its tiles (recorded)
    how, p, batch_size, device, scheduler, cache_dir : of :func:`extract_slide_features`

    Returns
    -------
    tables : dict, FeatureKey -> DataFrame, shape (n_slides, n_features), index image ID
    listing : dict, file name -> ``network, arch, tile_px, tile_mpp, layers, n_features, n_slides,
        failed_slides``: the ``tables`` entry of ``features_provenance.json``
    """
    tables, listing = {}, {}
    for px, ds in datasets.items():
        for name, net in networks.items():
            net_arch = arch if isinstance(arch, str) else arch[name]
            layers = feature_layers(net, net_arch)
            table = extract_slide_features(net, layers, ds, how=how, p=p, batch_size=batch_size, device=device,
                                           scheduler=scheduler, cache_dir=cache_dir)
            failed = sorted(table.attrs.pop("failed_slides"))  # slides whose features could not be computed
            key = FeatureKey(name, px, how)
            write_table(table, Path(out_dir) / key.file_name, index=True)
            tables[key] = table
            listing[key.file_name] = {"network": name, "arch": net_arch, "tile_px": px, "tile_mpp": tile_mpp[px],
                                      "layers": list(layers), "n_features": table.shape[1],
                                      "n_slides": table.shape[0], "failed_slides": failed}
    return tables, listing




def write_feature_h5ad(tables: Mapping, samples: pd.DataFrame, out_dir: str | os.PathLike, *,
                       provenance: Mapping | None = None) -> list[Path]:
    """Write every slide x feature table as an AnnData ``.h5ad`` a scanpy user opens directly, atomically.

    ``<out_dir>/<FeatureKey file stem>.h5ad`` beside the parquet table: ``X`` float32 (n_slides, n_features)
    with the table's values; ``obs`` indexed by image ID with the sample's RNA sample ID, subject, tissue
    (``SMTS``), split and the GTEx confounders present in ``samples`` (:data:`OBS_COLUMNS`); ``var`` indexed
    by feature name with ``network, layer, channel, tile_px, aggregation``; ``uns`` with the table's key
    fields and ``provenance`` (stored as JSON text in ``uns["provenance_json"]``, so any nesting survives).

    Parameters
    ----------
    tables : dict, :class:`histo_utils.data.FeatureKey` -> DataFrame (n_slides, n_features), index image ID,
        columns ``<layer>_<channel>`` (:func:`write_feature_tables`)
    samples : DataFrame with ``image_id`` (notebook 01's ``samples.tsv``); every slide of a table must be in it
    out_dir : folder (notebook 02's output folder)
    provenance : parameters and provenance of the tables (e.g. ``features_provenance.json``), or None

    Returns
    -------
    list of Path, the files written
    """
    import json

    import anndata as ad


    if "image_id" not in samples.columns:
        raise InputError(f"samples must have an image_id column (notebook 01's samples.tsv), got {list(samples.columns)}.")
    obs_all = samples.drop_duplicates("image_id").set_index("image_id")
    obs_cols = [c for c in OBS_COLUMNS if c in obs_all.columns]
    written = []
    for key, table in tables.items():
        missing = table.index.difference(obs_all.index)
        if len(missing):
            raise InputError(f"Feature table {key}: {len(missing)} slides are not in samples (e.g. "
                             f"{list(missing[:3])}); pass the samples table of the same run.")
        obs = obs_all.loc[table.index, obs_cols].copy()
        obs.index = obs.index.astype(str).rename("image_id")
        for c in obs.columns:
            if obs[c].dtype == object:
                obs[c] = obs[c].astype(str)
        layer_channel = [str(n).rsplit("_", 1) for n in table.columns]
        if any(len(lc) != 2 or not lc[1].isdigit() for lc in layer_channel):
            raise InputError(f"Feature table {key}: column names must be '<layer>_<channel>', got e.g. "
                             f"{list(table.columns[:3])}.")
        var = pd.DataFrame({"network": key.network, "layer": [lc[0] for lc in layer_channel],
                            "channel": [int(lc[1]) for lc in layer_channel], "tile_px": key.tile_px,
                            "aggregation": key.aggregation}, index=pd.Index(table.columns.astype(str), name="feature"))
        uns = {"feature_key": str(key), **key.fields(),
               "provenance_json": json.dumps(provenance or {}, default=str, sort_keys=True)}
        adata = ad.AnnData(X=table.to_numpy(np.float32), obs=obs, var=var, uns=uns)
        dest = Path(out_dir) / products.file_name("02_training", "features_h5ad", network=key.network,
                                                  tile_px=key.tile_px)
        with atomic_path(dest) as tmp:
            adata.write_h5ad(tmp)
        written.append(dest)
    log.info("Wrote %d AnnData feature tables to %s", len(written), out_dir)
    return written


def layer_program_tracking(tables: Mapping, truth_samples: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """:func:`layer_program_correlation` of every feature table with the planted programs, and its chance
    level with the programs shuffled within tissue (network ``<name> (shuffled)``).

    Parameters
    ----------
    tables : dict, :class:`~histo_utils.data.FeatureKey` -> DataFrame, shape (n_slides, n_features), index
        image ID
    truth_samples : DataFrame indexed by image ID with ``SMTS`` and ``program_*`` (``truth/samples.tsv``)
    seed : seed of the shuffle

    Returns
    -------
    DataFrame, ``layer, program, feature, r, abs_r, network, tile_px, layer_index`` (layer position in the
    network)
    """
    prog_cols = [c for c in truth_samples.columns if c.startswith("program_")]
    rows = []
    for key, table in tables.items():
        prog = truth_samples.loc[table.index, prog_cols]
        tissue = truth_samples.loc[table.index, "SMTS"].to_numpy()
        rows.append(layer_program_correlation(table, prog, tissue).assign(network=key.network, tile_px=key.tile_px))
        rows.append(layer_program_correlation(table, prog, tissue, permute_seed=seed)
                    .assign(network=f"{key.network} (shuffled)", tile_px=key.tile_px))
    lp = pd.concat(rows, ignore_index=True)
    lp["layer_index"] = lp.groupby(["network", "tile_px", "program"]).cumcount()
    return lp
