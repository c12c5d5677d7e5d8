"""Helpers for the archival-batch end-to-end tests (test_archival_*.py): run the CLI in-process with byte-capable
captured streams, start it as a real subprocess, make single-face photos, and check an output folder for
partial files."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import PHOTOS, REPO

DET = ("--detector", "retinaface_mobile0.25")
STATE = ".facerestore-state.json"
LOCK = ".facerestore.lock"

# (photo, crop box) giving exactly one face each (checked with retinaface_mobile0.25 at --min-face 20)
ONE_FACE_CROPS = (
    ("group-of-eight.jpg", (130, 110, 310, 310)),
    ("whole-02.png", (100, 0, 330, 260)),
    ("group-of-eight.jpg", (680, 150, 830, 320)),
    ("whole-02.png", (360, 40, 585, 300)),
)


class _Stream(io.TextIOWrapper):
    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="surrogateescape", newline="", write_through=True)

    def value(self) -> bytes:
        self.flush()
        return self.buffer.getvalue()


def invoke(*args, stdin: bytes | None = None, binary: bool = False):
    """Run `facerestore ARGS` in-process (the console script's main). Returns (exit code, stdout, stderr);
    stdout is bytes with binary=True. stdin: bytes offered as sys.stdin.buffer."""
    from facerestore_cli.cli import main

    out, err = _Stream(), _Stream()
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    stdout = out.value()
    text_out = stdout if binary else stdout.decode("utf-8", "surrogateescape")
    return code, text_out, err.value().decode("utf-8", "replace")


# old-portrait-01.jpg at facexlib's detection threshold: its four clear faces (the preset's 0.8 adds a faint fifth)
FOUR_FACES = ("--det-threshold", "0.97")


def tiny_run(preset: Path, *args, quiet: bool = True, **kwargs):
    """`facerestore run ARGS --preset TINY --detector retinaface_mobile0.25 [-q]` in-process."""
    return invoke("run", *args, "--preset", preset, *DET, *(("-q",) if quiet else ()), **kwargs)


def report_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_name(records: list[dict]) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in records}


def visible_files(folder: Path) -> list[Path]:
    """Every file under folder whose path has no hidden component."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def hidden_files(folder: Path) -> list[Path]:
    visible = set(visible_files(folder))
    return sorted(p for p in folder.rglob("*") if p.is_file() and p not in visible)


def make_one_face_photos(folder: Path, names: list[str]) -> list[Path]:
    """Small photos with exactly one face each, cut from ../shared photos; the name's extension picks the format."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (photo, box) in zip(names, ONE_FACE_CROPS):
        im = Image.open(PHOTOS / photo).crop(box)
        path = folder / name
        if path.suffix.lower() in (".jpg", ".jpeg"):
            im.convert("RGB").save(path, "JPEG", quality=92)
        else:
            im.save(path)
        paths.append(path)
    return paths


def assert_no_partial_outputs(out: Path) -> None:
    """Every visible file decodes completely; hidden files are only the state, the lock and atomic-write temps;
    no "done" state entry stands for a missing output."""
    from facerestore_cli.imageio import read_image
    from facerestore_cli.files import STALE_TEMP

    for path in visible_files(out):
        read_image(path)  # raises InputError for a truncated or corrupt file
    for path in hidden_files(out):
        assert path.name in (STATE, LOCK) or STALE_TEMP.match(path.name), f"unexpected file {path}"
    state = out / STATE
    if state.exists():
        entries = json.loads(state.read_text())["entries"]
        for rel, entry in entries.items():
            if entry["status"] in ("done", "no_face"):
                assert (out / entry["output"]).is_file(), f"state says {rel} is {entry['status']} but its output is missing"


def state_entries(out: Path) -> dict[str, dict]:
    return json.loads((out / STATE).read_text())["entries"]


# ------------------------------------------------------------------------------------------------- subprocess


def start_run(home: Path, *args, log: Path) -> subprocess.Popen:
    """The real CLI in a subprocess (python -m facerestore_cli run ... -q), stdout+stderr to log."""
    env = {**os.environ, "FACERESTORE_HOME": str(home), "FACERESTORE_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "facerestore_cli", "run", *map(str, args),
           "--preset", str(home / "difface-tiny.yaml"), *DET, "-q"]
    handle = open(log, "wb")
    try:
        return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    finally:
        handle.close()


def wait_until(proc: subprocess.Popen, condition, log: Path, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before {what}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text(errors='replace')}")
        time.sleep(0.005)


def wait_for_first_output(proc: subprocess.Popen, out: Path, log: Path, timeout: float = 90.0,
                          count: int = 1) -> None:
    """Poll until count outputs (non-hidden files directly in out) exist."""
    wait_until(proc, lambda: out.is_dir() and sum(not p.name.startswith(".") for p in out.iterdir()) >= count, log,
               timeout, f"{count} output(s)")


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError("the run did not exit in time") from None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


# The head of a method plugin module for tests (a `<method>.py` beside its preset): no knobs, no weights; the test
# appends its restorer class and `build`.
PLUGIN_PREAMBLE = '''
import os
import time
from dataclasses import dataclass

from facerestore_cli.methods.params import MethodParams


@dataclass(frozen=True)
class Params(MethodParams):
    pass


def required_weights(preset, params):
    return []

'''
