"""Noise schedules and the forward process q(x_t | x_0), kept as small math on tensors (diffusers-style).

Notation follows Ho et al. 2020 (DDPM): ᾱ_t = ∏_{s≤t} (1 − β_s), q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I).
"""

from __future__ import annotations

import torch

from facerestore_cli.diffusion.noise import randn_per_face
from facerestore_cli.errors import UsageError


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Linear β schedule of Ho et al. 2020 §4 between the endpoints given, float64. (improved-diffusion rescales its
    named 1e-4..0.02 schedule by 1000/T for other lengths; presets state their endpoints instead, e.g. DiffBFR's
    IRM: T = 2000 from 1e-6 to 1e-2, Table 6.)"""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s≤t} (1 − β_s) (Ho et al. 2020, Eq. 4 notation), float64."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def preset_alphas_cumprod(schedule) -> torch.Tensor:
    """ᾱ_t (float64) of a component's schedule (presets.NoiseSchedule): linear β from beta_start to beta_end."""
    if schedule.kind != "linear":
        raise UsageError(f"unsupported schedule kind '{schedule.kind}'", hint="supported: linear")
    return alphas_cumprod(linear_betas(schedule.num_timesteps, schedule.beta_start, schedule.beta_end))


def timesteps(start: int, count: int, spacing: str) -> list[int]:
    """The descending original timesteps a reverse chain of `count` network evaluations visits, from the chain's
    start down to 0 (diffusers' `set_timesteps`, one spacing per paper):

    floor    ⌊i·start/count⌋, i = count−1 … 0: `count` steps spread evenly below `start` (start itself not visited).
             DifFace noises to --start-t and, for start 400 and 100 steps, visits {396, 392, …, 0}: exactly its
             official `ddim250` respacing below t = 400.
    rounded  round(k·(start−1)/(count−1)), k = count−1 … 0: from index start−1 (the paper's step N, 1-based, as in
             DiffBFR's Algorithm 1 `for t = N, …, 1`) down to 0 with a fractional stride; count = start visits every
             index. It is also improved-diffusion's `space_timesteps(T, [count])` for one section, which DR2 respaces
             its 1000 steps with (ascending: [0, 10, …, 50, 61, 71, …, 989, 999]).
    """
    if not 1 <= count <= start:
        raise ValueError(f"steps must be between 1 and the chain's start {start}, got {count}")
    if spacing == "floor":
        return [(i * start) // count for i in reversed(range(count))]
    if spacing != "rounded":
        raise ValueError(f"unknown timestep spacing '{spacing}'")
    if count == 1:
        return [start - 1]
    return [round(k * (start - 1) / (count - 1)) for k in reversed(range(count))]


def extract(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 on like's device, broadcastable against like ([B, 1, 1, 1])."""
    t = torch.as_tensor(t, device=values.device).reshape(-1)
    picked = values[t].to(device=like.device, dtype=torch.float32)
    return picked.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, abar_t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε — Ho et al. 2020, Eq. 4 (reparametrised); abar_t broadcastable to x0."""
    return abar_t.sqrt() * x0 + (1.0 - abar_t).sqrt() * noise


def diffuse_to(x0: torch.Tensor, abar: torch.Tensor, index: int, generators: list[torch.Generator]) -> torch.Tensor:
    """x_index ~ q(x_index | x0) (Ho et al. 2020, Eq. 4; diffusers' `add_noise`), each face's ε drawn from its own
    generator, ᾱ taken in float32: where DifFace's chain starts (Eq. 11) and DiffBFR's truncated stages (Eq. 2)."""
    return q_sample(x0, extract(abar, index, x0), randn_per_face(generators, tuple(x0.shape[1:]), x0.device))
