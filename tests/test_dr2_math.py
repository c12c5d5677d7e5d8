"""DR2 math against closed forms: the MATLAB-cubic resizer and Φ_N, the respaced DDPM step with learned-range
variance, ω, the refinement (Eq. 10) and the sampling loop (Eq. 9–11)."""

import math

import numpy as np
import pytest
import torch

from facerestore_cli.diffusion import schedule
from facerestore_cli.diffusion.noise import face_seed, randn_per_face, seeded_generator
from facerestore_cli.diffusion.resize import contributions, lowpass, resize
from facerestore_cli.diffusion.samplers import ddpm_step, dr2_loop, dr2_omega, dr2_refine, respaced_schedule

ABAR = schedule.alphas_cumprod(schedule.linear_betas(1000))
TS = schedule.timesteps(1000, 100, "rounded")[::-1]

# MATLAB imresize cubic weights (a = -0.5), worked by hand: ×2 upscaling samples the kernel at ±0.25, ±0.75, ±1.25,
# ±1.75; ×0.5 downscaling (antialiased) samples 0.5·cubic(0.5·d) at d = ±0.5, ±1.5, ±2.5, ±3.5.
UP2 = [-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375]
DOWN2 = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


def checkerboard(size: int) -> torch.Tensor:
    i = torch.arange(size)
    return ((-1.0) ** (i[:, None] + i[None, :])).expand(1, 3, size, size).clone()


def ramp(size: int) -> torch.Tensor:
    i = torch.arange(size, dtype=torch.float32)
    return (0.003 * i[:, None] - 0.002 * i[None, :]).expand(2, 3, size, size).clone()


# --- resizer ---------------------------------------------------------------------------------------------------------

def test_upscale_impulse_is_matlab_cubic_kernel():
    x = torch.zeros(1, 1, 1, 8)
    x[..., 3] = 1.0
    out = resize(x, scale=(1.0, 2.0))
    assert out.shape == (1, 1, 1, 16)
    expected = torch.tensor([0, 0, 0] + UP2 + [0] * 5, dtype=torch.float32)
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-7)


def test_downscale_by_two_with_symmetric_border_by_hand():
    v = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 5.0, 3.0]
    out = resize(torch.tensor(v).view(1, 1, 1, -1), scale=(1.0, 0.5))[0, 0, 0]
    assert out.shape == (5,)
    # output 1 sits at u = 1.5 (1-based); its taps are input pixels -2..5, mirrored symmetrically to 3,2,1,1,2,3,4,5
    first = sum(w * v[k - 1] for w, k in zip(DOWN2, [3, 2, 1, 1, 2, 3, 4, 5]))
    # output 3 sits at u = 5.5, fully inside: taps 2..9
    third = sum(w * v[k - 1] for w, k in zip(DOWN2, range(2, 10)))
    # output 5 sits at u = 9.5: taps 6..13, mirrored to 6,7,8,9,10,10,9,8
    fifth = sum(w * v[k - 1] for w, k in zip(DOWN2, [6, 7, 8, 9, 10, 10, 9, 8]))
    assert out[0].item() == pytest.approx(first, abs=1e-5)
    assert out[2].item() == pytest.approx(third, abs=1e-5)
    assert out[4].item() == pytest.approx(fifth, abs=1e-5)


def test_resize_matches_basicsr_matlab_imresize():
    import facerestore_cli.compat  # noqa: F401  (before basicsr)

    matlab = pytest.importorskip("basicsr.utils.matlab_functions")
    torch.manual_seed(0)
    img = torch.rand(3, 128, 96)
    for scale in (0.25, 0.5, 1 / 16, 4.0):
        small = img[:, :32, :24] if scale > 1 else img
        ref = matlab.imresize(small, scale)
        ours = resize(small[None], scale=scale)[0]
        assert ours.shape == ref.shape
        assert torch.allclose(ours, ref, atol=1e-5), scale


def test_non_integer_output_grid_is_centred():
    # 31 → ceil(31/3) = 11 pixels: the official resizer shifts the grid by (11 − 31/3)/2 to keep the centre.
    x = torch.arange(1, 32, dtype=torch.float64).view(1, 1, 1, -1)  # value = 1-based pixel index
    out = resize(x, scale=(1.0, 1 / 3))[0, 0, 0]
    assert out.shape == (11,)
    shift = (11 - 31 / 3) / 2
    u = (torch.arange(1, 12, dtype=torch.float64) - shift) * 3 + 0.5 * (1 - 3)
    interior = (u - 6 >= 1) & (u + 6 <= 31)  # cubic reproduces a ramp where no tap needs the mirror
    assert interior.sum() >= 5
    assert torch.allclose(out[interior], u[interior], atol=1e-9)
    assert torch.allclose(u + u.flip(0), torch.full_like(u, 32.0))


def test_weights_rows_sum_to_one_and_indices_in_range():
    for n_in, n_out, s in [(256, 16, 1 / 16), (16, 256, 16.0), (256, 86, 1 / 3), (86, 256, 3.0), (7, 3, 0.4)]:
        idx, w = contributions(n_in, n_out, s)
        assert np.allclose(w.sum(axis=1), 1.0) and idx.min() >= 0 and idx.max() < n_in


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_down_up_shapes(n):
    x = torch.rand(2, 3, 256, 256)
    down = resize(x, scale=1 / n)
    assert down.shape == (2, 3, 256 // n, 256 // n)
    assert resize(down, scale=float(n)).shape == x.shape
    assert lowpass(x, n).shape == x.shape
    if n == 1:
        assert lowpass(x, 1) is x


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_lowpass_keeps_constants(n):
    x = torch.full((1, 3, 256, 256), 0.37)
    assert torch.allclose(lowpass(x, n), x, atol=1e-6)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_lowpass_removes_checkerboard_and_keeps_ramps(n):
    c = checkerboard(256)
    inner = slice(3 * n + 8, 256 - 3 * n - 8)  # away from the symmetric-border effects
    assert lowpass(c, n)[..., inner, inner].abs().max() < 1e-5
    r = ramp(256)
    assert torch.allclose(lowpass(r, n)[..., inner, inner], r[..., inner, inner], atol=1e-5)


def test_lowpass_odd_factor_damps_checkerboard():
    assert lowpass(checkerboard(256), 3)[..., 24:-24, 24:-24].abs().max() < 0.02


def test_resize_follows_device_and_dtype():
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    assert lowpass(x, 4).dtype == torch.float64


# --- respaced schedule and the DDPM step ----------------------------------------------------------------------------

def test_respaced_schedule_closed_forms():
    s = respaced_schedule(ABAR, TS)
    assert s["timesteps"].tolist() == TS
    abar = ABAR[TS]
    assert torch.equal(s["alphas_cumprod"], abar)
    assert s["alphas_cumprod_prev"][0].item() == 1.0 and torch.equal(s["alphas_cumprod_prev"][1:], abar[:-1])
    assert s["betas"][0].item() == pytest.approx(1e-4, rel=1e-12)  # 1 − ᾱ_0
    i = 6  # t = 61 after 50: a stride-11 step
    assert TS[i - 1 : i + 1] == [50, 61]
    beta = 1 - ABAR[61].item() / ABAR[50].item()
    assert s["betas"][i].item() == pytest.approx(beta, rel=1e-12)
    assert s["betas"][i].item() == pytest.approx(1 - math.prod(1 - b for b in schedule.linear_betas(1000)[51:62].tolist()), rel=1e-10)
    pv = beta * (1 - ABAR[50].item()) / (1 - ABAR[61].item())
    assert s["posterior_variance"][i].item() == pytest.approx(pv, rel=1e-12)
    assert s["posterior_variance"][0].item() == 0.0
    assert s["posterior_log_variance_clipped"][0].item() == pytest.approx(math.log(s["posterior_variance"][1].item()))
    assert s["posterior_log_variance_clipped"][i].item() == pytest.approx(math.log(pv), rel=1e-12)
    c1 = beta * math.sqrt(ABAR[50].item()) / (1 - ABAR[61].item())
    c2 = (1 - ABAR[50].item()) * math.sqrt(1 - beta) / (1 - ABAR[61].item())
    assert s["posterior_mean_coef1"][i].item() == pytest.approx(c1, rel=1e-12)
    assert s["posterior_mean_coef2"][i].item() == pytest.approx(c2, rel=1e-12)
    assert s["log_betas"][i].item() == pytest.approx(math.log(beta), rel=1e-12)


def test_unrespaced_schedule_gives_back_original_betas():
    s = respaced_schedule(ABAR, list(range(1000)))
    assert torch.allclose(s["betas"], schedule.linear_betas(1000), rtol=1e-9, atol=0)
    with pytest.raises(ValueError):
        respaced_schedule(ABAR, [0, 10, 10])


def _hand_step(x, eps, v, z, i):
    """Ho et al. 2020 Eq. 4/7 + Nichol & Dhariwal Eq. 15 in numpy float64, from ᾱ alone."""
    abar_full = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    a, a_prev = abar_full[TS[i]], (abar_full[TS[i - 1]] if i > 0 else 1.0)
    beta = 1 - a / a_prev
    beta_tilde = beta * (1 - a_prev) / (1 - a)
    if i == 0:
        a1, a0 = abar_full[TS[1]], abar_full[TS[0]]
        beta_tilde = (1 - a1 / a0) * (1 - a0) / (1 - a1)  # log clipped to β̃_1 at index 0
    x0 = np.clip((x - np.sqrt(1 - a) * eps) / np.sqrt(a), -1, 1)
    mu = np.sqrt(a_prev) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
    f = (v + 1) / 2
    log_var = f * np.log(beta) + (1 - f) * np.log(beta_tilde)
    return mu, np.exp(0.5 * log_var), x0


@pytest.mark.parametrize("i", [42, 1, 99])
def test_ddpm_step_matches_hand_computation(i):
    rng = np.random.default_rng(i)
    x = rng.normal(size=(2, 3, 4, 4)) * 1.5
    eps, z = rng.normal(size=x.shape), rng.normal(size=x.shape)
    v = rng.uniform(-1, 1, size=x.shape)
    mu, sigma, x0 = _hand_step(x, eps, v, z, i)
    t = lambda a: torch.from_numpy(a).float()  # noqa: E731
    out = torch.cat([t(eps), t(v)], dim=1)
    x_prev, x0_hat = ddpm_step(t(x), out, i, respaced_schedule(ABAR, TS), t(z))
    assert np.allclose(x0_hat.numpy(), x0, atol=1e-5)
    assert np.allclose(x_prev.numpy(), mu + sigma * z, atol=1e-5)
    assert (np.abs(x0) == 1).any()  # the clip was exercised


def test_ddpm_step_at_index_zero_adds_no_noise_and_mean_is_ho_eq11():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 4, 4)) * 0.05
    eps, v = rng.normal(size=x.shape) * 0.01, np.zeros(x.shape)
    sched = respaced_schedule(ABAR, TS)
    out = torch.from_numpy(np.concatenate([eps, v], axis=1)).float()
    x_prev, _ = ddpm_step(torch.from_numpy(x).float(), out, 0, sched, torch.ones(1, 3, 4, 4))
    mu, _, _ = _hand_step(x, eps, v, None, 0)
    assert np.allclose(x_prev.numpy(), mu, atol=1e-6)
    # without clipping, μ equals Ho et al. Eq. 11 / DR2 Eq. 4: (x − β/√(1−ᾱ) ε)/√α over the respaced β
    i = 30
    a, beta = sched["alphas_cumprod"][i].item(), sched["betas"][i].item()
    x_prev, _ = ddpm_step(torch.from_numpy(x).float(), out, i, sched, None, clip=False)
    assert np.allclose(x_prev.numpy(), (x - beta / math.sqrt(1 - a) * eps) / math.sqrt(1 - beta), atol=1e-6)


def test_ddpm_step_checks_channels():
    with pytest.raises(ValueError):
        ddpm_step(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), 5, respaced_schedule(ABAR, TS), None)


# --- DR2 -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "n, tau, omega",
    [(1, 0, 5), (1, 40, 45), (2, 10, 20), (3, 22, 42), (4, 22, 42), (5, 35, 60), (8, 35, 60), (9, 35, 65),
     (16, 35, 65), (16, 69, 99), (16, 75, 99), (8, 80, 99), (1, 99, 99)],
)
def test_dr2_omega_table(n, tau, omega):
    assert dr2_omega(n, tau) == omega


def test_dr2_omega_rejects_bad_arguments():
    for n, tau in [(0, 10), (4, -1), (4, 100)]:
        with pytest.raises(ValueError):
            dr2_omega(n, tau)


def test_refine_with_n1_is_q_sample_of_y():
    y, x, noise = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    abar = torch.tensor(0.3, dtype=torch.float64)
    assert torch.equal(dr2_refine(x, y, abar, noise, 1), schedule.q_sample(y, abar, noise))


def test_refine_keeps_x_high_frequencies_and_y_low_frequencies():
    torch.manual_seed(0)
    y = torch.rand(2, 3, 256, 256) * 2 - 1
    noise = torch.randn_like(y)
    abar = ABAR[TS[41]]
    y_prev = schedule.q_sample(y, abar, noise)
    x = 0.5 * checkerboard(256).expand(2, -1, -1, -1) + ramp(256)  # high frequency + low frequency
    refined = dr2_refine(x, y, abar, noise, 4)
    # Eq. 10 by linearity: refined − x = Φ(y_{i−1} − x)
    assert torch.allclose(refined - x, lowpass(y_prev - x, 4), atol=1e-5)
    # x's checkerboard survives, its ramp is replaced by y_{i−1}'s low frequencies (away from the borders)
    inner = slice(24, -24)
    expected = 0.5 * checkerboard(256) + lowpass(y_prev, 4)
    assert torch.allclose(refined[..., inner, inner], expected[..., inner, inner], atol=1e-5)


def toy_model(x, t):
    """Elementwise stand-in for the UNet: ε̂ and a variance value in (−1, 1)."""
    tt = t.float().view(-1, 1, 1, 1)
    return torch.cat([0.3 * x + 1e-4 * tt, torch.tanh(x - 2e-3 * tt)], dim=1)


def gens(keys):
    return [seeded_generator(face_seed(5, p, k)) for p, k in keys]


def test_dr2_loop_calls_model_from_omega_to_tau_and_returns_x0_at_tau():
    calls = []

    def model(x, t):
        out = toy_model(x, t)
        calls.append((x.clone(), t.clone(), out))
        return out

    y = torch.rand(2, 3, 32, 32) * 2 - 1
    keys = [("a.png", 0), ("a.png", 1)]
    result = dr2_loop(model, y, TS, ABAR, n=4, tau=22, generators=gens(keys))
    assert len(calls) == 42 - 22 + 1
    assert [c[1].tolist() for c in calls] == [[TS[i]] * 2 for i in range(42, 21, -1)]
    assert calls[0][1][0].item() == TS[42] == 424 and calls[-1][1][0].item() == TS[22] == 222

    # x_ω = q_sample(y, ᾱ at respaced ω) with each face's first draw (Eq. 9)
    g = gens(keys)
    draw = lambda: randn_per_face(g, (3, 32, 32), "cpu")  # noqa: E731
    x_omega = schedule.q_sample(y, ABAR[TS[42]], draw())
    assert torch.allclose(calls[0][0], x_omega, atol=1e-6)
    # then: ancestral z, refinement noise, with y re-noised to respaced level ω − 1 (t = TS[41])
    sched = respaced_schedule(ABAR, TS)
    x, _ = ddpm_step(calls[0][0], calls[0][2], 42, sched, draw())
    x = dr2_refine(x, y, ABAR[TS[41]], draw(), 4)
    assert torch.allclose(calls[1][0], x, atol=1e-6)

    # returned: clipped x̂0 of the τ step (Eq. 11)
    x_tau, _, out = calls[-1]
    a = ABAR[TS[22]].item()
    x0 = ((x_tau - math.sqrt(1 - a) * out[:, :3]) / math.sqrt(a)).clamp(-1, 1)
    assert torch.allclose(result, x0, atol=1e-5)


def test_dr2_loop_n1_tau0_and_tau_at_cap():
    seen = []

    def model(x, t):
        seen.append(t[0].item())
        return toy_model(x, t)

    y = torch.zeros(1, 3, 8, 8)
    dr2_loop(model, y, TS, ABAR, n=1, tau=0, generators=gens([("b.png", 0)]))
    assert seen == [TS[i] for i in range(5, -1, -1)] and seen[-1] == 0
    seen.clear()
    dr2_loop(model, y, TS, ABAR, n=16, tau=99, generators=gens([("b.png", 0)]))
    assert seen == [999]


def test_dr2_loop_callback_sees_every_step():
    events = []
    y = torch.zeros(1, 3, 8, 8)
    result = dr2_loop(toy_model, y, TS, ABAR, 2, 10, gens([("c.png", 0)]), callback=events.append)
    assert [e.t for e in events] == [TS[i] for i in range(20, 9, -1)]
    assert events[-1].total == 11 and torch.equal(events[-1].x0, result)


def test_dr2_loop_is_batch_invariant():
    y_all = torch.rand(3, 3, 64, 64) * 2 - 1
    keys = [("a.jpg", 0), ("b.jpg", 3), ("c.jpg", 1)]
    together = dr2_loop(toy_model, y_all, TS, ABAR, 4, 22, gens(keys))
    alone = dr2_loop(toy_model, y_all[1:2], TS, ABAR, 4, 22, gens(keys[1:2]))
    assert torch.equal(together[1], alone[0])
    channels_last = dr2_loop(toy_model, y_all.to(memory_format=torch.channels_last), TS, ABAR, 4, 22, gens(keys))
    assert torch.equal(channels_last, together)
