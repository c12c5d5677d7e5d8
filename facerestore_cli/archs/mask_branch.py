"""Diffuse and Restore's mask sub-branch (§3.2.1): from the degraded face x and the proxy M′ of Eq. 8 it predicts
the identity mask M of Eq. 9. The paper calls it "a small sub-branch" of the IPC fed [x, M′] and publishes no
architecture: chosen here a small convolutional encoder–decoder with skip connections (a U-Net of `levels` stride-2
levels, `channels` wide at full size, doubling per level), one logit per pixel. M = 1 where sigmoid(logit) > 0.5
(methods/ipc_guided.py); training sees the sigmoid itself (training/mask_loss.py)."""

from __future__ import annotations

import torch
from torch import nn

from facerestore_cli.archs import MASK, ConfigProblem, check_int, check_keys, register_arch


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class MaskBranch(nn.Module):
    def __init__(self, image_size: int = 512, in_channels: int = 4, channels: int = 32, levels: int = 3):
        super().__init__()
        widths = [channels * 2**i for i in range(levels + 1)]
        self.image_size = image_size
        self.head = _conv(in_channels, widths[0])
        self.downs = nn.ModuleList(_conv(widths[i], widths[i + 1], stride=2) for i in range(levels))
        self.body = _conv(widths[-1], widths[-1])
        self.ups = nn.ModuleList(_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.tail = nn.Conv2d(widths[0], 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[x in [0, 1] (3 channels), M′ in {0, 1}] concatenated on channels → mask logits [B, 1, S, S]."""
        skips = [self.head(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = self.body(skips.pop())
        for up in self.ups:
            h = up(torch.cat([nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1))
        return self.tail(h)


def check_config(config: dict) -> None:
    full = check_keys(MaskBranch, config)
    levels = check_int(full, "levels")
    size = check_int(full, "image_size")
    check_int(full, "channels")
    check_int(full, "in_channels")
    if size % 2**levels:
        raise ConfigProblem("image_size", f"must be a multiple of 2^levels = {2**levels}, not {size}")


@register_arch("ipc_mask", input_size=lambda c: c.get("image_size", 512), output=MASK)
def build_mask_branch(config: dict) -> nn.Module:
    return MaskBranch(**config)
