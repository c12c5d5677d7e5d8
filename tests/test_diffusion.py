"""Schedule and sampler math against closed forms and the official DifFace numbers."""

import math

import pytest
import torch

from facerestore_cli.diffusion import schedule
from facerestore_cli.diffusion.noise import face_seed, randn_per_face, seeded_generator
from facerestore_cli.diffusion.samplers import ddim_loop, ddim_sigma, ddim_step, predict_x0


def test_linear_betas_endpoints_and_dtype():
    b = schedule.linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_alphas_cumprod_closed_form():
    b = schedule.linear_betas(1000)
    abar = schedule.alphas_cumprod(b)
    expected_400 = math.prod(1 - (1e-4 + k * (0.02 - 1e-4) / 999) for k in range(401))
    assert abar[400].item() == pytest.approx(expected_400, rel=1e-12)
    assert abar[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_spread_below_reproduces_difface_ddim250_from_400():
    ts = schedule.timesteps(400, 100, "floor")[::-1]
    assert ts == list(range(0, 400, 4))
    assert schedule.timesteps(400, 20, "floor")[::-1] == list(range(0, 400, 20))
    assert len(schedule.timesteps(400, 7, "floor")[::-1]) == 7
    with pytest.raises(ValueError):
        schedule.timesteps(400, 401, "floor")[::-1]


def test_fractional_respacing_matches_dr2():
    ts = schedule.timesteps(1000, 100, "rounded")[::-1]
    assert ts[:7] == [0, 10, 20, 30, 40, 50, 61]
    assert ts[-2:] == [989, 999] and len(ts) == 100


def test_q_sample_closed_form():
    x0 = torch.full((1, 3, 2, 2), 0.5)
    noise = torch.ones_like(x0)
    abar = torch.tensor(0.64)
    assert torch.allclose(schedule.q_sample(x0, abar, noise), torch.full_like(x0, 0.8 * 0.5 + 0.6))


def test_ddim_step_eta0_is_deterministic_inverse_of_q_sample():
    torch.manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    eps = torch.randn_like(x0)
    abar_t, abar_prev = torch.tensor(0.3), torch.tensor(0.7)
    x_t = schedule.q_sample(x0, abar_t, eps)
    assert torch.allclose(predict_x0(x_t, eps, abar_t), x0, atol=1e-5)
    x_prev, x0_hat = ddim_step(x_t, eps, abar_t, abar_prev, eta=0.0, noise=None)
    assert torch.allclose(x_prev, schedule.q_sample(x0, abar_prev, eps), atol=1e-5)


def test_ddim_sigma_eta1_equals_ddpm_posterior_std():
    abar_t, abar_prev = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    beta_t = 1 - abar_t / abar_prev
    posterior_var = (1 - abar_prev) / (1 - abar_t) * beta_t  # Ho et al. 2020 Eq. 7
    assert ddim_sigma(abar_t, abar_prev, 1.0).item() == pytest.approx(posterior_var.sqrt().item())


def test_ddim_step_clips_x0_but_keeps_raw_eps():
    x_t = torch.full((1, 1, 1, 1), 3.0)
    eps = torch.full_like(x_t, -1.0)
    abar_t, abar_prev = torch.tensor(0.25), torch.tensor(0.81)
    x_prev, x0 = ddim_step(x_t, eps, abar_t, abar_prev, eta=0.0, noise=None)
    assert x0.item() == 1.0  # raw x0 would be (3 + sqrt(.75)) / .5 > 1
    assert x_prev.item() == pytest.approx(0.9 * 1.0 + math.sqrt(1 - 0.81) * -1.0, rel=1e-6)


def test_ddim_loop_evaluates_model_once_per_timestep_with_original_t():
    seen = []

    def eps_model(x, t):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    abar = schedule.alphas_cumprod(schedule.linear_betas(1000))
    x = torch.zeros(2, 3, 4, 4)
    gens = [seeded_generator(face_seed(1, "a.jpg", i)) for i in (0, 1)]
    ts = schedule.timesteps(400, 100, "floor")
    ddim_loop(eps_model, x, ts, abar, eta=0.5, generators=gens)
    assert len(seen) == 100 and seen[0] == [396, 396] and seen[-1] == [0, 0]


def test_ddim_loop_is_batch_invariant():
    abar = schedule.alphas_cumprod(schedule.linear_betas(1000))
    ts = schedule.timesteps(400, 10, "floor")

    def eps_model(x, t):
        return 0.1 * x + 0.01 * t.float().view(-1, 1, 1, 1)

    def run(keys):
        gens = [seeded_generator(face_seed(7, p, i)) for p, i in keys]
        x = randn_per_face([seeded_generator(face_seed(7, p, i)) for p, i in keys], (3, 8, 8), "cpu")
        return ddim_loop(eps_model, x, ts, abar, eta=1.0, generators=gens)

    together = run([("a.jpg", 0), ("b.jpg", 3), ("c.jpg", 1)])
    alone = run([("b.jpg", 3)])
    assert torch.equal(together[1], alone[0])


def test_face_generators_differ_by_path_and_index():
    a = randn_per_face([seeded_generator(face_seed(1, "x.jpg", 0))], (4,), "cpu")
    b = randn_per_face([seeded_generator(face_seed(1, "x.jpg", 1))], (4,), "cpu")
    c = randn_per_face([seeded_generator(face_seed(1, "y.jpg", 0))], (4,), "cpu")
    d = randn_per_face([seeded_generator(face_seed(2, "x.jpg", 0))], (4,), "cpu")
    assert not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    assert torch.equal(a, randn_per_face([seeded_generator(face_seed(1, "x.jpg", 0))], (4,), "cpu"))


# --- DDIM at the defaults people run (DifFace: η = 0.5, start 400, 100 steps), by hand ---------------------------

def abar_by_hand(t: int) -> float:
    """ᾱ_t = ∏_{k≤t} (1 − β_k) with β_k = 1e-4 + k·(0.02 − 1e-4)/999, in plain Python floats."""
    return math.prod(1.0 - (1e-4 + k * (0.02 - 1e-4) / 999) for k in range(t + 1))


def sigma_by_hand(t: int, t_prev: int, eta: float) -> float:
    """Song et al. 2021, Eq. 16."""
    a, a_prev = abar_by_hand(t), abar_by_hand(t_prev)
    return eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)


def difface_defaults():
    from facerestore_cli.presets import load_builtin

    p = load_builtin("difface").parameters
    return p["eta"], p["start_t"], p["steps"]


def test_difface_defaults_are_the_official_ones():
    assert difface_defaults() == (0.5, 400, 100)


@pytest.mark.parametrize("t, t_prev", [(396, 392), (200, 196), (4, 0)])
def test_ddim_sigma_at_eta_half_by_hand(t, t_prev):
    eta = difface_defaults()[0]
    abar = schedule.alphas_cumprod(schedule.linear_betas(1000))
    assert ddim_sigma(abar[t], abar[t_prev], eta).item() == pytest.approx(sigma_by_hand(t, t_prev, eta), rel=1e-9)


def test_ddim_sigma_at_the_first_difface_step_is_a_known_number():
    # Σ_{k≤396} β_k ≈ 1.606, so ᾱ_396 ≈ e^−1.61 ≈ 0.200; then σ = 0.5·√((1 − ᾱ_392)/(1 − ᾱ_396))·√(1 − ᾱ_396/ᾱ_392)
    assert abar_by_hand(396) == pytest.approx(0.19992, abs=1e-5) and abar_by_hand(392) == pytest.approx(0.20642, abs=1e-5)
    assert sigma_by_hand(396, 392, 0.5) == pytest.approx(0.08832, abs=1e-5)


def test_ddim_step_at_eta_half_by_hand():
    eta = difface_defaults()[0]
    a, a_prev = abar_by_hand(396), abar_by_hand(392)
    sigma = sigma_by_hand(396, 392, eta)
    x_t, eps, z = 0.3, -0.7, 1.3
    x0 = max(-1.0, min(1.0, (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)))
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    full = lambda v: torch.full((1, 1, 1, 1), v)  # noqa: E731
    x_prev, _ = ddim_step(full(x_t), full(eps), torch.tensor(a), torch.tensor(a_prev), eta, full(z))
    assert x_prev.item() == pytest.approx(expected, rel=1e-5)


def test_ddim_loop_at_difface_defaults_first_and_last_steps_by_hand():
    """The official schedule at the defaults: first step t = 396 → 392 with η = 0.5 and each face's first draw,
    last step t = 0 → ᾱ_prev = 1 with no noise (x_prev = x̂0, clipped)."""
    eta, start_t, steps = difface_defaults()
    abar = schedule.alphas_cumprod(schedule.linear_betas(1000))
    timesteps = schedule.timesteps(start_t, steps, "floor")
    assert timesteps[:2] == [396, 392] and timesteps[-1] == 0 and len(timesteps) == 100
    keys = [("a.jpg", 0), ("a.jpg", 1)]
    x = torch.full((2, 3, 2, 2), 0.4)
    eps_value = 0.2
    seen = []
    ddim_loop(lambda x_t, t: torch.full_like(x_t, eps_value), x, timesteps, abar, eta,
              [seeded_generator(face_seed(9, p, i)) for p, i in keys], callback=lambda e: seen.append(e.x.clone()))
    z = torch.stack([torch.randn((3, 2, 2), generator=seeded_generator(face_seed(9, p, i))) for p, i in keys])
    a, a_prev, sigma = abar_by_hand(396), abar_by_hand(392), sigma_by_hand(396, 392, eta)
    x0 = (0.4 - math.sqrt(1 - a) * eps_value) / math.sqrt(a)
    first = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps_value + sigma * z
    assert torch.allclose(seen[0], first, atol=1e-6)
    assert not torch.allclose(seen[0][0], seen[0][1])  # each face its own z
    a0 = abar_by_hand(0)
    last = ((seen[-2] - math.sqrt(1 - a0) * eps_value) / math.sqrt(a0)).clamp(-1, 1)
    assert torch.allclose(seen[-1], last, atol=1e-6)
