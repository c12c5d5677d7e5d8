"""Archival batches, part 3: the real CLI in a subprocess, killed (SIGKILL), interrupted (SIGINT, SIGTERM, a second
SIGINT) or holding the output folder's lock while another run tries it.

Each photo has one face and is restored with --steps 10 (about 1.5 s per photo on a 2-core CPU), so a run is
still busy with the next photo when the first output appears; that is when the signal is sent."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from archival_helpers import (LOCK, STATE, assert_no_partial_outputs, by_name, finish, hidden_files,
                              make_one_face_photos, report_lines, start_run, state_entries, stop, tiny_run,
                              visible_files, wait_for_first_output, wait_until)

NAMES = ["a.jpg", "b.png", "c.jpg"]
STEPS = ("--steps", 10)


@pytest.fixture(scope="module")
def killed(tiny_home, tmp_path_factory):
    """A run holding OUT: two in-process runs try the same OUT (one with --wait-lock 0.5); once its first output
    appears the run is SIGKILLed and OUT is copied aside as it was left."""
    from facerestore_cli.runlock import read_holder

    base = tmp_path_factory.mktemp("killed")
    src, out, log = base / "in", base / "out", base / "log.txt"
    make_one_face_photos(src, NAMES)
    preset = tiny_home / "difface-tiny.yaml"
    mp = pytest.MonkeyPatch()
    mp.setenv("FACERESTORE_HOME", str(tiny_home))
    mp.setenv("FACERESTORE_OFFLINE", "1")
    proc = start_run(tiny_home, src, "-o", out, *STEPS, log=log)
    try:
        wait_until(proc, lambda: read_holder(out / LOCK).get("pid") == str(proc.pid), log, what="the run lock")
        locked = tiny_run(preset, src, "-o", out, *STEPS)
        started = time.monotonic()
        waited = tiny_run(preset, src, "-o", out, *STEPS, "--wait-lock", 0.5)
        waited_seconds = time.monotonic() - started
        held_throughout = proc.poll() is None and not any(p.name in NAMES for p in out.iterdir())
        wait_for_first_output(proc, out, log)
        proc.send_signal(signal.SIGKILL)
        returncode = finish(proc)
    finally:
        stop(proc)
        mp.undo()
    snapshot = base / "as-left"
    shutil.copytree(out, snapshot)
    return {"src": src, "out": out, "snapshot": snapshot, "pid": proc.pid, "locked": locked, "waited": waited,
            "waited_seconds": waited_seconds, "held_throughout": held_throughout, "returncode": returncode,
            "base": base}


def test_second_run_on_a_locked_output_exits_75(killed):
    code, stdout, err = killed["locked"]
    assert killed["held_throughout"]
    assert code == 75, err
    assert stdout == ""
    assert f"output folder {killed['out']} is in use" in err and f"pid {killed['pid']}" in err
    assert "--wait-lock" in err


def test_wait_lock_waits_then_exits_75(killed):
    code, _o, err = killed["waited"]
    assert code == 75, err
    assert 0.5 <= killed["waited_seconds"] < 15  # a lower bound that matters, an upper one with room for load
    assert f"output folder {killed['out']} is still in use" in err and "after waiting 0.5 s" in err
    assert "--wait-lock" in err


def test_sigkill_leaves_no_partial_files(killed):
    assert killed["returncode"] == -signal.SIGKILL
    left = killed["snapshot"]
    finished = visible_files(left)
    assert finished and {p.name for p in finished} < set(NAMES)
    assert_no_partial_outputs(left)  # whole images only; state never says done for a missing output


def test_rerun_after_sigkill_completes_without_stale_lock_or_temps(killed, tiny_env):
    src, out = killed["src"], killed["out"]
    # what a kill in the middle of an atomic write leaves behind
    (out / ".b.png.k9x2q7zz.tmp").write_bytes(b"\x89PNG\r\n\x1a\n half")
    (out / "sub").mkdir()
    (out / "sub" / ".x.jpg.ab_cd123.tmp").write_bytes(b"\xff\xd8\xff")
    report = killed["base"] / "rerun.jsonl"
    code, _o, err = tiny_run(tiny_env, src, "-o", out, *STEPS, "--report", report)  # no --wait-lock: lock is free
    assert code == 0, err
    assert {p.name for p in visible_files(out)} == set(NAMES)
    assert_no_partial_outputs(out)
    assert {p.name for p in hidden_files(out)} == {STATE, LOCK}  # no stale temp left
    assert {e["status"] for e in state_entries(out).values()} == {"done"} and len(state_entries(out)) == 3
    records = by_name(report_lines(report)[:-1])
    assert {r["status"] for r in records.values()} <= {"restored", "skipped"} and set(records) == set(NAMES)


# ------------------------------------------------------------------------------------------------- signals


def _interrupted_run(home, tmp_path, signals, gap: float = 0.0, after: int = 1):
    """Send signals once `after` photos are written (the next one is being restored then)."""
    src, out, log, report = tmp_path / "in", tmp_path / "out", tmp_path / "log.txt", tmp_path / "report.jsonl"
    make_one_face_photos(src, NAMES)
    proc = start_run(home, src, "-o", out, *STEPS, "--report", report, log=log)
    try:
        wait_for_first_output(proc, out, log, count=after)
        sent = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(gap)
            proc.send_signal(sig)
        returncode = finish(proc)
        seconds = time.monotonic() - sent
    finally:
        stop(proc)
    return src, out, report, log.read_text(errors="replace"), returncode, seconds


MESSAGE = "report and state saved"


@pytest.fixture(scope="module")
def graceful(tiny_home, tmp_path_factory):
    """One SIGINT once the first photo is written. Besides its own checks, its timings are the baseline the
    double-signal tests compare with on the same machine: from the signal to the message and from the message to
    the exit (the wind-down, about a second with torch loaded)."""
    tmp = tmp_path_factory.mktemp("graceful")
    src, out, log, report = tmp / "in", tmp / "out", tmp / "log.txt", tmp / "report.jsonl"
    make_one_face_photos(src, NAMES)
    proc = start_run(tiny_home, src, "-o", out, *STEPS, "--report", report, log=log)
    try:
        wait_for_first_output(proc, out, log)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        message_at = None
        while proc.poll() is None and time.monotonic() - sent < 60:
            if message_at is None and MESSAGE in log.read_text(errors="replace"):
                message_at = time.monotonic()
            time.sleep(0.002)
        returncode = finish(proc)
        exited = time.monotonic()
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    return {"src": src, "out": out, "report": report, "log": text, "code": returncode, "tmp": tmp,
            "total": exited - sent, "wind_down": exited - (message_at or exited)}


def test_sigint_stops_cleanly_and_a_rerun_completes_the_rest(graceful, tiny_env):
    src, out, report, log, code, tmp_path = (graceful[k] for k in ("src", "out", "report", "log", "code", "tmp"))
    assert code == 130, log
    assert "interrupted by SIGINT" in log and MESSAGE in log
    lines = report_lines(report)  # complete: renamed into place, summary last
    summary = lines[-1]["summary"]
    assert summary["interrupted"]
    records = by_name(lines[:-1])
    assert records and {r["status"] for r in records.values()} == {"restored"}  # the abandoned photo is not failed
    assert summary["failed"] == 0
    # stderr tells the summary's numbers: every input restored, failed or not reached
    assert (f"interrupted by SIGINT: {summary['restored']} restored, 0 without faces (copied), 0 failed, "
            f"{summary['faces']} face{'s' * (summary['faces'] != 1)} in ") in log and f"; {summary['unfinished']} not reached" in log
    assert summary["photos"] == len(NAMES) == summary["restored"] + summary["unfinished"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.jsonl")]
    assert_no_partial_outputs(out)
    finished = {p.name for p in visible_files(out)}
    assert finished == set(records) and finished < set(NAMES)
    assert {n: e["status"] for n, e in state_entries(out).items()} == dict.fromkeys(finished, "done")

    report2 = tmp_path / "rerun.jsonl"
    code, _o, err = tiny_run(tiny_env, src, "-o", out, *STEPS, "--report", report2)
    assert code == 0, err
    records = by_name(report_lines(report2)[:-1])
    for name in NAMES:
        if name in finished:
            assert records[name]["status"] == "skipped" and records[name]["reason"] == "unchanged since last run"
        else:
            assert records[name]["status"] == "restored", records[name]
    assert {p.name for p in visible_files(out)} == set(NAMES)
    assert_no_partial_outputs(out)


def test_sigterm_during_the_last_photo_exits_143_with_a_complete_report(tiny_home, tmp_path):
    _src, out, report, log, code, _s = _interrupted_run(tiny_home, tmp_path, [signal.SIGTERM], after=len(NAMES) - 1)
    assert code == 143, log
    assert "interrupted by SIGTERM" in log
    lines = report_lines(report)
    assert lines[-1]["summary"]["interrupted"] and lines[-1]["summary"]["failed"] == 0
    assert [r["status"] for r in lines[:-1]] == ["restored"] * (len(NAMES) - 1)
    assert_no_partial_outputs(out)
    assert {n: e["status"] for n, e in state_entries(out).items()} == dict.fromkeys(
        (p.name for p in visible_files(out)), "done")


def test_second_sigint_exits_at_once(tiny_home, tmp_path, graceful):
    """Two SIGINTs 10 ms apart: usually the second lands while the first waits for the next sampler step and exits
    at once (no report); if the first was acted on within those 10 ms, the second lands while the run winds down.
    Either way: exit 130 in well under the time a graceful stop takes, no traceback, nothing half-written, nothing
    recorded as failed."""
    _src, out, report, log, code, seconds = _interrupted_run(tiny_home, tmp_path, [signal.SIGINT, signal.SIGINT],
                                                             gap=0.01)
    assert code == 130, log
    assert seconds < graceful["total"] / 2, (seconds, graceful["total"])
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert_no_partial_outputs(out)
    assert all(e["status"] == "done" for e in (state_entries(out) if (out / STATE).exists() else {}).values())
    if report.exists():  # the graceful path finished first: its report is complete
        assert "summary" in report_lines(report)[-1]


def test_second_sigint_while_winding_down_exits_at_once(tiny_home, tmp_path, graceful):
    """Once the run has stopped (message printed, report saved) the process still takes about a second to shut
    torch down; a second SIGINT then must exit 130 at once, not raise KeyboardInterrupt into the shutdown."""
    src, out, log, report = tmp_path / "in", tmp_path / "out", tmp_path / "log.txt", tmp_path / "report.jsonl"
    make_one_face_photos(src, NAMES)
    proc = start_run(tiny_home, src, "-o", out, *STEPS, "--report", report, log=log)
    try:
        wait_for_first_output(proc, out, log)
        proc.send_signal(signal.SIGINT)
        wait_until(proc, lambda: MESSAGE in log.read_text(errors="replace"), log, what="the interrupted message")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = finish(proc)
        seconds = time.monotonic() - sent
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert code == 130, text
    assert "KeyboardInterrupt" not in text and "Traceback" not in text, text
    assert seconds < graceful["wind_down"] / 2, (seconds, graceful["wind_down"])  # cut short, not waited out
    assert "summary" in report_lines(report)[-1]
    assert_no_partial_outputs(out)
