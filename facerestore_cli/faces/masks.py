"""Paste-back masks of facexlib's FaceRestoreHelper: the square soft mask and the ParseNet soft mask.

The square mask lives in image space (facexlib warps a square of ones back into the photo, then erodes
and blurs it there, with widths that depend on the face's area in the photo); the parse mask lives in
crop space and is warped back by ``align.paste_faces``.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

MASK_SQUARE = "square"
MASK_PARSENET_IN_SQUARE = "parsenet-in-square"  # min(parse, square), as DifFace's and CodeFormer's helpers blend

# facexlib's paste-back values for ParseNet's 19 classes (CelebAMask-HQ g_mask order: 0 background, 1 skin, 2 nose,
# 3 eye_g, 4/5 eyes, 6/7 brows, 8/9 ears, 10 mouth, 11/12 lips, 13 hair, 14 hat, 15 ear_r, 16 neck_l, 17 neck,
# 18 cloth): background, hat, necklace, neck and cloth → 0; hair and the rest stay (see faces/id_masks.py).
MASK_COLORMAP = (0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0)
PARSE_BLUR_KSIZE = (101, 101)
PARSE_BLUR_SIGMA = 11
PARSE_BORDER = 10


class SquareMask(NamedTuple):
    soft: np.ndarray  # float32 H×W: blend weight of the restored face
    eroded: np.ndarray  # float32 H×W: the warped square eroded by 2·upscale px; facexlib multiplies the face by it


def square_soft_mask(inverse_affine: np.ndarray, out_wh: tuple[int, int], size: int = 512,
                     upscale: int = 1) -> SquareMask:
    """facexlib's no-parse mask for a size×size crop pasted into an image of out_wh (w, h) that is `upscale` times
    the photo the face was found in."""
    square = np.ones((size, size), dtype=np.float32)
    inv_mask = cv2.warpAffine(square, inverse_affine, out_wh)
    eroded = cv2.erode(inv_mask, np.ones((2 * upscale, 2 * upscale), np.uint8))
    w_edge = int(float(np.sum(eroded)) ** 0.5) // 20
    # A zero-sized kernel (faces under ~400 px²) makes OpenCV erode 3×3, as in facexlib.
    center = cv2.erode(eroded, np.ones((w_edge * 2, w_edge * 2), np.uint8))
    soft = cv2.GaussianBlur(center, (w_edge * 2 + 1, w_edge * 2 + 1), 0)
    return SquareMask(soft, eroded)


def parse_soft_mask(parsing: np.ndarray | torch.Tensor) -> np.ndarray:
    """Soft face mask (float32, 0..1) in crop space from a ParseNet label map (H×W) or logits (19×H×W)."""
    if isinstance(parsing, torch.Tensor):
        parsing = parsing.detach().cpu().numpy()
    if parsing.ndim == 3:
        parsing = parsing.argmax(axis=0)
    if parsing.ndim != 2:
        raise ValueError(f"expected an H×W label map or 19×H×W logits, got shape {parsing.shape}")
    lut = np.asarray(MASK_COLORMAP, dtype=np.float64)
    mask = lut[np.clip(parsing.astype(np.int64), 0, len(lut) - 1)]
    mask = cv2.GaussianBlur(mask, PARSE_BLUR_KSIZE, PARSE_BLUR_SIGMA)
    mask = cv2.GaussianBlur(mask, PARSE_BLUR_KSIZE, PARSE_BLUR_SIGMA)
    t = PARSE_BORDER
    mask[:t, :] = 0
    mask[-t:, :] = 0
    mask[:, :t] = 0
    mask[:, -t:] = 0
    return (mask / 255.0).astype(np.float32)


@torch.inference_mode()
def run_parsenet(parsenet: nn.Module, crops: torch.Tensor) -> np.ndarray:
    """ParseNet labels (int64 B×512×512) for RGB crops (float B×3×512×512 in [0, 1]).

    ParseNet takes RGB normalised to [-1, 1] (facexlib: img2tensor(bgr2rgb=True), normalize(0.5, 0.5)).
    """
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"expected B×3×H×W crops, got shape {tuple(crops.shape)}")
    param = next(iter(parsenet.parameters()), None)
    if param is None:
        param = next(iter(parsenet.buffers()), crops)
    x = crops.to(device=param.device, dtype=torch.float32)
    if x.shape[-2:] != (512, 512):
        # facexlib resizes the face to 512 (bilinear) before parsing.
        x = torch.nn.functional.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).to(param.dtype)
    logits = parsenet(x)[0]
    return logits.argmax(dim=1).cpu().numpy()
