"""Region-masked identity guidance of ipc-guided: Diffuse and Restore (seeds/diffuse-and-restore-paper.txt), §3.2
and §3.2.1, Eq. 6–9.

At every reverse step the sampler's noise prediction gives a clean estimate (Eq. 6)
    ŷ_{0,t} = (y_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t,
ArcFace compares it with the IPC estimate g_φ(x) (Eq. 7)
    L_arc = D_cos(f_arc(ŷ_{0,t}), f_arc(g_φ(x))) = 1 − cos(·, ·)   (per face),
and the step's mean moves against the gradient inside the identity mask M (Eq. 9)
    μ′ = μ − s · ∇_{y_t} L_arc ⊙ M.
The paper prints "μ + ∇L ⊙ M" with no scale; its text says the update goes "towards the direction of minimizing
L_arc", so the sign here descends, and s (``scale``) is ours (the paper gives none).

Gradient path. By default ε̂ is treated as a constant (detached), so ∇_{y_t} L = (1/√ᾱ_t) ∂L/∂ŷ_0 and no graph
is built through the UNet: one ArcFace forward + backward per step. ``eps_model`` re-evaluates ε̂(y_t, t) with
grad enabled and backpropagates through the UNet as well (``--guidance-through-unet``; one more UNet forward and
a UNet backward per step).

Range. ArcFace sees (ŷ_0 + 1)/2. The DDIM step (DifFace) clips x̂_0 to [−1, 1]; early in the reverse process the
raw ŷ_0 leaves that range, and a hard clamp would zero the gradient of every saturated pixel. The default,
``clamp="ste"``, is a straight-through clamp: ArcFace gets the clipped image (the one the sampler actually uses,
and the range ArcFace was trained on), while the gradient passes as if unclipped, so saturated pixels are guided
too. ``"hard"`` (clamp, zero gradient outside) and ``"none"`` (Eq. 6 verbatim, unclipped) are available.

The loss is summed over the batch before the backward pass, so each face gets the gradient of its own loss
(the embedding network must treat faces independently: eval-mode BatchNorm).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from facerestore_cli.diffusion.samplers import EpsModel, predict_x0

Embed = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] in [0, 1] → embeddings [B, D]
CLAMP_MODES = ("ste", "hard", "none")


def to_unit_range(x0: torch.Tensor, clamp: str = "ste") -> torch.Tensor:
    """[−1, 1] estimate → [0, 1] image for ArcFace: (x0 + 1)/2, clamped per `clamp` (see the module docstring)."""
    img = (x0 + 1.0) / 2.0
    if clamp == "none":
        return img
    clipped = img.clamp(0.0, 1.0)
    if clamp == "hard":
        return clipped
    if clamp == "ste":
        return img + (clipped - img).detach()
    raise ValueError(f"clamp must be one of {', '.join(CLAMP_MODES)}, got {clamp!r}")


def identity_loss(images01: torch.Tensor, target_emb: torch.Tensor, embed: Embed) -> torch.Tensor:
    """L_arc of Eq. 7 per face: 1 − cos(embed(images01), target_emb) → [B] (differentiable w.r.t. images01)."""
    emb = embed(images01).float()
    target = target_emb.to(device=emb.device, dtype=torch.float32)
    if target.ndim == 1:
        target = target.expand_as(emb)
    return 1.0 - F.cosine_similarity(emb, target, dim=1)


def identity_guidance(
    x_t: torch.Tensor,
    eps: torch.Tensor | None,
    abar_t: torch.Tensor,
    target_emb: torch.Tensor,
    embed: Embed,
    mask: torch.Tensor | None,
    scale: float,
    *,
    eps_model: EpsModel | None = None,
    t: int | torch.Tensor | None = None,
    clamp: str = "ste",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The guidance term of Eq. 9 for one reverse step → (correction, loss).

    x_t: [B, C, H, W] current sample y_t in [−1, 1] space; eps: the sampler's ε̂ at (y_t, t), used DETACHED
    (ignored when eps_model is given); abar_t: ᾱ_t broadcastable to x_t; target_emb: [B, D] (or [D]) embedding of
    g_φ(x); embed: differentiable images01 → [B, D]; mask: M, [B, 1, H, W] (or anything broadcastable) in [0, 1],
    None for uniform guidance; scale: s.

    ŷ_0 = predict_x0(y_t, ε̂, ᾱ_t) (Eq. 6), L = 1 − cos(embed(ŷ_0 in [0, 1]), target) per face (Eq. 7),
    g = ∂(Σ_faces L)/∂y_t by torch.autograd.grad (no parameter .grad is touched), correction = s · g ⊙ M,
    returned detached in x_t's dtype, to be SUBTRACTED from the step's mean (ddim_step(shift=...), Eq. 9).
    loss: the per-face L_arc [B] at this step (before the update), detached.

    eps_model(x, t_batch) (+ t, the original timestep): recompute ε̂ from y_t with grad enabled so the gradient
    also flows through the UNet (``--guidance-through-unet``). Must not be called under torch.inference_mode."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("identity guidance needs autograd: call it under torch.no_grad, not torch.inference_mode")
    if eps_model is None and eps is None:
        raise ValueError("identity guidance needs ε̂ (eps) or an eps_model to compute it")
    if eps_model is not None and t is None:
        raise ValueError("the through-UNet path needs the timestep t")
    # clone(): tensors made under inference_mode become ordinary tensors autograd may save
    x = x_t.detach().float().clone().requires_grad_(True)
    abar = torch.as_tensor(abar_t, device=x.device).detach().float().clone()
    target = target_emb.detach().clone()
    with torch.enable_grad():
        if eps_model is None:
            e = eps.detach().float().clone()
        else:
            t_batch = torch.as_tensor(t, device=x.device, dtype=torch.long).reshape(-1).expand(x.shape[0])
            e = eps_model(x, t_batch).float()
        x0 = predict_x0(x, e, abar)
        loss = identity_loss(to_unit_range(x0, clamp), target, embed)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    correction = scale * grad
    if mask is not None:
        correction = correction * mask.to(device=correction.device, dtype=correction.dtype)
    return correction.to(x_t.dtype), loss.detach()


def make_guide(
    target_emb: torch.Tensor,
    embed: Embed,
    mask: torch.Tensor | None,
    scale: float,
    *,
    eps_model: EpsModel | None = None,
    clamp: str = "ste",
    losses: list[torch.Tensor] | None = None,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """A ``ddim_loop(guide=...)`` hook applying identity_guidance at every step; each step's per-face loss [B]
    is appended (on the CPU) to `losses` when given."""

    def guide(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, t: int) -> torch.Tensor:
        correction, loss = identity_guidance(x_t, eps, abar_t, target_emb, embed, mask, scale,
                                             eps_model=eps_model, t=t, clamp=clamp)
        if losses is not None:
            losses.append(loss.cpu())
        return correction

    return guide
