"""The losses `train` minimises and the validation samples it writes, per target (targets.py): ε-prediction
(DiffBFR Eq. 8/9/11), L1 (+ Diffuse and Restore's identity term, Eq. 4) for the SwinIR restorers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facerestore_cli.diffusion.noise import randn_per_face, seeded_generator
from facerestore_cli.diffusion.samplers import ancestral_loop, eps_model
from facerestore_cli.diffusion.schedule import diffuse_to, extract, q_sample, timesteps
from facerestore_cli.faces.identity import identity_embedding
from facerestore_cli.pixels import resize_batch
from facerestore_cli.training.targets import Target


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float [0, 1]."""
    return images.float() / 255.0


def condition_of(target: Target, lq01: torch.Tensor, size: int) -> torch.Tensor | None:
    """The conditioning image in [−1, 1] at the network's size."""
    if target.condition == "lq":
        return resize_batch(lq01, size) * 2 - 1
    if target.condition == "lq128":
        return resize_batch(resize_batch(lq01, size // 4), size) * 2 - 1
    return None


def diffusion_loss(target: Target, model, abar: torch.Tensor, hq01, lq01, keys, size: int, loss: str,
                   condition: torch.Tensor | None = None):
    """ε-prediction loss of one batch: each sample's timestep and noise come from its own key, so a sample's loss
    does not depend on its batch, its rank, or a resume. condition: IRM(-2)'s from IRM(-1) samples (conditions.py),
    else the target's own from the LQ."""
    x0 = resize_batch(hq01, size) * 2 - 1
    generators = [seeded_generator(int(k)) for k in keys]
    t = torch.stack([torch.randint(0, len(abar), (), generator=g) for g in generators]).to(x0.device)
    eps = randn_per_face(generators, tuple(x0.shape[1:]), x0.device)
    x_t = q_sample(x0, extract(abar, t, x0), eps)
    cond = condition if condition is not None else condition_of(target, lq01, size)
    pred = eps_model(model, cond)(x_t, t).float()
    return F.l1_loss(pred, eps) if loss == "l1" else F.mse_loss(pred, eps)


def restorer_loss(target: Target, model, hq01, lq01, size: int, loss: str, arcface=None) -> torch.Tensor:
    """L1 (or L2) of the restoration, plus λ·(1 − cos ArcFace) to the HQ face for the IPC (Eq. 4)."""
    out = model(resize_batch(lq01, size)).float()
    truth = resize_batch(hq01, size)
    value = F.l1_loss(out, truth) if loss == "l1" else F.mse_loss(out, truth)
    if target.identity_weight:
        with torch.no_grad():
            reference = identity_embedding(arcface, truth)
        cos = F.cosine_similarity(identity_embedding(arcface, out.clamp(0, 1)), reference, dim=1)
        value = value + target.identity_weight * (1.0 - cos).mean()
    return value


@torch.no_grad()
def validation_sample(target: Target, model, abar, lq01, size: int, seed: int, steps: int = 20,
                      condition: torch.Tensor | None = None) -> torch.Tensor:
    """A picture of where training is: the network's restoration of fixed LQ faces, [0, 1] at `size` (diffusion:
    a short respaced ancestral chain — IRM(-1) from noise, IRM(-2) and the TEM truncated at the diffbfr preset's
    N1 and N2, ipc-prior at the ipc-guided preset's T′ from its condition)."""
    if target.kind == "restorer":
        return model(resize_batch(lq01, size)).float().clamp(0, 1)
    generators = [seeded_generator(seed + i) for i in range(lq01.shape[0])]
    cond = condition if condition is not None else condition_of(target, lq01, size)
    if target.start is None:
        start = len(abar)
        x = randn_per_face(generators, (3, size, size), lq01.device)
    else:
        start = min(target.chain_start(), len(abar))
        begin = cond if cond is not None else resize_batch(lq01, size) * 2 - 1
        x = diffuse_to(begin, abar, start - 1, generators)
    x = ancestral_loop(eps_model(model, cond), x, timesteps(start, min(steps, start), "rounded"), abar, generators)
    return ((x + 1) / 2).clamp(0, 1)
