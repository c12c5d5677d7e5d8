"""ipc-guided's identity guidance (Diffuse and Restore Eq. 6–9) and identity masks (Eq. 8, ParseNet regions),
on tiny stand-ins: a random differentiable conv "ArcFace", a toy ε-model, synthetic parse maps."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facerestore_cli.diffusion import schedule
from facerestore_cli.diffusion.guidance import identity_guidance, identity_loss, make_guide, to_unit_range
from facerestore_cli.diffusion.noise import face_seed, randn_per_face, seeded_generator
from facerestore_cli.diffusion.samplers import ddim_loop, ddim_step, predict_x0
from facerestore_cli.faces import masks
from facerestore_cli.faces.id_masks import (
    ID_CLASSES, PARSENET_CLASS, PARSENET_LABELS, build_id_mask, parsing_mask, proxy_mask, uniform_mask,
)


def tiny_embed(seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(),
                            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Tanh(),
                            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 32)).eval()
    net.requires_grad_(False)
    return lambda images01: F.normalize(net(images01 * 2 - 1), dim=1)


class ToyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return torch.tanh(self.conv(x)) + 1e-3 * t.float().view(-1, 1, 1, 1)


def setup(batch=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, 3, size, size, generator=g) * 1.6 - 0.8  # in range: no clipping anywhere
    eps = torch.randn(batch, 3, size, size, generator=g)
    abar_t, abar_prev = torch.full((batch, 1, 1, 1), 0.45), torch.full((batch, 1, 1, 1), 0.6)
    x_t = schedule.q_sample(x0, abar_t, eps)
    embed = tiny_embed()
    other = torch.rand(batch, 3, size, size, generator=g)
    return x_t, eps, abar_t, abar_prev, embed, embed(other)


def next_loss(x_prev, eps, abar_prev, target, embed):
    """L_arc of the clean estimate at the next level (same ε): exactly x̂_0 − shift/√ᾱ_prev."""
    return identity_loss(to_unit_range(predict_x0(x_prev, eps, abar_prev)), target, embed)


def small_scale(x_t, eps, abar_t, target, embed, mask=None, step=1e-2):
    corr, _ = identity_guidance(x_t, eps, abar_t, target, embed, mask, 1.0)
    return step / corr.abs().max().item()


# --- guidance -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True])
def test_guided_step_lowers_identity_loss(masked):
    x_t, eps, abar_t, abar_prev, embed, target = setup()
    mask = None
    if masked:
        mask = torch.zeros(2, 1, 16, 16)
        mask[..., 4:12, 3:13] = 1.0
    s = small_scale(x_t, eps, abar_t, target, embed, mask)
    corr, loss = identity_guidance(x_t, eps, abar_t, target, embed, mask, s)
    plain, _ = ddim_step(x_t, eps, abar_t, abar_prev, eta=0.0, noise=None)
    guided, _ = ddim_step(x_t, eps, abar_t, abar_prev, eta=0.0, noise=None, shift=corr)
    l_plain = next_loss(plain, eps, abar_prev, target, embed)
    l_guided = next_loss(guided, eps, abar_prev, target, embed)
    assert torch.allclose(loss, l_plain, atol=1e-6)  # the reported loss is that of this step's x̂_0
    assert (l_guided < l_plain).all(), (l_guided, l_plain)


def test_masked_update_leaves_unmasked_pixels_identical():
    x_t, eps, abar_t, abar_prev, embed, target = setup()
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 5:11, 5:11] = torch.linspace(0.2, 1.0, 6)
    noise = torch.randn_like(x_t)
    corr, _ = identity_guidance(x_t, eps, abar_t, target, embed, mask, 50.0)
    plain, _ = ddim_step(x_t, eps, abar_t, abar_prev, eta=0.5, noise=noise)
    guided, _ = ddim_step(x_t, eps, abar_t, abar_prev, eta=0.5, noise=noise, shift=corr)
    off = (mask == 0).expand_as(plain)
    assert torch.equal(guided[off], plain[off])
    assert not torch.equal(guided[~off], plain[~off])


def test_scale_zero_is_the_unguided_step():
    x_t, eps, abar_t, abar_prev, embed, target = setup()
    corr, _ = identity_guidance(x_t, eps, abar_t, target, embed, None, 0.0)
    noise = torch.randn_like(x_t)
    plain, _ = ddim_step(x_t, eps, abar_t, abar_prev, eta=1.0, noise=noise)
    guided, _ = ddim_step(x_t, eps, abar_t, abar_prev, eta=1.0, noise=noise, shift=corr)
    assert torch.equal(guided, plain)


def test_each_face_gets_its_own_gradient():
    x_t, eps, abar_t, _, embed, target = setup(batch=3)
    both, loss = identity_guidance(x_t, eps, abar_t, target, embed, None, 1.0)
    alone, loss1 = identity_guidance(x_t[1:2], eps[1:2], abar_t[1:2], target[1:2], embed, None, 1.0)
    assert torch.allclose(both[1:2], alone, rtol=1e-4, atol=1e-6 * alone.abs().max().item())
    assert torch.allclose(loss[1], loss1[0])


def test_no_gradient_through_the_unet_by_default_but_through_it_on_request():
    x_t, _, abar_t, _, embed, target = setup()
    model, t = ToyUNet(), 300
    backward_calls = []
    model.conv.register_full_backward_hook(lambda *args: backward_calls.append(1))
    t_batch = torch.full((2,), t, dtype=torch.long)

    with torch.no_grad():
        eps = model(x_t, t_batch)
    default, _ = identity_guidance(x_t, eps, abar_t, target, embed, None, 1.0)
    # an ε that still carries a graph back to x_t and the UNet is used detached all the same
    x_req = x_t.clone().requires_grad_(True)
    detached, _ = identity_guidance(x_req, model(x_req, t_batch), abar_t, target, embed, None, 1.0)
    assert torch.equal(detached, default)
    assert not backward_calls and all(p.grad is None for p in model.parameters())

    through, loss = identity_guidance(x_t, None, abar_t, target, embed, None, 1.0, eps_model=model, t=t)
    assert backward_calls, "the through-UNet path must backpropagate through the ε-model"
    assert all(p.grad is None for p in model.parameters())  # autograd.grad w.r.t. y_t only
    x = x_t.clone().requires_grad_(True)
    full = identity_loss(to_unit_range(predict_x0(x, model(x, t_batch), abar_t)), target, embed).sum()
    (expected,) = torch.autograd.grad(full, x)
    assert torch.allclose(through, expected, rtol=1e-5, atol=1e-10)
    assert not torch.allclose(through, default, rtol=1e-3)


def test_guidance_refuses_inference_mode_and_accepts_inference_tensors():
    x_t, eps, abar_t, _, embed, target = setup()
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="inference_mode"):
            identity_guidance(x_t, eps, abar_t, target, embed, None, 1.0)
        x_inf, eps_inf, abar_inf, target_inf = x_t.clone(), eps.clone(), abar_t.clone(), target.clone()
    corr, _ = identity_guidance(x_inf, eps_inf, abar_inf, target_inf, embed, None, 1.0)
    assert torch.equal(corr, identity_guidance(x_t, eps, abar_t, target, embed, None, 1.0)[0])


def test_clamp_modes():
    x0 = torch.tensor([-1.5, -0.2, 1.4], requires_grad=True)
    for mode, grad in (("ste", [0.5, 0.5, 0.5]), ("hard", [0.0, 0.5, 0.0]), ("none", [0.5, 0.5, 0.5])):
        img = to_unit_range(x0, mode)
        (g,) = torch.autograd.grad(img.sum(), x0)
        assert g.tolist() == grad
        assert img.tolist() == pytest.approx([-0.25, 0.4, 1.2] if mode == "none" else [0.0, 0.4, 1.0])
    with pytest.raises(ValueError):
        to_unit_range(x0, "soft")


# --- ddim_loop hook -------------------------------------------------------------------------------------------

def old_ddim_loop(eps_model, x, timesteps, abar, eta, generators):
    """ddim_loop + ddim_step as they were before the guide hook."""
    x = x.contiguous()
    for i, t in enumerate(timesteps):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        abar_t = schedule.extract(abar, t, x)
        is_last = i == len(timesteps) - 1
        abar_prev = torch.ones_like(abar_t) if is_last else schedule.extract(abar, timesteps[i + 1], x)
        eps = eps_model(x, t_batch).float()
        noise = None if (is_last or eta == 0) else randn_per_face(generators, tuple(x.shape[1:]), x.device)
        x0 = ((x - (1.0 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1.0, 1.0)
        sigma = eta * ((1 - abar_prev) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_prev).sqrt()  # DDIM Eq. 16
        x_prev = abar_prev.sqrt() * x0 + (1.0 - abar_prev - sigma**2).clamp(min=0.0).sqrt() * eps
        if noise is not None:
            x_prev = x_prev + sigma * noise
        x = x_prev
    return x


def _loop_setup():
    abar = schedule.alphas_cumprod(schedule.linear_betas(1000))
    ts = schedule.timesteps(400, 8, "floor")
    keys = [("a.jpg", 0), ("b.jpg", 2)]
    x = randn_per_face([seeded_generator(face_seed(3, p, i)) for p, i in keys], (3, 8, 8), "cpu")
    return abar, ts, keys, x


def test_ddim_loop_without_guide_is_bit_identical_to_before():
    abar, ts, keys, x = _loop_setup()
    model = ToyUNet()
    with torch.no_grad():
        for eta in (0.0, 0.7):
            old = old_ddim_loop(model, x, ts, abar, eta, [seeded_generator(face_seed(3, p, i)) for p, i in keys])
            new = ddim_loop(model, x, ts, abar, eta, [seeded_generator(face_seed(3, p, i)) for p, i in keys])
            zero = ddim_loop(model, x, ts, abar, eta, [seeded_generator(face_seed(3, p, i)) for p, i in keys],
                             guide=lambda x_t, eps, abar_t, t: torch.zeros_like(x_t))
            assert torch.equal(new, old) and torch.equal(zero, old)


def test_ddim_loop_guide_is_called_every_step_and_moves_the_result():
    abar, ts, keys, x = _loop_setup()
    model, embed, losses = ToyUNet(), tiny_embed(), []
    target = embed(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)))
    guide = make_guide(target, embed, uniform_mask(x.shape), 5.0, losses=losses)
    with torch.no_grad():
        plain = ddim_loop(model, x, ts, abar, 0.7, [seeded_generator(face_seed(3, p, i)) for p, i in keys])
        guided = ddim_loop(model, x, ts, abar, 0.7, [seeded_generator(face_seed(3, p, i)) for p, i in keys], guide=guide)
    assert len(losses) == len(ts) and all(loss.shape == (2,) for loss in losses)
    assert not torch.equal(guided, plain)


# --- masks -------------------------------------------------------------------------------------------------------

def test_parsenet_class_order_matches_facexlib_paste_mask():
    """facexlib's paste-back colormap zeroes exactly background, hat, necklace, neck and cloth in this order."""
    zeroed = {PARSENET_LABELS[i] for i, v in enumerate(masks.MASK_COLORMAP) if v == 0}
    assert zeroed == {"background", "hat", "neck_l", "neck", "cloth"}
    assert sorted(PARSENET_LABELS[i] for i in ID_CLASSES) == sorted(
        ["l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip"])


def synthetic_parse(size=256):
    c = PARSENET_CLASS
    lab = torch.zeros(size, size, dtype=torch.long)
    lab[: size // 4] = c["hair"]
    lab[size // 4:, size // 8: -size // 8] = c["skin"]
    parts = {"l_brow": (80, 84, 70, 110), "r_brow": (80, 84, 146, 186), "l_eye": (92, 100, 76, 104),
             "r_eye": (92, 100, 152, 180), "eye_g": (88, 104, 60, 196), "nose": (110, 150, 120, 136),
             "u_lip": (166, 172, 106, 150), "mouth": (172, 176, 106, 150), "l_lip": (176, 182, 106, 150)}
    for name in ("eye_g", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "mouth", "l_lip"):
        y0, y1, x0, x1 = parts[name]
        lab[y0:y1, x0:x1] = c[name]
    return lab


def test_parsing_mask_covers_identity_regions_and_is_smooth():
    lab = synthetic_parse()
    m = parsing_mask(lab[None], dilate_px=5, feather_px=16)
    assert m.shape == (1, 1, 256, 256) and m.dtype == torch.float32
    assert m.min() >= 0 and m.max() <= 1
    ident = torch.isin(lab, torch.tensor(ID_CLASSES))
    assert (m[0, 0][ident] == 1).all()
    near = F.max_pool2d(ident[None, None].float(), 7, 1, 3)[0, 0] > 0  # within 3 px per axis: ≤ 4.3 px < 5
    assert (m[0, 0][near] == 1).all()
    far = F.max_pool2d(ident[None, None].float(), 2 * 40 + 1, 1, 40)[0, 0] == 0
    hair, skin = lab == PARSENET_CLASS["hair"], lab == PARSENET_CLASS["skin"]
    assert (m[0, 0][far & hair] < 1e-3).all() and (m[0, 0][far & skin] < 1e-3).all()
    assert m[0, 0, :8, :8].max() < 1e-6 and m[0, 0, -8:, :8].max() < 1e-6  # background / hair corners
    # feathered: a ramp, no steps (Gaussian σ = 4 → slope ≤ 0.1 per pixel)
    steps = max((m[..., 1:, :] - m[..., :-1, :]).abs().max(), (m[..., 1:] - m[..., :-1]).abs().max())
    assert steps < 0.12
    assert ((m > 0.1) & (m < 0.9)).sum() > 500


def test_parsing_mask_defaults_scale_with_face_size_and_resize():
    lab = synthetic_parse()
    small = parsing_mask(lab[None], size=64)
    assert small.shape == (1, 1, 64, 64) and small.min() >= 0 and small.max() <= 1
    assert small[0, 0, 130 // 4, 128 // 4] == pytest.approx(1.0, abs=1e-5)  # the nose
    logits = F.one_hot(lab, 19).permute(2, 0, 1)[None].float()
    assert torch.equal(parsing_mask(logits), parsing_mask(lab[None]))
    # eyeglasses (frame 12 px left of the eye) stay out unless asked for
    assert parsing_mask(lab[None], dilate_px=2, feather_px=0)[0, 0, 96, 64] == 0.0
    with_glasses = parsing_mask(lab[None], dilate_px=2, feather_px=0, classes=ID_CLASSES + (PARSENET_CLASS["eye_g"],))
    assert with_glasses[0, 0, 96, 64] == 1.0


def test_proxy_mask_eq8_blob_kept_speckles_removed():
    size = 128
    x = torch.full((1, 3, size, size), 0.5)
    est = x.clone()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = (yy - 64) ** 2 + (xx - 64) ** 2 <= 12**2
    est[0, :, blob] += 0.4  # |g(x) − x| = 0.4 > δ
    for y, x0 in ((10, 10), (10, 110), (115, 20)):
        est[0, :, y, x0] = 1.0  # isolated speckles, 0.5 > δ
    est[0, :, 110:112, 100:102] = 0.0  # a 2×2 speckle
    est[0, :, 5:30, 40:90] += 0.2  # wide change below δ
    est[0, 0, 100:125, 40:70] = 1.0  # one channel only: mean 0.17 < δ, max 0.5 > δ
    m = proxy_mask(est, x, delta=0.3)
    assert m.shape == (1, 1, size, size) and m.min() >= 0 and m.max() <= 1
    assert (m[0, 0][blob] == 1).all()
    far = F.max_pool2d(blob[None, None].float(), 2 * 12 + 1, 1, 12)[0, 0] == 0
    assert m[0, 0][far].max() < 1e-6  # speckles, sub-δ change, single-channel change: all gone
    m_max = proxy_mask(est, x, delta=0.3, reduce="max")
    assert m_max[0, 0, 112, 55] == 1.0 and m_max[0, 0, 10, 10] < 1e-6
    with pytest.raises(ValueError):
        proxy_mask(est, x[..., :64])


def test_build_id_mask_dispatch_and_uniform():
    lab = synthetic_parse(64)
    est = torch.rand(2, 3, 64, 64)
    assert torch.equal(build_id_mask("none", shape=est.shape), torch.ones(2, 1, 64, 64))
    assert torch.equal(build_id_mask("none", estimate=est, size=32), torch.ones(2, 1, 32, 32))
    assert build_id_mask("parsing", labels=lab[None].numpy(), size=32).shape == (1, 1, 32, 32)
    assert build_id_mask("proxy", estimate=est, input=est).abs().max() == 0
    for bad in (dict(kind="parsing"), dict(kind="proxy", estimate=est), dict(kind="learned", shape=est.shape)):
        with pytest.raises(ValueError):
            build_id_mask(**bad)


def test_a_conditional_prior_gets_its_condition_beside_x_t():
    """ipc-guided's Eq. 5 prior: a UNet whose descriptor says it takes 3 condition channels (in_channels 6) sees
    [y_t, 2·x − 1] (condition "input", §3.2's text) or [y_t, 2·g_φ(x) − 1] ("estimate", Eq. 5) at every step of the
    ancestral chain; an unconditional one sees y_t alone (DDIM)."""
    from types import SimpleNamespace

    from facerestore_cli.device import Compute
    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator
    from facerestore_cli.networks import Network

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x, t):
            self.seen.append(x.clone())
            return torch.zeros(x.shape[0], 6, *x.shape[2:])

    class Invert(nn.Module):
        def forward(self, x):
            return 1.0 - x

    compute = Compute(torch.device("cpu"), "fp32")
    estimator = Network("ipc", {}, Invert(), compute, 8)
    abar = schedule.alphas_cumprod(schedule.linear_betas(1000))
    params = SimpleNamespace(steps=3, eta=0.0, start_t=30)
    faces = torch.rand(2, 3, 8, 8)
    gens = [seeded_generator(face_seed(1, "a", i)) for i in range(2)]
    for condition, sampler, expected in (("input", "ancestral", faces), ("estimate", "ancestral", 1.0 - faces),
                                         (None, "ddim", None)):
        spy = Spy()
        prior = Network("prior", {}, spy, compute, 8, "eps+variance", 0 if condition is None else 3)
        DiffusedEstimator(estimator, prior, abar, params, 8, sampler=sampler, condition=condition).restore(faces, gens)
        assert len(spy.seen) == 3 and all(x.shape[1] == (3 if condition is None else 6) for x in spy.seen)
        if condition:
            assert all(torch.allclose(x[:, 3:], expected * 2 - 1) for x in spy.seen)
