"""The overlapped pipeline (#13): reading ahead and writing behind in worker threads changes nothing a run makes —
outputs, report and state are those of the serial loop — keeps memory bounded, and still stops cleanly on a signal,
a failure limit or out of memory. Plus the ordering pieces on their own."""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from archival_helpers import (FOUR_FACES, STATE, assert_no_partial_outputs, by_name, finish, make_one_face_photos, report_lines,
                              start_run, state_entries, stop, tiny_run, visible_files, wait_for_first_output)
from conftest import PHOTOS, home_environment
from facerestore_cli.overlap import Outcome, Prefetch, Sequencer, ordered_map

# ------------------------------------------------------------------------------------------------- the pieces


def slow_square(x: int) -> int:
    time.sleep(random.uniform(0, 0.01))
    if x == 13:
        raise ValueError("thirteen")
    return x * x


@pytest.mark.parametrize("workers", [0, 3])
def test_ordered_map_keeps_order_and_carries_errors(workers):
    pool = ThreadPoolExecutor(workers) if workers else None
    results = list(ordered_map(slow_square, range(20), pool, window=4))
    assert [item for item, _ in results] == list(range(20))
    assert [o.value for i, o in results if i != 13] == [i * i for i in range(20) if i != 13]
    assert isinstance(results[13][1].error, ValueError)


def test_ordered_map_computes_at_most_window_ahead():
    running, most = [0], [0]
    lock = threading.Lock()

    def work(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return x

    consumed = 0
    with ThreadPoolExecutor(8) as pool:
        for _item, _outcome in ordered_map(work, range(30), pool, window=3):
            consumed += 1
            time.sleep(0.002)
    assert consumed == 30 and most[0] <= 3


def test_prefetch_runs_ahead_boundedly_and_raises_in_the_consumer():
    made = []

    def source():
        for i in range(10):
            made.append(i)
            yield i
        raise RuntimeError("source broke")

    prefetch = Prefetch(source(), depth=2)
    seen = []
    with pytest.raises(RuntimeError, match="source broke"):
        for item in prefetch:
            time.sleep(0.01)
            assert len(made) <= len(seen) + 4  # queue of 2, one in the thread's hand, one just taken
            seen.append(item)
    assert seen == list(range(10))
    prefetch.close()


def test_prefetch_close_stops_the_thread_early():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    prefetch = Prefetch(endless(), depth=2)
    first = next(iter(prefetch))
    prefetch.close()
    assert first == 0 and not prefetch._thread.is_alive()


def test_sequencer_applies_in_submission_order_and_now_waits_for_everything_before():
    applied = []
    with ThreadPoolExecutor(4) as pool:
        seq = Sequencer(pool, window=3)
        for i in range(12):
            if i == 6:
                seq.now(lambda: applied.append("now"))
            seq.submit(lambda i=i: slow_square(i), lambda outcome, i=i: applied.append(i))
        seq.drain()
    assert applied == [0, 1, 2, 3, 4, 5, "now", 6, 7, 8, 9, 10, 11]


def test_sequencer_without_a_pool_applies_at_once():
    applied = []
    seq = Sequencer(None, window=1)
    seq.submit(lambda: 5, lambda outcome: applied.append(outcome.get()))
    assert applied == [5]
    assert Outcome(error=KeyError("x")).error is not None


# ------------------------------------------------------------------------------------------------- whole runs

NONDETERMINISTIC = {"seconds", "restore_seconds", "faces_per_second", "finished_at", "started_at", "updated_at"}


def scrub(value):
    """A record without its timings (the one thing two runs may not share)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in NONDETERMINISTIC}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def mixed_inputs(folder):
    """Photos of several shapes and face counts, one without faces, one broken file, in a fixed order."""
    folder.mkdir(parents=True)
    for name in ("group-of-eight.jpg", "old-portrait-00.jpg", "old-portrait-01.jpg", "whole-02.png"):
        shutil.copy(PHOTOS / name, folder / name)
    make_one_face_photos(folder, ["e-face.jpg", "f-face.png"])
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(folder / "g-wall.png")
    (folder / "h-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def run_and_collect(preset, src, out, *args):
    report = out.parent / f"{out.name}.jsonl"
    code, _o, err = tiny_run(preset, src, "-o", out, "--batch-size", 3, "--report", report, "--save-faces", *args)
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.name not in (STATE, ".facerestore.lock")}
    state = json.loads((out / STATE).read_text().replace(str(out), "OUT"))
    lines = [json.loads(line) for line in report.read_text().replace(str(out), "OUT").splitlines()]
    return code, err, files, [scrub(r) for r in lines], scrub(state)


@pytest.fixture(scope="module")
def serial_and_overlapped(tiny_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    src = mixed_inputs(root / "in")
    with home_environment(tiny_home):
        return {workers: run_and_collect(tiny_home / "difface-tiny.yaml", src, root / f"out-{workers}",
                                         "--io-workers", workers) for workers in (0, 3)}


def test_overlapped_run_makes_what_the_serial_run_makes(serial_and_overlapped):
    serial, overlapped = serial_and_overlapped[0], serial_and_overlapped[3]
    assert serial[0] == overlapped[0] == 1  # the broken file fails, the rest goes on
    assert serial[2].keys() == overlapped[2].keys() and len(serial[2]) > 8
    for name, data in serial[2].items():
        assert overlapped[2][name] == data, f"{name} differs"
    assert overlapped[3] == serial[3]  # the report, line by line, in the same order
    assert overlapped[4] == serial[4]  # the state manifest
    statuses = [r.get("status") for r in serial[3][:-1]]
    assert statuses.count("restored") == 6 and "failed" in statuses and "no_face" in statuses


def test_overlapped_fail_fast_stops_where_the_serial_run_stops(tiny_env, tmp_path):
    src = mixed_inputs(tmp_path / "in")
    results = {w: run_and_collect(tiny_env, src, tmp_path / f"out-{w}", "--io-workers", w, "--fail-fast")
               for w in (0, 2)}
    assert results[0][2] == results[2][2] and results[0][3] == results[2][3]
    assert results[0][3][-1]["summary"]["stopped_early"] == "--fail-fast"


@pytest.mark.parametrize("workers", [0, 2])
def test_memory_stays_bounded_on_a_long_folder(tiny_env, tmp_path, monkeypatch, workers):
    """40 photos: however many are read ahead or written behind, only a few exist at any moment."""
    from facerestore_cli import photos

    alive, most = [0], [0]
    lock = threading.Lock()
    original = photos.PhotoReader.decode

    def gone() -> None:
        with lock:
            alive[0] -= 1

    def decode(self, job):
        photo = original(self, job)
        weakref.finalize(photo, gone)
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        return photo

    monkeypatch.setattr(photos.PhotoReader, "decode", decode)
    src = tmp_path / "in"
    made = make_one_face_photos(src, ["p.png"])[0]
    for i in range(40):
        shutil.copy(made, src / f"p{i:02d}.png")
    made.unlink()
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--io-workers", workers, "--steps", 1)
    assert code == 0, err
    assert len(visible_files(tmp_path / "out")) == 40
    assert most[0] <= 12, most  # reads ahead (workers + 1 + 2 queued), a batch, writes behind (2 × workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_out_of_memory_back_off_with_workers(tiny_env, tmp_path, monkeypatch, workers):
    import torch

    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator

    sizes = []
    original = DiffusedEstimator.restore

    def restore(self, faces, generators, callback=None):
        sizes.append(int(faces.shape[0]))
        if faces.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, faces, generators, callback)

    monkeypatch.setattr(DiffusedEstimator, "restore", restore)
    src, report = tmp_path / "in", tmp_path / "r.jsonl"
    src.mkdir()
    shutil.copyfile(PHOTOS / "old-portrait-01.jpg", src / "a-portrait.jpg")
    make_one_face_photos(src, ["b-face.png"])
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--batch-size", 4, "--report", report,
                             "--io-workers", workers, *FOUR_FACES)
    assert code == 0, err
    assert sizes == [4, 2, 1, 1, 1, 1, 1] and "continuing with 1" in err
    records = by_name(report_lines(report)[:-1])
    assert [r["status"] for r in records.values()] == ["restored", "restored"]


def test_sigint_with_workers_records_what_was_written_and_a_rerun_finishes(tiny_home, tiny_env, tmp_path):
    names = ["a.png", "b.jpg", "c.png", "d.jpg"]
    src, out, log, report = tmp_path / "in", tmp_path / "out", tmp_path / "log.txt", tmp_path / "r.jsonl"
    make_one_face_photos(src, names)
    proc = start_run(tiny_home, src, "-o", out, "--steps", 10, "--io-workers", 2, "--report", report, log=log)
    try:
        wait_for_first_output(proc, out, log)
        proc.send_signal(signal.SIGINT)
        code = finish(proc)
    finally:
        stop(proc)
    assert code == 130, log.read_text()
    lines = report_lines(report)
    records = by_name(lines[:-1])
    assert lines[-1]["summary"]["interrupted"] == "SIGINT"
    assert_no_partial_outputs(out)
    written = {p.name for p in visible_files(out)}
    assert written == set(records) == set(state_entries(out)) and written < set(names)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--steps", 10, "--io-workers", 2)
    assert code == 0, err
    assert {p.name for p in visible_files(out)} == set(names)
