"""DR2's sampling core (Wang et al., CVPR 2023). §3.3: the low-quality face y is diffused to step ω (Eq. 9),
denoised by a pretrained FFHQ DDPM down to τ with the low-frequency content of y re-imposed after every step
(Eq. 10), and x̂0 predicted at τ (Eq. 11). §3.4: an enhancement network (SPARNetHD trained on DR2 outputs,
Eq. 12) brings the coarse x̂0 to a high-quality face."""

from __future__ import annotations

import torch

from facerestore_cli.diffusion.samplers import dr2_loop
from facerestore_cli.methods.base import Restoration
from facerestore_cli.networks import Network
from facerestore_cli.pixels import resize_batch


class DegradationRemover:
    """params: anything with `dr2_n` and `dr2_tau` (dr2's Params); enhancer None writes the coarse output."""

    def __init__(self, prior: Network, enhancer: Network | None, abar: torch.Tensor, timesteps: list[int], params,
                 face_size: int):
        self.prior, self.enhancer, self.abar, self.timesteps = prior, enhancer, abar, timesteps
        self.params, self.face_size = params, face_size

    def enhance(self, coarse: torch.Tensor) -> torch.Tensor:
        """Coarse x̂0 in [-1, 1] at the prior's size → [0, 1] at the face size. As in the official dr2e.py, the
        clamped x̂0 is upsampled bicubically (unclamped) and fed to the enhancer in [-1, 1]."""
        if self.enhancer is None:
            return resize_batch((coarse + 1.0) / 2.0, self.face_size)
        out = self.enhancer(resize_batch(coarse, self.enhancer.input_size, clamp=False))
        return resize_batch(((out + 1.0) / 2.0).clamp(0.0, 1.0), self.face_size)

    def restore(self, faces: torch.Tensor, generators: list[torch.Generator], callback=None) -> Restoration:
        y = resize_batch(faces.to(self.prior.compute.device, torch.float32), self.prior.input_size) * 2.0 - 1.0
        coarse = dr2_loop(self.prior, y, self.timesteps, self.abar, self.params.dr2_n, self.params.dr2_tau,
                          generators, callback)
        return Restoration(self.enhance(coarse.clamp(-1.0, 1.0)))
