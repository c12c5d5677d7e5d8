"""The output-folder run lock: exclusive across processes, waits, never stale, clear errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facerestore_cli import runlock
from facerestore_cli.errors import EXIT_LOCKED, FacerestoreError
from facerestore_cli.runlock import LOCK_NAME, LockHeld, read_holder, run_lock

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from facerestore_cli.runlock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def holder(tmp_path):
    """Start a child process that holds tmp_path/out's lock for `seconds`; yields (start, out)."""
    children = []

    def start(seconds: float) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out"), str(seconds)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        children.append(child)
        assert child.stdout.readline().strip() == "locked"
        return child

    yield start, tmp_path / "out"
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_exclusive_across_processes(holder):
    start, out = holder
    child = start(30)
    with pytest.raises(LockHeld) as caught:
        with run_lock(out):
            pytest.fail("got a lock another process holds")
    err = caught.value
    assert err.exit_code == EXIT_LOCKED == 75
    assert f"output folder {out} is in use by another facerestore run (pid {child.pid}, started " in err.message
    assert err.hint == "wait for it, or pass --wait-lock SECONDS"


def test_lock_file_names_the_holder(holder):
    start, out = holder
    child = start(30)
    note = read_holder(out / LOCK_NAME)
    assert note["pid"] == str(child.pid) and note["started"] and note["host"]


def test_waits_until_the_holder_exits(holder):
    start, out = holder
    start(0.6)
    started = time.monotonic()
    with run_lock(out, wait_seconds=10) as path:
        waited = time.monotonic() - started
        assert read_holder(path)["pid"] == str(os.getpid())
    assert 0.2 < waited < 15  # the holder sleeps 0.6 s after it starts; the upper bound leaves room for load


def test_wait_times_out(holder):
    start, out = holder
    child = start(30)
    started = time.monotonic()
    with pytest.raises(LockHeld, match=rf"still in use .*pid {child.pid}.* after waiting 0.5 s") as caught:
        with run_lock(out, wait_seconds=0.5):
            pass
    assert 0.45 < time.monotonic() - started < 10  # it waited the 0.5 s, and did not hang
    assert caught.value.exit_code == 75 and "--wait-lock" in caught.value.hint


def test_killed_holder_leaves_no_stale_lock(holder):
    start, out = holder
    child = start(30)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (out / LOCK_NAME).exists()  # the file stays; the lock is gone with the process
    with run_lock(out):
        pass


def test_released_on_exit_and_on_error(tmp_path):
    with run_lock(tmp_path / "new" / "folder") as path:
        assert path == tmp_path / "new" / "folder" / LOCK_NAME
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):  # a second open file cannot take it either
            with run_lock(tmp_path / "new" / "folder"):
                pass
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path / "new" / "folder"):
            raise RuntimeError("boom")
    with run_lock(tmp_path / "new" / "folder"):
        pass
    assert read_holder(path) == {}  # emptied on release


def test_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runlock.os, "open", read_only)
    with pytest.raises(FacerestoreError, match="cannot write to output folder .*Read-only file system") as caught:
        with run_lock(tmp_path):
            pass
    assert not isinstance(caught.value, LockHeld)


def test_filesystem_without_flock_is_a_clear_error(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_locks)
    with pytest.raises(FacerestoreError, match="does not support file locks") as caught:
        with run_lock(tmp_path):
            pass
    assert not isinstance(caught.value, LockHeld)
