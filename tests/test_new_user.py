"""What a new user hit (#25), each through the CLI: output paths that are files or folders, `report merge` on a folder
that is no run's, knob ranges, model-config keys, bench options it cannot time, broken pipes, missing face numbers,
wording, --json's one shape and JPEG quality."""

from __future__ import annotations

import pytest

from archival_helpers import invoke
from conftest import PHOTOS, require_shared


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "taken.txt"
    path.write_text("not a folder\n")
    return path


OUTPUT_PATHS = {  # command line with {file} where a folder goes, or {folder} where a file goes
    "run -o FILE": ["run", "{photos}", "-o", "{file}"],
    "run --report DIR": ["run", "{photos}", "-o", "{tmp}/out", "--report", "{folder}"],
    "degrade -o FILE": ["degrade", "{photos}", "--model", "difface", "-o", "{file}"],
    "train -o FILE": ["train", "difface-estimator", "--data", "{photos}", "-o", "{file}"],
    "review -o DIR": ["review", "{tmp}", "-o", "{folder}"],
    "report merge --report DIR": ["report", "merge", "{tmp}", "--report", "{folder}"],
    "bench --save DIR": ["bench", "{photos}", "--save", "{folder}"],
    "eval fid-stats -o DIR": ["eval", "fid-stats", "{photos}", "-o", "{folder}"],
    "eval --per-image DIR": ["eval", "{photos}", "--gt", "{photos}", "--per-image", "{folder}"],
}


@pytest.mark.parametrize("name", OUTPUT_PATHS)
def test_an_output_path_of_the_wrong_kind_is_a_usage_error(name, tmp_path, a_file):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    fill = {"file": a_file, "folder": folder, "tmp": tmp_path, "photos": PHOTOS}
    args = [arg.format(**fill) for arg in OUTPUT_PATHS[name]]
    code, _out, err = invoke(*args)
    assert code == 2, (name, err)
    assert "internal error" not in err and ("is a folder" in err or "is not a folder" in err), err
    shown = a_file if "{file}" in OUTPUT_PATHS[name] else folder
    assert str(shown) in err
    assert a_file.read_text() == "not a folder\n"


def test_report_merge_refuses_a_folder_that_is_no_runs_output(tmp_path):
    photos = tmp_path / "my-photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg")
    code, _out, err = invoke("report", "merge", photos, "--report", tmp_path / "merged.jsonl")
    assert code == 2 and "holds no run state" in err and str(photos) in err
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg"]
    assert not (tmp_path / "merged.jsonl").exists()


@pytest.mark.parametrize("method, knob, value, message", [
    ("difface", "--eta", "2", "--eta must be in [0, 1], got 2.0"),  # DifFace §III: η=1 is DDPM
    ("difface", "--eta", "-0.5", "--eta must be in [0, 1]"),
    ("difface", "--start-t", "1000", "--start-t must be in [1, 999]"),
    ("dr2", "--dr2-tau", "99", "--dr2-tau must be in [0, 98]"),
    ("diffbfr", "--irm2-start-t", "5000", "--irm2-start-t must be in [1, 2000]"),
])
def test_a_knob_outside_its_equations_range_is_refused_before_work(method, knob, value, message, tmp_path):
    code, _out, err = invoke("run", PHOTOS / "whole-02.png", "-o", tmp_path / "out", "--method", method, knob, value)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_preset_config_that_contradicts_the_recorded_one_is_refused(tiny_env, tmp_path):
    """The tiny home records each file's configuration beside it (as `train export` does); a preset that asks for
    another network from that file is a usage error naming both, before any output exists."""
    import yaml

    data = yaml.safe_load(tiny_env.read_text())
    data["components"]["prior"]["config"]["attention_sizes"] = [64]
    preset = tmp_path / "other.yaml"
    preset.write_text(yaml.safe_dump(data))
    code, _out, err = invoke("run", PHOTOS / "whole-02.png", "-o", tmp_path / "out", "--preset", preset)
    assert code == 2, err
    assert "configures attention_sizes=[64], but the difface-unet file in the cache was made with attention_sizes=[32]" in err
    assert not (tmp_path / "out").exists()
