"""The CLI's contract with people and scripts: exit codes, one-line errors with hints, fast --help without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from cli_helpers import run_cli
from conftest import PHOTOS, REPO


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from facerestore_cli.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['weights', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "heavy = [m for m in ('torch', 'cv2', 'numpy', 'facexlib', 'basicsr') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
    assert "--steps" in res.stdout and "Exit codes" in res.stdout


def test_console_script_and_module_entry_points():
    exe = REPO / ".venv" / "bin" / "facerestore"
    cmds = [[sys.executable, "-m", "facerestore_cli", "--help"]]
    if exe.exists():
        cmds.append([str(exe), "--help"])
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "run" in res.stdout, res.stderr


def test_missing_weights_exit_4_with_import_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    code, out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out")
    assert code == 4
    assert out == ""
    for needle in ("iddpm_ffhq512_ema500000.pth", "swinir_restoration512_L1.pth", "detection_Resnet50_Final.pth",
                   "https://github.com/zsyOAOA/DifFace/releases/download/V1.0/iddpm_ffhq512_ema500000.pth",
                   "facerestore weights import"):
        assert needle in err, needle
    assert not (tmp_path / "out").exists()  # a run that fails before any work leaves no output folder


def test_preset_lacking_a_knob_of_its_method_is_usage_error(tiny_env, tmp_path, capsys):
    """The method's Params declare its knobs; the preset gives every default (a missing one is a broken preset,
    named with the flag, before any work)."""
    data = yaml.safe_load(tiny_env.read_text())
    del data["parameters"]["eta"]
    preset = tmp_path / "no-eta.yaml"
    preset.write_text(yaml.safe_dump(data))
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "o", "--preset", preset)
    assert code == 2
    assert f"preset {preset} lacks parameter 'eta' (--eta)" in err
    assert not (tmp_path / "o").exists()


def test_knob_not_used_by_method_is_usage_error(tiny_dr2_env, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "o", "--preset",
                              tiny_dr2_env, "--eta", "0.1")
    assert code == 2
    assert "--eta is not used by method 'dr2-tiny': DR2 samples with DDPM ancestral steps (no η)" in err
    assert "it takes: --seed, --dr2-n, --dr2-tau, --dr2-enhancer, --dr2-prior" in err


def test_bad_steps_is_usage_error(tiny_env, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "o", "--preset", tiny_env,
                              "--detector", "retinaface_mobile0.25", "--steps", "401")
    assert code == 2 and "--steps" in err


def test_unknown_method_is_usage_error(tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS, "-o", tmp_path / "o", "--method", "nope")
    assert code == 2 and "unknown method 'nope'" in err and "difface" in err


def test_no_inputs_exit_3(tiny_env, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    code, _out, err = run_cli(capsys, "run", empty, "-o", tmp_path / "o", "--preset", tiny_env)
    assert code == 3 and "no input images" in err


def test_missing_input_path_is_usage_error(tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", tmp_path / "nope.jpg", "-o", tmp_path / "o")
    assert code == 2 and "nope.jpg" in err


def test_unavailable_device_exit_5(tiny_env, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "o", "--preset", tiny_env,
                              "--device", "cuda:7")
    assert code == 5 and "cuda:7" in err


def test_bad_file_fails_alone_and_exit_1(tiny_env, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(src / "ok.png")
    code, _out, err = run_cli(capsys, "run", src, "-o", tmp_path / "out", "--preset", tiny_env,
                              "--detector", "retinaface_mobile0.25", "-q")
    assert code == 1
    assert "broken.jpg" in err
    assert (tmp_path / "out" / "ok.png").exists() and not (tmp_path / "out" / "broken.jpg").exists()


def test_unexpected_error_is_one_line_without_debug(monkeypatch, tmp_path, capsys):
    import facerestore_cli.runner as runner

    def boom(*_a, **_k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(runner, "run", boom)
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "o")
    assert code == 1 and "kaboom" in err and "Traceback" not in err and "--debug" in err


@pytest.mark.parametrize("change, message", [
    (lambda d: d["components"]["prior"].update(optional="yes"), "component 'prior'.optional must be bool, got 'yes'"),
    (lambda d: d["components"]["prior"].update(wieghts="x"), "component 'prior': unknown key(s) wieghts"),
    (lambda d: d["components"]["prior"]["schedule"].update(num_timesteps=True),
     "component 'prior'.schedule.num_timesteps must be int, got True"),
    (lambda d: d["faces"].update(blend="half"), "faces.blend (--blend) must be a number, got 'half'"),
    (lambda d: d["faces"].update(upscale=3), "faces.upscale (--upscale) must be one of 1, 2, 4, got 3"),
    (lambda d: d["components"]["prior"].pop("schedule"), "component 'prior' needs a `schedule:`"),
])
def test_preset_values_are_typed_and_named(tmp_path, capsys, change, message):
    """A preset's components, schedules and face settings are checked against their types when it loads: a wrong
    value is a usage error naming the file, the component or block, the key and the rule."""
    data = yaml.safe_load((REPO / "presets" / "difface.yaml").read_text())
    change(data)
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(data))
    code, _out, err = run_cli(capsys, "run", tmp_path, "-o", tmp_path / "out", "--preset", preset, "--dry-run")
    assert code == 2 and f"preset {preset}" in err and message in err, err


def test_a_preset_with_the_former_top_level_schedule_still_loads(tmp_path):
    """Presets written before schedules moved into components keep working: a top-level `schedule:` is the
    `prior` component's."""
    from facerestore_cli.presets import load_builtin, load_file

    data = yaml.safe_load((REPO / "presets" / "dr2.yaml").read_text())
    data["schedule"] = data["components"]["prior"].pop("schedule")
    preset = tmp_path / "old.yaml"
    preset.write_text(yaml.safe_dump(data))
    assert load_file(preset).schedule("prior") == load_builtin("dr2").schedule("prior")
