"""Progress output of `facerestore run`: plain lines on stderr (with a heartbeat), -v naming each photo, a bar that
fits 80 columns on a terminal, -q silence, stdout always empty; counted in faces and sampler steps."""

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
    assert lines[0].startswith("facerestore: 1 photo to do, method difface-tiny, device cpu")
    progress = [line for line in lines if line.startswith("[1/1 photos]")]
    assert len(progress) == 1 and re.fullmatch(rf"\[1/1 photos\] {re.escape(str(photo))}: restored 1 face: network "
                                                rf"[\d.]+s, wall [\d.]+s \(read to written, queues included\)(; .+)*",
                                                progress[0]), err
    assert lines[-1].startswith("done: 1 restored, 0 without faces (copied), 0 failed, 1 face in ")
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
    named = [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("[")]
    assert named == [f"{src / 'a.jpg'}: no face restored (no face found), copied through",
                     f"{src / 'b.jpg'}: " + named[1].split(": ", 1)[1]] and "restored 1 face" in named[1]
    assert "done: 1 restored, 1 without faces (copied), 0 failed, 1 face in " in err


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
    assert re.search(r"^\[1/1 photos, 1/1 faces\] [\d.]+ faces/s, ETA 0s$", err, re.M) and "done: 1 restored" in err


def test_quiet_and_verbose_contradict(tiny_env, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                              *DET, "-q", "-v")
    assert code == 2 and "contradict" in err


# -- the Progress object on its own ---------------------------------------------------------------------------------

def _console(width: int = 200, terminal: bool = False):
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=terminal, highlight=False)


def test_heartbeat_lines_come_while_a_photo_is_being_restored():
    """Under cron no event may come for minutes (one sampler step of a full-size UNet on a CPU); a line still comes
    every interval."""
    import time

    from facerestore_cli.progress import Progress

    console = _console()
    progress = Progress(console, "plain", interval=0.3)
    progress.start(3, "cpu", "difface")
    progress.found(29)
    progress.step(9, 100, 8)  # one batch of 8 faces, 10 % through its sampler
    time.sleep(1.6)  # the heartbeat checks once a second
    progress.stop()
    lines = [line for line in console.file.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) >= 1, console.file.getvalue()
    # 29 faces found in the first of 3 photos: 87 expected, 0.8 in flight
    assert lines[0].startswith("[0/3 photos, 0/87 faces] ") and "ETA " in lines[0]


def test_eta_counts_faces_and_sampler_steps():
    from facerestore_cli.progress import Progress

    progress = Progress(_console(), "quiet")
    progress.start(2, "cpu", "difface")
    progress.started -= 100.0  # 100 s in
    progress.found(4)
    progress.faces(2)
    progress.step(49, 100, 2)  # the second batch is half done: 3 faces' worth in 100 s
    done, expected, rate, left = progress.estimate()
    assert done == 3.0 and expected == 8.0  # 4 found + 1 photo unread at 4 faces per photo
    assert abs(rate - 0.03) < 0.001 and abs(left - 5 / 0.03) < 2


def test_terminal_bar_fits_80_columns():
    from facerestore_cli.progress import Progress

    console = _console(width=80, terminal=True)
    progress = Progress(console, "rich")
    progress.start(1234, "NVIDIA H200 (cuda:0, bf16)", "ipc-guided")
    for _ in range(17):
        progress.found(29)
    progress.faces(480)
    progress.step(50, 100, 8)
    progress.photo({"status": "restored", "input": "x.jpg", "faces": []})
    progress._rich.refresh()
    progress.stop()
    bar_lines = [line for line in console.file.getvalue().splitlines() if "photos ·" in line]
    assert bar_lines, console.file.getvalue()
    last = bar_lines[-1]
    assert "1/1234 photos · 484/35786 faces ·" in last and "ETA" in last and "…" not in last
