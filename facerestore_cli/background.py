"""The photo under the faces at --upscale N: Real-ESRGAN in tiles (as Real-ESRGAN's RealESRGANer.enhance with
tile_pad=10, pre_pad=0, the way DifFace's official sampler runs it), or a plain resize.

Pixels keep their dtype (8 or 16 bits: the network sees value / 255 or / 65535 and its output is rounded back, as
RealESRGANer does); alpha is resized bilinearly (RealESRGANer's `alpha_upsampler` other than 'realesrgan').
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facerestore_cli.pixels import from_float, max_value

TILE_PAD = 10
RESIZE_FLAGS = {"bicubic": cv2.INTER_CUBIC, "none": cv2.INTER_LINEAR}  # none: facexlib's helper without upsampler


def resize(image: np.ndarray, scale: int, how: str) -> np.ndarray:
    """An H×W(×C) image `scale` times larger: bicubic, or bilinear (`none`, as facexlib's paste-back without a
    background upsampler does)."""
    height, width = image.shape[:2]
    return cv2.resize(image, (width * scale, height * scale), interpolation=RESIZE_FLAGS[how])


class TiledUpsampler:
    """A super-resolution network run over a photo tile by tile.

    network: a facerestore Network (RGB [0, 1] in, `scale` times larger out); tile: tile side in px of the input
    (0: the whole photo at once); pad: context each tile reads beyond its edges, cropped from its output. Tiles
    whose context reaches as far as the network sees give exactly the untiled result."""

    def __init__(self, network, scale: int, tile: int = 400, pad: int = TILE_PAD):
        self.network, self.scale, self.tile, self.pad = network, scale, tile, pad
        self.multiple = {1: 4, 2: 2}.get(scale, 1)  # RRDBNet pixel-unshuffles by 4 / 2 at scale 1 / 2

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """H×W×3 uint8/uint16 → (H·scale)×(W·scale)×3 of the same dtype."""
        height, width = rgb.shape[:2]
        device = self.network.compute.device
        image = torch.from_numpy(np.ascontiguousarray(rgb).astype(np.float32) / np.float32(max_value(rgb.dtype)))
        image = image.permute(2, 0, 1).unsqueeze(0).to(device)
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")
        out = np.empty((height * self.scale, width * self.scale, 3), dtype=rgb.dtype)
        full_h, full_w = image.shape[-2:]
        tile = self.tile or max(full_h, full_w)
        for y0 in range(0, full_h, tile):
            for x0 in range(0, full_w, tile):
                y1, x1 = min(y0 + tile, full_h), min(x0 + tile, full_w)
                py0, px0 = max(y0 - self.pad, 0), max(x0 - self.pad, 0)
                py1, px1 = min(y1 + self.pad, full_h), min(x1 + self.pad, full_w)
                result = self.network(image[:, :, py0:py1, px0:px1])
                s = self.scale
                inner = result[0, :, (y0 - py0) * s:(y1 - py0) * s, (x0 - px0) * s:(x1 - px0) * s]
                # the tile within the photo (the padding to a multiple is cropped away here)
                keep_h, keep_w = min(y1, height) - y0, min(x1, width) - x0
                if keep_h > 0 and keep_w > 0:
                    block = inner[:, :keep_h * s, :keep_w * s].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                    out[y0 * s:(y0 + keep_h) * s, x0 * s:(x0 + keep_w) * s] = from_float(block, rgb.dtype)
        return out


def enlarge(rgb: np.ndarray, alpha: np.ndarray | None, scale: int, how: str, upsampler: TiledUpsampler | None):
    """(rgb, alpha) `scale` times larger; how: realesrgan (with upsampler) | bicubic | none."""
    if how == "realesrgan":
        if upsampler is None:
            raise ValueError("the Real-ESRGAN background needs its network")
        big = upsampler(rgb)
    else:
        big = resize(rgb, scale, how)
    return big, None if alpha is None else resize(alpha, scale, "none")
