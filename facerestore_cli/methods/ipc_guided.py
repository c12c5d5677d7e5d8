"""ipc-guided ("Diffuse and Restore", §3): an identity-preserving conditioner g_φ restores the face, its output
is diffused to T′ (Eq. 3) and denoised by a face prior whose every step is pushed towards g_φ(x)'s identity by
ArcFace guidance restricted to identity-critical regions (Eq. 6–9).

Public substitutes stand in for the unpublished trained parts (see presets/ipc-guided.yaml); a user-trained IPC
or conditional UNet plugs into the same components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from facerestore_cli.diffusion.guidance import identity_guidance
from facerestore_cli.diffusion.noise import randn_per_face
from facerestore_cli.diffusion.samplers import ddim_loop
from facerestore_cli.diffusion.schedule import extract, q_sample, spread_below
from facerestore_cli.errors import UsageError
from facerestore_cli.faces.id_masks import build_id_mask
from facerestore_cli.faces.identity import identity_embedding
from facerestore_cli.methods.components import diffusion_schedule, load_network
from facerestore_cli.methods.base import Restoration
from facerestore_cli.methods.difface import DifFaceParams
from facerestore_cli.pixels import resize_batch

ID_MASKS = ("parsing", "proxy", "none")


@dataclass(frozen=True)
class IPCParams:
    sampling: DifFaceParams
    scale: float
    id_mask: str
    through_unet: bool


def _params(params: dict[str, Any]) -> IPCParams:
    p = IPCParams(DifFaceParams(int(params["steps"]), float(params["eta"]), int(params["start_t"])),
                  float(params["guidance_scale"]), str(params["id_mask"]), bool(params["guidance_through_unet"]))
    if p.scale < 0:
        raise UsageError(f"--guidance-scale must be ≥ 0, got {p.scale}")
    if p.id_mask not in ID_MASKS:
        raise UsageError(f"--id-mask must be one of {', '.join(ID_MASKS)}, got '{p.id_mask}'")
    return p


def required_weights(preset, params: dict[str, Any]) -> list[str]:
    p = _params(params)
    ids = [preset.components["ipc"]["weights"], preset.components["prior"]["weights"], preset.components["arcface"]["weights"]]
    if p.id_mask == "parsing" and p.scale > 0:
        ids.append(preset.components["parser"]["weights"])
    return ids


class IPCGuided:
    def __init__(self, ipc, prior, arcface, parser, abar, params: IPCParams, compute, face_size, conditional, weight_ids):
        self.ipc, self.prior, self.arcface, self.parser = ipc, prior, arcface, parser
        self.abar, self.params, self.compute, self.face_size = abar, params, compute, face_size
        self.conditional = conditional
        self._weight_ids = list(weight_ids)

    def weight_ids(self) -> list[str]:
        return self._weight_ids

    def estimate(self, lq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.compute.autocast():
            return self.ipc(lq).float().clamp(0.0, 1.0)

    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        return identity_embedding(self.arcface, images01)

    def mask(self, estimate: torch.Tensor, lq: torch.Tensor) -> tuple[str, torch.Tensor]:
        """(the kind of mask built, M [B, 1, S, S])."""
        from facerestore_cli.faces.masks import run_parsenet

        if self.params.id_mask == "parsing":
            labels = torch.as_tensor(run_parsenet(self.parser, estimate), device=estimate.device)
            return "parsing", build_id_mask("parsing", labels=labels, size=estimate.shape[-1])
        if self.params.id_mask == "proxy":
            return "proxy", build_id_mask("proxy", estimate=estimate, input=lq)
        return "none", build_id_mask("none", shape=estimate.shape)

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        p, s = self.params, self.params.sampling
        lq = resize_batch(faces.to(self.compute.device, torch.float32), self.face_size)
        estimate = self.estimate(lq)
        cond = estimate * 2.0 - 1.0

        def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with self.compute.autocast():
                return self.prior(torch.cat([x, cond], dim=1) if self.conditional else x, t)[:, :3].float()

        def eps_no_grad(x, t):
            with torch.no_grad():
                return eps_model(x, t)

        guide, info = None, []
        if p.scale > 0:
            with torch.no_grad():
                target = self.embed(estimate)
            kind, mask = self.mask(estimate, lq)
            info = [{"id_mask": kind}] * len(faces)

            def guide(x_t, eps, abar_t, t):
                correction, _loss = identity_guidance(x_t, eps, abar_t, target, self.embed, mask, p.scale,
                                                      eps_model=eps_model if p.through_unet else None, t=t)
                return correction

        noise = randn_per_face(generators, tuple(cond.shape[1:]), cond.device)
        x = q_sample(cond, extract(self.abar, s.start_t, cond), noise)
        timesteps = list(reversed(spread_below(s.start_t, s.steps)))
        x = ddim_loop(eps_no_grad, x, timesteps, self.abar, s.eta, generators, callback, guide=guide)
        return Restoration(((x + 1.0) / 2.0).clamp(0.0, 1.0), estimate, info)


def build(preset, params: dict[str, Any], store, compute) -> IPCGuided:
    abar = diffusion_schedule(preset.schedule)
    p = _params(params)
    p.sampling.validate(len(abar))
    comps = preset.components
    ipc = load_network(store, comps["ipc"], compute)
    prior = load_network(store, comps["prior"], compute)
    arcface = load_network(store, comps["arcface"], compute)
    parser = load_network(store, comps["parser"], compute) if p.id_mask == "parsing" and p.scale > 0 else None
    return IPCGuided(ipc, prior, arcface, parser, abar, p, compute, preset.face_size,
                     bool(comps["prior"].get("conditional", False)), required_weights(preset, params))
