"""Network architectures: official checkpoint layouts (full size, no forward) and tiny-config behaviour."""

import math
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_SWINIR, TINY_UNET_DIFFACE, TINY_UNET_DR2

from facerestore_cli.archs import build_arch
from facerestore_cli.archs.layout import (
    compare_layouts,
    expected_layout,
    layout_of,
    load_manifest,
    normalize_state_dict,
)
from facerestore_cli.archs.unet import qkv_attention, timestep_embedding
from facerestore_cli.errors import UsageError, WeightsError
from facerestore_cli.weights.registry import get_spec

from conftest import SHARED

MANIFESTS = SHARED / "checkpoint-formats"

# The full-size configs come from the weights registry, so these tests check the registry against the manifests.
DIFFACE_UNET = get_spec("difface-unet").config
DR2_UNET = get_spec("dr2-unet").config
DIFFACE_SWINIR = get_spec("difface-swinir").config
# manifest name -> (arch, config, wrapper key of the official file)
OFFICIAL = {
    "difface_unet_ffhq512": ("unet", DIFFACE_UNET, get_spec("difface-unet").nested_key),
    "dr2_unet_ffhq256": ("unet", DR2_UNET, get_spec("dr2-unet").nested_key),
    "difface_swinir_512": ("swinir_difface", DIFFACE_SWINIR, get_spec("difface-swinir").nested_key),
}

needs_manifests = pytest.mark.skipif(not MANIFESTS.is_dir(), reason="checkpoint manifests not available")


def manifest_path(name: str) -> Path:
    return MANIFESTS / f"{name}.json"


def tiny(arch: str, config: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_arch(arch, config).eval()


# ---------------------------------------------------------------- full size, official layouts


@needs_manifests
@pytest.mark.parametrize("name", OFFICIAL)
def test_full_size_layout_equals_manifest(name):
    arch, config, _ = OFFICIAL[name]
    expected = {key: tuple(shape) for key, shape, _dtype in load_manifest(manifest_path(name))["tensors"]}
    actual = expected_layout(arch, config)
    diff = compare_layouts(expected, actual)
    assert diff.ok, diff.summary()
    assert list(actual) == list(expected)  # same order too


@needs_manifests
@pytest.mark.parametrize("name", OFFICIAL)
def test_full_size_parameter_count_equals_manifest(name):
    arch, config, _ = OFFICIAL[name]
    with torch.device("meta"):
        model = build_arch(arch, config)
    assert sum(p.numel() for p in model.parameters()) == load_manifest(manifest_path(name))["n_params"]


@pytest.mark.slow
@needs_manifests
@pytest.mark.parametrize("name", OFFICIAL)
def test_full_size_strict_load_of_official_file_structure(name):
    arch, config, wrapper = OFFICIAL[name]
    official = {
        f"module.{key}": torch.zeros(shape, dtype=getattr(torch, dtype))
        for key, shape, dtype in load_manifest(manifest_path(name))["tensors"]
    }
    if wrapper:
        official = {wrapper: official}
    model = build_arch(arch, config)
    model.load_state_dict(normalize_state_dict(official), strict=True)
    if arch == "swinir_difface":
        assert model.layers[0].residual_group.blocks[0].attn.relative_position_index.dtype == torch.int64


# ---------------------------------------------------------------- tiny configs


@pytest.mark.parametrize("config", [TINY_UNET_DIFFACE, TINY_UNET_DR2], ids=["difface", "dr2"])
def test_tiny_unet_forward_shape_and_finite(config):
    model = tiny("unet", config)
    x = torch.randn(2, config["in_channels"], 32, 32)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]))
    assert out.shape == (2, config["out_channels"], 32, 32)
    assert torch.isfinite(out).all()


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 10]), 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(10 * freqs), torch.sin(10 * freqs)]))


def test_tiny_unet_float_and_long_timesteps_agree_and_matter():
    model = tiny("unet", TINY_UNET_DIFFACE)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        as_long = model(x, torch.tensor([396]))
        as_float = model(x, torch.tensor([396.0]))
        other = model(x, torch.tensor([4]))
    torch.testing.assert_close(as_long, as_float)
    assert not torch.allclose(as_long, other)


def test_tiny_unet_with_conditioning_channels():
    model = tiny("unet", {**TINY_UNET_DIFFACE, "in_channels": 6, "out_channels": 3})
    with torch.no_grad():
        out = model(torch.randn(1, 6, 32, 32), torch.tensor([10]))
    assert out.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("size", [64, 72, 40])
def test_tiny_swinir_forward_shape_and_finite(size):
    model = tiny("swinir_difface", TINY_SWINIR)
    x = torch.rand(2, 3, size, size + 8)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_swinir_mean_is_added_back():
    model = tiny("swinir_difface", TINY_SWINIR)
    for p in model.conv_last.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    expected = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "arch,config,shape",
    [
        ("unet", TINY_UNET_DIFFACE, (1, 3, 32, 32)),
        ("unet", TINY_UNET_DR2, (1, 3, 32, 32)),
        ("swinir_difface", TINY_SWINIR, (1, 3, 64, 64)),
    ],
    ids=["unet-difface", "unet-dr2", "swinir"],
)
def test_meta_build_then_assign_load_equals_eager_model(arch, config, shape):
    """The weight store may build on ``meta`` and load with ``assign=True``: nothing may be left uninitialised."""
    eager = tiny(arch, config)
    with torch.device("meta"):
        lazy = build_arch(arch, config).eval()
    lazy.load_state_dict(eager.state_dict(), strict=True, assign=True)
    x = torch.rand(shape)
    args = (x, torch.tensor([123])) if arch == "unet" else (x,)
    with torch.no_grad():
        torch.testing.assert_close(lazy(*args), eager(*args))


# ---------------------------------------------------------------- attention


def legacy_qkv_attention_reference(qkv, n_heads):
    """QKVAttentionLegacy.forward from improved/guided-diffusion, verbatim maths."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v)
    return a.reshape(bs, -1, length)


def new_order_qkv_attention_reference(qkv, n_heads):
    """QKVAttention.forward from guided-diffusion, verbatim maths."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.chunk(3, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum(
        "bct,bcs->bts", (q * scale).view(bs * n_heads, ch, length), (k * scale).view(bs * n_heads, ch, length)
    )
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v.reshape(bs * n_heads, ch, length))
    return a.reshape(bs, -1, length)


@pytest.mark.parametrize("n_heads,ch,length", [(1, 8, 16), (4, 64, 64), (3, 16, 10)])
def test_attention_equals_legacy_qkv_reference(n_heads, ch, length):
    qkv = torch.randn(2, 3 * n_heads * ch, length, generator=torch.Generator().manual_seed(n_heads))
    expected = legacy_qkv_attention_reference(qkv, n_heads)
    torch.testing.assert_close(qkv_attention(qkv, n_heads, legacy_order=True), expected, rtol=1e-5, atol=1e-5)
    # the two orders really differ for more than one head
    if n_heads > 1:
        assert not torch.allclose(qkv_attention(qkv, n_heads, legacy_order=False), expected, atol=1e-3)


def test_attention_new_order_equals_reference():
    qkv = torch.randn(2, 3 * 4 * 16, 20, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        qkv_attention(qkv, 4, legacy_order=False), new_order_qkv_attention_reference(qkv, 4), rtol=1e-5, atol=1e-5
    )


# ---------------------------------------------------------------- reduced precision


def test_tiny_unet_under_bf16_autocast_keeps_group_norm_and_output_block_in_fp32(monkeypatch):
    model = tiny("unet", TINY_UNET_DIFFACE)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([250])
    with torch.no_grad():
        reference = model(x, t)

    seen_dtypes = []
    original_group_norm = torch.nn.functional.group_norm

    def recording_group_norm(inp, *args, **kwargs):
        seen_dtypes.append(inp.dtype)
        return original_group_norm(inp, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "group_norm", recording_group_norm)
    conv_out = {}

    def record(name):
        def hook(_module, inputs, out) -> None:
            conv_out[name] = (inputs[0].dtype, out.dtype)
        return hook

    model.input_blocks[0].register_forward_hook(record("body"))
    model.out[2].register_forward_hook(record("out"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert seen_dtypes and set(seen_dtypes) == {torch.float32}
    assert conv_out["body"][1] == torch.bfloat16  # the body's convs did run in reduced precision
    assert conv_out["out"] == (torch.float32, torch.float32)  # the output block in fp32, as the reference's use_fp16
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_group_norm_returns_input_dtype():
    from facerestore_cli.archs.unet import GroupNorm32

    norm = GroupNorm32(32, 64)
    x = torch.randn(2, 64, 4, 4).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, norm(x.float()).to(torch.bfloat16))


# ---------------------------------------------------------------- layouts and state-dict helpers


def test_layout_diff_counts_and_summary():
    expected = {"a.weight": (2, 3), "b.weight": (4,), "c.weight": (1,), "conv_first.1.weight": (180, 192, 3, 3)}
    actual = {"a.weight": (2, 3), "conv_first.1.weight": (180, 3, 3, 3), "extra.bias": (5,)}
    diff = compare_layouts(expected, actual)
    assert not diff.ok
    assert diff.missing == ["b.weight", "c.weight"]
    assert diff.unexpected == ["extra.bias"]
    assert diff.mismatched == [("conv_first.1.weight", (180, 192, 3, 3), (180, 3, 3, 3))]
    assert diff.summary() == (
        "2 missing keys (e.g. b.weight, c.weight), 1 unexpected key (e.g. extra.bias), "
        "1 shape mismatch: conv_first.1.weight expected (180,192,3,3) got (180,3,3,3)"
    )
    assert diff.summary(max_items=1).startswith("2 missing keys (e.g. b.weight), ")
    assert compare_layouts(expected, expected).ok


def test_layout_diff_of_tiny_models_detects_wrong_config():
    with torch.device("meta"):
        model = build_arch("unet", TINY_UNET_DR2)
    diff = compare_layouts(expected_layout("unet", TINY_UNET_DIFFACE), layout_of(model))
    assert not diff.ok and diff.missing and diff.unexpected and diff.mismatched


def test_normalize_state_dict_unwraps_and_strips():
    t = torch.zeros(1)
    assert normalize_state_dict({"module.a": t, "module.b.c": t}) == {"a": t, "b.c": t}
    assert list(normalize_state_dict({"state_dict": {"module.a": t}, "epoch": 3})) == ["a"]
    assert list(normalize_state_dict({"params_ema": {"x": t}, "params": {"y": t}}, nested_key="params")) == ["y"]
    assert list(normalize_state_dict({"model.net.a": t, "other": t}, strip_prefix="model.")) == ["net.a", "other"]
    with pytest.raises(WeightsError):
        normalize_state_dict({"state_dict": {"a": t}}, nested_key="params_ema")
    with pytest.raises(WeightsError):
        normalize_state_dict({"a": t, "step": 3})
    with pytest.raises(WeightsError):
        normalize_state_dict([t])


def test_unknown_arch_and_bad_config_are_usage_errors():
    with pytest.raises(UsageError):
        build_arch("no_such_net", {})
    with pytest.raises(UsageError):
        build_arch("unet", {**TINY_UNET_DR2, "not_a_key": 1})
