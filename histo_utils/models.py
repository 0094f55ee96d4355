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

Foundation-model encoders (``timm:<name>``, e.g. ``timm:vit_base_patch16_224`` or, shaped like UNI,
``timm:vit_large_patch16_224``): a timm Vision Transformer built with ``pretrained=False`` (timm never
downloads) and a new ``n_classes`` head. Its shape details that a checkpoint fixes are read from the local
weights file (:func:`timm_kwargs_from_state`): depth, input size (from the position embedding), layer scale
(UNI's ``ls1.gamma``) and register tokens; ``dynamic_img_size`` lets it take any ``input_px`` that is a
multiple of the patch size (the position embedding is interpolated). Its feature layers are:

``blocks.<i>``
    the mean over the **patch tokens** (class and register tokens excluded) of the output of transformer
    block ``i`` (0 .. depth-1), one channel per embedding dimension: the token analogue of a CNN layer's
    spatial mean (with exponent ``p``: the mean of ``y ** p`` over tokens);
``cls``
    the **class token after the final norm**: the embedding UNI and Phikon publish as the tile feature.

So a ViT-B/16 gives 12 x 768 + 768 = 9,984 features named ``blocks.11_767`` or ``cls_0`` and every
downstream notebook uses them as it uses ``29_499``.
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
import torchvision
from .errors import InputError, MissingInputError

log = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "TIMM_PREFIX", "build_model", "feature_layers", "input_size", "CompactVGG", "is_timm",
           "timm_kwargs_from_state", "read_state_dict", "convert_hf_vit"]

TIMM_PREFIX = "timm:"

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


def is_timm(arch: str) -> bool:
    """Whether ``arch`` names a timm encoder (``timm:<name>``)."""
    return isinstance(arch, str) and arch.startswith(TIMM_PREFIX)


def input_size(arch: str) -> int:
    """The input side the architecture was designed for (Inception v3: 299, others 224)."""
    return 299 if arch == "inception_v3" else 224


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file, unwrapped from the usual checkpoint containers.

    Accepts a plain ``state_dict`` (UNI's ``pytorch_model.bin``), a ``.safetensors`` file, or a dict with
    ``state_dict``/``model``/``teacher`` inside; ``module.`` and ``backbone.`` name prefixes are removed, and
    a Hugging Face ``transformers`` ViT (Phikon's ``pytorch_model.bin``) is renamed to timm's layout
    (:func:`convert_hf_vit`).

    Parameters
    ----------
    path : the file

    Returns
    -------
    dict, tensor name -> tensor (CPU)
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"Weights file '{path}' does not exist. Download the encoder's weights once (see the README, "
            "'Foundation-model encoders') and set weights_path to the file, or leave weights_path empty for "
            "random weights.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"Weights file '{path}' is not a state_dict (a dict of tensor name -> tensor).")
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    if any(".encoder.layer." in f".{k}" for k in out) and any("embeddings.cls_token" in k for k in out):
        log.info("Weights file '%s' is in the Hugging Face ViT layout (e.g. Phikon): renamed to timm's", path)
        out = convert_hf_vit(out)
    return out


def timm_kwargs_from_state(state: dict[str, torch.Tensor]) -> dict:
    """The timm ViT options a checkpoint fixes, read from its tensor names and shapes.

    Parameters
    ----------
    state : a timm-format ViT state_dict

    Returns
    -------
    dict with ``depth`` (number of ``blocks.<i>``), ``img_size`` (square side whose patch grid the position
    embedding holds), ``init_values`` (1e-5 when blocks have layer scale ``ls1.gamma``, as UNI; the loaded
    gammas replace it), ``reg_tokens`` and ``class_token`` when present or absent in the file.
    """
    blocks = {int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    kw: dict = {}
    if blocks:
        kw["depth"] = max(blocks) + 1
    if any(k.endswith("ls1.gamma") for k in state):
        kw["init_values"] = 1e-5
    n_reg = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    if n_reg:
        kw["reg_tokens"] = n_reg
    kw["class_token"] = "cls_token" in state
    if "pos_embed" in state and "patch_embed.proj.weight" in state:
        n_pos = int(state["pos_embed"].shape[1])
        patch = int(state["patch_embed.proj.weight"].shape[-1])
        for n_prefix in (int(kw["class_token"]) + n_reg, 0):  # position embedding with or without prefix tokens
            side = int(round((n_pos - n_prefix) ** 0.5))
            if side * side == n_pos - n_prefix:
                kw["img_size"] = side * patch
                if n_prefix == 0 and (kw["class_token"] or n_reg):
                    kw["no_embed_class"] = True
                break
    return kw


def _build_timm(arch: str, n_classes: int, weights_path, *, random_weights: bool) -> nn.Module:
    """A timm ViT of ``arch`` (``timm:<name>``) with a new head; its backbone from ``weights_path``."""
    import timm

    name = arch[len(TIMM_PREFIX):]
    if not name or name not in timm.list_models():
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8] if name else []
        raise InputError(f"timm architecture '{name}' not available in timm {timm.__version__}. "
                         f"Write arch as 'timm:<model name>', e.g. 'timm:vit_base_patch16_224'"
                         f"{f'; similar names: {close}' if close else ''}.")
    state = read_state_dict(weights_path) if weights_path is not None else None
    kw = timm_kwargs_from_state(state) if state is not None else {}
    try:
        model = timm.create_model(name, pretrained=False, num_classes=n_classes, dynamic_img_size=True, **kw)
    except TypeError as e:  # not a VisionTransformer (e.g. a CNN of timm): no ViT options
        raise InputError(f"timm architecture '{name}' is not a Vision Transformer ({e}); use a timm ViT "
                         f"(vit_*) or one of the torchvision names {list(ARCHITECTURES)}.") from None
    if not (hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens")):
        raise InputError(f"timm architecture '{name}' is not a Vision Transformer with transformer blocks; "
                         f"use a timm ViT such as 'timm:vit_base_patch16_224'.")
    if state is not None and not random_weights:
        _load_backbone_strict(model, state, Path(weights_path), arch)
    return model


def _load_backbone_strict(model: nn.Module, state: dict, path: Path, arch: str) -> None:
    """Every backbone tensor of ``model`` from ``state`` (same names and shapes); the head is left new."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise InputError(
            f"Weights file '{path}' does not fit {arch}: {len(missing)} backbone tensors missing "
            f"(e.g. {missing[:4]}), {len(wrong)} of another shape (e.g. {wrong[:3]}). Pick the timm name of the "
            f"same encoder (UNI: timm:vit_large_patch16_224; Phikon: timm:vit_base_patch16_224, its Hugging Face "
            f"weights converted by models.convert_hf_vit) or the file made for it.")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    unused = sorted(set(state) - set(own) - {k for k in state if k.startswith("head.")})
    log.info("Loaded %d backbone tensors of %s from %s (head new, %d classes; %d tensors of the file unused: %s)",
             len(own), arch, path, model.num_classes, len(unused), unused[:3])


def build_model(arch: str, n_classes: int, *, weights_path: str | os.PathLike | None = None,
                dropout: float = 0.5, random_weights: bool = False) -> nn.Module:
    """A classifier of ``arch`` for ``n_classes`` tissues, random weights or a local weights file.

    Parameters
    ----------
    arch
        One of :data:`ARCHITECTURES`, or ``timm:<name>`` for a timm Vision Transformer (see the module
        notes; its backbone must match ``weights_path`` exactly, tensor for tensor).
    n_classes
        Number of tissue classes.
    weights_path
        A local ``state_dict`` file (e.g. ImageNet weights for the backbone).
        Tensors whose name and shape match are loaded; the new classifier keeps
        its random initialisation. Never downloaded.
    dropout
        Dropout before the last layer of ``vgg16_1fc``/``vgg16_avg1fc``.
    random_weights
        Timm encoders: take the shape (depth, input size, layer scale) from ``weights_path`` but keep random
        weights (the untrained reference of a frozen encoder).

    Returns
    -------
    nn.Module
        The network; its output has shape (batch, n_classes) for input (batch, 3, H, W).
    """
    if n_classes < 2:
        raise InputError(f"n_classes must be at least 2, got {n_classes}.")
    if is_timm(arch):
        return _build_timm(arch, n_classes, weights_path, random_weights=random_weights)
    if arch not in ARCHITECTURES:
        raise InputError(f"Architecture '{arch}' not available. Available: {list(ARCHITECTURES)} or "
                         f"'timm:<name>' (a timm Vision Transformer, e.g. 'timm:vit_base_patch16_224').")
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
    if weights_path is not None and not random_weights:
        _load_matching(model, Path(weights_path))
    return model


def _load_matching(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise MissingInputError(
            f"Weights file '{path}' does not exist. ImageNet weights are optional: leave weights_path empty "
            "to start from random weights, or put a torchvision state_dict file there.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(use))
    if not use:
        raise InputError(f"Weights file '{path}' has no tensor matching this architecture's names and shapes.")
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
    if is_timm(arch):
        return _vit_feature_layers(model, arch)
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
    raise InputError(f"No feature-layer rule for architecture '{arch}'.")


def _vit_feature_layers(model: nn.Module, arch: str) -> "OrderedDict[str, nn.Module]":
    """``blocks.<i>`` (patch-token mean of each block's output) and ``cls`` (class token after the final norm).

    Each module is tagged with ``feature_tokens`` (``("patch_mean", n_prefix)`` or ``("cls", 0)``), read by
    :class:`histo_utils.features.LayerRecorder` to reduce the (batch, tokens, dim) output to (batch, dim).
    """
    if not hasattr(model, "blocks") or not hasattr(model, "num_prefix_tokens"):
        raise InputError(f"Architecture '{arch}': the model has no transformer blocks; build it with build_model.")
    n_prefix = int(model.num_prefix_tokens)
    out: "OrderedDict[str, nn.Module]" = OrderedDict()
    for i, block in enumerate(model.blocks):
        block.feature_tokens = ("patch_mean", n_prefix)
        out[f"blocks.{i}"] = block
    if getattr(model, "has_class_token", False):
        model.norm.feature_tokens = ("cls", 0)
        out["cls"] = model.norm
    return out


def convert_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face ``transformers`` ViT state_dict (e.g. Phikon, ``owkin/phikon``) renamed to timm's layout.

    Query, key and value are concatenated into timm's ``attn.qkv``; the pooler is dropped.

    Parameters
    ----------
    state : dict, names such as ``vit.encoder.layer.0.attention.attention.query.weight`` or without ``vit.``

    Returns
    -------
    dict, timm names (``blocks.0.attn.qkv.weight``), loadable into ``timm:vit_base_patch16_224``
    """
    s = {(k[4:] if k.startswith("vit.") else k): v for k, v in state.items()}
    out = {"cls_token": s["embeddings.cls_token"], "pos_embed": s["embeddings.position_embeddings"],
           "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": s["layernorm.weight"], "norm.bias": s["layernorm.bias"]}
    layers = sorted({int(m[1]) for k in s if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    if not layers:
        raise InputError("The state_dict has no 'encoder.layer.<i>' tensors: not a Hugging Face ViT.")
    for i in layers:
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            out[f"{b}norm1.{t}"] = s[f"{h}layernorm_before.{t}"]
            out[f"{b}norm2.{t}"] = s[f"{h}layernorm_after.{t}"]
            out[f"{b}attn.qkv.{t}"] = torch.cat([s[f"{h}attention.attention.{q}.{t}"]
                                                  for q in ("query", "key", "value")])
            out[f"{b}attn.proj.{t}"] = s[f"{h}attention.output.dense.{t}"]
            out[f"{b}mlp.fc1.{t}"] = s[f"{h}intermediate.dense.{t}"]
            out[f"{b}mlp.fc2.{t}"] = s[f"{h}output.dense.{t}"]
    return out
