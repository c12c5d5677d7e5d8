"""Network configs the architecture cannot take (#19): a `train --model-config` or a preset's component `config:` with
such a value is a one-line usage error naming the key and the rule, exit 2, before anything is created."""

from __future__ import annotations

import pytest
import yaml

from cli_helpers import run_cli
from conftest import ALIGNED_LQ, PHOTOS, REPO, TINY_IRM1, TINY_IRM2, TINY_SWINIR_AT_128, TINY_UNET_AT_128, use_home
from tiny_configs import TINY_SPARNETHD, TINY_SWINIR, TINY_UNET_DIFFACE, TINY_UNET_DR2


def test_every_shipped_and_tiny_config_passes():
    from facerestore_cli.archs import check_config
    from facerestore_cli.weights.registry import load_registry

    for wid, spec in load_registry().items():
        check_config(spec.arch, spec.config or {}, wid)
    for config in (TINY_UNET_DIFFACE, TINY_UNET_DR2, TINY_UNET_AT_128, TINY_IRM1, TINY_IRM2):
        check_config("unet", config, "tiny")
    for config in (TINY_SWINIR, TINY_SWINIR_AT_128):
        check_config("swinir_difface", config, "tiny")
    check_config("sparnethd", TINY_SPARNETHD, "tiny")


@pytest.mark.parametrize("change, key, rule", [
    ({"model_channels": 16}, "model_channels", "multiple of 32 (GroupNorm's 32 groups)"),
    ({"model_channels": "32"}, "model_channels", "whole number"),
    ({"num_head_channels": 24}, "num_head_channels", "must divide the channels of every attention block"),
    ({"image_size": 30}, "image_size", "must be divisible by 4"),
    ({"num_res_blocks": [1, 2]}, "num_res_blocks", "one count per level"),
    ({"attention_sizes": [5]}, "attention_sizes", "sizes the levels have ([32, 16, 8])"),
    ({"dropout": 1.5}, "dropout", "[0, 1)"),
    ({"modelchannels": 32}, "modelchannels", "valid: image_size, in_channels, model_channels"),
])
def test_unet_rules_name_the_key_and_the_rule(change, key, rule):
    from facerestore_cli.archs import build_arch, check_config
    from facerestore_cli.errors import UsageError

    config = {**TINY_UNET_DIFFACE, **change}
    for attempt in (lambda: check_config("unet", config, "--model-config f.yaml"), lambda: build_arch("unet", config)):
        with pytest.raises(UsageError) as caught:
            attempt()
        assert f"key '{key}'" in caught.value.message and rule in caught.value.message


def test_swinir_heads_must_divide_the_embedding():
    from facerestore_cli.archs import check_config
    from facerestore_cli.errors import UsageError

    with pytest.raises(UsageError, match="key 'embed_dim' 13 must be divisible by every num_heads entry"):
        check_config("swinir_difface", {**TINY_SWINIR, "embed_dim": 13}, "x")


@pytest.mark.parametrize("content, expected", [
    ("model_channels: 16\n", "--model-config bad.yaml: unet config key 'model_channels' × channel_mult gives"),
    ("modelchannel: 32\n", "key 'modelchannel' not a setting of this network (valid: image_size"),
])
def test_train_refuses_a_model_config_before_creating_anything(tmp_path, capsys, monkeypatch, content, expected):
    use_home(monkeypatch, tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(content)
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "a.png").write_bytes((ALIGNED_LQ / "256.png").read_bytes())
    code, _o, err = run_cli(capsys, "train", "diffbfr-irm1", "--data", "faces", "-o", "run", "--model-config",
                            "bad.yaml", "--steps", "1")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "home").exists()


def test_run_refuses_a_preset_config_before_creating_anything(tiny_env, tmp_path, capsys):
    data = yaml.safe_load((REPO / "presets" / "difface.yaml").read_text())
    data["components"]["prior"]["config"] = {"num_head_channels": 48}
    preset = tmp_path / "odd.yaml"
    preset.write_text(yaml.safe_dump(data))
    for extra in ((), ("--dry-run",)):
        code, _o, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset",
                                preset, *extra)
        assert code == 2 and not (tmp_path / "out").exists(), err
        assert f"preset {preset}: component 'prior': unet config key 'num_head_channels' 48 must divide" in err


def test_architecture_descriptors_say_what_a_network_gives_and_takes():
    """Each architecture's descriptor, registered beside it: a diffusion UNet's output meaning and condition
    channels follow its config (DifFace's ε+σ UNet, DiffBFR's conditional IRM, the TEM), and eps_model refuses a
    network that does not predict ε or is given the wrong condition."""
    import torch

    from facerestore_cli.archs import EPS, EPS_VARIANCE, IMAGE, architecture
    from facerestore_cli.device import Compute
    from facerestore_cli.diffusion.samplers import eps_model
    from facerestore_cli.networks import Network
    from facerestore_cli.weights.registry import load_registry

    registry = load_registry()
    unet = architecture("unet")
    expected = {"difface-unet": (EPS_VARIANCE, 0), "diffbfr-irm1": (EPS, 3), "diffbfr-irm2": (EPS, 3),
                "diffbfr-tem": (EPS_VARIANCE, 0)}
    for wid, (meaning, condition) in expected.items():
        config = registry[wid].config
        assert (unet.output(config), unet.condition_channels(config)) == (meaning, condition), wid
    assert architecture("swinir_difface").output(registry["difface-swinir"].config) == IMAGE
    assert architecture("swinir_difface").input_size(registry["difface-swinir"].config) == 512

    compute = Compute(torch.device("cpu"), "fp32")
    conditional = Network("irm", {}, torch.nn.Identity(), compute, 8, EPS, 3)
    with pytest.raises(ValueError, match="takes 3 condition channels, 0 given"):
        eps_model(conditional)
    with pytest.raises(ValueError, match="predicts image"):
        eps_model(Network("swinir", {}, torch.nn.Identity(), compute, 8))
    x, cond = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    identity_with_t = Network("irm", {}, type("M", (torch.nn.Module,), {"forward": lambda self, a, t: a})(),
                              compute, 8, EPS, 3)
    assert torch.equal(eps_model(identity_with_t, cond)(x, torch.zeros(1)), x)
