"""SPARNetHD2D, DR2's enhancement module (Chen et al., "Learning Spatial Attention for Face Super-Resolution",
IEEE TIP 2020; used by Wang et al., "DR2: Diffusion-based Robust Degradation Remover for Blind Face
Restoration", CVPR 2023, §3.4).

A re-implementation of ``BaseModel`` / ``createModel("SPARNetHD2D")`` from DR2's copy of the SPARNet code
(Kaldwin0106/DR2_Drgradation_Remover, SPAR/sparnet.py, SPAR/blocks.py, SPAR/models.py; identical to
chaofengc/Face-SPARNet models/sparnet.py + models/blocks.py with ``in_size == out_size == size``). Module and
attribute names follow the official code so ``SPARNetHD_FFHQ_DR2aug.pth`` loads with ``strict=True``:

- every ``nn.Conv2d`` carries the *old* hook-style ``torch.nn.utils.spectral_norm`` (state-dict keys
  ``conv2d.weight_orig`` parameter, ``conv2d.weight_u`` / ``conv2d.weight_v`` buffers), applied after
  construction exactly as the official ``apply_norm`` does;
- encoder: ``ConvLayer(3, n_ch)`` then ``log2(size / min_feat_size)`` down-sampling residual blocks;
  ``res_depth + 3 - down_steps`` residual blocks at ``min_feat_size``; as many up-sampling blocks; ``out_conv``;
- each residual block is pre-activation (norm, LeakyReLU 0.2) -> conv1 -> conv2, its output multiplied by a
  one-channel sigmoid map from a simplified hourglass ('spar' = 2D spatial attention), plus the shortcut.

Forward: RGB in [-1, 1] -> RGB nominally in [-1, 1]. The net ends in a plain conv (no tanh, no global residual),
so the output is *not* bounded; callers clamp. DR2 (dr2e.py) feeds it ``Resize(512, bicubic)(clamp(x0, -1, 1))``
of the 256-px diffusion output and saves ``out * 0.5 + 0.5``.

Run it in ``eval()``: the spectral-norm hook then computes sigma = u·(W v) from the stored ``weight_u`` /
``weight_v`` with no power iteration, so outputs are deterministic and independent of the rest of the batch
(InstanceNorm is per sample). In ``train()`` every forward would update u and v in place.

Deliberate differences (no effect on outputs or state dicts): identity shortcuts and 'none' norm/relu are
``nn.Identity`` modules instead of lambdas; the hourglass does not keep its last attention map as
``self.att_map``; activations are not in-place; the official ``init_weights`` (N(0, 0.02) re-initialisation)
is not reproduced, weights are expected to be loaded; norm type 'layer' and activation 'selu' are not offered.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facerestore_cli.archs import IMAGE, register_arch


class NormLayer(nn.Module):
    """``norm`` is BatchNorm, InstanceNorm (affine), GroupNorm(32), per-pixel L2 ('pixel') or identity ('none')."""

    def __init__(self, channels: int, norm_type: str = "bn"):
        super().__init__()
        norm_type = norm_type.lower()
        self.pixel = norm_type == "pixel"
        if norm_type == "bn":
            self.norm = nn.BatchNorm2d(channels)
        elif norm_type == "in":
            self.norm = nn.InstanceNorm2d(channels, affine=True)
        elif norm_type == "gn":
            self.norm = nn.GroupNorm(32, channels, affine=True)
        elif norm_type in ("pixel", "none"):
            self.norm = nn.Identity()
        else:
            raise ValueError(f"norm_type {norm_type!r} not supported (bn, in, gn, pixel, none)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=1) if self.pixel else self.norm(x)


class ReluLayer(nn.Module):
    def __init__(self, channels: int, relu_type: str = "relu"):
        super().__init__()
        relu_type = relu_type.lower()
        if relu_type == "relu":
            self.func = nn.ReLU()
        elif relu_type == "leakyrelu":
            self.func = nn.LeakyReLU(0.2)
        elif relu_type == "prelu":
            self.func = nn.PReLU(channels)
        elif relu_type == "none":
            self.func = nn.Identity()
        else:
            raise ValueError(f"relu_type {relu_type!r} not supported (relu, leakyrelu, prelu, none)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


class ConvLayer(nn.Module):
    """[nearest x2 if scale='up'] -> reflection pad -> conv (stride 2 if scale='down') -> norm -> activation.
    The conv has a bias only without a learned norm ('none' / 'pixel'), as in the official code."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale: str = "none",
        norm_type: str = "none",
        relu_type: str = "none",
    ):
        super().__init__()
        self.upsample = scale == "up"
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        bias = norm_type in ("pixel", "none")
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, 2 if scale == "down" else 1, bias=bias)
        self.relu = ReluLayer(out_channels, relu_type)  # registered before norm, as officially (key order)
        self.norm = NormLayer(out_channels, norm_type=norm_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.relu(self.norm(self.conv2d(self.reflection_pad(x))))


class HourGlassBlock(nn.Module):
    """Simplified hourglass producing a sigmoid attention map that multiplies its input. Levels ``depth..1``:
    ``b1_k`` (same size), ``b2_k`` (stride 2), recursion or ``b2_plus_1`` at the bottom, ``b3_k`` (up x2)."""

    def __init__(
        self, depth: int, c_in: int, c_out: int, c_mid: int = 64, norm_type: str = "bn", relu_type: str = "prelu"
    ):
        super().__init__()
        self.depth = depth
        self.c_in, self.c_mid, self.c_out = c_in, c_mid, c_out
        self.kwargs = {"norm_type": norm_type, "relu_type": relu_type}
        if depth:
            self._generate_network(depth)
            self.out_block = nn.Sequential(ConvLayer(c_mid, c_out, norm_type="none", relu_type="none"), nn.Sigmoid())

    def _generate_network(self, level: int) -> None:  # registration order = official key order
        c1, c2 = (self.c_in, self.c_mid) if level == self.depth else (self.c_mid, self.c_mid)
        self.add_module(f"b1_{level}", ConvLayer(c1, c2, **self.kwargs))
        self.add_module(f"b2_{level}", ConvLayer(c1, c2, scale="down", **self.kwargs))
        if level > 1:
            self._generate_network(level - 1)
        else:
            self.add_module(f"b2_plus_{level}", ConvLayer(self.c_mid, self.c_mid, **self.kwargs))
        self.add_module(f"b3_{level}", ConvLayer(self.c_mid, self.c_mid, scale="up", **self.kwargs))

    def _forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = self._modules[f"b1_{level}"](x)
        low1 = self._modules[f"b2_{level}"](x)
        low2 = self._forward(level - 1, low1) if level > 1 else self._modules[f"b2_plus_{level}"](low1)
        up2 = self._modules[f"b3_{level}"](low2)
        if up1.shape[2:] != up2.shape[2:]:  # odd sizes: official nearest resize
            up2 = F.interpolate(up2, up1.shape[2:])
        return up1 + up2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.depth:
            return x
        return x * self.out_block(self._forward(self.depth, x))


class ResidualBlock(nn.Module):
    """Pre-activation residual block with hourglass attention on the residual branch."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        relu_type: str = "prelu",
        norm_type: str = "bn",
        scale: str = "none",
        hg_depth: int = 2,
        att_name: str = "spar",
    ):
        super().__init__()
        kwargs = {"norm_type": norm_type, "relu_type": relu_type}
        if scale == "none" and c_in == c_out:
            self.shortcut_func = nn.Identity()
        else:
            self.shortcut_func = ConvLayer(c_in, c_out, 3, scale)
        self.preact_func = nn.Sequential(NormLayer(c_in, norm_type), ReluLayer(c_in, relu_type))
        scales = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = ConvLayer(c_in, c_out, 3, scales[0], **kwargs)
        self.conv2 = ConvLayer(c_out, c_out, 3, scales[1], norm_type=norm_type, relu_type="none")
        att = att_name.lower()
        if att not in ("spar", "spar3d"):
            raise ValueError(f"att_name {att_name!r} not supported (spar, spar3d)")
        self.att_func = HourGlassBlock(hg_depth, c_out, 1 if att == "spar" else c_out, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut_func(x)
        out = self.conv2(self.conv1(self.preact_func(x)))
        return identity + self.att_func(out)


class SPARNetHD(nn.Module):
    """DR2's ``BaseModel``; with spectral norm on every conv it is ``createModel("SPARNetHD2D")``."""

    def __init__(
        self,
        size: int = 512,
        ch_in: int = 3,
        min_ch: int = 32,
        max_ch: int = 512,
        min_feat_size: int = 32,
        res_depth: int = 10,
        relu_type: str = "leakyrelu",
        norm_type: str = "in",
        att_name: str = "spar",
        bottleneck_size: int = 4,
        spectral_norm: bool = True,
    ):
        super().__init__()
        if size < min_feat_size:
            raise ValueError(f"size {size} is smaller than min_feat_size {min_feat_size}")
        nrargs = {"norm_type": norm_type, "relu_type": relu_type, "att_name": att_name}

        def ch_clip(c: int) -> int:
            return max(min_ch, min(c, max_ch))

        steps = (size // min_feat_size).bit_length() - 1  # int(np.log2(size // min_feat_size))
        n_ch = ch_clip(max_ch // (steps + 1))
        hg_depth = int(math.log2(64 / bottleneck_size))  # official: 64, not size

        encoder: list[nn.Module] = [ConvLayer(ch_in, n_ch, 3)]
        for _ in range(steps):
            encoder.append(ResidualBlock(ch_clip(n_ch), ch_clip(n_ch * 2), scale="down", hg_depth=hg_depth, **nrargs))
            n_ch, hg_depth = n_ch * 2, hg_depth - 1
        hg_depth += 1
        self.encoder = nn.Sequential(*encoder)

        self.res_layers = nn.Sequential(
            *[
                ResidualBlock(ch_clip(n_ch), ch_clip(n_ch), hg_depth=hg_depth, **nrargs)
                for _ in range(res_depth + 3 - steps)
            ]
        )

        decoder: list[nn.Module] = []
        for _ in range(steps):
            hg_depth += 1
            decoder.append(ResidualBlock(ch_clip(n_ch), ch_clip(n_ch // 2), scale="up", hg_depth=hg_depth, **nrargs))
            n_ch //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_conv = ConvLayer(ch_clip(n_ch), 3, 3)

        if spectral_norm:  # official apply_norm(net, "spectral_norm"): hook-style, every Conv2d
            for module in list(self.modules()):
                if isinstance(module, nn.Conv2d):
                    nn.utils.spectral_norm(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB ``[B, 3, size, size]`` in [-1, 1] -> RGB of the same shape, nominally [-1, 1] (unclamped)."""
        return self.out_conv(self.decoder(self.res_layers(self.encoder(x))))


@register_arch("sparnethd", input_size=lambda c: c["size"], output=IMAGE)
def build_sparnethd(config: dict) -> SPARNetHD:
    """Config keys: size, min_ch, max_ch, min_feat_size, res_depth, norm_type, relu_type, att_name,
    bottleneck_size (DR2's ``BaseModel`` names), optional ch_in (3) and spectral_norm (True)."""
    return SPARNetHD(**config)
