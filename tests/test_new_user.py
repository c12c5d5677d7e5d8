"""What a new user hit (#25), each through the CLI: output paths that are files or folders, `report merge` on a folder
that is no run's, knob ranges, model-config keys, bench options it cannot time, broken pipes, missing face numbers,
wording, --json's one shape and JPEG quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archival_helpers import invoke
from conftest import PHOTOS


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


@pytest.mark.parametrize("option, reason", [(("--engine", "ray"), "with --engine ray the stages run in Ray's workers"),
                                            (("--device", "cpu,cpu"), "--device cpu,cpu starts a worker process")])
def test_bench_refuses_what_it_cannot_time_and_says_why(option, reason, tmp_path):
    code, out, err = invoke("bench", PHOTOS / "whole-02.png", *option, "--json")
    assert code == 2 and reason in err and out == "", err


def test_a_closed_stdout_stops_the_run_like_sigpipe_and_keeps_what_is_done(tiny_env, tmp_path):
    """`run --json | head -n1`: the reader goes away after one line; the run stops with 141 (as SIGPIPE ends other
    tools), says why, keeps the finished photos, and prints no traceback."""
    import os
    import subprocess
    import sys

    from archival_helpers import make_one_face_photos
    from conftest import REPO

    make_one_face_photos(tmp_path / "in", ["a.png", "b.png", "c.png"])
    run = subprocess.Popen([sys.executable, "-m", "facerestore_cli", "run", tmp_path / "in", "-o", tmp_path / "out",
                            "--preset", tiny_env, "--detector", "retinaface_mobile0.25", "--json"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    first = run.stdout.readline()
    run.stdout.close()
    err = run.stderr.read().decode()
    assert run.wait(timeout=300) == 141, err
    assert first.startswith(b'{"input": ') and "stopping: stdout was closed" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert Path(json.loads(first)["output"]).is_file()


def test_a_face_number_the_photo_does_not_have_is_reported_on_it(tiny_env, tmp_path):
    from archival_helpers import report_lines, tiny_run

    code, _o, err = tiny_run(tiny_env, PHOTOS / "whole-03.png", "-o", tmp_path / "out", "--faces", "1,9", "--steps", "1",
                             "--report", tmp_path / "r.jsonl")
    assert code == 0, err
    record = report_lines(tmp_path / "r.jsonl")[0]
    assert [f["index"] for f in record["faces"]] == [1]
    assert "--faces 9: no such face in this photo (2 detected, numbered 0–1)" in record["notes"]


def test_a_reruns_header_counts_what_is_left_and_what_is_done(tiny_env, tmp_path):
    from archival_helpers import make_one_face_photos, tiny_run

    src = tmp_path / "in"
    make_one_face_photos(src, ["a.png", "b.png"])
    assert tiny_run(tiny_env, src, "-o", tmp_path / "out", "--steps", "1")[0] == 0
    make_one_face_photos(src, ["c.png"])
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--steps", "1", quiet=False)
    assert code == 0, err
    assert err.startswith("facerestore: 1 photo to do, 2 already done, method difface-tiny"), err
    assert "1 restored, 0 without faces (copied), 0 failed, 1 face in " in err


def test_the_compare_sheet_boxes_left_out_faces_in_red(tiny_env, tmp_path):
    """old-portrait-01's hand is left out (score < --min-score): the sheet's overview boxes it red, as --draw-boxes."""
    import cv2

    from archival_helpers import tiny_run

    colours = {}
    for min_score in ("0.97", "0"):
        out = tmp_path / min_score
        code, _o, err = tiny_run(tiny_env, PHOTOS / "old-portrait-01.jpg", "-o", out, "--steps", "1", "--save-compare",
                                 "--min-score", min_score)
        assert code == 0, err
        sheet = cv2.imread(str(out / "_compare" / "old-portrait-01.jpg")).astype(int)
        scale = sheet.shape[1] / 248  # the photo (248×189) on top, its width the sheet's
        edge = sheet[round(107.67 * scale) - 1: round(107.67 * scale) + 2, round(8 * scale): round(28 * scale)]
        colours[min_score] = "red" if edge[..., 2].mean() > edge[..., 1].mean() + 80 else \
            "green" if edge[..., 1].mean() > edge[..., 2].mean() + 80 else "neither"
    assert colours == {"0.97": "red", "0": "green"}, colours  # the hand's box (#0) at the left edge


def test_a_restored_jpeg_keeps_its_inputs_quality_unless_told(tiny_env, tmp_path):
    """old-portrait-01.jpg is a quality-75 JPEG: its restoration is written at 75 (its own tables, about its size),
    said in the report; --quality 95 overrides."""
    from PIL import Image

    from archival_helpers import report_lines, tiny_run
    from facerestore_cli.imagewrite import jpeg_quality

    source = PHOTOS / "old-portrait-01.jpg"
    sizes = {}
    for quality in (None, "95"):
        out, report = tmp_path / f"q{quality}", tmp_path / f"q{quality}.jsonl"
        code, _o, err = tiny_run(tiny_env, source, "-o", out, "--steps", "1", "--report", report,
                                 *(("--quality", quality) if quality else ()))
        assert code == 0, err
        written = Image.open(out / source.name)
        sizes[quality] = (out / source.name).stat().st_size
        notes = report_lines(report)[0]["notes"]
        if quality is None:
            assert written.quantization == Image.open(source).quantization
            assert "JPEG written at the input's quality (its quantization tables, about quality 75)" in notes
        else:
            assert jpeg_quality(written.quantization) == 95 and not any("input's quality" in n for n in notes)
    assert sizes[None] < 0.7 * sizes["95"], sizes


@pytest.mark.parametrize("args, lines", [(("methods",), 4), (("doctor",), 1), (("weights", "list"), None),
                                         (("weights", "show", "difface-unet"), 1), (("weights", "verify"), None)])
def test_every_json_output_is_json_lines_one_per_item_or_one(tiny_env, args, lines):
    """The one rule of --json (README, each command's --help): JSON Lines on stdout, one compact object per item of a
    list, exactly one for a command about one thing; sizes are the files' own when present."""
    from facerestore_cli.weights.store import WeightStore

    code, out, err = invoke(*args, "--json")
    assert code in (0, 1), err
    records = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(r, dict) for r in records) and out.endswith("\n")
    store = WeightStore()
    expected = {"list": len(store.registry), "verify": sum(store.is_present(w) for w in store.registry)}
    assert len(records) == (lines or expected[args[1]])
    if args[:2] == ("weights", "show"):
        assert records[0]["size"] == store.path("difface-unet").stat().st_size
    _code, page, _err = invoke(*args, "--help")
    assert "JSON Lines: one object" in " ".join(page.split())


def test_resume_takes_the_runs_own_settings(tmp_path):
    """`train … --resume` needs only the run folder: RUN/train.json holds the options it started with; --steps may
    change, a setting that shapes the weights may not (the checkpoint names it)."""
    import yaml

    from conftest import ALIGNED_LQ, TINY_IRM1

    config = tmp_path / "irm1.yaml"
    config.write_text(yaml.safe_dump(TINY_IRM1))
    run = tmp_path / "run"
    code, _o, err = invoke("train", "diffbfr-irm1", "--data", ALIGNED_LQ, "-o", run, "--model-config", config,
                           "--workers", "0", "--warmup", "5", "--lr", "2e-4", "--device", "cpu", "--steps", "1",
                           "--batch-size", "1", "--checkpoint-every", "1", "--sample-every", "100")
    assert code == 0, err
    assert json.loads((run / "train.json").read_text())["lr"] == 2e-4
    code, _o, err = invoke("train", "diffbfr-irm1", "-o", run, "--resume", "--steps", "2")
    assert code == 0 and "done: step 2" in err, err
    code, _o, err = invoke("train", "diffbfr-irm1", "-o", run, "--resume", "--steps", "3", "--lr", "1e-3")
    assert code == 2 and "the run's settings changed (lr: 0.0002 → 0.001)" in err, err
    code, _o, err = invoke("train", "diffbfr-irm1", "-o", tmp_path / "new", "--steps", "1")
    assert code == 2 and "--data names the faces to train on" in err
