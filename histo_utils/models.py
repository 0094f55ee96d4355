"""Tissue-classifier architectures and the layers whose channels become features.

Architectures (Badea & Stanescu 2020, Table 1), all from torchvision with
random weights unless a local weights file is given (nothing is downloaded):

``alexnet``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` (each also ``_bn``),
``resnet34``, ``inception_v3``, and Badea's variants

``vgg16_1fc``
    VGG16 with its three fully connected layers replaced by dropout and one
    fully connected layer on the 7x7x512 map.
``vgg16_avg1fc``
    VGG16 with the 7x7 map averaged to 512 values, then dropout and one fully
    connected layer.
``compact``
    A small VGG-style network without batch normalisation (conv-ReLU blocks
    of 16-32-64-128 channels, max pooling, global average, dropout, one fully
    connected layer) for the CPU default run.
``compact_bn``
    The same with batch normalisation after every convolution (conv-BN-ReLU,
    as torchvision's ``vgg*_bn``): the CPU stand-in of Badea's VGG vs VGG_bn.

Feature layers (:func:`feature_layers`): for VGG, AlexNet and ``compact`` every
module of ``features`` (VGG16: indices 0-30, 9,920 channels); for ResNet34 the
modules that no skip connection bypasses (stem, each residual block's output,
the final pooling); for Inception v3 the elementary units with non-negative
outputs off the auxiliary branch (every conv-BN-ReLU ``BasicConv2d`` and the
top-level max/avg pools).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
import torchvision

log = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "build_model", "feature_layers", "input_size", "CompactVGG"]

_TV = {
    "alexnet": "alexnet",
    **{f"vgg{d}{bn}": f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "resnet34": "resnet34",
    "inception_v3": "inception_v3",
}
ARCHITECTURES = (*_TV, "vgg16_1fc", "vgg16_avg1fc", "compact", "compact_bn")


class CompactVGG(nn.Module):
    """A small VGG-style classifier: ``features`` (conv-ReLU blocks, max pooling), average, dropout, linear.

    ``batch_norm=True`` puts a BatchNorm2d between every convolution and its ReLU (torchvision's ``vgg*_bn``
    layout).
    """

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.3,
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:
            for c in (c_in, w):
                layers += [nn.Conv2d(c, w, 3, padding=1), *([nn.BatchNorm2d(w)] if batch_norm else []),
                           nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            c_in = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, n_classes))
        # torchvision's VGG initialisation: without batch norm, PyTorch's default (too small) initialisation
        # leaves a plain 8-conv stack unable to learn at lr 0.01
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def input_size(arch: str) -> int:
    """The input side the architecture was designed for (Inception v3: 299, others 224)."""
    return 299 if arch == "inception_v3" else 224


def build_model(arch: str, n_classes: int, *, weights_path: str | os.PathLike | None = None,
                dropout: float = 0.5) -> nn.Module:
    """A classifier of ``arch`` for ``n_classes`` tissues, random weights or a local weights file.

    Parameters
    ----------
    arch
        One of :data:`ARCHITECTURES`.
    n_classes
        Number of tissue classes.
    weights_path
        A local ``state_dict`` file (e.g. ImageNet weights for the backbone).
        Tensors whose name and shape match are loaded; the new classifier keeps
        its random initialisation. Never downloaded.
    dropout
        Dropout before the last layer of ``vgg16_1fc``/``vgg16_avg1fc``.

    Returns
    -------
    nn.Module
        The network; its output has shape (batch, n_classes) for input (batch, 3, H, W).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"Architecture '{arch}' not available. Available: {list(ARCHITECTURES)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
    if arch in ("compact", "compact_bn"):
        model: nn.Module = CompactVGG(n_classes, batch_norm=arch == "compact_bn")
    elif arch in ("vgg16_1fc", "vgg16_avg1fc"):
        model = torchvision.models.vgg16(weights=None)
        if arch == "vgg16_1fc":
            model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512 * 7 * 7, n_classes))
        else:
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, n_classes))
    elif arch == "inception_v3":
        model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        model.fc = nn.Linear(model.fc.in_features, n_classes)
    elif arch == "resnet34":
        model = torchvision.models.resnet34(weights=None)
        model.fc = nn.Linear(model.fc.in_features, n_classes)
    else:
        model = getattr(torchvision.models, _TV[arch])(weights=None)
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, n_classes)
    if weights_path is not None:
        _load_matching(model, Path(weights_path))
    return model


def _load_matching(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"Weights file '{path}' does not exist. ImageNet weights are optional: leave weights_path empty "
            "to start from random weights, or put a torchvision state_dict file there.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(use))
    if not use:
        raise ValueError(f"Weights file '{path}' has no tensor matching this architecture's names and shapes.")
    model.load_state_dict(use, strict=False)
    log.info("Loaded %d tensors from %s (%d skipped: %s...)", len(use), path, len(skipped), skipped[:3])


def feature_layers(model: nn.Module, arch: str) -> "OrderedDict[str, nn.Module]":
    """The layers whose channels are quantified as features, in forward order, by name.

    Names: the index in ``features`` for VGG/AlexNet/compact (Badea's ``29`` in feature ``29_499``); the module
    path otherwise (``layer3.2``, ``Mixed_6b.branch7x7_1``).

    Parameters
    ----------
    model : a network of :func:`build_model`
    arch : its architecture (one of :data:`ARCHITECTURES`)

    Returns
    -------
    OrderedDict, layer name -> module
    """
    out: "OrderedDict[str, nn.Module]" = OrderedDict()
    if hasattr(model, "features") and isinstance(model.features, nn.Sequential) and arch != "inception_v3":
        for i, m in enumerate(model.features):
            out[str(i)] = m
        return out
    if arch == "resnet34":
        for name in ("conv1", "bn1", "relu", "maxpool"):
            out[name] = getattr(model, name)
        for lname in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(model, lname)):
                out[f"{lname}.{i}"] = block
        out["avgpool"] = model.avgpool
        return out
    if arch == "inception_v3":
        from torchvision.models.inception import BasicConv2d

        for name, m in model.named_modules():
            if name.startswith("AuxLogits"):
                continue
            if isinstance(m, BasicConv2d) or (name in ("maxpool1", "maxpool2", "avgpool")):
                out[name] = m
        return out
    raise ValueError(f"No feature-layer rule for architecture '{arch}'.")
