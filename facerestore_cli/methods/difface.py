"""DifFace (Yue & Loy, TPAMI 2024): diffused estimator + partial reverse diffusion.

Algorithm 1 of the paper: x̂0 = e(y) (SwinIR), x_N ~ q(x_N | x̂0) (Eq. 11), then the reverse chain of the
pretrained FFHQ prior from N down to 0 (Eq. 13), here DDIM with η as in the official inference code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from facerestore_cli.diffusion.noise import randn_per_face
from facerestore_cli.diffusion.samplers import ddim_loop
from facerestore_cli.diffusion.schedule import extract, q_sample, spread_below
from facerestore_cli.errors import UsageError
from facerestore_cli.methods.base import Restoration
from facerestore_cli.methods.components import diffusion_schedule, load_network
from facerestore_cli.pixels import resize_batch


@dataclass(frozen=True)
class DifFaceParams:
    steps: int
    eta: float
    start_t: int

    def validate(self, num_timesteps: int) -> None:
        if not 1 <= self.start_t < num_timesteps:
            raise UsageError(f"--start-t must be in [1, {num_timesteps - 1}], got {self.start_t}")
        if not 1 <= self.steps <= self.start_t:
            raise UsageError(f"--steps must be in [1, --start-t={self.start_t}], got {self.steps}")
        if self.eta < 0:
            raise UsageError(f"--eta must be ≥ 0, got {self.eta}")


class DifFace:
    def __init__(self, estimator, prior, abar: torch.Tensor, params: DifFaceParams, compute, face_size: int, weight_ids):
        self.estimator, self.prior, self.abar = estimator, prior, abar
        self.params, self.compute, self.face_size = params, compute, face_size
        self._weight_ids = list(weight_ids)

    def weight_ids(self) -> list[str]:
        return self._weight_ids

    def estimate(self, lq: torch.Tensor) -> torch.Tensor:
        """x̂0 = clamp(e(y), 0, 1): the diffused estimator's restoration, [0, 1]."""
        with torch.no_grad(), self.compute.autocast():
            return self.estimator(lq).float().clamp(0.0, 1.0)

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.compute.autocast():
            return self.prior(x, t)[:, :3].float()

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        p = self.params
        lq = resize_batch(faces.to(self.compute.device, torch.float32), self.face_size)
        estimate = self.estimate(lq)
        x0 = estimate * 2.0 - 1.0
        noise = randn_per_face(generators, tuple(x0.shape[1:]), x0.device)
        x = q_sample(x0, extract(self.abar, p.start_t, x0), noise)
        timesteps = list(reversed(spread_below(p.start_t, p.steps)))
        x = ddim_loop(self.eps, x, timesteps, self.abar, p.eta, generators, callback)
        return Restoration(((x + 1.0) / 2.0).clamp(0.0, 1.0), estimate)


def build(preset, params: dict[str, Any], store, compute) -> DifFace:
    abar = diffusion_schedule(preset.schedule)
    p = DifFaceParams(steps=int(params["steps"]), eta=float(params["eta"]), start_t=int(params["start_t"]))
    p.validate(len(abar))
    estimator = load_network(store, preset.components["estimator"], compute)
    prior = load_network(store, preset.components["prior"], compute)
    return DifFace(estimator, prior, abar, p, compute, preset.face_size, preset.weight_ids())
