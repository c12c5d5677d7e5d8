"""Identity masks M for ipc-guided (Diffuse and Restore, §3.2.1, Eq. 8–9): 1 where ArcFace guidance may move
pixels (identity-critical regions), 0 where the prior generates freely, a smooth ramp in between.

The paper predicts M with a small learned sub-branch of the IPC, fed the proxy M′ of Eq. 8 and the input x, and
names a face-parsing network as the alternative. M is
  - ``learned``: that branch (archs/mask_branch.py, trained by `facerestore train ipc-mask`), made binary where its
    sigmoid exceeds 1/2 (the paper's M is "a spatial binary mask");
  - ``parsing``: ParseNet brows, eyes, nose, mouth and lips, dilated and feathered (the paper's alternative);
  - ``proxy``: M′ itself, |g_φ(x) − x| > δ, cleaned up by morphology and feathered (NOT the learned M);
  - ``none``: all ones, uniform guidance (the paper's Net3 ablation, Table 6).

ParseNet labels. facexlib's ``parsing_parsenet.pth`` is PSFR-GAN's ParseNet, trained on CelebAMask-HQ label
maps made by the dataset's own ``g_mask.py`` and coloured with its ``g_color.py`` palette (PSFR-GAN
``utils/utils.py`` MASK_COLORMAP). That order differs from the BiSeNet / face-parsing.PyTorch order
(2 l_brow … 10 nose … 17 hair) that facexlib's ``bisenet`` model uses; facexlib's parsenet visualisation
(``inference/inference_parsing.py``, ``part_colors_parsenet``) lists it as below. facexlib's paste-back
MASK_COLORMAP is consistent with it only in this order (zeros = background, hat, necklace, neck, cloth).
Eyeglasses (3) are left out by default: frames and lenses carry no identity that ArcFace guidance should
paint, the eyes behind clear lenses are labelled as eyes, and the dilation reaches the rims anyway.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PARSENET_LABELS = ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
                   "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
PARSENET_CLASS = {name: i for i, name in enumerate(PARSENET_LABELS)}
ID_PARTS = ("l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip")
ID_CLASSES = tuple(PARSENET_CLASS[n] for n in ID_PARTS)  # (6, 7, 4, 5, 2, 10, 11, 12)
MASK_KINDS = ("learned", "parsing", "proxy", "none")

# Defaults as fractions of the face size S (512 → dilate 10 px, feather 15 px; proxy: open 3, close 6, dilate 5).
DILATE_FRAC = 0.02
FEATHER_FRAC = 0.03
PROXY_OPEN_FRAC = 0.006
PROXY_CLOSE_FRAC = 0.012
PROXY_DILATE_FRAC = 0.01


def _px(value: float | None, frac: float, size: int, minimum: int = 0) -> int:
    return max(minimum, int(round(frac * size))) if value is None else max(0, int(round(value)))


def _disk(radius: int, like: torch.Tensor) -> torch.Tensor:
    ax = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    return ((ax[:, None] ** 2 + ax[None, :] ** 2) <= radius * radius + radius).to(like.dtype)[None, None]


def dilate(binary: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [B, 1, H, W] 0/1 float mask by a disk of `radius` px (outside the image counts as 0)."""
    if radius <= 0:
        return binary
    return (F.conv2d(binary, _disk(radius, binary), padding=radius) > 0.5).to(binary.dtype)


def erode(binary: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion by a disk; the image border does not erode (outside counts as 1)."""
    return 1.0 - dilate(1.0 - binary, radius)


def gaussian_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W], replicate padding, kernel 2⌈3σ⌉ + 1."""
    if sigma <= 0:
        return mask
    r = int(math.ceil(3.0 * sigma))
    ax = torch.arange(-r, r + 1, device=mask.device, dtype=mask.dtype)
    k = torch.exp(-0.5 * (ax / sigma) ** 2)
    k = k / k.sum()
    out = F.conv2d(F.pad(mask, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def grow_and_feather(core: torch.Tensor, dilate_px: int, feather_px: int) -> torch.Tensor:
    """Exactly 1 on `core` dilated by dilate_px, then a Gaussian ramp to 0 over about feather_px more pixels.

    The ramp is the blur (σ = feather_px / 4) of core dilated by dilate_px + feather_px / 2, so at a straight
    edge it starts at Φ(2) ≈ 0.98 on the hard region's border and reaches Φ(−2) ≈ 0.02 feather_px further out;
    max() with the hard region makes the dilated core exactly 1."""
    hard = dilate(core, dilate_px)
    if feather_px <= 0:
        return hard
    soft = gaussian_blur(dilate(core, dilate_px + int(math.ceil(feather_px / 2))), feather_px / 4.0)
    return torch.maximum(hard, soft).clamp(0.0, 1.0)


def _resize(mask: torch.Tensor, size: int | Sequence[int] | None) -> torch.Tensor:
    if size is None:
        return mask
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if tuple(mask.shape[-2:]) == hw:
        return mask
    return F.interpolate(mask, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)


def parsing_mask(
    labels: torch.Tensor | np.ndarray,
    dilate_px: float | None = None,
    feather_px: float | None = None,
    classes: Sequence[int] = ID_CLASSES,
    size: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """M from ParseNet labels: [B, H, W] ints (or [B, 19, H, W] logits, or one [H, W] map) → [B, 1, H, W] in [0, 1].

    1 on brows, eyes, nose, mouth and lips (``ID_CLASSES``, ParseNet/CelebAMask-HQ order) dilated by dilate_px
    (default 2% of the map size S), feathered to 0 over feather_px (default 3% of S); then resized to `size`."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 4:
        labels = labels.argmax(dim=1)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise ValueError(f"expected [B, H, W] labels, got shape {tuple(labels.shape)}")
    s = min(labels.shape[-2:])
    wanted = torch.as_tensor(list(classes), device=labels.device, dtype=torch.long)
    core = torch.isin(labels.long(), wanted).to(torch.float32)[:, None]
    mask = grow_and_feather(core, _px(dilate_px, DILATE_FRAC, s), _px(feather_px, FEATHER_FRAC, s))
    return _resize(mask, size)


def eq8_proxy(estimate01: torch.Tensor, input01: torch.Tensor, delta: float = 0.3, reduce: str = "mean") -> torch.Tensor:
    """M′ of Eq. 8, [|g_φ(x) − x| > δ]: [B, C, H, W] × 2 in [0, 1] → [B, 1, H, W] of 0/1 (float32). Channels:
    ``reduce="mean"`` thresholds the mean absolute difference over channels, so a pixel counts when g_φ changed it
    as a whole, not when it only removed colour noise in one channel; ``"max"`` the largest (any channel > δ). δ in
    [0, 1] units (the paper's 0.3)."""
    if estimate01.shape != input01.shape or estimate01.ndim != 4:
        raise ValueError(f"estimate and input must both be [B, C, H, W] of one shape, got "
                         f"{tuple(estimate01.shape)} and {tuple(input01.shape)}")
    diff = (estimate01.float() - input01.float().to(estimate01.device)).abs()
    if reduce == "mean":
        diff = diff.mean(dim=1, keepdim=True)
    elif reduce == "max":
        diff = diff.amax(dim=1, keepdim=True)
    else:
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    return (diff > delta).to(torch.float32)


def mask_branch_input(estimate01: torch.Tensor, input01: torch.Tensor, delta: float = 0.3) -> torch.Tensor:
    """What the mask sub-branch sees (§3.2.1): [x, M′] on channels, [B, 4, H, W]."""
    return torch.cat([input01.float(), eq8_proxy(estimate01, input01, delta)], dim=1)


def learned_mask(branch, estimate01: torch.Tensor, input01: torch.Tensor, delta: float = 0.3) -> torch.Tensor:
    """M of the trained mask branch: 1 where sigmoid(branch([x, M′])) > 1/2, else 0 → [B, 1, H, W] float32."""
    return (branch(mask_branch_input(estimate01, input01, delta)).float() > 0.0).to(torch.float32)


def proxy_mask(
    estimate01: torch.Tensor,
    input01: torch.Tensor,
    delta: float = 0.3,
    reduce: str = "mean",
    open_px: float | None = None,
    close_px: float | None = None,
    dilate_px: float | None = None,
    feather_px: float | None = None,
    size: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """The proxy M′ of Eq. 8 (eq8_proxy) as a usable mask: [B, C, H, W] × 2 in [0, 1] → [B, 1, H, W] in [0, 1].

    In the paper M′ is only the INPUT of the learned mask branch (with x); here, without that branch, M′ is used
    directly after clean-up: opening by open_px (drops speckles narrower than ~2·open_px), closing by close_px
    (fills small holes and gaps), dilation by dilate_px, feathering over feather_px; defaults 0.6%, 1.2%, 1%, 3% of
    the face size S (3, 6, 5, 15 px at 512), open at least 1 px."""
    m = eq8_proxy(estimate01, input01, delta, reduce)
    s = min(m.shape[-2:])
    r_open = _px(open_px, PROXY_OPEN_FRAC, s, minimum=1)
    r_close = _px(close_px, PROXY_CLOSE_FRAC, s)
    m = dilate(erode(m, r_open), r_open)
    m = erode(dilate(m, r_close), r_close)
    mask = grow_and_feather(m, _px(dilate_px, PROXY_DILATE_FRAC, s), _px(feather_px, FEATHER_FRAC, s))
    return _resize(mask, size)


def uniform_mask(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """All ones [B, 1, H, W] for a [B, C, H, W] or [B, H, W] shape: uniform guidance (Net3 ablation, Table 6)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"expected a [B, C, H, W] or [B, H, W] shape, got {shape}")
    return torch.ones((shape[0], 1, *shape[-2:]), device=device, dtype=torch.float32)


def build_id_mask(
    kind: str,
    *,
    labels: torch.Tensor | np.ndarray | None = None,
    estimate: torch.Tensor | None = None,
    input: torch.Tensor | None = None,  # noqa: A002 — the paper's x
    shape: Sequence[int] | None = None,
    size: int | Sequence[int] | None = None,
    delta: float = 0.3,
    dilate_px: float | None = None,
    feather_px: float | None = None,
    device: torch.device | str | None = None,
    branch=None,
) -> torch.Tensor:
    """M of kind ``learned`` (needs the mask branch, estimate and input), ``parsing`` (needs labels), ``proxy`` (needs estimate = g_φ(x) and input = x, both [0, 1]) or
    ``none`` (needs shape, or estimate / labels to take it from) → [B, 1, H, W] float32 in [0, 1]."""
    if kind == "learned":
        if branch is None or estimate is None or input is None:
            raise ValueError("the learned mask needs the mask branch, the estimate g_φ(x) and the input x")
        mask = _resize(learned_mask(branch, estimate, input, delta), size)
    elif kind == "parsing":
        if labels is None:
            raise ValueError("the parsing mask needs ParseNet labels")
        mask = parsing_mask(labels, dilate_px, feather_px, size=size)
    elif kind == "proxy":
        if estimate is None or input is None:
            raise ValueError("the proxy mask (Eq. 8) needs the estimate g_φ(x) and the input x")
        mask = proxy_mask(estimate, input, delta, dilate_px=dilate_px, feather_px=feather_px, size=size)
    elif kind == "none":
        if shape is None:
            ref = estimate if estimate is not None else labels
            if ref is None:
                raise ValueError("the uniform mask needs a shape")
            shape = tuple(ref.shape)
            device = device if device is not None else getattr(ref, "device", None)
        if size is not None:
            hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
            shape = (shape[0], *hw)
        mask = uniform_mask(shape, device)
    else:
        raise ValueError(f"identity mask kind must be one of {', '.join(MASK_KINDS)}, got {kind!r}")
    return mask if device is None else mask.to(device)
