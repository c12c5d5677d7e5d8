"""Pixel conversions between the native image arrays (uint8/uint16 RGB) and float [0, 1] working copies."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def max_value(dtype) -> float:
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def to_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / np.float32(max_value(rgb.dtype))


def from_float(image: np.ndarray, dtype) -> np.ndarray:
    """Round a float [0, 1] image to `dtype`; exact inverse of `to_float` for untouched pixels."""
    scale = max_value(dtype)
    return np.rint(np.clip(image, 0.0, 1.0) * scale).astype(dtype)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    return from_float(to_float(rgb), np.uint8)


def to_tensor(image: np.ndarray):
    """HxWx3 float [0, 1] → [1, 3, H, W] float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)


def resize_batch(x, size: int | tuple[int, int], clamp: bool = True):
    """Bicubic antialiased resize of a [B, 3, H, W] batch (DifFace's sampler and DR2's torchvision Resize work this
    way), clamped to [0, 1] unless clamp=False."""
    hw = (size, size) if isinstance(size, int) else size
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    out = F.interpolate(x, size=hw, mode="bicubic", antialias=True)
    return out.clamp(0.0, 1.0) if clamp else out


def resize_float(image: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    """HxWx3 float image resized to (w, h) with the same bicubic antialias filter."""
    w, h = wh
    if image.shape[1] == w and image.shape[0] == h:
        return image
    return resize_batch(to_tensor(image), (h, w))[0].permute(1, 2, 0).numpy()
