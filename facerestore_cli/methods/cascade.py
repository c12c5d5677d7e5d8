"""DiffBFR's sampling core (Qiu et al. 2023, Algorithm 1, Appendix B), every stage an ancestral DDPM with σ² = β:

    IRM(-1)  x′_T ~ N(0, I); the chain down to x̃′_0 at 128, each step conditioned on the LQ face resized to 128
    IRM(-2)  y′_N1 ~ q(y′_N1 | resize(x̃′_0)); down to y′_0 at 512, conditioned on resize(x̃′_0) (truncated)
    TEM      y_N2 ~ q(y_N2 | y′_0); down to y_0, unconditional, its variance channels unused (truncated)

The conditional networks see [noisy image, condition] concatenated on channels (SR3). Between stages the image is
clamped to [−1, 1] (the chains themselves are not clipped, as in Algorithm 1)."""

from __future__ import annotations

import dataclasses

import torch

from facerestore_cli.diffusion.noise import randn_per_face
from facerestore_cli.diffusion.samplers import ancestral_loop, eps_model
from facerestore_cli.diffusion.schedule import diffuse_to, timesteps
from facerestore_cli.methods.base import Restoration
from facerestore_cli.networks import Network
from facerestore_cli.pixels import resize_batch


class DiffBFRCascade:
    """params: anything with irm1_steps, irm2_start, irm2_steps, tem_start, tem_steps (diffbfr's Params)."""

    def __init__(self, irm1: Network, irm2: Network, tem: Network, abar_irm: torch.Tensor, abar_tem: torch.Tensor,
                 params, face_size: int):
        self.irm1, self.irm2, self.tem = irm1, irm2, tem
        self.abar_irm, self.abar_tem, self.params, self.face_size = abar_irm, abar_tem, params, face_size

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        p = self.params
        stages = [timesteps(len(self.abar_irm), p.irm1_steps, "rounded"),
                  timesteps(p.irm2_start, p.irm2_steps, "rounded"), timesteps(p.tem_start, p.tem_steps, "rounded")]
        report = _progress(callback, [len(s) for s in stages])
        x = irm1_sample(self.irm1, faces, self.abar_irm, stages[0], generators, report(0))
        condition = irm2_condition(x, self.irm2.input_size)

        y = diffuse_to(condition, self.abar_irm, stages[1][0], generators)  # q(y′_N1 | ·), Eq. 2
        y = ancestral_loop(eps_model(self.irm2, condition), y, stages[1], self.abar_irm, generators, report(1))
        estimate = resize_batch(y.clamp(-1.0, 1.0), self.tem.input_size, clamp=False).clamp(-1.0, 1.0)

        z = diffuse_to(estimate, self.abar_tem, stages[2][0], generators)  # q(y_N2 | y′_0)
        z = ancestral_loop(eps_model(self.tem), z, stages[2], self.abar_tem, generators, report(2))
        out = resize_batch(((z + 1.0) / 2.0).clamp(0.0, 1.0), self.face_size)
        return Restoration(out, resize_batch((estimate + 1.0) / 2.0, self.face_size))


def irm1_sample(irm1: Network, faces01: torch.Tensor, abar: torch.Tensor, chain: list[int], generators,
                callback=None) -> torch.Tensor:
    """x̃′_0: IRM(-1)'s whole reverse chain from pure noise at its size, conditioned on the LQ faces ([0, 1], any
    size) resized to it (Algorithm 1); in [−1, 1], unclamped. `train diffbfr-irm2` conditions on the same."""
    lq = resize_batch(faces01.to(irm1.compute.device, torch.float32), irm1.input_size) * 2.0 - 1.0
    x = randn_per_face(generators, tuple(lq.shape[1:]), lq.device)
    return ancestral_loop(eps_model(irm1, lq), x, chain, abar, generators, callback)


def irm2_condition(irm1_output: torch.Tensor, size: int) -> torch.Tensor:
    """IRM(-2)'s condition (Eq. 9): x̃′_0 clamped, resized to IRM(-2)'s size, clamped."""
    return resize_batch(irm1_output.clamp(-1.0, 1.0), size, clamp=False).clamp(-1.0, 1.0)


def _progress(callback, lengths: list[int]):
    """Per stage, a sampler callback reporting steps counted over the whole cascade."""
    def stage(k: int):
        if callback is None:
            return None
        offset, total = sum(lengths[:k]), sum(lengths)
        return lambda event: callback(dataclasses.replace(event, step=offset + event.step, total=total))
    return stage
