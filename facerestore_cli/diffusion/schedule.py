"""Noise schedules and the forward process q(x_t | x_0), kept as small math on tensors (diffusers-style).

Notation follows Ho et al. 2020 (DDPM): ᾱ_t = ∏_{s≤t} (1 − β_s), q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I).
"""

from __future__ import annotations

import torch

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


def space_timesteps_fractional(num_timesteps: int, count: int) -> list[int]:
    """Respacing of improved-diffusion `space_timesteps(T, [count])` for one section: `count` timesteps with
    fractional stride (T−1)/(count−1), rounded. DR2 uses (1000, 100) → [0, 10, …, 50, 61, 71, …, 989, 999]."""
    if count > num_timesteps:
        raise ValueError(f"cannot take {count} steps out of {num_timesteps}")
    if count == 1:
        return [0]
    stride = (num_timesteps - 1) / (count - 1)
    return [round(i * stride) for i in range(count)]


def spread_below(start_t: int, evaluations: int) -> list[int]:
    """`evaluations` timesteps spread evenly over [0, start_t), ascending: t_i = ⌊i·start_t / N⌋.

    For start_t = 400 and N = 100 this is {0, 4, …, 396}: exactly the timesteps DifFace's official
    `ddim250` respacing visits after noising to t = 400 (respaced indices 99…0)."""
    if not 1 <= evaluations <= start_t:
        raise ValueError(f"steps must be between 1 and the start timestep {start_t}, got {evaluations}")
    return [(i * start_t) // evaluations for i in range(evaluations)]


def truncated_timesteps(start: int, steps: int) -> list[int]:
    """The descending timestep indices (0-based) of a reverse chain that starts at the paper's step N = `start`
    (1-based, as in DiffBFR's Algorithm 1: `for t = N, …, 1`, so indices N−1 … 0) with `steps` evaluations spread
    evenly down to index 0. steps = start is the whole chain, every index once; fewer respace it (the sampler then
    steps over the gaps with the combined β, improved-diffusion's SpacedDiffusion rule)."""
    if not 1 <= steps <= start:
        raise ValueError(f"steps must be between 1 and the chain's start {start}, got {steps}")
    if steps == 1:
        return [start - 1]
    return [round(k * (start - 1) / (steps - 1)) for k in reversed(range(steps))]


def extract(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 on like's device, broadcastable against like ([B, 1, 1, 1])."""
    t = torch.as_tensor(t, device=values.device).reshape(-1)
    picked = values[t].to(device=like.device, dtype=torch.float32)
    return picked.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, abar_t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε — Ho et al. 2020, Eq. 4 (reparametrised); abar_t broadcastable to x0."""
    return abar_t.sqrt() * x0 + (1.0 - abar_t).sqrt() * noise
