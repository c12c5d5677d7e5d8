"""DiffBFR (Algorithm 1): each stage's step against the closed form, the truncated starts at N1 and N2 of their own
schedules, the 128 → 512 hand-off, respacing, batch invariance, knobs, weights, and `run --method diffbfr` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from archival_helpers import invoke, report_lines
from conftest import ALIGNED_LQ, PHOTOS, TINY_DIFFBFR_STEPS, require_shared
from facerestore_cli.device import Compute
from facerestore_cli.diffusion import schedule
from facerestore_cli.diffusion.noise import face_seed, randn_per_face, seeded_generator
from facerestore_cli.diffusion.samplers import ancestral_loop, ancestral_step
from facerestore_cli.methods.cascade import DiffBFRCascade
from facerestore_cli.networks import Network
from facerestore_cli.pixels import resize_batch
from facerestore_cli.presets import load_builtin

PRESET = load_builtin("diffbfr")
ABAR_IRM = schedule.preset_alphas_cumprod(PRESET.schedule("irm1"))
ABAR_TEM = schedule.preset_alphas_cumprod(PRESET.schedule("tem"))


def beta_by_hand(t: int, start: float, end: float, steps: int) -> float:
    """β of the paper's 1-based step t, linear from start to end over `steps`."""
    return start + (t - 1) * (end - start) / (steps - 1)


def gamma_by_hand(t: int, start: float, end: float, steps: int) -> float:
    return math.prod(1 - beta_by_hand(s, start, end, steps) for s in range(1, t + 1))


# -- the math ----------------------------------------------------------------------------------------------------

def test_schedules_are_table_6s():
    assert len(ABAR_IRM) == 2000 and len(ABAR_TEM) == 1000
    assert ABAR_IRM[0].item() == pytest.approx(1 - 1e-6) and ABAR_TEM[0].item() == pytest.approx(1 - 1e-4)
    for t in (1, 1000, 2000):
        assert ABAR_IRM[t - 1].item() == pytest.approx(gamma_by_hand(t, 1e-6, 1e-2, 2000), rel=1e-9)
    assert ABAR_TEM[99].item() == pytest.approx(gamma_by_hand(100, 1e-4, 2e-2, 1000), rel=1e-9)


@pytest.mark.parametrize("t", [1000, 2, 2000])
def test_irm_step_is_algorithm_1_by_hand(t):
    """x_{t−1} = (x_t − (1 − α_t)/√(1 − γ_t) ε̂)/√α_t + √(1 − α_t) z with the IRM schedule, at the paper's step t."""
    alpha = 1 - beta_by_hand(t, 1e-6, 1e-2, 2000)
    gamma = gamma_by_hand(t, 1e-6, 1e-2, 2000)
    x, eps, z = 0.7, -0.3, 1.1
    expected = (x - (1 - alpha) / math.sqrt(1 - gamma) * eps) / math.sqrt(alpha) + math.sqrt(1 - alpha) * z
    full = lambda v: torch.full((1, 1, 1, 1), v)  # noqa: E731
    got = ancestral_step(full(x), full(eps), ABAR_IRM[t - 1], ABAR_IRM[t - 2] if t > 1 else torch.tensor(1.0), full(z))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_the_loop_keeps_tiny_betas_exact():
    """β_1 = 1e-6: the loop's step is exact to float32 rounding of the result, not of 1 − β."""
    seen = []
    x = torch.full((1, 1, 1, 1), 0.7)
    out = ancestral_loop(lambda x_t, t: seen.append(t) or torch.full_like(x_t, -0.3), x, [1, 0], ABAR_IRM,
                         [seeded_generator(face_seed(2, "a", 0))])
    z = randn_per_face([seeded_generator(face_seed(2, "a", 0))], (1, 1, 1), "cpu").item()
    alpha, gamma = 1 - beta_by_hand(2, 1e-6, 1e-2, 2000), gamma_by_hand(2, 1e-6, 1e-2, 2000)
    step = (0.7 + 0.3 * (1 - alpha) / math.sqrt(1 - gamma)) / math.sqrt(alpha) + math.sqrt(1 - alpha) * z
    a1 = gamma_by_hand(1, 1e-6, 1e-2, 2000)
    last = (step + 0.3 * (1 - a1) / math.sqrt(1 - a1)) / math.sqrt(a1)
    assert out.item() == pytest.approx(last, rel=1e-6)


def test_last_step_adds_no_noise_and_a_respaced_step_combines_the_betas():
    full = lambda v: torch.full((1, 1, 1, 1), v)  # noqa: E731
    a0 = gamma_by_hand(1, 1e-4, 2e-2, 1000)
    last = ancestral_step(full(0.2), full(0.5), full(a0), full(1.0), None)
    assert last.item() == pytest.approx((0.2 - (1 - a0) / math.sqrt(1 - a0) * 0.5) / math.sqrt(a0), rel=1e-5)
    # from step 600 straight to step 300: α = γ_600/γ_300
    g600, g300 = gamma_by_hand(600, 1e-6, 1e-2, 2000), gamma_by_hand(300, 1e-6, 1e-2, 2000)
    alpha = g600 / g300
    got = ancestral_step(full(0.1), full(0.4), full(g600), full(g300), full(-0.5))
    expected = (0.1 - (1 - alpha) / math.sqrt(1 - g600) * 0.4) / math.sqrt(alpha) + math.sqrt(1 - alpha) * -0.5
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_truncated_timesteps():
    assert schedule.timesteps(2000, 2000, "rounded") == list(range(1999, -1, -1))
    assert schedule.timesteps(1000, 3, "rounded") == [999, 500, 0]
    assert schedule.timesteps(100, 1, "rounded") == [99]
    assert schedule.timesteps(100, 100, "rounded") == list(range(99, -1, -1))
    with pytest.raises(ValueError):
        schedule.timesteps(10, 11, "rounded")


def test_full_chain_visits_every_step_with_its_own_beta():
    """With every step, the loop is Algorithm 1 verbatim: each step's α is 1 − β_t of the schedule."""
    seen = []
    abar = schedule.alphas_cumprod(schedule.linear_betas(5, 1e-3, 2e-1))

    def model(x, t):
        seen.append(t[0].item())
        return torch.full_like(x, 0.25)

    gens = [seeded_generator(face_seed(1, "a", 0))]
    x = torch.zeros(1, 1, 1, 1)
    out = ancestral_loop(model, x, schedule.timesteps(5, 5, "rounded"), abar, gens)
    assert seen == [4, 3, 2, 1, 0]
    replay = [seeded_generator(face_seed(1, "a", 0))]
    expected = 0.0
    for t in range(5, 0, -1):
        alpha, gamma = 1 - beta_by_hand(t, 1e-3, 2e-1, 5), gamma_by_hand(t, 1e-3, 2e-1, 5)
        expected = (expected - (1 - alpha) / math.sqrt(1 - gamma) * 0.25) / math.sqrt(alpha)
        if t > 1:
            expected += math.sqrt(1 - alpha) * randn_per_face(replay, (1, 1, 1), "cpu").item()
    assert out.item() == pytest.approx(expected, rel=1e-5)


# -- the cascade, with spying networks --------------------------------------------------------------------------

class Spy(torch.nn.Module):
    """A fake ε-network that records its inputs: ε = 0.1·x[:, :3] + 0.01·t."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels, self.calls = out_channels, []

    def forward(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        eps = 0.1 * x[:, :3] + 0.01 * t.float().view(-1, 1, 1, 1)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)[:, : self.out_channels]


def cascade(steps=None):
    compute = Compute(torch.device("cpu"), "fp32")
    nets = [Network(name, {}, Spy(out), compute, size, meaning, condition) for name, out, size, meaning, condition in
            (("irm1", 3, 8, "eps", 3), ("irm2", 3, 32, "eps", 3), ("tem", 6, 32, "eps+variance", 0))]
    params = type("P", (), steps or dict(TINY_DIFFBFR_STEPS))()
    return DiffBFRCascade(*nets, ABAR_IRM, ABAR_TEM, params, 32), [n.module for n in nets]


def test_stages_start_where_algorithm_1_says_and_hand_over_128_to_512():
    model, (irm1, irm2, tem) = cascade()
    faces = torch.rand(2, 3, 32, 32)
    keys = [("a.png", 0), ("b.png", 1)]
    result = model.restore(faces, [seeded_generator(face_seed(4, *k)) for k in keys])
    s = TINY_DIFFBFR_STEPS
    assert [c[1][0].item() for c in irm1.calls] == schedule.timesteps(2000, s["irm1_steps"], "rounded")
    assert [c[1][0].item() for c in irm2.calls] == schedule.timesteps(s["irm2_start"], s["irm2_steps"], "rounded")
    assert [c[1][0].item() for c in tem.calls] == schedule.timesteps(s["tem_start"], s["tem_steps"], "rounded")
    replay = [seeded_generator(face_seed(4, *k)) for k in keys]
    draw = lambda size: randn_per_face(replay, (3, size, size), "cpu")  # noqa: E731
    # IRM(-1): pure noise beside the LQ face resized to its 8 px
    lq = resize_batch(faces, 8) * 2 - 1
    assert torch.equal(irm1.calls[0][0], torch.cat([draw(8), lq], dim=1))
    for _ in range(s["irm1_steps"] - 1):
        draw(8)  # the chain's z
    # IRM(-2): q(y′_N1 | resize(x̃′0)) at γ of step N1 of the IRM schedule, beside the same condition
    x_small = irm1_output = model_output(irm1, lq, s, draw_from=None)
    condition = resize_batch(irm1_output.clamp(-1, 1), 32, clamp=False).clamp(-1, 1)
    first = irm2.calls[0][0]
    assert torch.allclose(first[:, 3:], condition, atol=1e-6)
    gamma = ABAR_IRM[s["irm2_start"] - 1].item()
    assert torch.allclose(first[:, :3], math.sqrt(gamma) * condition + math.sqrt(1 - gamma) * draw(32), atol=1e-5)
    assert x_small.shape[-1] == 8 and first.shape[-1] == 32
    # TEM: q(y_N2 | y′0) at γ of step N2 of the TEM schedule; the estimate is y′0
    for _ in range(s["irm2_steps"] - 1):
        draw(32)
    estimate = result.estimate * 2 - 1
    gamma = ABAR_TEM[s["tem_start"] - 1].item()
    assert torch.allclose(tem.calls[0][0], math.sqrt(gamma) * estimate + math.sqrt(1 - gamma) * draw(32), atol=1e-5)
    assert result.images.shape == (2, 3, 32, 32) and 0 <= result.images.min() and result.images.max() <= 1


def model_output(irm1: Spy, lq, steps, draw_from):
    """IRM(-1)'s last output, recomputed from its recorded last call (the last step adds no noise)."""
    x_last, t = irm1.calls[-1]
    eps = 0.1 * x_last[:, :3] + 0.01 * t.float().view(-1, 1, 1, 1)
    abar = ABAR_IRM[t[0].item()].item()
    return (x_last[:, :3] - math.sqrt(1 - abar) * eps) / math.sqrt(abar)


def test_cascade_is_batch_invariant():
    model, _ = cascade()
    faces = torch.rand(3, 3, 32, 32)
    keys = [("a.png", 0), ("b.png", 3), ("c.png", 1)]
    together = model.restore(faces, [seeded_generator(face_seed(9, *k)) for k in keys]).images
    model, _ = cascade()
    alone = model.restore(faces[1:2], [seeded_generator(face_seed(9, *keys[1]))]).images
    assert torch.equal(together[1], alone[0])


# -- the preset through the CLI ---------------------------------------------------------------------------------

def test_run_diffbfr_on_a_photo(tiny_diffbfr_env, tmp_path):
    require_shared()
    report = tmp_path / "r.jsonl"
    code, _o, err = invoke("run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_diffbfr_env,
                           "--detector", "retinaface_mobile0.25", "--identity-score", "--batch-size", "3",
                           "--report", report, "-q")
    assert code == 0, err
    rec = report_lines(report)[0]
    assert rec["status"] == "restored" and len(rec["faces"]) == 4 and rec["method"] == "diffbfr-tiny"
    assert [f["reason"] for f in rec["skipped_faces"]] == ["score 0.936 < --min-score 0.97"]  # the hand
    assert {k: rec["parameters"][k] for k in TINY_DIFFBFR_STEPS} == TINY_DIFFBFR_STEPS
    assert set(rec["weights"]) >= {"diffbfr-irm1", "diffbfr-irm2", "difface-unet", "arcface-ir-se50"}
    for face in rec["faces"]:
        assert set(face["identity"]) == {"vs_input", "vs_estimate"}


@pytest.mark.parametrize("args, message", [
    (("--irm2-steps", "700"), "--irm2-steps must be in [1, 600], got 700"),
    (("--tem-start-t", "1001"), "--tem-start-t must be in [1, 1000], got 1001"),
    (("--tem-start", "1001"), "--tem-start-t must be in [1, 1000], got 1001"),  # the former name still works
    (("--irm2-start", "900", "--irm2-start-t", "800"), "--irm2-start and --irm2-start-t both given"),
    (("--irm1-steps", "0"), "--irm1-steps must be ≥ 1, got 0"),
    (("--steps", "10"), "--steps is not used by method 'diffbfr-tiny': DiffBFR's stages take --irm1-steps"),
    (("--eta", "0.5"), "σ² = β (Algorithm 1: no η)"),
])
def test_diffbfr_knobs_are_validated(tiny_diffbfr_env, tmp_path, args, message):
    require_shared()
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", tiny_diffbfr_env,
                           "--aligned", "--dry-run", *args)
    assert code == 2 and message in err, err


def test_other_methods_refuse_diffbfr_knobs(tiny_env, tmp_path):
    require_shared()
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", tiny_env, "--aligned",
                           "--tem-steps", "5")
    assert code == 2 and "--tem-steps is not used by method 'difface-tiny'" in err


def test_missing_irm_weights_stop_before_any_work_with_how_to_train_them(tiny_home, tmp_path, monkeypatch):
    require_shared()
    monkeypatch.setenv("FACERESTORE_HOME", str(tiny_home))  # tiny DifFace only: no IRM files
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    from conftest import write_tiny_diffbfr_preset

    preset = write_tiny_diffbfr_preset(tmp_path / "diffbfr-tiny.yaml")
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", preset, "--aligned")
    assert code == 4 and not (tmp_path / "out").exists()
    assert "diffbfr-irm1: diffbfr_irm1_128.pth" in err and "facerestore train diffbfr-irm1" in err
    assert "diffbfr-irm2" in err and "difface-unet" not in err.split("hint:")[0]


def test_paper_defaults_are_3100_evaluations():
    params = load_builtin("diffbfr")
    from facerestore_cli.methods.diffbfr import Params

    resolved = Params.resolve(params)
    assert (resolved.irm1_steps, resolved.irm2_start, resolved.irm2_steps, resolved.tem_start, resolved.tem_steps) == \
        (2000, 1000, 1000, 100, 100)
    assert json.loads(json.dumps(resolved.as_record()))["seed"] == 12345
    assert np.isclose(ABAR_IRM[999].item(), gamma_by_hand(1000, 1e-6, 1e-2, 2000))


def test_registry_networks_are_table_6s():
    """Table 6: input size, in/out channels, inner channels, channel multipliers and attention of each stage; the
    parameter counts follow from the choices the preset documents (2 residual blocks per level, ...)."""
    from facerestore_cli.archs import build_arch
    from facerestore_cli.weights.registry import get_spec

    table6 = {"diffbfr-irm1": (128, 6, 3, 64, [1, 2, 4, 8, 8], [16], 101_630_467),
              "diffbfr-irm2": (512, 6, 3, 64, [1, 2, 4, 8, 8, 16, 16], [16], 436_518_915),
              "difface-unet": (512, 3, 6, 32, [1, 2, 4, 8, 8, 16, 16], [32, 16, 8], 159_788_454)}
    for wid, (size, c_in, c_out, inner, mult, attention, params) in table6.items():
        c = get_spec(wid).config
        assert (c["image_size"], c["in_channels"], c["out_channels"], c["model_channels"], c["channel_mult"],
                sorted(c["attention_sizes"], reverse=True)) == (size, c_in, c_out, inner, mult, attention), wid
        with torch.device("meta"):
            assert sum(p.numel() for p in build_arch("unet", c).parameters()) == params, wid
    assert PRESET.components["tem"].weights == "difface-unet"
