"""Training and evaluating tile classifiers (Badea & Stanescu 2020).

* :class:`TileDataset` reads tiles on the fly from the slides by their
  coordinates (one open slide per worker process), rescales them to the input
  size and normalises them with the ImageNet statistics, as Badea did; small
  cohorts can be held in memory instead (``preload``).
* :func:`train_classifier`: SGD with momentum, learning rate divided by
  ``gamma`` every ``lr_step`` epochs (Badea: 0.01, /10 every 30 epochs, 90
  epochs, batch 40); the epoch with the best validation tile accuracy is
  kept (model selection). A checkpoint after every epoch lets a killed
  training resume, with the same final state as an uninterrupted run.
* :func:`predict_tiles`, :func:`slide_predictions` (majority vote of a
  slide's tiles), :func:`accuracy_table` (Tables 2-3), :func:`merge_classes`.
* :func:`train_networks`: several architectures on the same preloaded tiles
  (Badea's comparison of networks, Tables 2-4). Feature tables of several
  networks are named (:func:`table_network_name`): the first architecture's
  ``trained`` and ``untrained`` (what notebooks 03-07 read by default), every
  further architecture's ``<arch>-trained``
  (``features_compact_bn-trained_256px.parquet``).

Speed: a preloaded dataset is batched straight from its uint8 cache
(:meth:`TileDataset.batches`, the same numbers as a DataLoader) and its
augmentation can be drawn for a whole batch at once (:func:`augment_batch`);
tiles can be read at the coarsest pyramid level that holds the input's detail
(``level="auto"``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .io import atomic_path, params_key
from .slides import open_slide
from .tiling import TILE_RESAMPLING, read_tile
from .errors import InputError
from .models import build_model

log = logging.getLogger(__name__)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resolve_device", "to_device", "TileDataset", "augment_batch", "TrainConfig",
           "train_classifier", "train_networks", "NetworkRun", "run_tables", "confusion_tables", "table_network_name",
           "feature_networks",
           "predict_tiles", "slide_predictions", "accuracy_table", "merge_classes", "load_checkpoint",
           "sample_per_slide", "tissue_tile_dataset", "prediction_tables", "accuracy_by_split", "confusion_table"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; or ``cpu``/``cuda``/``cuda:N``.

    Parameters
    ----------
    device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N``

    Returns
    -------
    torch.device
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device '{device}' requested but CUDA is not available here. Use device: auto or cpu.")
    return torch.device(device)


def to_device(x: nn.Module | torch.Tensor, dev: torch.device) -> nn.Module | torch.Tensor:
    """A network or an image batch on ``dev``, in channels-last memory order.

    Every forward pass of training, prediction and feature extraction goes through this, so that all paths
    (preloaded tiles, tiles read by worker processes, Dask workers) run the same convolution kernels and give
    the same numbers bit for bit. On the CPU, oneDNN's channels-last convolutions ran the compact networks
    1.3x faster in training and 1.4-1.7x faster in inference than the NCHW ones (tiles per CPU second, one
    thread, 128-px input, measured when this was introduced).

    Parameters
    ----------
    x : a module (its 4-d parameters are stored channels-last) or a tensor; a 4-d tensor, shape
        (b, c, h, w), is made channels-last, any other is only moved
    dev : the device

    Returns
    -------
    the module (moved in place) or a tensor on ``dev``
    """
    if isinstance(x, nn.Module):
        return x.to(dev, memory_format=torch.channels_last)
    if x.dim() == 4:
        return x.to(dev, memory_format=torch.channels_last)
    return x.to(dev)


class TileDataset(Dataset):
    """Tiles of a tile table as normalised tensors, read from the slides on demand.

    Parameters
    ----------
    tiles : DataFrame
        Rows of a tile table (``image_id, x, y, level, read_px``).
    slide_paths
        ``{image_id: path}``.
    input_px
        Side of the tensors given to the network.
    labels : array of int, shape (n_tiles,), optional
        Class of each tile (its slide's tissue); ``-1`` when absent.
    augment
        Random horizontal/vertical flips and colour jitter (brightness,
        contrast, saturation, hue), drawn from torch's random state: stain
        differences between centres are the main thing a tissue classifier
        must not learn.
    level
        How tiles are read (:func:`histo_utils.tiling.read_tile`): ``"table"``, the tiling's own level and read
        size; ``"auto"``, the coarsest pyramid level that still holds the input's detail (the same tile extent,
        fewer pixels read and shrunk: about 2.5x faster at 256 px read into 128 px; the pixels differ by a few
        grey levels). Anything cached from the tiles (features, checkpoints) must be keyed on it
        (:attr:`read_key`).

    Items are ``(image, label, index)`` with ``image`` of shape
    (3, input_px, input_px), float32, ImageNet-normalised.
    """

    def __init__(self, tiles: pd.DataFrame, slide_paths: Mapping[str, str], *, input_px: int,
                 labels: Sequence[int] | None = None, augment: bool = False, level: str = "table"):
        if level not in ("table", "auto"):
            raise InputError(f"level={level!r} not available. Choose 'table' (the tiling's level) or 'auto'.")
        missing = set(tiles["image_id"]) - set(slide_paths)
        if missing:
            raise InputError(f"{len(missing)} tiles' slides have no path (e.g. {sorted(missing)[:3]}).")
        self.tiles = tiles.reset_index(drop=True)
        self._rows = self.tiles[["image_id", "x", "y", "level", "read_px"]].to_dict("records")
        self.paths = dict(slide_paths)
        self.input_px = int(input_px)
        self.labels = (np.full(len(tiles), -1, np.int64) if labels is None
                       else np.asarray(labels, np.int64))
        if len(self.labels) != len(self.tiles):
            raise InputError("labels must have one entry per tile.")
        self._slides: dict = {}
        self._cache: np.ndarray | None = None
        self.augment = augment
        self.colour_jitter = True
        self.batched_augment = False
        self.level = level
        self._jitter = None
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getstate__(self):  # worker processes open their own slides
        state = self.__dict__.copy()
        state["_slides"] = {}
        return state

    def read_rgb(self, i: int) -> np.ndarray:
        """Tile ``i`` as (input_px, input_px, 3) uint8."""
        if self._cache is not None:
            return self._cache[i]
        r = self._rows[i]
        iid = r["image_id"]
        if iid not in self._slides:
            self._slides[iid] = open_slide(self.paths[iid])
        return read_tile(self._slides[iid], r, path=self.paths[iid], out_px=self.input_px, level=self.level)

    @property
    def read_key(self) -> dict:
        """What the pixels depend on besides the tile rows (for cache keys): ``{"input_px", "read_level",
        "resampling"}``."""
        return {"input_px": self.input_px, "read_level": self.level, "resampling": TILE_RESAMPLING}

    def preload(self, *, num_workers: int = 0, progress: bool = True) -> "TileDataset":
        """Read every tile once into memory (uint8), in ``num_workers`` processes; for cohorts that fit in RAM.

        A dataset already in memory (preloaded, or a subset of one) is returned as it is.
        """
        if self._cache is not None:
            return self
        cache = np.empty((len(self), self.input_px, self.input_px, 3), np.uint8)
        loader = DataLoader(_RawTiles(self), batch_size=64, num_workers=num_workers)
        bar = tqdm(total=len(self), desc="reading tiles", unit="tile", disable=not progress, mininterval=2)
        for rgb, idx in loader:
            cache[idx.numpy()] = rgb.numpy()
            bar.update(len(idx))
        bar.close()
        self.close()
        self._cache = cache
        return self

    def subset(self, index: Sequence[int] | np.ndarray, *, labels: Sequence[int] | None = None) -> "TileDataset":
        """The tiles at ``index`` (positions), sharing nothing mutable with this dataset.

        ``labels`` (one per selected tile) replaces the labels, e.g. one binary trait of several.
        """
        index = np.asarray(index, dtype=np.int64)
        sub = TileDataset(self.tiles.iloc[index], self.paths, input_px=self.input_px,
                          labels=self.labels[index] if labels is None else labels, augment=self.augment,
                          level=self.level)
        sub.colour_jitter = self.colour_jitter
        sub.batched_augment = self.batched_augment
        if self._cache is not None:
            sub._cache = self._cache[index]
        return sub

    def close(self) -> None:
        for s in self._slides.values():
            s.close()
        self._slides = {}

    def __getitem__(self, i: int):
        rgb = self.read_rgb(i)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
        if self.augment:
            x = self._augment(x)
        return (x - self._mean) / self._std, int(self.labels[i]), i

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self._jitter is None:
            from torchvision.transforms import v2

            self._jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.25, hue=0.05)
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        if torch.rand(()) < 0.5:
            x = x.flip(1)
        return self._jitter(x).clamp_(0, 1) if self.colour_jitter else x

    def with_augmentation(self, augment: bool = True, *, colour: bool = True,
                          batched: bool = False) -> "TileDataset":
        """This dataset (same tiles and cache) with augmentation switched on or off.

        ``colour=False`` keeps the random flips only (Levy-Jurgenson et al.). ``batched=True`` draws the flips
        and jitter of a whole batch at once (:func:`augment_batch`, per tile parameters; about 10x cheaper
        than torchvision's ColorJitter called tile by tile, other random numbers than the per-tile path).
        """
        self.augment = augment
        self.colour_jitter = colour
        self.batched_augment = batched
        return self

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                num_workers: int = 0):
        """Iterate over ``(images, labels, positions)`` batches, as a DataLoader over this dataset would.

        A preloaded dataset read in this process (``num_workers = 0``) is batched straight from its uint8
        cache (one indexing, one conversion per batch instead of one per tile, the same numbers as the
        DataLoader); otherwise a DataLoader with ``num_workers`` processes. Both draw the same random numbers (the DataLoader's base
        seed, then its RandomSampler's ``torch.randperm`` of ``generator`` when shuffled), so a training run
        gives the same numbers either way.

        Parameters
        ----------
        batch_size : tiles per batch
        shuffle, generator : random order and its generator
        num_workers : tile-reading processes (not preloaded datasets)

        Yields
        ------
        images : Tensor, shape (b, 3, input_px, input_px), float32, ImageNet-normalised
        labels : Tensor, shape (b,), int64
        positions : Tensor, shape (b,), int64, positions in this dataset
        """
        if self._cache is None or num_workers > 0:
            if self.augment and self.batched_augment:
                raise InputError("Batched augmentation needs preloaded tiles read in this process: call "
                                 ".preload() first, or with_augmentation(batched=False).")
            yield from DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                  num_workers=num_workers, persistent_workers=False)
            return
        n = len(self)
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the DataLoader's base seed draw: same
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # random state after
        cache = torch.from_numpy(self._cache)
        labels = torch.from_numpy(self.labels)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = cache[idx].permute(0, 3, 1, 2).contiguous().float().div_(255.0)  # NCHW, as the DataLoader stacks
            if self.augment and self.batched_augment:
                x = augment_batch(x, colour=self.colour_jitter)
            elif self.augment:  # tile by tile, in order: the random numbers of the per-item DataLoader path
                x = torch.stack([self._augment(xi) for xi in x])
            yield (x - self._mean) / self._std, labels[idx], idx


_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def augment_batch(x: torch.Tensor, *, colour: bool = True, brightness: float = 0.2, contrast: float = 0.2,
                  saturation: float = 0.25, hue: float = 0.05) -> torch.Tensor:
    """Random flips and colour jitter of a batch, drawn per tile from torch's random state.

    The ranges are torchvision ``ColorJitter``'s (factors uniform in ``[1 - a, 1 + a]``, hue shift uniform in
    ``[-hue, hue]`` of a turn) and the operations its formulas (blend with black, with the tile's mean grey,
    with its grey image), applied in this fixed order; the hue is rotated in YIQ space (a linear map per
    tile), not through HSV. Each tile has its own factors, as when ColorJitter is called tile by tile.

    Parameters
    ----------
    x : Tensor, shape (b, 3, h, w), values in [0, 1]
    colour : also jitter the colours (False: flips only)
    brightness, contrast, saturation, hue : jitter ranges

    Returns
    -------
    Tensor, shape (b, 3, h, w), values in [0, 1]
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"x must be a batch of RGB images (b, 3, h, w), got shape {tuple(x.shape)}.")
    b = len(x)
    x = torch.where((torch.rand(b) < 0.5).view(b, 1, 1, 1), x.flip(3), x)
    x = torch.where((torch.rand(b) < 0.5).view(b, 1, 1, 1), x.flip(2), x)
    if not colour:
        return x
    u = torch.rand(b, 4)
    f_b = (1 - brightness + 2 * brightness * u[:, 0]).view(b, 1, 1, 1)
    f_c = (1 - contrast + 2 * contrast * u[:, 1]).view(b, 1, 1, 1)
    f_s = (1 - saturation + 2 * saturation * u[:, 2]).view(b, 1, 1, 1)
    theta = (2 * torch.pi * hue * (2 * u[:, 3] - 1))
    w = torch.tensor(_GREY).view(1, 3, 1, 1)
    x = (x * f_b).clamp_(0, 1)
    grey_mean = (x * w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (f_c * x + (1 - f_c) * grey_mean).clamp_(0, 1)
    grey = (x * w).sum(1, keepdim=True)
    x = (f_s * x + (1 - f_s) * grey).clamp_(0, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ  # (b, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp_(0, 1)


class _RawTiles(Dataset):
    """Uint8 tiles of a :class:`TileDataset` with their positions (for parallel preloading)."""

    def __init__(self, ds: TileDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return np.ascontiguousarray(self.ds.read_rgb(i)), i


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (Badea: SGD, lr 0.01 /10 every 30 epochs, 90 epochs, batch 40).

    ``optimizer`` is ``"sgd"`` (with ``momentum``, as in the paper) or
    ``"adam"`` (the CPU default: a small network from random weights with few
    steps learns far faster with Adam than with SGD at 0.01, which stalls).
    ``schedule`` is ``"step"`` (divide the rate by ``1/gamma`` every
    ``lr_step`` epochs) or ``"plateau"`` (multiply it by ``gamma`` after
    ``lr_patience`` epochs without a better validation score, Levy-Jurgenson's
    decay on plateau); ``early_stop`` > 0 stops training after that many epochs
    without a better validation score (early stopping). Each field has the name
    of the notebook parameter that sets it.
    """

    optimizer: str = "sgd"
    epochs: int = 90
    batch_size: int = 40
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 30
    gamma: float = 0.1
    seed: int = 0
    num_workers: int = 0
    schedule: str = "step"
    lr_patience: int = 30
    early_stop: int = 0

    def key(self) -> str:
        return params_key(self)


def _batches(ds, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
             num_workers: int = 0):
    """Batches of ``(images, labels, positions)``: :meth:`TileDataset.batches`, or a DataLoader over any other
    map-style dataset of such triples."""
    if hasattr(ds, "batches"):
        return ds.batches(batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers,
                      persistent_workers=False)


def _loader(ds: TileDataset, cfg: TrainConfig, *, shuffle: bool, epoch: int = 0):
    g = torch.Generator()
    g.manual_seed(cfg.seed * 1000 + epoch)
    return _batches(ds, cfg.batch_size, shuffle=shuffle, generator=g, num_workers=cfg.num_workers)


def _save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, model: nn.Module) -> dict:
    """Load a checkpoint's weights into ``model``; returns the checkpoint (epoch, history, ...)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    return ck


def train_classifier(model: nn.Module, train: TileDataset, val: TileDataset, *, config: TrainConfig,
                     checkpoint_dir: str | os.PathLike, device: str = "auto", run_key: str = "",
                     progress: bool = True, stop_after: int | None = None,
                     val_score: Callable[[nn.Module, np.ndarray], float] | None = None,
                     frozen: bool = False) -> pd.DataFrame:
    """Train with SGD and a step schedule; keep the best epoch by validation tile accuracy.

    Parameters
    ----------
    model
        The network (its weights are the best epoch's on return).
    train, val
        Datasets with labels.
    config
        :class:`TrainConfig`.
    checkpoint_dir
        ``last.pt`` (after every epoch: weights, optimiser, schedule, random
        state, history) and ``best.pt`` (best validation accuracy) go here.
        A checkpoint of the same ``config`` and ``run_key`` is resumed.
    device
        ``auto``, ``cpu`` or ``cuda``.
    run_key
        Anything else the checkpoint must match (architecture, data), hashed.
    stop_after
        Stop after this many epochs of *this call* (simulates a killed run in tests).
    val_score
        Model selection by another validation score than tile accuracy: called after each epoch with the
        model and the validation tiles' class probabilities, shape (n_val_tiles, n_classes); higher is
        better (e.g. the slide-level AUC of Levy-Jurgenson et al.).
    frozen
        Use the network as it is (a pretrained encoder, features only, as the field uses UNI or Phikon): no
        optimisation; the validation tiles are scored once (epoch 0, its new head is random, so accuracy is
        at chance) and ``best.pt`` holds the weights as given.

    Returns
    -------
    DataFrame, one row per epoch: ``epoch, lr, train_loss, train_acc, val_loss, val_acc, val_score, best``
    (frozen: one row, epoch 0, lr 0, train loss and accuracy NaN).
    """
    dev = resolve_device(device)
    ckdir = Path(checkpoint_dir)
    ckdir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256((config.key() + run_key).encode()).hexdigest()[:16]
    if frozen:
        return _freeze(model, val, config, dev, ckdir, key, val_score)
    torch.manual_seed(config.seed)
    to_device(model, dev)
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        raise InputError(f"optimizer must be 'sgd' or 'adam', got '{config.optimizer}'.")
    if config.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.gamma)
    elif config.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=config.gamma,
                                                           patience=config.lr_patience)
    else:
        raise InputError(f"schedule must be 'step' or 'plateau', got '{config.schedule}'.")
    history: list[dict] = []
    start, best_acc = 0, -1.0
    last = ckdir / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck.get("key") == key:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])
            history, start, best_acc = ck["history"], ck["epoch"] + 1, ck["best_acc"]
            log.info("Resuming training at epoch %d of %d (best validation accuracy so far %.3f)",
                     start + 1, config.epochs, best_acc)
        else:
            log.info("Checkpoint in %s is of another configuration; starting afresh", ckdir)
    loss_fn = nn.CrossEntropyLoss()
    done_here = 0
    for epoch in range(start, config.epochs):
        if stop_after is not None and done_here >= stop_after:
            break
        since_best = len(history) - max((i + 1 for i, h in enumerate(history) if h["best"]), default=0)
        if config.early_stop > 0 and history and since_best >= config.early_stop:
            log.info("Early stop after epoch %d: no better validation score for %d epochs", epoch,
                     config.early_stop)
            break
        model.train()
        tot, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(_loader(train, config, shuffle=True, epoch=epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not progress, leave=False, total=-(-len(train) // config.batch_size))
        for x, y, _ in bar:
            x, y = to_device(x, dev), y.to(dev)
            opt.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            tot += len(y)
            bar.set_postfix(loss=f"{loss_sum / tot:.3f}", acc=f"{correct / tot:.3f}")
        lr = opt.param_groups[0]["lr"]
        val_loss, val_acc, val_prob = _evaluate(model, val, config, dev, loss_fn)
        score = val_acc if val_score is None else float(val_score(model, val_prob))
        if not np.isfinite(score):  # undefined (e.g. one class only): below any defined score, above none
            score = -0.5
        if config.schedule == "plateau":
            sched.step(score)
        else:
            sched.step()
        is_best = score > best_acc
        if is_best:
            best_acc = score
            _save({"model": model.state_dict(), "epoch": epoch, "val_acc": val_acc, "val_score": score, "key": key},
                  ckdir / "best.pt")
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(tot, 1),
                        "train_acc": correct / max(tot, 1), "val_loss": val_loss, "val_acc": val_acc,
                        "val_score": score, "best": is_best})
        log.info("epoch %d: train loss %.3f acc %.3f | validation loss %.3f acc %.3f%s", epoch + 1,
                 history[-1]["train_loss"], history[-1]["train_acc"], val_loss, val_acc, " (best)" if is_best else "")
        _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
               "rng": torch.get_rng_state(), "epoch": epoch, "history": history, "best_acc": best_acc, "key": key},
              last)
        done_here += 1
    best = ckdir / "best.pt"
    if best.exists():
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["model"])
    to_device(model, dev).eval()
    return pd.DataFrame(history)


def _freeze(model, val, config, dev, ckdir: Path, key: str, val_score) -> pd.DataFrame:
    """Frozen mode of :func:`train_classifier`: score the network once, keep it as the best checkpoint."""
    to_device(model, dev)
    val_loss, val_acc, val_prob = _evaluate(model, val, config, dev, nn.CrossEntropyLoss())
    score = val_acc if val_score is None else float(val_score(model, val_prob))
    _save({"model": model.state_dict(), "epoch": -1, "val_acc": val_acc, "val_score": score, "key": key,
           "frozen": True}, ckdir / "best.pt")
    log.info("Frozen network: no training; validation accuracy of its untrained head %.3f", val_acc)
    model.eval()
    return pd.DataFrame([{"epoch": 0, "lr": 0.0, "train_loss": np.nan, "train_acc": np.nan, "val_loss": val_loss,
                          "val_acc": val_acc, "val_score": score, "best": True}])


@torch.no_grad()
def _evaluate(model, ds, config, dev, loss_fn) -> tuple[float, float, np.ndarray]:
    model.eval()
    tot, correct, loss_sum = 0, 0, 0.0
    probs = []
    for x, y, _ in _loader(ds, config, shuffle=False):
        x, y = to_device(x, dev), y.to(dev)
        out = model(x)
        loss_sum += float(loss_fn(out, y)) * len(y)
        correct += int((out.argmax(1) == y).sum())
        tot += len(y)
        probs.append(torch.softmax(out, 1).cpu().numpy())
    return loss_sum / max(tot, 1), correct / max(tot, 1), (np.concatenate(probs) if probs else np.zeros((0, 0)))


@torch.no_grad()
def predict_tiles(model: nn.Module, ds: TileDataset, *, batch_size: int = 64, device: str = "auto",
                  num_workers: int = 0, progress: bool = True) -> np.ndarray:
    """Class probabilities of every tile.

    Parameters
    ----------
    model : classifier, eval mode is set here
    ds : TileDataset of n_tiles tiles
    batch_size, device, num_workers, progress : of the forward passes

    Returns
    -------
    array, shape (n_tiles, n_classes), softmax probabilities
    """
    dev = resolve_device(device)
    to_device(model, dev).eval()
    out = []
    for x, _, _ in tqdm(_batches(ds, batch_size, num_workers=num_workers), desc="predicting",
                        disable=not progress, leave=False, total=-(-len(ds) // batch_size)):
        out.append(torch.softmax(model(to_device(x, dev)), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def slide_predictions(image_ids: Sequence[str], tile_pred: Sequence[int]) -> pd.Series:
    """Whole-slide class by majority vote of its tiles (ties: the smallest class index)."""
    df = pd.DataFrame({"image_id": image_ids, "pred": tile_pred})
    counts = df.groupby(["image_id", "pred"]).size().reset_index(name="n")
    counts = counts.sort_values(["image_id", "n", "pred"], ascending=[True, False, True])
    return counts.drop_duplicates("image_id").set_index("image_id")["pred"]


def merge_classes(labels: Sequence[str], groups: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Relabel classes by groups of similar tissues (``{"Artery": ["Artery - Aorta", ...]}``)."""
    to_group = {member: g for g, members in groups.items() for member in members}
    return np.array([to_group.get(lab, lab) for lab in labels], dtype=object)


def accuracy_table(truth: Sequence[str], pred: Sequence[str], *, level: str, split: str) -> pd.DataFrame:
    """Accuracy overall and per true class, as rows ``level, split, class, n, correct, accuracy``."""
    df = pd.DataFrame({"truth": np.asarray(truth), "pred": np.asarray(pred)})
    df["correct"] = df.truth == df.pred
    per = df.groupby("truth").correct.agg(["size", "sum"]).reset_index()
    per.columns = ["class", "n", "correct"]
    allrow = pd.DataFrame([{"class": "(all)", "n": len(df), "correct": int(df.correct.sum())}])
    out = pd.concat([allrow, per], ignore_index=True)
    out["accuracy"] = out.correct / out.n
    out.insert(0, "split", split)
    out.insert(0, "level", level)
    return out


def sample_per_slide(tiles: pd.DataFrame, *, split: str, k: int = 0, seed: int = 0,
                     tile_px: int | None = None) -> np.ndarray:
    """Positions of the tiles of one split, at most ``k`` drawn at random per slide (``k = 0``: all).

    Sorted, so that the result does not depend on the order slides are visited in.

    Parameters
    ----------
    tiles : DataFrame
        Tile table of one grid with a ``split`` column (and ``image_id``).
    split, k, seed
        The split, tiles per slide (0: all) and the seed of the draw.
    tile_px : int, optional
        The grid the table was taken from, named in the error when the table is empty.

    Returns
    -------
    ndarray of int, shape (n_drawn,), sorted positions in ``tiles``.
    """
    rng = np.random.default_rng(seed)
    idx = np.where(tiles["split"].to_numpy() == split)[0]
    if len(tiles) == 0:
        grid = f"{tile_px}-px " if tile_px is not None else ""
        raise InputError(
            f"No tiles in split '{split}': there are no {grid}tiles at all, so the {grid}grid was not made by "
            f"notebook 01. Add {tile_px if tile_px is not None else 'it'} to 01's tile_px and rerun 01, or "
            "set 02's train_tile_px (and feature_tile_px) to a grid 01 made.")
    if len(idx) == 0:
        present = sorted(map(str, pd.unique(tiles["split"])))
        raise InputError(f"No tiles in split '{split}' ({len(tiles)} tiles in splits {present}). Check 01's "
                         "split_fractions: every split needs at least one subject per tissue.")
    if k <= 0:
        return idx
    return _draw_within_slides(tiles, idx, k=k, rng=rng)


def _draw_within_slides(tiles: pd.DataFrame, idx: np.ndarray, *, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``k`` of the positions ``idx`` per slide (``image_id``), drawn with ``rng``; sorted."""
    groups = tiles.iloc[idx].groupby("image_id", sort=True).indices
    return np.sort(np.concatenate([idx[g[rng.permutation(len(g))[:k]]] for g in groups.values()]))


def limit_slides_per_class(tiles: pd.DataFrame, positions: np.ndarray, *, k: int = 0, label_column: str = "SMTS",
                           seed: int = 0) -> np.ndarray:
    """The ``positions`` of tiles that lie on at most ``k`` slides per class (``k = 0``: every slide).

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...), with ``image_id`` and ``label_column``
    positions : array of int, positions in ``tiles`` (e.g. :func:`sample_per_slide`)
    k : slides kept per class, drawn at random; 0 keeps every slide
    label_column : the class column
    seed : seed of the draw

    Returns
    -------
    ndarray of int, the sorted subset of ``positions`` on the kept slides.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if k < 0:
        raise InputError(f"k (slides per class) must be 0 (every slide) or positive, got {k}.")
    if k == 0 or len(positions) == 0:
        return np.sort(positions)
    rng = np.random.default_rng(seed)
    sub = tiles.iloc[positions][["image_id", label_column]].drop_duplicates("image_id")
    keep = set()
    for _, g in sub.groupby(label_column, sort=True):
        ids = np.sort(g.image_id.to_numpy())
        keep.update(ids[rng.permutation(len(ids))[:k]])
    return np.sort(positions[np.isin(tiles["image_id"].to_numpy()[positions], sorted(keep))])


def draw_per_slide(tiles: pd.DataFrame, *, k: int = 0, seed: int = 0,
                   splits: Sequence[str] | None = None) -> np.ndarray:
    """Positions of at most ``k`` tiles per slide, drawn at random (``k = 0``: every tile), of some splits or all.

    Used to cap the tiles a step reads (02's scored and quantified tiles, 08's tiles): the studies use every
    tile; ``--smoke`` runs cap them.

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...)
        A tile table with ``image_id`` (and ``split`` when ``splits`` is given).
    k : int
        Tiles kept per slide; 0 keeps every tile.
    seed : int
        Seed of the draw.
    splits : sequence of str, optional
        Only tiles of these splits (``split`` column); None: every tile.

    Returns
    -------
    ndarray of int, shape (n_kept,), sorted positions in ``tiles`` (with ``k = 0`` and no ``splits``:
    ``arange(n_tiles)``).
    """
    if k < 0:
        raise InputError(f"k (tiles per slide) must be 0 (every tile) or positive, got {k}.")
    keep = np.ones(len(tiles), dtype=bool) if splits is None else tiles["split"].isin(list(splits)).to_numpy()
    idx = np.where(keep)[0]
    if k == 0 or len(idx) == 0:
        return idx
    return _draw_within_slides(tiles, idx, k=k, rng=np.random.default_rng(seed))


# --------------------------------------------------------------------------
# notebook 02: the tissue classifier's data and its evaluation tables
# --------------------------------------------------------------------------
def tissue_tile_dataset(tiles: pd.DataFrame, samples: pd.DataFrame, *, tile_px: int, classes: Sequence[str],
                        input_px: int = 224, level: str = "table", label_column: str = "SMTS"
                        ) -> TileDataset:
    """The tiles of one grid, labelled by the tissue of their slide (class index in ``classes``).

    Parameters
    ----------
    tiles : DataFrame, notebook 01's tile table (``image_id, tile_px, x, y, ...``)
    samples : DataFrame, notebook 01's ``samples.tsv`` (``image_id, SMTS, split, path``)
    tile_px : the tile grid
    classes : tissue names; a tile's label is its tissue's position here
    input_px : side of the network input
    level : how tiles are read, ``"table"`` or ``"auto"`` (:class:`TileDataset`)
    label_column : column of ``samples`` holding the tissue (``SMTS``; ``SMTSD`` for Badea's 39 classes)

    Returns
    -------
    TileDataset, its ``tiles`` with ``label_column`` and ``split`` (call ``.preload()`` to read the tiles once)

    Examples
    --------
    >>> ds = tissue_tile_dataset(tiles, samples, tile_px=256, classes=sorted(samples.SMTS.unique()))  # doctest: +SKIP
    """
    if label_column not in samples.columns:
        raise InputError(f"label_column '{label_column}' is not a column of notebook 01's samples "
                         f"({list(samples.columns)[:10]} ...). Use SMTS or SMTSD.")
    cls = {c: i for i, c in enumerate(classes)}
    t = tiles[tiles.tile_px == tile_px].merge(samples[["image_id", label_column, "split"]], on="image_id")
    unknown = sorted(set(t[label_column]) - set(cls))
    if unknown:
        raise InputError(f"Tissues {unknown} are not among the classes {list(classes)}.")
    return TileDataset(t, dict(zip(samples.image_id, samples.path)), input_px=input_px,
                       labels=t[label_column].map(cls).to_numpy(), level=level)


def prediction_tables(tiles: pd.DataFrame, probabilities: np.ndarray, classes: Sequence[str], *,
                      label_column: str = "SMTS") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tile predictions and the slide predictions by majority vote (:func:`slide_predictions`).

    Parameters
    ----------
    tiles : DataFrame, shape (n_tiles, ...), the predicted tiles (``image_id, x, y, SMTS, split``)
    probabilities : array, shape (n_tiles, n_classes), of :func:`predict_tiles`
    classes : class names in the network's output order
    label_column : the true tissue's column (``SMTS`` or ``SMTSD``, as in :func:`tissue_tile_dataset`)

    Returns
    -------
    tiles : DataFrame, ``image_id, x, y, <label_column>, split, pred, p_max``
    slides : DataFrame, one row per slide: ``image_id, <label_column>, split, pred``
    """
    pred = tiles[["image_id", "x", "y", label_column, "split"]].reset_index(drop=True)
    pred["pred"] = np.array(classes)[probabilities.argmax(1)]
    pred["p_max"] = probabilities.max(1)
    vote = slide_predictions(pred.image_id, pred.pred)
    slides = pred.drop_duplicates("image_id")[["image_id", label_column, "split"]].assign(
        pred=lambda d: d.image_id.map(vote))
    return pred, slides


def accuracy_by_split(tile_pred: pd.DataFrame, slide_pred: pd.DataFrame, *,
                      splits: Sequence[str] = ("validation", "test"),
                      merge_groups: Mapping[str, Sequence[str]] | None = None,
                      label_column: str = "SMTS") -> pd.DataFrame:
    """:func:`accuracy_table` of tiles and slides on each split, also with merged classes when given.

    Parameters
    ----------
    tile_pred, slide_pred : DataFrames of :func:`prediction_tables`
    splits : splits to score
    merge_groups : tissue groups scored as one class (:func:`merge_classes`), e.g. ``{"Artery": [...]}``
        (``gtex.tissue_merge("badea_33")``: Badea's five merged groups)
    label_column : the true tissue's column of the prediction tables

    Returns
    -------
    DataFrame, ``level, split, class, n, correct, accuracy``; levels ``tile``, ``slide`` (and
    ``tile (merged)``, ``slide (merged)``)
    """
    tables = []
    for split in splits:
        tp_, sp_ = tile_pred[tile_pred.split == split], slide_pred[slide_pred.split == split]
        tables.append(accuracy_table(tp_[label_column], tp_.pred, level="tile", split=split))
        tables.append(accuracy_table(sp_[label_column], sp_.pred, level="slide", split=split))
        if merge_groups:
            for level, d in (("tile (merged)", tp_), ("slide (merged)", sp_)):
                tables.append(accuracy_table(merge_classes(d[label_column], merge_groups),
                                             merge_classes(d.pred, merge_groups),
                                             level=level, split=split))
    return pd.concat(tables, ignore_index=True)


def confusion_table(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> pd.DataFrame:
    """Counts of true (rows) against predicted (columns) classes, every class present.

    Parameters
    ----------
    truth, pred : sequences of class names, length n
    classes : all class names, in the order of rows and columns

    Returns
    -------
    DataFrame, shape (n_classes, n_classes)
    """
    return pd.crosstab(pd.Categorical(truth, classes), pd.Categorical(pred, classes), dropna=False)


# --------------------------------------------------------------------------
# notebook 02: several architectures in one run (Badea's Tables 2-4)
# --------------------------------------------------------------------------
@dataclass
class NetworkRun:
    """One architecture trained, selected and scored by :func:`train_networks`.

    Attributes
    ----------
    arch : architecture name (:data:`histo_utils.models.ARCHITECTURES`)
    model : the network with the best epoch's weights, eval mode
    history : DataFrame of :func:`train_classifier`, with an ``arch`` column
    tile_predictions, slide_predictions : DataFrames of :func:`prediction_tables`, with an ``arch`` column
    accuracy : DataFrame of :func:`accuracy_by_split`, with an ``arch`` column
    """

    arch: str
    model: nn.Module
    history: pd.DataFrame
    tile_predictions: pd.DataFrame
    slide_predictions: pd.DataFrame
    accuracy: pd.DataFrame


def train_networks(archs: Sequence[str], ds: TileDataset, *, train_idx: np.ndarray, val_idx: np.ndarray,
                   eval_idx: np.ndarray, classes: Sequence[str], config: TrainConfig,
                   checkpoint_root: str | os.PathLike, weights_path: str | os.PathLike | None = None,
                   augment: bool = True, batched_augment: bool = True, run_key: str = "", device: str = "auto",
                   merge_groups: Mapping[str, Sequence[str]] | None = None, eval_batch_size: int = 64,
                   progress: bool = True, frozen: bool = False, label_column: str = "SMTS"
                   ) -> dict[str, NetworkRun]:
    """Train every architecture on the same tiles and score it on the same tiles (Badea's Tables 2-3).

    Each architecture starts from the weights of ``torch.manual_seed(config.seed)`` (or ``weights_path``),
    trains with :func:`train_classifier` (its own checkpoints in ``checkpoint_root/<arch>/``, resumable; the
    key covers the architecture, the weights, ``run_key`` and the tiles' read mode), keeps its best epoch and
    predicts every tile at ``eval_idx`` (slide votes, accuracy by split). The tiles are read once (a
    preloaded ``ds``) and shared by all architectures.

    Parameters
    ----------
    archs : architecture names, at least one, no repeats
    ds : TileDataset of all tiles of the training grid, with labels (preloaded for speed)
    train_idx, val_idx, eval_idx : positions in ``ds`` of the training tiles, of the validation tiles used for
        model selection and of the tiles scored (validation and test slides)
    classes : class names in label order
    config : :class:`TrainConfig` (``num_workers`` 0 for a preloaded ``ds``)
    checkpoint_root : folder of the per-architecture checkpoint folders
    weights_path : optional local state_dict loaded into every architecture (matching tensors only)
    augment, batched_augment : training-tile augmentation and whether it is drawn per batch
        (:meth:`TileDataset.with_augmentation`)
    run_key : anything else the checkpoints must match (e.g. the tile sampling parameters)
    device, merge_groups, eval_batch_size, progress : of training, :func:`accuracy_by_split` and prediction
    label_column : the true tissue's column of ``ds.tiles`` (``SMTS``; ``SMTSD`` for Badea's 39 classes)
    frozen : use every network as loaded (a foundation-model encoder with ``weights_path``): no training
        (:func:`train_classifier` ``frozen``), features only

    Returns
    -------
    dict, arch -> :class:`NetworkRun`, in the order of ``archs``
    """
    import json

    archs = list(archs)
    if not archs:
        raise InputError("archs is empty: give at least one architecture, e.g. ['compact'].")
    if len(set(archs)) != len(archs):
        raise InputError(f"archs has repeats: {archs}. Give each architecture once.")
    train_ds = ds.subset(train_idx).with_augmentation(augment, batched=batched_augment and ds._cache is not None)
    val_ds, eval_ds = ds.subset(val_idx), ds.subset(eval_idx)
    runs: dict[str, NetworkRun] = {}
    for arch in archs:
        torch.manual_seed(config.seed)
        model = build_model(arch, len(classes), weights_path=weights_path)
        key = json.dumps([arch, str(weights_path or ""), run_key, ds.read_key, augment, batched_augment,
                          list(classes), len(train_idx), len(val_idx)] + (["frozen"] if frozen else []))
        log.info("Training %s (%d of %d architectures)", arch, len(runs) + 1, len(archs))
        history = train_classifier(model, train_ds, val_ds, config=config, checkpoint_dir=Path(checkpoint_root) / arch,
                                   device=device, run_key=key, progress=progress, frozen=frozen)
        probs = predict_tiles(model, eval_ds, batch_size=eval_batch_size, device=device, progress=progress)
        pred, slides = prediction_tables(eval_ds.tiles, probs, classes, label_column=label_column)
        acc = accuracy_by_split(pred, slides, merge_groups=merge_groups, label_column=label_column)
        runs[arch] = NetworkRun(arch, model, history.assign(arch=arch), pred.assign(arch=arch),
                                slides.assign(arch=arch), acc.assign(arch=arch))
    return runs


def run_tables(runs: Mapping[str, NetworkRun]) -> dict[str, pd.DataFrame]:
    """The tables of all architectures stacked (each with its ``arch`` column).

    Returns
    -------
    dict with ``history``, ``tile_predictions``, ``slide_predictions`` and ``accuracy`` DataFrames
    """
    fields = ("history", "tile_predictions", "slide_predictions", "accuracy")
    return {f: pd.concat([getattr(r, f) for r in runs.values()], ignore_index=True) for f in fields}


def confusion_tables(runs: Mapping[str, NetworkRun], classes: Sequence[str], *, split: str = "test",
                     label_column: str = "SMTS", merge_groups: Mapping[str, Sequence[str]] | None = None
                     ) -> dict[str, pd.DataFrame]:
    """Per-tissue confusion of tiles and slides of ``split`` for every architecture, and of slides with
    merged classes when ``merge_groups`` is given (Badea's merged-tissue result beside the per-tissue one).

    Parameters
    ----------
    runs : arch -> :class:`NetworkRun` (:func:`train_networks`)
    classes : class names (rows and columns, in this order)
    split : the split scored
    label_column : the true tissue's column of the prediction tables
    merge_groups : tissue groups scored as one class (:func:`merge_classes`); adds ``slide (merged)``

    Returns
    -------
    dict, ``"<level>"`` (one architecture) or ``"<arch> <level>"`` -> DataFrame (n_classes, n_classes);
    levels ``tile``, ``slide`` (and ``slide (merged)``, shape (n_groups, n_groups))
    """
    out = {}
    for arch, r in runs.items():
        tp_ = r.tile_predictions[r.tile_predictions.split == split]
        sp_ = r.slide_predictions[r.slide_predictions.split == split]
        levels = {"tile": confusion_table(tp_[label_column], tp_.pred, classes),
                  "slide": confusion_table(sp_[label_column], sp_.pred, classes)}
        if merge_groups:
            merged = list(dict.fromkeys(merge_classes(classes, merge_groups)))
            levels["slide (merged)"] = confusion_table(merge_classes(sp_[label_column], merge_groups),
                                                       merge_classes(sp_.pred, merge_groups), merged)
        for level, cm in levels.items():
            out[level if len(runs) == 1 else f"{arch} {level}"] = cm
    return out


def table_network_name(arch: str, *, first: bool, weights: str = "trained") -> str:
    """The ``network`` part of a feature table's name (:class:`histo_utils.data.FeatureKey`).

    The first architecture of notebook 02's ``archs`` keeps the plain names ``trained`` and ``untrained``
    (what notebooks 03-07 read by default, e.g. ``features_trained_256px.parquet``); every other
    architecture's trained network is ``<arch>-trained`` (``features_compact_bn-trained_256px.parquet``),
    characters other than letters, digits, ``-`` and ``_`` in ``arch`` (``timm:vit_...``) becoming ``-``.

    Examples
    --------
    >>> table_network_name("compact", first=True), table_network_name("compact_bn", first=False)
    ('trained', 'compact_bn-trained')
    """
    import re

    if first:
        return weights
    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', arch)}-{weights}"


def feature_networks(runs: Mapping[str, NetworkRun], *, n_classes: int, seed: int = 0,
                     weights_path: str | os.PathLike | None = None, frozen: bool = False
                     ) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The networks whose layer/channel features notebook 02 writes, named as their tables.

    The first architecture: its trained network (``trained``) and the same architecture with the seed's
    random weights or ``weights_path`` (``untrained``, Jones' raw network); every further architecture: its
    trained network (``<arch>-trained``, :func:`table_network_name`). An untrained copy of the further
    architectures is not made (it costs a full extraction and Badea compares trained networks). With
    ``frozen`` (encoders used as loaded), ``trained`` holds the loaded weights and ``untrained`` the seed's
    random weights, the reference a pretrained encoder is judged against.

    Returns
    -------
    networks : dict, table network name -> model
    archs : dict, table network name -> architecture
    """
    archs = list(runs)
    torch.manual_seed(seed)
    untrained = build_model(archs[0], n_classes, weights_path=weights_path, random_weights=frozen)
    networks = {"trained": runs[archs[0]].model, "untrained": untrained}
    arch_of = {"trained": archs[0], "untrained": archs[0]}
    for arch in archs[1:]:
        name = table_network_name(arch, first=False)
        networks[name], arch_of[name] = runs[arch].model, arch
    return networks, arch_of
