"""Antialiased cubic resizing with MATLAB `imresize` semantics, and DR2's low-pass filter Φ_N.

DR2 (Wang et al. 2023, §3.3) conditions its sampler on the input y through a low-pass filter Φ_N built by
downsampling and upsampling with one scale factor N: the initial state is x_ω = y_ω (Eq. 9), and after every
denoising step the low frequencies of x_{t-1} are replaced by those of y_{t-1} (Eq. 10):
x_{t-1} := Φ_N(y_{t-1}) + (I − Φ_N)(x_{t-1}). The official code implements Φ_N as `up(down(·))` with the resizer
it takes from ILVR (Choi et al. 2021, jychoi118/ilvr_adm `resizer.py`), written by Assaf Shocher
(github.com/assafshocher/resizer). This module re-implements that resizer's arithmetic:

- Keys' cubic kernel with a = −0.5 (MATLAB's `cubic`);
- output pixel j (1-based) maps to the input coordinate u = j'/s + ½(1 − 1/s), where j' = j − (out − in·s)/2
  re-centres the grid when `out` is not exactly `in·s` (the shift is 0 whenever it is, and then the result is
  MATLAB's and basicsr's `imresize`);
- when downscaling (s < 1) the kernel is widened by 1/s and scaled by s (antialiasing), support 4/s;
- each output's weights are normalised to sum to 1;
- borders are handled by symmetric (half-sample) reflection, MATLAB's `symmetric` padding:
  index sequence 0, 1, …, L−1, L−1, …, 0 repeated.

One deliberate difference: the official resizer switches antialiasing on for every resized axis when *any* axis
shrinks; here, as in MATLAB, it is decided per axis. The two agree for the isotropic scales DR2 uses.

The resize is separable (height first, then width, the order the official resizer uses for equal scales). Each
axis is a sum over kernel taps of gathered rows times per-output weights, accumulated tap by tap with separate
multiplies and adds: every output element sees the same operations in the same order whatever the batch size,
so results do not depend on which batch a face is in (a matmul would fold the batch into GEMM rows).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB `imresize` 'cubic'), support [−2, 2]."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((1 < ax) & (ax <= 2))


@lru_cache(maxsize=64)
def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices [out, taps] into the input axis and their weights [out, taps] (float64) for one axis.

    Same arithmetic as `Resizer.contributions` of the ILVR / DR2 resizer (and, when out = in·scale, MATLAB's
    `contributions` and basicsr's `calculate_weights_indices`); taps whose weight is zero for every output are
    dropped."""
    antialias = antialias and scale < 1
    kernel_width = 4.0 / scale if antialias else 4.0

    def kernel(d: np.ndarray) -> np.ndarray:
        return scale * cubic(scale * d) if antialias else cubic(d)

    out_coordinates = np.arange(1, out_length + 1, dtype=np.float64)
    shifted = out_coordinates - (out_length - in_length * scale) / 2
    match = shifted / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(match - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    field = (left[:, None] + np.arange(taps) - 1).astype(np.int64)  # 0-based input positions
    weights = kernel(match[:, None] - field - 1)
    sums = weights.sum(axis=1)
    sums[sums == 0] = 1.0
    weights = weights / sums[:, None]
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    field = mirror[np.mod(field, mirror.shape[0])]
    keep = np.any(weights != 0, axis=0)
    return field[:, keep], weights[:, keep]


@lru_cache(maxsize=64)
def _device_contributions(
    in_length: int, out_length: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """`contributions` as tensors on one device, transposed to [taps, out] (cached: no host copies per call)."""
    index, weights = contributions(in_length, out_length, scale, antialias)
    return (
        torch.as_tensor(index.T.copy(), device=device),
        torch.as_tensor(weights.T.copy()).to(device=device, dtype=dtype),
    )


def _resize_axis(x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    index_t, weights_t = _device_contributions(x.shape[dim], out_length, scale, antialias, x.device, x.dtype)
    view = [1] * x.ndim
    view[dim] = out_length
    out = None
    for k in range(index_t.shape[0]):
        term = x.index_select(dim, index_t[k]).mul_(weights_t[k].reshape(view))
        out = term if out is None else out.add_(term)
    return out


def output_size(in_length: int, scale: float) -> int:
    """ceil(in·scale), as the official resizer and MATLAB compute it; a product within 1e-9 of an integer counts
    as that integer (so 240·(1/3) gives 80 whatever the float rounding)."""
    product = in_length * scale
    nearest = round(product)
    return int(nearest) if abs(product - nearest) < 1e-9 else int(math.ceil(product))


def resize(
    x: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize the last two axes of x ([..., H, W]) with antialiased MATLAB cubic interpolation.

    Give `scale` (one factor or (s_h, s_w)); `size` (out_h, out_w); or both, as the official resizer allows (the
    output grid is then centred on the input). With only `scale` the output is ceil(in·scale); with only `size`
    the scale is size/in. Runs on x's device in x's dtype; an axis with scale 1 and unchanged length is left as is.
    """
    if scale is None and size is None:
        raise ValueError("give a scale, a size or both")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if scale is not None:
        s_h, s_w = (scale, scale) if np.isscalar(scale) else scale
        s_h, s_w = float(s_h), float(s_w)
        if s_h <= 0 or s_w <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
    if size is None:
        size = (output_size(in_h, s_h), output_size(in_w, s_w))
    elif scale is None:
        s_h, s_w = size[0] / in_h, size[1] / in_w
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size must be positive, got {(out_h, out_w)}")
    if not (s_h == 1 and out_h == in_h):
        x = _resize_axis(x, x.ndim - 2, out_h, s_h, antialias)
    if not (s_w == 1 and out_w == in_w):
        x = _resize_axis(x, x.ndim - 1, out_w, s_w, antialias)
    return x


def lowpass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Φ_N(x) = up(down(x, 1/N), N) on [B, C, H, W] — DR2 Eq. 10's low-pass filter; N = 1 is the identity.

    As in the official code (`Resizer(shape, 1/N)` then `Resizer(shape_d, N)`), the down step keeps
    ceil(H/N) × ceil(W/N) pixels and the up step returns to H × W at scale N. When N divides the size (256 and
    N ∈ {2, 4, 8, 16}, DR2's settings) this is exactly the official filter; other sizes, which the official code
    cannot run, use the resizer's centred grid. Φ_N is linear but not a projection: Φ_N(Φ_N(x)) ≠ Φ_N(x) in
    general, because cubic down∘up is not the identity."""
    if factor < 1:
        raise ValueError(f"low-pass factor must be ≥ 1, got {factor}")
    if factor == 1:
        return x
    h, w = x.shape[-2], x.shape[-1]
    return resize(resize(x, scale=1.0 / factor), scale=float(factor), size=(h, w))
