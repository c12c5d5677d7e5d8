"""The diffused-estimator sampling core of DifFace (Yue & Loy, TPAMI 2024, Algorithm 1), shared by difface and
ipc-guided: the estimator restores the face, x̂0 = e(y); x̂0 is diffused to N, x_N ~ q(x_N | x̂0) (Eq. 11); the
prior runs the reverse chain from N down to 0 (Eq. 13), here DDIM with η (the official sampler), optionally with
a guide that shifts every step's mean (ipc-guided, Diffuse and Restore Eq. 9)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from facerestore_cli.diffusion.samplers import EpsModel, Guide, ddim_loop, eps_model
from facerestore_cli.diffusion.schedule import diffuse_to, timesteps
from facerestore_cli.methods.base import Restoration
from facerestore_cli.networks import Network
from facerestore_cli.pixels import resize_batch

# (estimate [B,3,S,S] in [0, 1], input [B,3,S,S] in [0, 1], ε-model with autograd) → (guide or None, face info)
Guidance = Callable[[torch.Tensor, torch.Tensor, EpsModel], tuple[Guide | None, list[dict]]]


class DiffusedEstimator:
    """params: anything with `steps`, `eta` and `start_t` (difface's Params). A conditional prior (its descriptor
    says it takes condition channels) gets the estimate (in [−1, 1]) concatenated to its input, SR3-style (a
    trained conditional prior for ipc-guided)."""

    def __init__(self, estimator: Network, prior: Network, abar: torch.Tensor, params, face_size: int,
                 guidance: Guidance | None = None):
        self.estimator, self.prior, self.abar = estimator, prior, abar
        self.params = params
        self.face_size, self.guidance = face_size, guidance

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        lq = resize_batch(faces.to(self.estimator.compute.device, torch.float32), self.face_size)
        estimate = self.estimator(lq).clamp(0.0, 1.0)
        x0 = estimate * 2.0 - 1.0

        eps_with_grad = eps_model(self.prior, x0 if self.prior.condition_channels else None, grad=True)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return eps_with_grad(x, t)

        guide, info = self.guidance(estimate, lq, eps_with_grad) if self.guidance else (None, [])
        p = self.params
        x = diffuse_to(x0, self.abar, p.start_t, generators)
        x = ddim_loop(eps, x, timesteps(p.start_t, p.steps, "floor"), self.abar, p.eta, generators, callback, guide=guide)
        return Restoration(((x + 1.0) / 2.0).clamp(0.0, 1.0), estimate, info)
