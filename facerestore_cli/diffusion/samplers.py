"""Samplers as plain functions of a noise predictor (k-diffusion style): no sampler owns a network.

`eps_model(x_t, t)` returns ε̂ for a batch x_t at original integer timesteps t ([B] long tensor). DDIM (DifFace),
and DDPM ancestral steps over a respaced process with learned-range variance plus DR2's refinement loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from facerestore_cli.diffusion.noise import randn_per_face
from facerestore_cli.diffusion.resize import lowpass
from facerestore_cli.diffusion.schedule import extract, q_sample

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# guide(x_t, ε̂, ᾱ_t, t) → correction subtracted from a step's mean (DDIM or ancestral) (t: the original integer timestep)
Guide = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class StepEvent:
    """What every sampler loop tells its callback after each network evaluation (diffusers' step outputs): the
    evaluation's number and how many the loop makes, the original timestep, the new x and, where the step
    computes one, its x̂_0."""

    step: int
    total: int
    t: int
    x: torch.Tensor
    x0: torch.Tensor | None = None


def eps_model(network: Callable[..., torch.Tensor], condition: torch.Tensor | None = None,
              grad: bool = False) -> EpsModel:
    """The ε-predictor of a diffusion network (k-diffusion's denoiser wrapper): x_t with the condition, when there
    is one, concatenated on channels (SR3), and the first three output channels (a learned-range network's
    variance channels follow them). A loaded Network (networks.py) is checked against its descriptor: it must
    predict ε and take exactly the condition's channels; grad: its forward with autograd (guidance)."""
    given = 0 if condition is None else condition.shape[1]
    output, expected = getattr(network, "output", None), getattr(network, "condition_channels", given)
    if output is not None and output not in ("eps", "eps+variance"):
        raise ValueError(f"{network.weight_id} predicts {output}, not ε")
    if expected != given:
        raise ValueError(f"{network.weight_id} takes {expected} condition channels, {given} given")
    run = network.forward if grad else network

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return run(x if condition is None else torch.cat([x, condition], dim=1), t)[:, :3]
    return eps


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t — Ho et al. 2020, Eq. 4 solved for x_0 (DDIM, Song et al. 2021, Eq. 9)."""
    return (x_t - (1.0 - abar_t).sqrt() * eps) / abar_t.sqrt()


def ddim_sigma(abar_t: torch.Tensor, abar_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """σ_t(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) — Song et al. 2021 (DDIM), Eq. 16."""
    return eta * ((1.0 - abar_prev) / (1.0 - abar_t)).sqrt() * (1.0 - abar_t / abar_prev).sqrt()


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    eta: float,
    noise: torch.Tensor | None,
    clip: bool = True,
    shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update, Song et al. 2021, Eq. 12:
    x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z.

    As in DifFace's official sampler, x̂_0 is clipped to [-1, 1] but ε̂ stays the raw model output (stock
    guided-diffusion re-derives ε̂ from the clipped x̂_0 instead). `shift`, when given, is subtracted from the
    mean before σ z is added (guidance, Diffuse and Restore Eq. 9: μ′ = μ − s ∇L ⊙ M). Returns (x_prev, x̂_0)."""
    x0 = predict_x0(x_t, eps, abar_t)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    sigma = ddim_sigma(abar_t, abar_prev, eta)
    x_prev = abar_prev.sqrt() * x0 + (1.0 - abar_prev - sigma**2).clamp(min=0.0).sqrt() * eps
    if shift is not None:
        x_prev = x_prev - shift
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def ddim_loop(
    eps_model: EpsModel,
    x: torch.Tensor,
    timesteps: list[int],
    abar: torch.Tensor,
    eta: float,
    generators: list[torch.Generator],
    callback: Callable[[StepEvent], None] | None = None,
    guide: Guide | None = None,
) -> torch.Tensor:
    """Run DDIM from x (already noised to the level before timesteps[0]) down through `timesteps`
    (descending original timesteps; one model evaluation each). ᾱ_prev of the last step is 1.
    Fresh noise z comes from each face's own generator, so results do not depend on batch composition.

    guide(x_t, ε̂, ᾱ_t, t) → correction (same shape as x), called at every step after the model: the correction
    is subtracted from the DDIM mean before σ z is added (Diffuse and Restore Eq. 9, see diffusion/guidance.py).
    A guide that needs gradients must not be run under torch.inference_mode (torch.no_grad is fine)."""
    # channels-last convolutions fold the batch into GEMM rows, making a face's result depend on its batch position
    x = x.contiguous()
    for i, t in enumerate(timesteps):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        abar_t = extract(abar, t, x)
        is_last = i == len(timesteps) - 1
        abar_prev = torch.ones_like(abar_t) if is_last else extract(abar, timesteps[i + 1], x)
        eps = eps_model(x, t_batch).float()
        noise = None if (is_last or eta == 0) else randn_per_face(generators, tuple(x.shape[1:]), x.device)
        shift = None if guide is None else guide(x, eps, abar_t, t)
        x, x0 = ddim_step(x, eps, abar_t, abar_prev, eta, noise, shift=shift)
        if callback is not None:
            callback(StepEvent(i, len(timesteps), t, x, x0))
    return x


# --- DiffBFR: ancestral DDPM with σ² = β (Algorithm 1) -----------------------------------------------------------

def ancestral_step(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor,
                   noise: torch.Tensor | None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """One reverse step of DiffBFR's Algorithm 1 (Appendix B): DDPM ancestral sampling with σ_t² = β_t (Ho et al.
    2020, Eq. 11 and §3.2), no clipping:
        x_{t−1} = (x_t − (1 − α_t)/√(1 − γ_t) ε̂) / √α_t + √(1 − α_t) z,
    with γ_t = ᾱ_t and, over a respaced chain, α_t = ᾱ_t/ᾱ_prev (the combined step; the paper's α_t when the chain
    visits every timestep). noise None at the chain's last step (z = 0 at t = 1). `shift`, when given, is
    subtracted from the mean (Diffuse and Restore Eq. 9's μ′, see diffusion/guidance.py)."""
    alpha = abar_t / abar_prev
    mean = (x_t - (1.0 - alpha) / (1.0 - abar_t).sqrt() * eps) / alpha.sqrt()
    if shift is not None:
        mean = mean - shift
    return mean if noise is None else mean + (1.0 - alpha).sqrt() * noise


def ancestral_loop(eps_model: EpsModel, x: torch.Tensor, timesteps: list[int], abar: torch.Tensor,
                   generators: list[torch.Generator],
                   callback: Callable[[StepEvent], None] | None = None, guide: Guide | None = None) -> torch.Tensor:
    """Algorithm 1's loop from x (at the level of timesteps[0]) down through descending 0-based `timesteps`
    (`schedule.timesteps(..., "rounded")`), one model evaluation each, at the original timestep; ᾱ_prev of the last step
    is 1. The step's coefficients are computed in float64 (IRM's first β is 1e-6, below float32's resolution of
    1 − β) and applied in float32. Each face draws its z from its own generator, so a result does not depend on
    its batch. guide: as ddim_loop's, its correction subtracted from each step's mean."""
    x = x.contiguous()
    abar = abar.detach().to("cpu", torch.float64)  # 0-dim float64 entries: α = ᾱ_t/ᾱ_prev keeps β ≈ 1e-6 exact
    for k, t in enumerate(timesteps):
        last = k == len(timesteps) - 1
        abar_prev = torch.ones((), dtype=torch.float64) if last else abar[timesteps[k + 1]]
        eps = eps_model(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)).float()
        noise = None if last else randn_per_face(generators, tuple(x.shape[1:]), x.device)
        shift = None if guide is None else guide(x, eps, abar[t].float(), t)
        x = ancestral_step(x, eps, abar[t], abar_prev, noise, shift)
        if callback is not None:
            callback(StepEvent(k, len(timesteps), t, x))
    return x


# --- DDPM ancestral sampling over a respaced process, and DR2 ----------------------------------------------------

def respaced_schedule(abar_full: torch.Tensor, timesteps: list[int]) -> dict[str, torch.Tensor]:
    """The float64 tables of a process respaced to `timesteps` (ascending original timesteps), computed as
    improved/guided-diffusion's `SpacedDiffusion` + `GaussianDiffusion.__init__` do (DR2's `calc_paras` too).

    With ᾱ_i = ᾱ_full[t_i] and ᾱ_{−1} = 1: β_i = 1 − ᾱ_i/ᾱ_{i−1}; posterior q(x_{i−1} | x_i, x_0) of Ho et al. 2020
    Eq. 6–7: β̃_i = β_i (1 − ᾱ_{i−1})/(1 − ᾱ_i), μ̃ = coef1·x_0 + coef2·x_i with coef1 = β_i √ᾱ_{i−1}/(1 − ᾱ_i),
    coef2 = (1 − ᾱ_{i−1}) √(1 − β_i)/(1 − ᾱ_i). β̃_0 = 0, so its log is clipped to log β̃_1 at index 0."""
    ts = [int(t) for t in timesteps]
    if not ts or any(b <= a for a, b in zip(ts, ts[1:])) or ts[0] < 0 or ts[-1] >= abar_full.shape[0]:
        raise ValueError("timesteps must be strictly increasing original timesteps")
    abar_full = abar_full.detach().to("cpu", torch.float64)
    abar = abar_full[ts]
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    betas = 1.0 - abar / abar_prev
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]]) if len(ts) > 1 else posterior_variance
    return {
        "timesteps": torch.tensor(ts, dtype=torch.long),
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "betas": betas,
        "log_betas": betas.log(),
        "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": clipped.log(),
        "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
    }


def ddpm_step(
    x_t: torch.Tensor,
    model_out: torch.Tensor,
    i: int,
    sched: dict[str, torch.Tensor],
    noise: torch.Tensor | None,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_i → x_{i−1} at respaced index i (guided-diffusion `p_sample` with ε-prediction and
    learned-range variance). model_out has 2C channels: ε̂ and v ∈ [−1, 1].

    x̂_0 = √(1/ᾱ_i) x_i − √(1/ᾱ_i − 1) ε̂, clipped to [−1, 1] (Ho et al. 2020, Eq. 4 solved for x_0);
    μ = coef1·x̂_0 + coef2·x_i (Ho et al. 2020, Eq. 7); log σ² = f·log β_i + (1 − f)·log β̃_i(clipped), f = (v + 1)/2
    (Nichol & Dhariwal 2021, Eq. 15, over the respaced β); x_{i−1} = μ + σ z, without z at i = 0 or noise=None.
    Coefficients are taken as float32, like guided-diffusion's `_extract`. Returns (x_{i−1}, x̂_0)."""
    channels = x_t.shape[1]
    if model_out.shape[1] != 2 * channels:
        raise ValueError(f"expected {2 * channels} model output channels (ε and variance), got {model_out.shape[1]}")
    eps, v = model_out[:, :channels], model_out[:, channels:]

    def at(name: str) -> torch.Tensor:
        return extract(sched[name], i, x_t)

    x0 = at("sqrt_recip_alphas_cumprod") * x_t - at("sqrt_recipm1_alphas_cumprod") * eps
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    mean = at("posterior_mean_coef1") * x0 + at("posterior_mean_coef2") * x_t
    if noise is None or i == 0:
        return mean, x0
    frac = (v + 1) / 2
    log_variance = frac * at("log_betas") + (1 - frac) * at("posterior_log_variance_clipped")
    return mean + torch.exp(0.5 * log_variance) * noise, x0


def dr2_omega(n: int, tau: int, steps: int = 100) -> int:
    """DR2's start index ω (respaced) for factor N and output index τ: ω = min(τ + f(N), steps − 1) with
    f = 5 (N = 1), 10 (N = 2), 20 (N ≤ 4), 25 (N ≤ 8), 30 (otherwise) — the "Variant omega" table of the official
    `dr2e.py` (`DR2E.inference`). The official code caps at 100, an index one past its 100-entry tables (τ ≥ 70
    for N = 16 fails there); here ω is capped at the last index, 99. The paper (§3.3) gives ω ≈ τ + 0.25T."""
    if n < 1:
        raise ValueError(f"N must be ≥ 1, got {n}")
    if not 0 <= tau < steps:
        raise ValueError(f"τ must be in [0, {steps - 1}], got {tau}")
    extra = 5 if n == 1 else 10 if n <= 2 else 20 if n <= 4 else 25 if n <= 8 else 30
    return min(tau + extra, steps - 1)


def dr2_refine(
    x: torch.Tensor, y: torch.Tensor, abar_prev_level: torch.Tensor, noise: torch.Tensor, factor: int
) -> torch.Tensor:
    """DR2 iterative refinement (Eq. 10): x ← x − Φ_N(x) + Φ_N(y_{i−1}) with y_{i−1} = q_sample(y, ᾱ_{i−1}, noise)
    (Eq. 2 / Eq. 9); for N = 1 the official code replaces x by y_{i−1} outright. Same operation order as the
    official `img - up(down(img)) + up(down(q_sample(ref_img, t - 1)))`."""
    y_prev = q_sample(y, abar_prev_level, noise)
    if factor == 1:
        return y_prev
    return x - lowpass(x, factor) + lowpass(y_prev, factor)


def dr2_loop(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    timesteps: list[int],
    abar_full: torch.Tensor,
    n: int,
    tau: int,
    generators: list[torch.Generator],
    callback: Callable[[StepEvent], None] | None = None,
) -> torch.Tensor:
    """DR2's degradation remover (Wang et al. 2023, §3.3, Eq. 9–11), as the official `dr2_sample_loop` runs it.

    y: [B, C, H, W] in [−1, 1]; timesteps: the respaced original timesteps (DR2: 100 of 1000); `model(x, t)`
    gets original integer timesteps and returns 2C channels (ε̂, variance). With ω = dr2_omega(n, τ):
    x = q_sample(y, ᾱ at respaced ω); for i = ω, ω−1, …, τ: one model call at timesteps[i]; at i = τ return that
    call's clipped x̂_0 (Eq. 11); otherwise x = ddpm_step(...) to level i−1 and refine with y_{i−1} at respaced
    index i−1 (Eq. 10). ω − τ + 1 model calls. Noise per face, drawn in a fixed order (the q_sample noise, then per
    step the ancestral z and the refinement noise), so a face's result does not depend on its batch."""
    sched = respaced_schedule(abar_full, timesteps)
    omega = dr2_omega(n, tau, len(timesteps))
    abar = sched["alphas_cumprod"]  # 0-dim float64 CPU entries: sqrt in float64, then applied in float32
    shape = tuple(y.shape[1:])
    y = y.float().contiguous()
    x = q_sample(y, abar[omega], randn_per_face(generators, shape, y.device))
    total = omega - tau + 1
    for step, i in enumerate(range(omega, tau - 1, -1)):
        t = int(timesteps[i])
        # channels-last convolutions fold the batch into GEMM rows, making a face's result depend on its batch position
        x = x.contiguous()
        out = model(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)).float()
        if i == tau:
            _, x0 = ddpm_step(x, out, i, sched, None)
            if callback is not None:
                callback(StepEvent(step, total, t, x, x0))
            return x0
        x, x0 = ddpm_step(x, out, i, sched, randn_per_face(generators, shape, x.device))
        x = dr2_refine(x, y, abar[i - 1], randn_per_face(generators, shape, x.device), n)
        if callback is not None:
            callback(StepEvent(step, total, t, x, x0))
    raise AssertionError("unreachable: the loop returns at i == tau")
