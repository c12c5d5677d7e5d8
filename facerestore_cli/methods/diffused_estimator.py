"""The diffused-estimator sampling core of DifFace (Yue & Loy, TPAMI 2024, Algorithm 1), shared by difface and
ipc-guided: the estimator restores the face, x̂0 = e(y); x̂0 is diffused to N, x_N ~ q(x_N | x̂0) (Eq. 11); the
prior runs the reverse chain from N down to 0 (Eq. 13): DDIM with η (DifFace's official sampler), or ancestral DDPM
(Diffuse and Restore's conditional prior, Table 6), optionally with a guide that shifts every step's mean
(ipc-guided, Diffuse and Restore Eq. 9)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from facerestore_cli.diffusion.samplers import EpsModel, Guide, ancestral_loop, ddim_loop, eps_model
from facerestore_cli.diffusion.schedule import diffuse_to, timesteps
from facerestore_cli.methods.base import Restoration
from facerestore_cli.networks import Network
from facerestore_cli.pixels import resize_batch

# (estimate [B,3,S,S] in [0, 1], input [B,3,S,S] in [0, 1], ε-model with autograd) → guide
Guidance = Callable[[torch.Tensor, torch.Tensor, EpsModel], Guide]


def prior_condition(kind: str | None, lq01: torch.Tensor, estimate01: torch.Tensor) -> torch.Tensor | None:
    """What a conditional prior gets concatenated to its input, SR3-style, in [−1, 1]: "input" the degraded face x,
    "estimate" the estimator's e(x) (both [0, 1]); None for an unconditional prior. Training feeds its priors this too."""
    if kind is None:
        return None
    return (lq01 if kind == "input" else estimate01) * 2.0 - 1.0


class DiffusedEstimator:
    """params: anything with `steps`, `eta` and `start_t` (difface's Params). sampler: "ddim" (η, floor spacing as
    DifFace's ddim250) or "ancestral" (σ² = β over every `rounded` step). condition: what a conditional prior gets
    concatenated to its input, SR3-style, in [−1, 1]: "input" (the degraded face x) or "estimate" (e(x)); None for an
    unconditional prior. face_info: what every face's record says about the run's configuration."""

    def __init__(self, estimator: Network, prior: Network, abar: torch.Tensor, params, face_size: int,
                 guidance: Guidance | None = None, sampler: str = "ddim", condition: str | None = None,
                 face_info: dict | None = None):
        self.estimator, self.prior, self.abar = estimator, prior, abar
        self.params, self.face_size, self.guidance = params, face_size, guidance
        self.sampler, self.condition, self.face_info = sampler, condition, face_info

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        lq = resize_batch(faces.to(self.estimator.compute.device, torch.float32), self.face_size)
        estimate = self.estimator(lq).clamp(0.0, 1.0)
        x0 = estimate * 2.0 - 1.0
        condition = prior_condition(self.condition, lq, estimate)

        eps_with_grad = eps_model(self.prior, condition, grad=True)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return eps_with_grad(x, t)

        guide = self.guidance(estimate, lq, eps_with_grad) if self.guidance else None
        p = self.params
        if self.sampler == "ancestral":
            chain = timesteps(p.start_t, p.steps, "rounded")
            x = diffuse_to(x0, self.abar, chain[0], generators)
            x = ancestral_loop(eps, x, chain, self.abar, generators, callback, guide=guide)
        else:
            x = diffuse_to(x0, self.abar, p.start_t, generators)
            x = ddim_loop(eps, x, timesteps(p.start_t, p.steps, "floor"), self.abar, p.eta, generators, callback,
                          guide=guide)
        info = [dict(self.face_info) for _ in range(len(faces))] if self.face_info else []
        return Restoration(((x + 1.0) / 2.0).clamp(0.0, 1.0), estimate, info)
