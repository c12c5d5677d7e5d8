"""Methods as typed plugins: a method's knobs come from its Params (a toy method beside its preset gets flags,
validation and report parameters without any edit of the CLI), travel to the sampler unchanged, and are validated,
with the weights and the output folder, before any work, by --dry-run as by a real run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from archival_helpers import invoke, make_one_face_photos, tiny_run
from conftest import ALIGNED_FACE_PARAMETERS, ALIGNED_LQ, KEEPING_PARAMETERS, require_shared

TOY_MODULE = '''
from dataclasses import dataclass

from facerestore_cli.methods.params import MethodParams, knob


@dataclass(frozen=True)
class Params(MethodParams):
    strength: float = knob("--toy-strength", "How far to move the face's brightness.", min=0.0, max=1.0)
    mode: str = knob("--toy-mode", "Brighten or darken.", choices=("brighten", "darken"))


def required_weights(preset, params):
    return []


class Toy:
    def __init__(self, params):
        self.params = params

    def restore(self, faces, generators, callback=None):
        from facerestore_cli.methods.base import Restoration

        sign = 1.0 if self.params.mode == "brighten" else -1.0
        return Restoration((faces + sign * self.params.strength).clamp(0.0, 1.0))


def build(preset, params, networks):
    return Toy(params)
'''

TOY_PRESET = """\
name: toy
method: toy
title: Toy method from a module beside its preset
face_size: 64
components: {}
parameters:
  strength: 0.2
  mode: brighten
  seed: 1
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY_MODULE)
    (folder / "toy.yaml").write_text(TOY_PRESET)
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "empty-home"))  # the toy needs no weights
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    return folder / "toy.yaml"


def test_toy_method_gets_its_flags_in_help(toy):
    code, stdout, _err = invoke("run", "--help", "--preset", toy)
    assert code == 0
    assert "--toy-strength" in stdout and "--toy-mode" in stdout and "brighten|darken" in stdout
    code, stdout, _err = invoke("run", "--help")
    assert code == 0 and "--toy-strength" not in stdout and "--steps" in stdout


def test_toy_method_runs_with_its_knob_and_reports_its_parameters(toy, tmp_path):
    require_shared()
    crop = ALIGNED_LQ / "256.png"
    report = tmp_path / "r.jsonl"
    code, _o, err = invoke("run", crop, "-o", tmp_path / "out", "--preset", toy, "--aligned", "--toy-strength", "0.5",
                           "--report", report, "-q")
    assert code == 0, err
    record = json.loads(report.read_text().splitlines()[0])
    assert record["method"] == "toy"
    assert record["parameters"] == {"strength": 0.5, "mode": "brighten", "seed": 1, "detector": None, **ALIGNED_FACE_PARAMETERS,
                                    "detect_max_side": None, "aligned": True, "precision": "fp32", "compile": False,
                                    "channels_last": False, "tool_version": "0.1.0", **KEEPING_PARAMETERS}
    before = np.asarray(Image.open(crop).convert("RGB"), dtype=np.float32)
    after = np.asarray(Image.open(tmp_path / "out" / "256.png").convert("RGB"), dtype=np.float32)
    assert after.mean() - before.mean() > 60  # +0.5 of full scale, clipped at white


@pytest.mark.parametrize("args, message", [
    (("--toy-strength", "2"), "--toy-strength must be in [0, 1], got 2.0"),
    (("--toy-mode", "sideways"), "--toy-mode must be one of brighten, darken, got 'sideways'"),
    (("--steps", "10"), "--steps is not used by method 'toy'"),
])
def test_toy_method_validates_its_knobs_before_any_work(toy, tmp_path, args, message):
    require_shared()
    for dry in ((), ("--dry-run",)):
        code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", toy, "--aligned",
                               *args, *dry)
        assert code == 2 and message in err, (dry, err)
        assert not (tmp_path / "out").exists()


def test_preset_and_method_together_is_a_usage_error(toy, tmp_path):
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", toy, "--method", "dr2")
    assert code == 2 and "--method and --preset both name a preset" in err


# -- dry run: everything a real run checks before its first photo ------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--steps", "0"), "--steps must be ≥ 1, got 0"),
    (("--steps", "1000"), "--steps must be in [1, --start-t=400], got 1000"),
    (("--start-t", "2000"), "--start-t must be in [1, 999], got 2000"),
    (("--eta", "-1"), "--eta must be in [0, 1], got -1.0"),
    (("--detector", "yolo"), "unknown detector 'yolo'"),
])
def test_dry_run_refuses_what_a_real_run_refuses(tiny_env, tmp_path, args, message):
    require_shared()
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    for dry in (("--dry-run",), ()):
        code, stdout, err = invoke("run", photo, "-o", tmp_path / "out", "--preset", tiny_env, *args, *dry)
        assert code == 2 and message in err and stdout == "", (dry, err)


def test_dry_run_with_a_missing_weight_exits_4_with_the_real_runs_message(tiny_home, tmp_path, monkeypatch):
    require_shared()
    home = tmp_path / "home"
    shutil.copytree(tiny_home, home)
    (home / "weights" / "iddpm_ffhq512_ema500000.pth").unlink()
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    results = [tiny_run(home / "difface-tiny.yaml", photo, "-o", tmp_path / "out", *dry) for dry in (("--dry-run",), ())]
    (dry_code, dry_out, dry_err), (code, _out, err) = results
    assert dry_code == code == 4 and dry_out == ""
    assert "iddpm_ffhq512_ema500000.pth" in dry_err and dry_err == err


def test_output_that_is_a_file_is_a_usage_error_dry_or_not(tiny_env, tmp_path):
    require_shared()
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    (tmp_path / "taken").write_text("not a folder")
    for dry in (("--dry-run",), ()):
        code, _o, err = tiny_run(tiny_env, photo, "-o", tmp_path / "taken", *dry)
        assert code == 2 and f"-o {tmp_path / 'taken'} exists and is not a folder" in err, err


def test_dry_run_of_a_valid_run_lists_it_and_loads_nothing(tiny_env, tmp_path, monkeypatch):
    require_shared()
    photo = make_one_face_photos(tmp_path / "in", ["a.png"])[0]
    monkeypatch.setattr("facerestore_cli.runner.load_models", lambda *a, **k: pytest.fail("loaded a model"))
    code, stdout, err = tiny_run(tiny_env, photo, "-o", tmp_path / "out", "--dry-run", "--steps", "7")
    assert code == 0, err
    assert stdout.split("\t")[:2] == ["run", str(photo)] and stdout.rstrip().endswith("new")
    assert not (tmp_path / "out").exists()


# -- knobs reach the math unchanged --------------------------------------------------------------------------------

def test_difface_knobs_reach_ddim_loop_unchanged(tiny_env, tmp_path, monkeypatch):
    require_shared()
    from facerestore_cli.diffusion import schedule
    from facerestore_cli.methods import diffused_estimator

    seen = []
    real = diffused_estimator.ddim_loop

    def spy(eps_model, x, timesteps, abar, eta, generators, callback=None, guide=None):
        seen.append({"timesteps": list(timesteps), "eta": eta, "faces": x.shape[0]})
        return real(eps_model, x, timesteps, abar, eta, generators, callback, guide=guide)

    monkeypatch.setattr(diffused_estimator, "ddim_loop", spy)
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", tiny_env, "--aligned",
                           "--steps", "7", "--eta", "0.25", "--start-t", "300", "-q")
    assert code == 0, err
    assert seen == [{"timesteps": schedule.timesteps(300, 7, "floor"), "eta": 0.25, "faces": 1}]
    assert seen[0]["timesteps"][0] == 257 and len(seen[0]["timesteps"]) == 7


def test_dr2_knobs_reach_dr2_loop_unchanged(tiny_dr2_env, tmp_path, monkeypatch):
    require_shared()
    from facerestore_cli.methods import degradation_remover

    seen = []
    real = degradation_remover.dr2_loop

    def spy(model, y, timesteps, abar, n, tau, generators, callback=None):
        seen.append((n, tau))
        return real(model, y, timesteps, abar, n, tau, generators, callback)

    monkeypatch.setattr(degradation_remover, "dr2_loop", spy)
    code, _o, err = invoke("run", ALIGNED_LQ / "256.png", "-o", tmp_path / "out", "--preset", tiny_dr2_env,
                           "--aligned", "--dr2-n", "8", "--dr2-tau", "35", "-q")
    assert code == 0, err
    assert seen == [(8, 35)]
