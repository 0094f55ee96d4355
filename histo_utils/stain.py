"""Stain measurements: optical density of H&E pixels.

Beer-Lambert: a pixel of intensity I (0-255) under white light I0 has optical
density OD = -log10((I + 1) / (I0 + 1)) per channel; stain amounts add up in
OD, which is why fading (ischemic autolysis) and stain batches show up there.
"""
from __future__ import annotations

import numpy as np
from .errors import InputError

__all__ = ["optical_density", "mean_optical_density"]


def optical_density(rgb: np.ndarray, *, background: float = 250.0) -> np.ndarray:
    """Per-channel optical density of an RGB image.

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), uint8
    background
        Intensity of the empty glass (I0).

    Returns
    -------
    ndarray, shape (..., 3), float32, >= 0
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1] < 3:
        raise InputError(f"rgb must end in 3 channels, got shape {rgb.shape}.")
    i = rgb[..., :3].astype(np.float32)
    return np.clip(-np.log10((i + 1.0) / (background + 1.0)), 0.0, None)


def mean_optical_density(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean OD (R, G, B) over the pixels of ``mask`` (e.g. the tissue); NaN if the mask is empty."""
    if mask.shape != rgb.shape[:2]:
        raise InputError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}.")
    if not mask.any():
        return np.full(3, np.nan, np.float32)
    return optical_density(rgb)[mask].mean(0)
