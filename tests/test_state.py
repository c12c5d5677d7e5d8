"""The rerun manifest: skip decisions, fast path without hashing, atomic and throttled flushes, bad manifests."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from conftest import edited
from facerestore_cli import state as state_mod
from facerestore_cli.errors import FacerestoreError
from facerestore_cli.state import STATE_NAME, Decision, RunState, fingerprint_of, run_signature

SIG = run_signature({"method": "difface", "params": {"steps": 20}, "weights": {"unet": "ab"}, "version": "0.1.0"})


def no_hashing(monkeypatch):
    def refuse(path, hasher=None):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(state_mod, "sha256_file", refuse)


@pytest.fixture
def photo(tmp_path):
    """(src, dest, out_dir) with one input and its output, recorded as done and flushed."""
    src, out = tmp_path / "in" / "a.jpg", tmp_path / "out"
    src.parent.mkdir()
    out.mkdir()
    src.write_bytes(b"original bytes")
    dest = out / "a.jpg"
    dest.write_bytes(b"restored")
    st = RunState.load(out)
    st.record("a.jpg", src, dest, "done", None, SIG)
    st.flush()
    return src, dest, out


def test_run_signature_is_canonical_and_sensitive():
    assert run_signature({"a": 1, "b": {"x": 1, "y": 2}}) == run_signature({"b": {"y": 2, "x": 1}, "a": 1})
    assert run_signature({"a": 1}) != run_signature({"a": 2})
    with pytest.raises(TypeError):
        run_signature({"a": object()})


def test_new_then_skip_unchanged_after_reload(photo, monkeypatch):
    src, dest, out = photo
    assert RunState.load(out).decide("b.jpg", src, out / "b.jpg", SIG) == Decision("run", "new")
    no_hashing(monkeypatch)
    assert RunState.load(out).decide("a.jpg", src, dest, SIG) == Decision("skip", "unchanged since last run")


def test_entry_layout(photo):
    src, dest, out = photo
    document = json.loads((out / STATE_NAME).read_text())
    assert document["version"] == 1 and document["tool"] == "facerestore"
    entry = document["entries"]["a.jpg"]
    assert entry["fingerprint"] == fingerprint_of(src)
    assert entry["output"] == "a.jpg" and entry["status"] == "done" and entry["signature"] == SIG
    assert entry["finished_at"].endswith("+00:00")


def test_changed_content_runs(photo):
    src, dest, out = photo
    before = src.stat().st_mtime_ns
    src.write_bytes(b"edited bytes!!")  # same size
    edited(src, before)
    assert RunState.load(out).decide("a.jpg", src, dest, SIG) == Decision("run", "input changed")
    src.write_bytes(b"longer edited bytes")
    assert RunState.load(out).decide("a.jpg", src, dest, SIG) == Decision("run", "input changed")


def test_touched_same_content_skips_and_remembers_new_mtime(photo, monkeypatch):
    src, dest, out = photo
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    state = RunState.load(out)
    assert state.decide("a.jpg", src, dest, SIG) == Decision("skip", "unchanged since last run")
    assert state.flush()  # the new mtime is kept...
    no_hashing(monkeypatch)  # ...so the next run is back on the fast path
    assert RunState.load(out).decide("a.jpg", src, dest, SIG).action == "skip"


def test_output_missing(photo):
    src, dest, out = photo
    dest.unlink()
    assert RunState.load(out).decide("a.jpg", src, dest, SIG) == Decision("run", "output missing")


def test_signature_changed(photo):
    src, dest, out = photo
    other = run_signature({"method": "difface", "params": {"steps": 50}})
    assert RunState.load(out).decide("a.jpg", src, dest, other) == Decision("run", "method or parameters changed")


def test_failed_skipped_unless_redo_failed(photo):
    src, dest, out = photo
    state = RunState.load(out)
    state.record("a.jpg", src, None, "failed", "corrupt image data", SIG)
    assert state.entries["a.jpg"]["output"] is None
    assert state.decide("a.jpg", src, dest, SIG) == Decision("skip", "failed last run (use --redo-failed)")
    assert state.decide("a.jpg", src, dest, SIG, redo_failed=True) == Decision("run", "previous run failed")
    src.write_bytes(b"a fixed, longer file")  # a failed input that was replaced is retried anyway (size alone tells)
    assert state.decide("a.jpg", src, dest, SIG) == Decision("run", "input changed")


def test_no_face_entries_skip_like_done(photo):
    src, dest, out = photo
    state = RunState.load(out)
    state.record("a.jpg", src, dest, "no_face", "no face found", SIG)
    assert state.decide("a.jpg", src, dest, SIG).action == "skip"


def test_force(photo):
    src, dest, out = photo
    assert RunState.load(out).decide("a.jpg", src, dest, SIG, force=True) == Decision("run", "forced")


def test_record_reuses_hash_from_decide_and_catches_edits_during_processing(photo, monkeypatch):
    src, dest, out = photo
    before = src.stat().st_mtime_ns
    src.write_bytes(b"edited bytes!!")  # same size
    edited(src, before)
    state = RunState.load(out)
    assert state.decide("a.jpg", src, dest, SIG).reason == "input changed"
    no_hashing(monkeypatch)  # decide hashed already
    state.record("a.jpg", src, dest, "done", None, SIG)
    edited_sha = hashlib.sha256(b"edited bytes!!").hexdigest()
    assert state.entries["a.jpg"]["fingerprint"] == fingerprint_of(src, sha256=edited_sha)
    monkeypatch.undo()

    assert state.decide("a.jpg", src, dest, SIG, force=True).action == "run"
    st = src.stat()
    src.write_bytes(b"edited during the run")  # after decide, before record
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    state.record("a.jpg", src, dest, "done", None, SIG)
    assert state.entries["a.jpg"]["fingerprint"]["sha256"] is None
    assert state.decide("a.jpg", src, dest, SIG) == Decision("run", "input changed")


def test_flush_is_atomic(photo, monkeypatch):
    src, dest, out = photo
    before = (out / STATE_NAME).read_bytes()
    state = RunState.load(out)
    state.record("b.jpg", src, out / "b.jpg", "done", None, SIG)

    def broken_replace(a, b):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(FacerestoreError, match="cannot write the run state"):
        state.flush()
    monkeypatch.undo()
    assert (out / STATE_NAME).read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [STATE_NAME]
    assert state.flush()  # still dirty, so the next flush writes it
    assert "b.jpg" in RunState.load(out).entries


@pytest.mark.parametrize("content, problem", [
    (b"{\"version\": 1, \"tool\": \"facerestore\", \"entr", "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b"[1, 2]", "not a facerestore state file"),
    (json.dumps({"version": 2, "tool": "facerestore", "entries": {}}).encode(), "unknown version 2"),
    (json.dumps({"version": 1, "tool": "facerestore", "entries": {"a.jpg": {"status": "done"}}}).encode(),
     "malformed entries"),
])
def test_bad_manifest_is_moved_aside_with_a_warning(tmp_path, content, problem):
    (tmp_path / STATE_NAME).write_bytes(content)
    state = RunState.load(tmp_path)
    assert state.entries == {}
    assert problem in state.warning and "moved it to" in state.warning
    [aside] = tmp_path.glob(f"{STATE_NAME}.corrupt-*")
    assert aside.read_bytes() == content and aside.name in state.warning
    assert not (tmp_path / STATE_NAME).exists()
    (tmp_path / STATE_NAME).write_bytes(content)  # a second bad one the same second gets its own name
    RunState.load(tmp_path)
    assert len(list(tmp_path.glob(f"{STATE_NAME}.corrupt-*"))) == 2


def test_missing_manifest_is_empty_without_warning(tmp_path):
    state = RunState.load(tmp_path / "not-yet")
    assert state.entries == {} and state.warning is None
    assert state.flush() is False  # nothing to write


def test_maybe_flush_waits_for_the_interval(tmp_path):
    now = [100.0]
    state = RunState.load(tmp_path, flush_interval=5, clock=lambda: now[0])
    src = tmp_path / "a.jpg"
    src.write_bytes(b"x")
    state.record("a.jpg", src, src, "done", None, SIG)
    now[0] = 104.9
    assert state.maybe_flush() is False and not (tmp_path / STATE_NAME).exists()
    now[0] = 105.0
    assert state.maybe_flush() is True and (tmp_path / STATE_NAME).exists()
    state.record("b.jpg", src, src, "done", None, SIG)
    now[0] = 109.0
    assert state.maybe_flush() is False  # counted from the last flush
    assert state.flush() is True and "b.jpg" in RunState.load(tmp_path).entries  # end of run: always
    now[0] = 200.0
    assert state.maybe_flush() is False  # nothing new recorded


def test_ten_thousand_unchanged_inputs_decide_fast_without_hashing(tmp_path, monkeypatch):
    src_dir, out = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out.mkdir()
    state = RunState.load(out)
    for i in range(10_000):
        name = f"{i:05d}.jpg"
        (src_dir / name).write_bytes(b"%d" % i)
        (out / name).write_bytes(b"r")
        state.record(name, src_dir / name, out / name, "done", None, SIG)
    state.flush()

    no_hashing(monkeypatch)
    started = time.perf_counter()
    for i in range(10_000):  # baseline on this machine: the two stats a decision needs at the least
        os.stat(src_dir / f"{i:05d}.jpg")
        os.path.exists(out / f"{i:05d}.jpg")
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    state = RunState.load(out)
    decisions = [state.decide(f"{i:05d}.jpg", src_dir / f"{i:05d}.jpg", out / f"{i:05d}.jpg", SIG)
                 for i in range(10_000)]
    elapsed = time.perf_counter() - started
    assert all(d.action == "skip" for d in decisions)
    assert elapsed < max(1.0, 20 * baseline), f"{elapsed:.2f} s for 10,000 decisions, {baseline:.3f} s for their stats"
    assert state.flush() is False  # a no-op rerun rewrites nothing
