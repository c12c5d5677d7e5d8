"""Archival batches, part 1: the whole bad-input corpus in one run, and idempotent reruns from the state manifest.

All runs are in-process with tiny random DifFace weights and the real RetinaFace mobile0.25 detector."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archival_helpers import (FOUR_FACES, STATE, by_name, invoke, report_lines, state_entries, tiny_run,
                              visible_files)
from conftest import edited
from corpus import check_picture, make_corpus

UNCHANGED = "unchanged since last run"


def _no_models(*_args, **_kwargs):
    raise AssertionError("a run with nothing to do must not load any model")


# ---------------------------------------------------------------------------------------------- whole corpus


@pytest.fixture(scope="module")
def corpus_runs(tiny_home, tmp_path_factory):
    """The corpus folder run once (-q), then the identical command again (not quiet, models made unloadable)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FACERESTORE_HOME", str(tiny_home))
    mp.setenv("FACERESTORE_OFFLINE", "1")
    base = tmp_path_factory.mktemp("corpus-run")
    src, out = base / "corpus", base / "out"
    expected = make_corpus(src)
    if "portrait.jpg" not in expected:
        pytest.skip("../shared portrait missing")
    preset = tiny_home / "difface-tiny.yaml"
    try:
        first = tiny_run(preset, src, "-o", out, "--report", base / "first.jsonl", *FOUR_FACES)
        state_after_first = (out / STATE).read_bytes()
        mp.setattr("facerestore_cli.runner.load_models", _no_models)
        second = tiny_run(preset, src, "-o", out, "--report", base / "second.jsonl", *FOUR_FACES, quiet=False)
    finally:
        mp.undo()
    from facerestore_cli.discover import sniff_image

    not_image = {name for name in expected if sniff_image(src / name) is None}
    assert not_image == {"empty.jpg", "text.jpg"}
    folder_expected = dict(expected)  # named like images, the non-images fail with their reason too
    return {"src": src, "out": out, "expected": folder_expected, "not_image": not_image, "all": expected,
            "first": first, "second": second,
            "first_report": report_lines(base / "first.jsonl"), "second_report": report_lines(base / "second.jsonl"),
            "state_after_first": state_after_first}


def _output_name(name: str) -> str:
    return "still.png" if name == "still.gif" else name


def test_corpus_run_exits_1_and_reports_every_file_with_the_right_status(corpus_runs):
    code, stdout, stderr = corpus_runs["first"]
    assert code == 1, stderr
    assert stdout == ""
    lines = corpus_runs["first_report"]
    assert "summary" in lines[-1]
    records = by_name(lines[:-1])
    expected = corpus_runs["expected"]
    assert set(records) == set(expected)
    for name, (status, detail) in expected.items():
        rec = records[name]
        if status == "error":
            assert rec["status"] == "failed", (name, rec)
            assert detail in rec["reason"], (name, rec["reason"])
            assert rec["output"] is None
        elif detail["faces"]:
            assert rec["status"] == "restored", (name, rec)
            assert len(rec["faces"]) == 4
        else:
            assert rec["status"] == "no_face", (name, rec)
            assert rec["reason"] == "no face found"
    summary = lines[-1]["summary"]
    n_failed = sum(1 for s, _d in expected.values() if s == "error")
    assert summary["failed"] == n_failed and summary["restored"] == 1 and summary["faces"] == 4
    assert summary["no_face"] == len(expected) - n_failed - 1 and summary["skipped"] == 0
    # files named like images are never skipped quietly, whatever their content
    assert summary["skipped_not_image"] == 0


def test_corpus_non_images_named_explicitly_fail_with_their_reason(corpus_runs, tiny_env, tmp_path):
    src = corpus_runs["src"]
    names = sorted(corpus_runs["not_image"])
    report = tmp_path / "r.jsonl"
    code, _o, err = tiny_run(tiny_env, *(src / n for n in names), "-o", tmp_path / "out", "--report", report)
    assert code == 1
    records = by_name(report_lines(report)[:-1])
    for name in names:
        detail = corpus_runs["all"][name][1]
        assert records[name]["status"] == "failed" and detail in records[name]["reason"]
        assert any(f"{src / name}:" in line and detail in line for line in err.splitlines()), err
    assert visible_files(tmp_path / "out") == []


def test_corpus_failures_are_named_on_stderr_with_their_reason(corpus_runs):
    _code, _stdout, stderr = corpus_runs["first"]
    lines = stderr.splitlines()
    for name, (status, detail) in corpus_runs["expected"].items():
        path = str(corpus_runs["src"] / name)
        naming = [line for line in lines if path + ":" in line]
        if status == "error":
            assert any(detail in line for line in naming), (name, naming)
        else:
            assert not naming, (name, naming)


def test_corpus_outputs_exist_only_for_finished_files_and_keep_their_kind(corpus_runs):
    from facerestore_cli.imageio import read_image

    out, expected = corpus_runs["out"], corpus_runs["expected"]
    want = {_output_name(name) for name, (status, _d) in expected.items() if status == "ok"}
    assert {p.name for p in visible_files(out)} == want
    for name, (status, checks) in expected.items():
        if status != "ok":
            continue
        picture = read_image(out / _output_name(name))
        checks = {k: v for k, v in checks.items() if k != "note"}
        if name == "still.gif":
            checks["format"] = "PNG"
        assert check_picture(picture, checks) == [], name
    records = by_name(corpus_runs["first_report"][:-1])
    for name, rec in records.items():
        if rec["status"] != "failed":
            assert rec["output"] == str(out / _output_name(name))


def test_corpus_no_face_files_are_copied_byte_for_byte(corpus_runs):
    src, out, expected = corpus_runs["src"], corpus_runs["out"], corpus_runs["expected"]
    for name, (status, checks) in expected.items():
        if status == "ok" and not checks["faces"] and name != "still.gif":
            assert (out / name).read_bytes() == (src / name).read_bytes(), name
    portrait_in = np.asarray(Image.open(src / "portrait.jpg"), dtype=np.int16)
    portrait_out = np.asarray(Image.open(out / "portrait.jpg"), dtype=np.int16)
    assert np.abs(portrait_in - portrait_out).mean() > 1  # the faces were replaced


def test_gif_is_written_as_png(corpus_runs):
    from facerestore_cli.imageio import read_image

    out = corpus_runs["out"]
    assert not (out / "still.gif").exists()
    picture = read_image(out / "still.png")
    assert picture.format == "PNG" and picture.size == (16, 12)
    original = np.asarray(Image.open(corpus_runs["src"] / "still.gif").convert("RGB"))
    assert np.array_equal(picture.rgb, original)


def test_identical_rerun_skips_everything_and_loads_no_model(corpus_runs):
    code, stdout, stderr = corpus_runs["second"]
    assert code == 0, stderr
    assert stdout == ""
    lines = corpus_runs["second_report"]
    records, summary = by_name(lines[:-1]), lines[-1]["summary"]
    expected = corpus_runs["expected"]
    assert set(records) == set(expected)
    for name, (status, _detail) in expected.items():
        rec = records[name]
        assert rec["status"] == "skipped", (name, rec)
        if status == "error":
            assert rec["reason"].startswith("failed last run"), rec
            assert rec["output"] is None, rec  # there is no output for a file that failed
        else:
            assert rec["reason"] == UNCHANGED, rec
            assert rec["output"] == str(corpus_runs["out"] / _output_name(name))
    assert summary["skipped"] == summary["photos"] == len(expected) and summary["failed"] == 0
    assert f"{len(expected)} already done, skipped" in stderr
    assert "error" not in stderr


# ------------------------------------------------------------------------------------------- idempotent reruns


def _write_png(path: Path, value: int, size=(24, 32)) -> None:
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


@pytest.fixture
def small(tiny_env, tmp_path):
    """Three photos without faces and one truncated PNG, run once."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _write_png(src / "a.png", 40)
    _write_png(src / "b.png", 80)
    Image.fromarray(np.full((30, 20, 3), 120, np.uint8)).save(src / "c.jpg", quality=90)
    _write_png(tmp_path / "whole.png", 0, size=(64, 64))
    data = (tmp_path / "whole.png").read_bytes()
    (src / "bad.png").write_bytes(data[: len(data) // 2])
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--report", tmp_path / "first.jsonl")
    assert code == 1, err
    n = 0

    def rerun(*args, models: bool = True, **kwargs):
        nonlocal n
        n += 1
        report = tmp_path / f"rerun-{n}.jsonl"
        with pytest.MonkeyPatch.context() as mp:
            if not models:
                mp.setattr("facerestore_cli.runner.load_models", _no_models)
            code, stdout, stderr = tiny_run(tiny_env, src, "-o", out, "--report", report, *args, **kwargs)
        lines = report_lines(report)
        return code, stdout, stderr, by_name(lines[:-1]), lines[-1]["summary"]

    def dry(*args):
        code, stdout, stderr = tiny_run(tiny_env, src, "-o", out, "--dry-run", *args)
        assert code == 0, stderr
        return {Path(line.split("\t")[1]).name: line.split("\t") for line in stdout.splitlines()}

    return src, out, rerun, dry


def _statuses(records: dict) -> dict[str, str]:
    return {name: rec["status"] for name, rec in records.items()}


def test_touched_input_with_same_bytes_stays_skipped(small):
    src, out, rerun, _dry = small
    st = os.stat(src / "a.png")
    os.utime(src / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    code, _o, err, records, _s = rerun(models=False)
    assert code == 0, err
    assert _statuses(records) == {"a.png": "skipped", "b.png": "skipped", "c.jpg": "skipped", "bad.png": "skipped"}
    assert records["a.png"]["reason"] == UNCHANGED
    # the new mtime is remembered: the next run takes the fast path (no hashing) again
    assert state_entries(out)["a.png"]["fingerprint"]["mtime_ns"] == os.stat(src / "a.png").st_mtime_ns


def test_changed_input_bytes_redo_only_that_file(small):
    src, out, rerun, dry = small
    before = (src / "b.png").stat().st_mtime_ns
    _write_png(src / "b.png", 200)  # likely the same size: only the mtime and the bytes tell
    edited(src / "b.png", before)
    plan = dry()
    assert plan["b.png"][0] == "run" and plan["b.png"][3] == "input changed"
    assert {name for name, line in plan.items() if line[0] == "skip"} == {"a.png", "c.jpg", "bad.png"}
    code, _o, err, records, summary = rerun()
    assert code == 0, err
    assert _statuses(records) == {"a.png": "skipped", "b.png": "no_face", "c.jpg": "skipped", "bad.png": "skipped"}
    assert records["b.png"]["why"] == "input changed" and records["a.png"]["why"] is None
    assert (out / "b.png").read_bytes() == (src / "b.png").read_bytes()
    assert summary["no_face"] == 1 and summary["skipped"] == 3


def test_changed_seed_redoes_everything(small):
    _src, _out, rerun, dry = small
    plan = dry("--seed", 7)
    assert len(plan) == 4
    assert all(line[0] == "run" and line[3] == "method or parameters changed" for line in plan.values()), plan
    code, _o, _err, records, summary = rerun("--seed", 7)
    assert code == 1  # bad.png is tried again, and fails again
    assert _statuses(records) == {"a.png": "no_face", "b.png": "no_face", "c.jpg": "no_face", "bad.png": "failed"}
    assert {rec["why"] for rec in records.values()} == {"method or parameters changed"}
    code, _o, err, records, _s = rerun("--seed", 7, models=False)
    assert code == 0 and set(_statuses(records).values()) == {"skipped"}, err


def test_deleted_output_is_redone(small):
    src, out, rerun, dry = small
    (out / "c.jpg").unlink()
    assert dry()["c.jpg"][0::3] == ["run", "output missing"]
    code, _o, err, records, _s = rerun()
    assert code == 0, err
    assert _statuses(records) == {"a.png": "skipped", "b.png": "skipped", "c.jpg": "no_face", "bad.png": "skipped"}
    assert (out / "c.jpg").read_bytes() == (src / "c.jpg").read_bytes()


def test_force_redoes_everything(small):
    _src, _out, rerun, dry = small
    assert {line[3] for line in dry("--force").values()} == {"forced"}
    code, _o, _err, records, summary = rerun("--force")
    assert code == 1
    assert _statuses(records) == {"a.png": "no_face", "b.png": "no_face", "c.jpg": "no_face", "bad.png": "failed"}
    assert summary["skipped"] == 0


def test_failed_file_is_skipped_then_retried_with_redo_failed(small):
    src, out, rerun, _dry = small
    code, _o, err, records, _s = rerun(models=False)
    assert code == 0, err
    assert records["bad.png"]["status"] == "skipped"
    assert records["bad.png"]["reason"] == "failed last run (use --redo-failed)"
    code, _o, err, records, summary = rerun("--redo-failed")
    assert code == 1
    assert _statuses(records) == {"a.png": "skipped", "b.png": "skipped", "c.jpg": "skipped", "bad.png": "failed"}
    assert "truncated or corrupt PNG data" in records["bad.png"]["reason"] and f"{src / 'bad.png'}:" in err
    # fixed in place: the changed input is redone even without --redo-failed
    before = (src / "bad.png").stat().st_mtime_ns
    _write_png(src / "bad.png", 10)
    edited(src / "bad.png", before)
    code, _o, err, records, _s = rerun()
    assert code == 0, err
    assert records["bad.png"]["status"] == "no_face" and (out / "bad.png").exists()


def test_thousand_file_noop_rerun_takes_seconds(tiny_env, tmp_path, record_property):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1000):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / f"{i:04d}.png")
    fast = ("--det-min-side", "0")  # no 640-px detection copy of each 8-px image: the first run's cost is not the point
    started = time.perf_counter()
    code, _o, err = tiny_run(tiny_env, src, "-o", out, *fast)
    first_seconds = time.perf_counter() - started
    assert code == 0, err
    assert len(visible_files(out)) == 1000
    report = tmp_path / "rerun.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("facerestore_cli.runner.load_models", _no_models)
        started = time.perf_counter()
        code, _o, err = invoke("run", src, "-o", out, "--preset", tiny_env, "--detector", "retinaface_mobile0.25",
                               "--report", report, *fast)
        seconds = time.perf_counter() - started
    record_property("noop_rerun_seconds", round(seconds, 3))
    print(f"1,000-file no-op rerun: {seconds:.2f} s")
    assert code == 0, err
    assert "1000 already done, skipped" in err
    assert report_lines(report)[-1]["summary"]["skipped"] == 1000
    # nothing is decoded, detected or written: a small fraction of the first run, measured here on the same machine
    assert seconds < first_seconds / 4, (seconds, first_seconds)
