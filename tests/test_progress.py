"""Progress output of `facerestore run`: -v plain lines on stderr, -q silence, stdout always empty."""

from __future__ import annotations

import re

from PIL import Image

from cli_helpers import run_cli
from conftest import PHOTOS

DET = ("--detector", "retinaface_mobile0.25")


def _one_face(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(PHOTOS / "old-portrait-01.jpg").convert("RGB").crop((75, 90, 160, 189)).save(path, quality=95)
    return path


def test_verbose_prints_plain_progress_lines_on_stderr(tiny_env, tmp_path, capsys):
    photo = _one_face(tmp_path / "in" / "p.jpg")
    code, out, err = run_cli(capsys, "run", photo, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "-v")
    assert code == 0, err
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("facerestore: 1 photo(s), method difface-tiny, device cpu")
    progress = [line for line in lines if line.startswith("[1/1 photos]")]
    assert len(progress) == 1 and re.match(r"\[1/1 photos\] 1 faces, [\d.]+ faces/s, ETA \d+s, cpu", progress[0])
    assert lines[-1].startswith("done: 1 restored, 0 without faces (copied), 0 failed, 1 faces in ")
    assert len(lines) == 3, err  # one line per event, never wrapped


def test_verbose_prints_a_line_per_photo(tiny_env, tmp_path, capsys):
    src = tmp_path / "in"
    _one_face(src / "b.jpg")
    Image.new("RGB", (40, 30), (90, 90, 90)).save(src / "a.jpg")
    code, out, err = run_cli(capsys, "run", src, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "-v")
    assert code == 0, err
    assert out == ""
    counters = [line.split("]")[0] + "]" for line in err.splitlines() if line.startswith("[")]
    assert counters == ["[1/2 photos]", "[2/2 photos]"]
    assert "done: 1 restored, 1 without faces (copied), 0 failed, 1 faces" in err


def test_verbose_error_line_names_the_whole_path(tiny_env, tmp_path, capsys):
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "broken photo.jpg"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    code, out, err = run_cli(capsys, "run", deep, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "-v")
    assert code == 1
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(deep) in errors[0], err
    assert "done: 0 restored, 0 without faces (copied), 1 failed" in err


def test_quiet_prints_nothing_on_success(tiny_env, tmp_path, capsys):
    photo = _one_face(tmp_path / "in" / "p.jpg")
    code, out, err = run_cli(capsys, "run", photo, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "-q")
    assert code == 0
    assert out == "" and err == ""
    assert (tmp_path / "out" / "p.jpg").exists()


def test_default_non_tty_prints_start_progress_and_done(tiny_env, tmp_path, capsys):
    photo = _one_face(tmp_path / "in" / "p.jpg")
    code, out, err = run_cli(capsys, "run", photo, "-o", tmp_path / "out", "--preset", tiny_env, *DET)
    assert code == 0, err
    assert out == ""
    assert "[1/1 photos]" in err and "done: 1 restored" in err


def test_quiet_and_verbose_contradict(tiny_env, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                              *DET, "-q", "-v")
    assert code == 2 and "contradict" in err
