"""Samplers as plain functions of a noise predictor (k-diffusion style): no sampler owns a network.

`eps_model(x_t, t)` returns ε̂ for a batch x_t at original integer timesteps t ([B] long tensor).
"""

from __future__ import annotations

from typing import Callable

import torch

from facerestore_cli.diffusion.noise import randn_per_face
from facerestore_cli.diffusion.schedule import extract

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t — Ho et al. 2020, Eq. 4 solved for x_0 (DDIM, Song et al. 2021, Eq. 9)."""
    return (x_t - (1.0 - abar_t).sqrt() * eps) / abar_t.sqrt()


def ddim_sigma(abar_t: torch.Tensor, abar_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """σ_t(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) — Song et al. 2021 (DDIM), Eq. 16."""
    return eta * ((1.0 - abar_prev) / (1.0 - abar_t)).sqrt() * (1.0 - abar_t / abar_prev).sqrt()


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    eta: float,
    noise: torch.Tensor | None,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update, Song et al. 2021, Eq. 12:
    x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z.

    As in DifFace's official sampler, x̂_0 is clipped to [-1, 1] but ε̂ stays the raw model output (stock
    guided-diffusion re-derives ε̂ from the clipped x̂_0 instead). Returns (x_prev, x̂_0)."""
    x0 = predict_x0(x_t, eps, abar_t)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    sigma = ddim_sigma(abar_t, abar_prev, eta)
    x_prev = abar_prev.sqrt() * x0 + (1.0 - abar_prev - sigma**2).clamp(min=0.0).sqrt() * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def ddim_loop(
    eps_model: EpsModel,
    x: torch.Tensor,
    timesteps: list[int],
    abar: torch.Tensor,
    eta: float,
    generators: list[torch.Generator],
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Run DDIM from x (already noised to the level before timesteps[0]) down through `timesteps`
    (descending original timesteps; one model evaluation each). ᾱ_prev of the last step is 1.
    Fresh noise z comes from each face's own generator, so results do not depend on batch composition."""
    # channels-last convolutions fold the batch into GEMM rows, making a face's result depend on its batch position
    x = x.contiguous()
    for i, t in enumerate(timesteps):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        abar_t = extract(abar, t, x)
        is_last = i == len(timesteps) - 1
        abar_prev = torch.ones_like(abar_t) if is_last else extract(abar, timesteps[i + 1], x)
        eps = eps_model(x, t_batch).float()
        noise = None if (is_last or eta == 0) else randn_per_face(generators, tuple(x.shape[1:]), x.device)
        x, x0 = ddim_step(x, eps, abar_t, abar_prev, eta, noise)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0, "total": len(timesteps)})
    return x
