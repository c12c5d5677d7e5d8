"""ipc-mask's objective: Diffuse and Restore §3.2.1 trains the mask sub-branch "to optimize the face recognition loss
(Eq. 7) and perceptual loss (LPIPS) w.r.t ŷ_{0,t} at different time steps". Per face, with g_φ, the prior and ArcFace
frozen:

    M = sigmoid(branch([x, M′]))                          M′ of Eq. 8 (δ = 0.3); soft while training
    y_t ~ q(y_t | y_0),  t uniform in [0, T′)              the ground truth diffused (Eq. 3); T′ the run's start
    ŷ′_{0,t} = Eq. 6 on y_t − s·∇_{y_t}L_arc ⊙ M          Eq. 9's masked guidance shift, ε̂ held (as the run's default)
    loss = D_cos(f_arc(ŷ′_{0,t}), f_arc(g_φ(x))) + LPIPS(ŷ′_{0,t}, y_0)     (Eq. 7 + LPIPS)

The paper leaves open how the shift reaches ŷ_{0,t}; chosen here: applied to y_t before Eq. 6, so the identity term
asks for M where guidance restores identity and LPIPS against the ground truth for no M where guidance spoils the
face. The gradient reaches the branch only through M."""

from __future__ import annotations

import torch

from facerestore_cli.diffusion.guidance import identity_guidance, identity_loss, to_unit_range
from facerestore_cli.diffusion.noise import randn_per_face, seeded_generator
from facerestore_cli.diffusion.samplers import eps_model, predict_x0
from facerestore_cli.diffusion.schedule import extract, q_sample
from facerestore_cli.faces.id_masks import mask_branch_input
from facerestore_cli.faces.identity import identity_embedding
from facerestore_cli.pixels import resize_batch


def mask_loss(branch, parts, hq01: torch.Tensor, lq01: torch.Tensor, keys, size: int) -> tuple[torch.Tensor, dict]:
    """(Eq. 7 + LPIPS averaged over the batch, {"arc": Eq. 7's mean, "lpips": LPIPS's mean}); parts: IpcParts
    (frozen.py). Each face's t and noise come from its key."""
    x = resize_batch(lq01, size)
    y0 = resize_batch(hq01, size) * 2.0 - 1.0
    with torch.no_grad():
        estimate = parts.ipc(x).clamp(0.0, 1.0)
        target = identity_embedding(parts.arcface, estimate)
    mask = torch.sigmoid(branch(mask_branch_input(estimate, x)).float())
    generators = [seeded_generator(int(k)) for k in keys]
    t = torch.stack([torch.randint(0, parts.start_t, (), generator=g) for g in generators]).to(y0.device)
    abar_t = extract(parts.abar, t, y0)
    y_t = q_sample(y0, abar_t, randn_per_face(generators, tuple(y0.shape[1:]), y0.device))
    with torch.no_grad():
        eps = eps_model(parts.prior, parts.condition(x, estimate))(y_t, t)

    def embed(images01: torch.Tensor) -> torch.Tensor:
        return identity_embedding(parts.arcface, images01)

    shift, _ = identity_guidance(y_t, eps, abar_t, target, embed, None, parts.scale)
    guided = predict_x0(y_t - shift * mask, eps, abar_t)
    images01 = to_unit_range(guided)
    arc = identity_loss(images01, target, embed).mean()
    perceptual = parts.lpips(images01 * 2.0 - 1.0, y0).mean()
    return arc + perceptual, {"arc": arc.detach(), "lpips": perceptual.detach()}
