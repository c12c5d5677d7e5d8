"""DR2 (Wang et al., CVPR 2023): diffusion-based robust degradation remover + enhancement module (DR2E).

§3.3: the low-quality face y is diffused to step ω (Eq. 9), denoised by a pretrained FFHQ DDPM down to τ with the
low-frequency content of y re-imposed after every step (Eq. 10), and x̂0 predicted at τ (Eq. 11). §3.4: an
enhancement network (SPARNetHD trained on DR2 outputs, Eq. 12) brings the coarse x̂0 to a high-quality face."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from facerestore_cli.diffusion.samplers import dr2_loop, dr2_omega
from facerestore_cli.diffusion.schedule import space_timesteps_fractional
from facerestore_cli.errors import UsageError
from facerestore_cli.methods.base import Restoration
from facerestore_cli.methods.components import diffusion_schedule, load_network
from facerestore_cli.pixels import resize_batch

ENHANCERS = ("sparnethd", "none")


@dataclass(frozen=True)
class DR2Params:
    n: int
    tau: int
    enhancer: str
    prior: str

    def validate(self, respaced: int, choices: dict) -> None:
        if self.n < 1:
            raise UsageError(f"--dr2-n must be ≥ 1, got {self.n}")
        if not 0 <= self.tau < respaced - 1:
            raise UsageError(f"--dr2-tau must be in [0, {respaced - 2}], got {self.tau}")
        if self.enhancer not in ENHANCERS:
            raise UsageError(f"--enhancer must be one of {', '.join(ENHANCERS)}, got '{self.enhancer}'")
        if self.prior not in choices:
            raise UsageError(f"--dr2-prior must be one of {', '.join(choices)}, got '{self.prior}'")


def _params(params: dict[str, Any]) -> DR2Params:
    return DR2Params(int(params["dr2_n"]), int(params["dr2_tau"]), str(params["enhancer"]), str(params["prior"]))


def _prior_choices(preset) -> dict[str, str]:
    comp = preset.components["prior"]
    return dict(comp.get("choices") or {"default": comp["weights"]})


def required_weights(preset, params: dict[str, Any]) -> list[str]:
    p = _params(params)
    ids = [_prior_choices(preset).get(p.prior, preset.components["prior"]["weights"])]
    if p.enhancer == "sparnethd":
        ids.append(preset.components["enhancer"]["weights"])
    return ids


class DR2:
    def __init__(self, prior, enhancer, abar, timesteps, params: DR2Params, compute, face_size: int, prior_size: int,
                 enhancer_size: int, weight_ids):
        self.prior, self.enhancer, self.abar, self.timesteps = prior, enhancer, abar, timesteps
        self.params, self.compute, self.face_size = params, compute, face_size
        self.prior_size, self.enhancer_size = prior_size, enhancer_size
        self._weight_ids = list(weight_ids)

    def weight_ids(self) -> list[str]:
        return self._weight_ids

    @property
    def omega(self) -> int:
        return dr2_omega(self.params.n, self.params.tau)

    def model(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's 6 output channels (ε and the variance interpolation v), fp32."""
        with torch.no_grad(), self.compute.autocast():
            return self.prior(x, t).float()

    def enhance(self, coarse: torch.Tensor) -> torch.Tensor:
        """Coarse x̂0 in [-1, 1] at the prior's size → [0, 1] at the face size. As in the official dr2e.py, the
        clamped x̂0 is upsampled bicubically (unclamped) and fed to the enhancer in [-1, 1]."""
        if self.enhancer is None:
            return resize_batch((coarse + 1.0) / 2.0, self.face_size)
        x = resize_batch(coarse, self.enhancer_size, clamp=False)
        with torch.no_grad(), self.compute.autocast():
            out = self.enhancer(x).float()
        return resize_batch(((out + 1.0) / 2.0).clamp(0.0, 1.0), self.face_size)

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        p = self.params
        y = resize_batch(faces.to(self.compute.device, torch.float32), self.prior_size) * 2.0 - 1.0
        coarse = dr2_loop(self.model, y, self.timesteps, self.abar, p.n, p.tau, generators, callback)
        return Restoration(self.enhance(coarse.clamp(-1.0, 1.0)))


def build(preset, params: dict[str, Any], store, compute) -> DR2:
    abar = diffusion_schedule(preset.schedule)
    timesteps = space_timesteps_fractional(len(abar), int(preset.schedule.get("respace", 100)))
    p = _params(params)
    choices = _prior_choices(preset)
    p.validate(len(timesteps), choices)
    prior_component = {**preset.components["prior"], "weights": choices[p.prior]}
    prior = load_network(store, prior_component, compute)
    enhancer = None
    enhancer_size = preset.face_size
    if p.enhancer == "sparnethd":
        enhancer = load_network(store, preset.components["enhancer"], compute)
        enhancer_size = int({**store.spec(preset.components["enhancer"]["weights"]).config,
                             **preset.components["enhancer"].get("config", {})}.get("size", preset.face_size))
    prior_config = {**store.spec(choices[p.prior]).config, **preset.components["prior"].get("config", {})}
    return DR2(prior, enhancer, abar, timesteps, p, compute, preset.face_size, int(prior_config["image_size"]),
               enhancer_size, required_weights(preset, params))
