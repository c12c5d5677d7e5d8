"""SPARNetHD2D (DR2's enhancement module): official checkpoint layout at full size, tiny-config behaviour, and the
eval-mode spectral-norm semantics the pipeline relies on (deterministic, batch-invariant)."""


import pytest
import torch
from tiny_configs import TINY_SPARNETHD

from facerestore_cli.archs import build_arch
from facerestore_cli.archs.layout import (
    compare_layouts,
    expected_layout,
    load_manifest,
    normalize_state_dict,
)
from facerestore_cli.weights.registry import get_spec

from conftest import SHARED

MANIFEST = SHARED / "checkpoint-formats" / "dr2_sparnethd_512.json"
# DR2 createModel("SPARNetHD2D") = BaseModel(min_ch=32, max_ch=512, size=512, min_feat_size=32, att_name='spar',
# norm_type='in') with the BaseModel defaults res_depth=10, relu_type='leakyrelu', bottleneck_size=4.
DR2_SPARNETHD = {
    "min_ch": 32,
    "max_ch": 512,
    "size": 512,
    "min_feat_size": 32,
    "norm_type": "in",
    "res_depth": 10,
    "relu_type": "leakyrelu",
    "att_name": "spar",
    "bottleneck_size": 4,
}

SIZE = TINY_SPARNETHD["size"]
needs_manifest = pytest.mark.skipif(not MANIFEST.is_file(), reason="checkpoint manifests not available")


def tiny(seed: int = 0, power_iterations: int = 2) -> torch.nn.Module:
    """A tiny SPARNetHD in eval mode. Fresh spectral-norm vectors u, v are random, so sigma = u·Wv is garbage until
    power iterations have run (a trained checkpoint stores converged ones): run a few through the official path,
    training-mode forwards."""
    torch.manual_seed(seed)
    model = build_arch("sparnethd", TINY_SPARNETHD).train()
    with torch.no_grad():
        for _ in range(power_iterations):
            model(torch.randn(1, 3, SIZE, SIZE))
    return model.eval()


def image_batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def spectral_convs(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


# ---------------------------------------------------------------- full size, official layout


def test_registry_entry_uses_the_official_config():
    spec = get_spec("dr2-sparnethd")
    assert spec.arch == "sparnethd"
    assert dict(spec.config) == DR2_SPARNETHD


@needs_manifest
def test_full_size_layout_equals_manifest():
    expected = {key: tuple(shape) for key, shape, _dtype in load_manifest(MANIFEST)["tensors"]}
    actual = expected_layout("sparnethd", DR2_SPARNETHD)
    diff = compare_layouts(expected, actual)
    assert diff.ok, diff.summary()
    assert list(actual) == list(expected)  # same order too
    assert len(actual) == load_manifest(MANIFEST)["n_tensors"] == 892


@needs_manifest
def test_full_size_spectral_norm_vectors_are_buffers_and_count_is_parameters_only():
    with torch.device("meta"):
        model = build_arch("sparnethd", DR2_SPARNETHD)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert all(k.endswith(("weight_u", "weight_v")) for k in buffers)
    assert len(buffers) == 2 * len(spectral_convs(model))  # every conv is spectral-normed
    assert not any(k.endswith(".weight") and "conv2d" in k for k in params)  # weight_orig instead
    # the manifest's n_params counts parameters only (its 892 tensors also hold 377,995 u/v buffer values)
    assert sum(p.numel() for p in params.values()) == load_manifest(MANIFEST)["n_params"] == 85_793_412


@pytest.mark.slow
@needs_manifest
def test_full_size_strict_load_of_official_file_structure():
    g = torch.Generator().manual_seed(0)
    # random values: zero u/v would make sigma = 0 (NaN weights); the plain official dict has no prefix
    official = {key: torch.randn(shape, generator=g) for key, shape, _ in load_manifest(MANIFEST)["tensors"]}
    model = build_arch("sparnethd", DR2_SPARNETHD).eval()
    model.load_state_dict(normalize_state_dict(official), strict=True)
    conv = model.decoder[3].att_func.out_block[0].conv2d
    key = "decoder.3.att_func.out_block.0.conv2d."
    # the load pre-hook keeps the stored u and v (no recomputation from a plain dict without metadata)
    assert torch.equal(conv.weight_u, official[key + "weight_u"])
    assert torch.equal(conv.weight_v, official[key + "weight_v"])


# ---------------------------------------------------------------- tiny config


def test_tiny_forward_shape_and_finite():
    model = tiny()
    with torch.no_grad():
        out = model(image_batch(2))
    assert out.shape == (2, 3, SIZE, SIZE)
    assert torch.isfinite(out).all()
    # the net ends in a plain conv (no tanh, no global residual), so the output is not bounded to [-1, 1]
    # (an untrained net overshoots); callers clamp
    assert out.abs().max() > 1


def test_tiny_attention_depths_follow_the_official_schedule():
    model = tiny()
    depths = [block.att_func.depth for block in [*model.encoder[1:], *model.res_layers, *model.decoder]]
    # log2(64 / bottleneck_size) = 2, -1 per down block, the body one more than the last down block, +1 per up
    assert depths == [2, 1, 1, 1, 2, 3]
    assert len(model.res_layers) == TINY_SPARNETHD["res_depth"] + 3 - 2  # 2 down steps


def test_eval_spectral_norm_uses_stored_vectors_without_power_iteration():
    model = tiny()
    before = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        model(image_batch(1))
    assert all(torch.equal(before[k], v) for k, v in model.named_buffers())
    conv = model.out_conv.conv2d
    w = conv.weight_orig.flatten(1)
    sigma = torch.dot(conv.weight_u, w @ conv.weight_v)
    torch.testing.assert_close(conv.weight, conv.weight_orig / sigma)
    # training mode would update u and v in place on every forward
    model.train()
    with torch.no_grad():
        model(image_batch(1))
    assert not torch.equal(before["out_conv.conv2d.weight_u"], model.out_conv.conv2d.weight_u)


def test_tiny_batch_invariance_and_determinism():
    model = tiny()
    xs = image_batch(5)
    with torch.no_grad():
        a = model(xs[[0, 1, 2]])
        b = model(xs[[3, 0, 4]])
        a_again = model(xs[[0, 1, 2]])
        alone = model(xs[[0]])
    assert torch.equal(a[0], b[1])  # same sample, other batch-mates and position, same batch shape
    assert torch.equal(a, a_again)
    torch.testing.assert_close(alone[0], a[0], rtol=1e-4, atol=1e-4)  # batch size 1 may pick other kernels


def test_bad_config_is_a_usage_error():
    from facerestore_cli.errors import UsageError

    with pytest.raises(UsageError, match="sparnethd"):
        build_arch("sparnethd", {**TINY_SPARNETHD, "in_size": SIZE})
    with pytest.raises(UsageError, match="bad config for network 'sparnethd'.*norm_type"):
        build_arch("sparnethd", {**TINY_SPARNETHD, "norm_type": "layer"})
