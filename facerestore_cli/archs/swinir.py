"""DifFace's SwinIR estimator (Liang et al. 2021, "SwinIR: Image Restoration Using Swin Transformer").

DifFace (zsyOAOA/DifFace, models/swinir.py) uses SwinIR as a 512 -> 512 restorer: a ``PixelUnshuffle``
in front of the first conv brings the image down to the transformer's resolution, and the
"nearest+conv" reconstruction head brings it back up with one nearest-x2 + conv stage per factor of 2.
The transformer body is stock SwinIR, so it reuses basicsr's blocks (same code, same state-dict names,
``attn_mask`` and ``relative_position_index`` as persistent buffers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import facerestore_cli.compat  # noqa: F401  (must precede any basicsr import)
from basicsr.archs.swinir_arch import RSTB, PatchEmbed, PatchUnEmbed

from facerestore_cli.archs import IMAGE, ConfigProblem, check_int, check_int_list, check_keys, register_arch

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class SwinIRDifFace(nn.Module):
    """SwinIR with pixel-unshuffle input and a nearest+conv head; input/output RGB in [0, 1].

    ``img_size`` is the transformer's resolution (input size / ``unshuffle_scale``); other sizes work
    (the shifted-window masks are then computed per call). The output is ``upscale / unshuffle_scale``
    times the input size (1 for DifFace). Inputs are reflect-padded to a multiple of
    ``unshuffle_scale * window_size`` and the output is cropped back.
    """

    def __init__(
        self,
        img_size: int = 64,
        in_chans: int = 3,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        unshuffle_scale: int = 8,
        upscale: int = 8,
        upsampler: str = "nearest+conv",
        resi_connection: str = "1conv",
        img_range: float = 1.0,
        num_feat: int = 64,
    ):
        super().__init__()  # the settings' rules: check_config below (build_arch runs it first)
        self.img_range = img_range
        self.window_size = window_size
        self.unshuffle_scale = unshuffle_scale
        self.upscale = upscale
        self.rgb_mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans

        self.conv_first = nn.Sequential(
            nn.PixelUnshuffle(unshuffle_scale),
            nn.Conv2d(in_chans * unshuffle_scale**2, embed_dim, 3, 1, 1),
        )

        with warnings.catch_warnings():  # basicsr calls torch.meshgrid without `indexing`
            warnings.filterwarnings("ignore", message=".*meshgrid.*", category=UserWarning)
            self.patch_embed = PatchEmbed(img_size, 1, embed_dim, embed_dim, norm_layer=nn.LayerNorm)
            self.patch_unembed = PatchUnEmbed(img_size, 1, embed_dim, embed_dim)
            resolution = (img_size, img_size)
            self.layers = nn.ModuleList(
                RSTB(
                    dim=embed_dim,
                    input_resolution=resolution,
                    depth=depth,
                    num_heads=heads,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    img_size=img_size,
                    patch_size=1,
                    resi_connection=resi_connection,
                )
                for depth, heads in zip(depths, num_heads)
            )
        self.norm = nn.LayerNorm(embed_dim)
        if resi_connection == "1conv":
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        else:
            self.conv_after_body = nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim // 4, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim // 4, 1, 1, 0),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim, 3, 1, 1),
            )

        # The reference uses LeakyReLU's default slope (0.01) here and 0.2 in the head below.
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.num_up_stages = int(math.log2(upscale))
        for i in range(1, self.num_up_stages + 1):
            setattr(self, f"conv_up{i}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, x_size)
        return self.patch_unembed(self.norm(x), x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        x = pad_to_multiple(x, self.unshuffle_scale * self.window_size)
        mean = torch.tensor(self.rgb_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) * self.img_range

        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_before_upsample(x)
        for i in range(1, self.num_up_stages + 1):
            conv_up = getattr(self, f"conv_up{i}")
            x = self.lrelu(conv_up(F.interpolate(x, scale_factor=2, mode="nearest")))
        x = self.conv_last(self.lrelu(self.conv_hr(x)))

        x = x / self.img_range + mean
        out_scale = self.upscale / self.unshuffle_scale
        return x[:, :, : round(height * out_scale), : round(width * out_scale)]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple``: reflect where the image is large enough, else replicate."""
    height, width = x.shape[2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def check_config(config: dict) -> None:
    """The rules a DifFace SwinIR config must keep (ConfigProblem(key, rule) for the first it breaks)."""
    config = check_keys(SwinIRDifFace, config)
    for key in ("img_size", "in_chans", "embed_dim", "window_size", "unshuffle_scale", "upscale", "num_feat"):
        check_int(config, key)
    depths, heads = check_int_list(config, "depths"), check_int_list(config, "num_heads")
    if len(depths) != len(heads):
        raise ConfigProblem("num_heads", f"needs one entry per residual group of depths ({len(depths)}), not {heads}")
    dim = config["embed_dim"]
    if any(dim % h for h in heads):
        raise ConfigProblem("embed_dim", f"{dim} must be divisible by every num_heads entry ({heads})")
    upscale = config["upscale"]
    if upscale < 2 or upscale & (upscale - 1):
        raise ConfigProblem("upscale", f"must be a power of two ≥ 2, not {upscale}")
    if config["upsampler"] != "nearest+conv":
        raise ConfigProblem("upsampler", f"only 'nearest+conv' is implemented, not {config['upsampler']!r}")


@register_arch("swinir_difface", input_size=lambda c: c["img_size"] * c.get("unshuffle_scale", 8), output=IMAGE)
def build_swinir_difface(config: dict) -> SwinIRDifFace:
    """Build from a plain config dict (registry / preset YAML); unknown keys are an error."""
    return SwinIRDifFace(**config)
