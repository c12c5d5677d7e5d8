"""What `facerestore train` can train: the network, the data it sees, its loss, and how a validation sample is made.

    diffbfr-irm1       DiffBFR IRM(-1), Eq. 8: ε-prediction at 128, conditioned on the LQ face at 128; ground truth
                       x′0 = [y0]↓4 (the HQ face at 128)
    diffbfr-irm2       DiffBFR IRM(-2), Eq. 9: ε-prediction at 512 conditioned on x̃′0 resized to 512; x̃′0 is the
                       LQ face at 128 (the cheaper stand-in for an IRM(-1) sample the paper allows)
    diffbfr-tem        DiffBFR TEM, Eq. 11: unconditional ε-prediction at 512 (its variance channels are not trained:
                       Algorithm 1 does not use them)
    ipc                Diffuse and Restore's IPC g_φ, Eq. 4: SwinIR with L1 + λ·(1 − cos(f_arc(g_φ(x)), f_arc(y0)))
    difface-estimator  DifFace's diffused estimator, §IV: SwinIR with L1

The diffusion targets use DiffBFR's schedules (from presets/diffbfr.yaml) and its degradation (Eq. 13); the SwinIR
targets DifFace's Eq. 17. Loss L1 on ε (Table 6), or L2 (Eq. 8/9 write the squared norm): a config field."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facerestore_cli.diffusion.noise import randn_per_face, seeded_generator
from facerestore_cli.diffusion.samplers import ancestral_loop
from facerestore_cli.diffusion.schedule import extract, preset_alphas_cumprod, q_sample, truncated_timesteps
from facerestore_cli.faces.identity import identity_embedding
from facerestore_cli.presets import load_builtin


@dataclass(frozen=True)
class Target:
    name: str
    weight_id: str  # where `train export` puts the EMA weights (its registry entry gives arch and full-size config)
    kind: str  # "diffusion" | "restorer"
    degradation: str  # a degrade.MODELS name
    condition: str | None = None  # None, "lq" (at the network's size) or "lq128" (LQ at a quarter, back up)
    schedule_of: str | None = None  # the diffbfr preset component whose schedule it learns
    identity_weight: float = 0.0  # λ of Eq. 4
    upscale: int = 1  # the data's size over the network's (IRM(-1) learns at 128 from 512 faces)
    paper: str = ""

    def schedule(self) -> torch.Tensor:
        return preset_alphas_cumprod(load_builtin("diffbfr").schedule(self.schedule_of))


TARGETS = {
    "diffbfr-irm1": Target("diffbfr-irm1", "diffbfr-irm1", "diffusion", "diffbfr", "lq", "irm1", upscale=4,
                           paper="DiffBFR Eq. 8, Table 6"),
    "diffbfr-irm2": Target("diffbfr-irm2", "diffbfr-irm2", "diffusion", "diffbfr", "lq128", "irm2",
                           paper="DiffBFR Eq. 9, Table 6"),
    "diffbfr-tem": Target("diffbfr-tem", "diffbfr-tem", "diffusion", "diffbfr", None, "tem",
                          paper="DiffBFR Eq. 11, Table 6"),
    "ipc": Target("ipc", "ipc-swinir", "restorer", "difface", identity_weight=1.0, paper="Diffuse and Restore Eq. 4"),
    "difface-estimator": Target("difface-estimator", "estimator-swinir", "restorer", "difface",
                                paper="DifFace §IV (L1)"),
}


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float [0, 1]."""
    return images.float() / 255.0


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)


def condition_of(target: Target, lq01: torch.Tensor, size: int) -> torch.Tensor | None:
    """The conditioning image in [−1, 1] at the network's size."""
    if target.condition == "lq":
        return resize(lq01, size).clamp(0, 1) * 2 - 1
    if target.condition == "lq128":
        return resize(resize(lq01, size // 4).clamp(0, 1), size).clamp(0, 1) * 2 - 1
    return None


def diffusion_loss(target: Target, model, abar: torch.Tensor, hq01, lq01, keys, size: int, loss: str):
    """ε-prediction loss of one batch: each sample's timestep and noise come from its own key, so a sample's loss
    does not depend on its batch, its rank, or a resume."""
    x0 = resize(hq01, size).clamp(0, 1) * 2 - 1
    generators = [seeded_generator(int(k)) for k in keys]
    t = torch.stack([torch.randint(0, len(abar), (), generator=g) for g in generators]).to(x0.device)
    eps = randn_per_face(generators, tuple(x0.shape[1:]), x0.device)
    x_t = q_sample(x0, extract(abar, t, x0), eps)
    cond = condition_of(target, lq01, size)
    pred = model(x_t if cond is None else torch.cat([x_t, cond], dim=1), t)[:, :3].float()
    return F.l1_loss(pred, eps) if loss == "l1" else F.mse_loss(pred, eps)


def restorer_loss(target: Target, model, hq01, lq01, size: int, loss: str, arcface=None) -> torch.Tensor:
    """L1 (or L2) of the restoration, plus λ·(1 − cos ArcFace) to the HQ face for the IPC (Eq. 4)."""
    out = model(resize(lq01, size).clamp(0, 1)).float()
    truth = resize(hq01, size).clamp(0, 1)
    value = F.l1_loss(out, truth) if loss == "l1" else F.mse_loss(out, truth)
    if target.identity_weight:
        with torch.no_grad():
            reference = identity_embedding(arcface, truth)
        cos = F.cosine_similarity(identity_embedding(arcface, out.clamp(0, 1)), reference, dim=1)
        value = value + target.identity_weight * (1.0 - cos).mean()
    return value


@torch.no_grad()
def validation_sample(target: Target, model, abar, lq01, size: int, seed: int, steps: int = 20) -> torch.Tensor:
    """A picture of where training is: the network's restoration of fixed LQ faces, [0, 1] at `size` (diffusion:
    a short respaced Algorithm 1 chain — IRM(-1) from noise, IRM(-2) truncated at N1 = 1000, TEM at N2 = 100)."""
    if target.kind == "restorer":
        return model(resize(lq01, size).clamp(0, 1)).float().clamp(0, 1)
    generators = [seeded_generator(seed + i) for i in range(lq01.shape[0])]
    cond = condition_of(target, lq01, size)
    start = {"diffbfr-irm1": len(abar), "diffbfr-irm2": min(1000, len(abar))}.get(target.name, min(100, len(abar)))
    shape = (3, size, size)
    if target.name == "diffbfr-irm1":
        x = randn_per_face(generators, shape, lq01.device)
    else:
        begin = cond if cond is not None else resize(lq01, size).clamp(0, 1) * 2 - 1
        x = q_sample(begin, extract(abar, start - 1, begin), randn_per_face(generators, shape, lq01.device))

    def eps(x_t, t):
        return model(x_t if cond is None else torch.cat([x_t, cond], dim=1), t)[:, :3].float()

    x = ancestral_loop(eps, x, truncated_timesteps(start, min(steps, start)), abar, generators)
    return ((x + 1) / 2).clamp(0, 1)
