"""The improved-diffusion / guided-diffusion UNet, one configurable class.

Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (openai/improved-diffusion) and
Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis" (openai/guided-diffusion).
Module names and nesting follow those repositories exactly so that their checkpoints (DifFace's
``iddpm_ffhq512``, DR2's ``DR2_FFHQ.pkl``) load with ``strict=True``.

Differences from the reference code, none of which changes the state-dict layout or the fp32 results:
- no ``convert_to_fp16``: reduced precision comes from ``torch.autocast``, with what the reference's
  ``use_fp16`` keeps in fp32 kept there (GroupNorm, the output block ``out``); gradient checkpointing per block
  (``grad_checkpointing``, for training) uses ``torch.utils.checkpoint``;
- attention runs through ``F.scaled_dot_product_attention`` (same maths as ``QKVAttentionLegacy``);
- ``num_res_blocks`` may be a list with one count per level (DifFace's variant of the UNet);
- attention placement is given as spatial sizes (``attention_sizes``) instead of downsample rates;
- weights are left at PyTorch's default init (the reference zero-inits some output convs); real use
  always loads a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from facerestore_cli.archs import EPS, EPS_VARIANCE, ConfigProblem, check_int, check_int_list, check_keys, register_arch


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps [B], cos half first."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[:, None] * torch.exp(exponent)[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype or autocast state; returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


GROUPS = 32  # GroupNorm groups of every normalisation layer (guided-diffusion's normalization())


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(GROUPS, channels)


def qkv_attention(qkv: torch.Tensor, num_heads: int, legacy_order: bool = True) -> torch.Tensor:
    """Multi-head attention over [B, 3*H*C, T] packed q/k/v; returns [B, H*C, T].

    ``legacy_order`` (``QKVAttentionLegacy``): heads are split first, then q/k/v inside each head, i.e. the
    packed channels are laid out [H, 3, C]. Otherwise (``QKVAttention``) the layout is [3, H, C].
    Softmax scale is 1/sqrt(C), as in the reference (which applies C**-0.25 to both q and k).
    """
    batch, width, length = qkv.shape
    head_channels = width // (3 * num_heads)
    if legacy_order:
        q, k, v = qkv.reshape(batch * num_heads, 3 * head_channels, length).split(head_channels, dim=1)
    else:
        q, k, v = (t.reshape(batch * num_heads, head_channels, length) for t in qkv.chunk(3, dim=1))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(batch, num_heads * head_channels, length)


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block with timestep conditioning, optionally up- or downsampling (BigGAN style)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, with a residual connection."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, legacy_order: bool = True):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.legacy_order = legacy_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        x = x.reshape(batch, channels, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy_order)
        return (x + self.proj_out(h)).reshape(batch, channels, *spatial)


class UNetModel(nn.Module):
    """Diffusion UNet; ``forward(x, timesteps)`` with the original (un-respaced) timesteps.

    ``num_res_blocks``: an int, or one count per level of ``channel_mult``.
    ``attention_sizes``: spatial sizes (relative to ``image_size``) at which attention blocks follow the
    res blocks; the middle block always has attention.
    ``in_channels`` includes any conditioning channels the caller concatenates (SR3 style).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int | Sequence[int],
        attention_sizes: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if isinstance(num_res_blocks, int):  # the settings' rules: check_config below (build_arch runs it first)
            num_res_blocks = [num_res_blocks] * len(channel_mult)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        attention_sizes = set(attention_sizes)
        time_embed_dim = model_channels * 4

        def res_block(ch_in: int, ch_out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm, up=up, down=down)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_heads, num_head_channels, legacy_order=not use_new_attention_order)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        size = image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks[level]):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if size in attention_sizes:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                size //= 2

        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), attention(ch), res_block(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks[level] + 1):
                layers = [res_block(ch + skip_channels.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if size in attention_sizes:
                    layers.append(attention(ch))
                if level and i == num_res_blocks[level]:
                    layers.append(res_block(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    size *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))
        self.grad_checkpointing = False  # training: recompute each block's activations in the backward pass

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x: [B, in_channels, H, W] with H, W divisible by 2**(levels-1); timesteps: [B] (int or float)."""
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(emb)
        skips = []
        h = x
        for block in self.input_blocks:
            h = self._block(block, h, emb)
            skips.append(h)
        h = self._block(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._block(block, torch.cat([h, skips.pop()], dim=1), emb)
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.out(h.float())

    def _block(self, block: TimestepEmbedSequential, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)


def check_config(config: dict) -> None:
    """The rules a UNet config must keep (ConfigProblem(key, rule) for the first it breaks), before anything is built."""
    config = check_keys(UNetModel, config)
    size, channels = check_int(config, "image_size"), check_int(config, "model_channels")
    check_int(config, "in_channels")
    check_int(config, "out_channels")
    mult = config["channel_mult"]
    if not isinstance(mult, (list, tuple)) or not mult or any(
            isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in mult):
        raise ConfigProblem("channel_mult", f"must be a list of positive numbers, one per level, not {mult!r}")
    blocks = config["num_res_blocks"]
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        check_int(config, "num_res_blocks", 0)
    elif len(check_int_list(config, "num_res_blocks", 0)) != len(mult):
        raise ConfigProblem("num_res_blocks", f"needs one count per level of channel_mult ({len(mult)}), not {blocks!r}")
    widths = [int(m * channels) for m in mult]
    if any(w % GROUPS for w in widths):
        raise ConfigProblem("model_channels", f"× channel_mult gives {widths} channels: each level's must be a multiple "
                                              f"of {GROUPS} (GroupNorm's {GROUPS} groups)")
    levels = len(mult)
    if size % 2 ** (levels - 1):
        raise ConfigProblem("image_size", f"{size} must be divisible by {2 ** (levels - 1)}: each of the "
                                          f"{levels - 1} downsamplings halves it")
    sizes = [size // 2**level for level in range(levels)]
    attention = config["attention_sizes"]
    if not isinstance(attention, (list, tuple)) or any(a not in sizes for a in attention):
        raise ConfigProblem("attention_sizes", f"must list sizes the levels have ({sizes}), not {attention!r}")
    heads = config["num_head_channels"]
    if heads != -1:
        heads = check_int(config, "num_head_channels")
        attended = {w for w, s in zip(widths, sizes) if s in attention} | {widths[-1]}  # the middle block attends
        if any(w % heads for w in attended):
            raise ConfigProblem("num_head_channels", f"{heads} must divide the channels of every attention block "
                                                     f"({sorted(attended)}), or be -1 (use num_heads)")
    else:
        check_int(config, "num_heads")
    dropout = config["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigProblem("dropout", f"must be a number in [0, 1), not {dropout!r}")


@register_arch("unet", input_size=lambda c: c["image_size"],
               output=lambda c: EPS_VARIANCE if c["out_channels"] == 2 * 3 else EPS,
               condition_channels=lambda c: c["in_channels"] - 3)
def build_unet(config: dict) -> UNetModel:
    """Build from a plain config dict (registry / preset YAML); unknown keys are an error."""
    return UNetModel(**config)
