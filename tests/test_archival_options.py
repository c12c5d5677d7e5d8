"""Archival batches, part 2: out-of-memory batch halving, pipelines (--files-from - -0, --dry-run,
--print-outputs, --json), --fail-fast/--max-failures and the output options (--format, --metadata strip,
--provenance, --max-pixels). In-process runs with tiny random DifFace weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archival_helpers import (FOUR_FACES, LOCK, STATE, by_name, make_one_face_photos, report_lines, tiny_run,
                              visible_files)
from conftest import PHOTOS
from corpus import make_corpus


def _plain(path: Path, value: int = 90, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((*size, 3), value, np.uint8)
    Image.fromarray(arr).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return path


def _no_models(*_args, **_kwargs):
    raise AssertionError("must not load any model")


# ------------------------------------------------------------------------------------------------------- OOM


def _oom_when(monkeypatch, too_big) -> list[int]:
    """Make DifFace.restore raise CUDA's out-of-memory error when too_big(faces in the forward); returns the list
    of forward sizes seen."""
    import torch

    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator as DifFace

    original = DifFace.restore
    sizes: list[int] = []

    def restore(self, faces, generators, callback=None):
        sizes.append(int(faces.shape[0]))
        if too_big(faces.shape[0]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, faces, generators, callback)

    monkeypatch.setattr(DifFace, "restore", restore)
    return sizes


def test_out_of_memory_halves_the_batch_and_restores_every_face(tiny_env, tmp_path, monkeypatch):
    src, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "r.jsonl"
    src.mkdir()
    shutil.copyfile(PHOTOS / "old-portrait-01.jpg", src / "a-portrait.jpg")  # 4 faces: one full batch of 4
    make_one_face_photos(src, ["b-face.png"])
    sizes = _oom_when(monkeypatch, lambda n: n > 1)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--batch-size", 4, "--report", report, *FOUR_FACES)
    assert code == 0, err
    assert sizes == [4, 2, 1, 1, 1, 1, 1]  # 4 and 2 do not fit; then every face once, one at a time
    assert "out of memory with 4 faces per batch; continuing with 2" in err
    assert "continuing with 1" in err
    lines = report_lines(report)
    records, summary = by_name(lines[:-1]), lines[-1]["summary"]
    assert records["a-portrait.jpg"]["status"] == "restored" and len(records["a-portrait.jpg"]["faces"]) == 4
    assert records["b-face.png"]["status"] == "restored" and len(records["b-face.png"]["faces"]) == 1
    assert {r["batch_size"] for r in records.values()} == {1}
    assert summary["faces"] == 5 and summary["failed"] == 0
    assert {p.name for p in visible_files(out)} == {"a-portrait.jpg", "b-face.png"}


def test_out_of_memory_on_a_padded_batch_halves_instead_of_failing(tiny_env, tmp_path, monkeypatch):
    """One face, --batch-size 4: its batch is padded to 4 faces, and that is what does not fit. Halving the batch
    size (not giving up because only one *real* face was in it) restores it."""
    src, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "r.jsonl"
    make_one_face_photos(src, ["face.png"])
    sizes = _oom_when(monkeypatch, lambda n: n > 1)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--batch-size", 4, "--report", report)
    assert code == 0, err
    assert sizes[-1] == 1 and sizes[0] == 4
    rec = report_lines(report)[0]
    assert rec["status"] == "restored" and rec["batch_size"] == 1
    assert (out / "face.png").exists()


def test_out_of_memory_for_every_size_fails_those_photos_and_goes_on(tiny_env, tmp_path, monkeypatch):
    src, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "r.jsonl"
    make_one_face_photos(src, ["a-face.jpg", "b-face.png"])
    shutil.copyfile(PHOTOS / "old-portrait-01.jpg", src / "c-portrait.jpg")
    _plain(src / "d-wall.png")
    _oom_when(monkeypatch, lambda n: True)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--batch-size", 2, "--report", report)
    assert code == 1
    lines = report_lines(report)
    records, summary = by_name(lines[:-1]), lines[-1]["summary"]
    for name in ("a-face.jpg", "b-face.png", "c-portrait.jpg"):
        assert records[name]["status"] == "failed", records[name]
        assert "out of memory" in records[name]["reason"]
        assert f"{src / name}:" in err
        assert not (out / name).exists()  # never the unrestored face pasted back
    assert records["d-wall.png"]["status"] == "no_face"
    assert summary["failed"] == 3 and summary["photos"] == 4
    assert {p.name for p in visible_files(out)} == {"d-wall.png"}


# ------------------------------------------------------------------------------------------------- pipelines


def test_files_from_stdin_nul_separated_with_print_outputs(tiny_env, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    odd = _plain(src / "new\nline.png", 30)
    plain = _plain(src / "plain.jpg", 60)
    listing = bytes(odd) + b"\0" + bytes(plain) + b"\0"
    code, stdout, err = tiny_run(tiny_env, "--files-from", "-", "-0", "-o", out, "--print-outputs",
                                 stdin=listing, binary=True)
    assert code == 0, err
    assert stdout == bytes(out / "new\nline.png") + b"\0" + bytes(out / "plain.jpg") + b"\0"
    assert (out / "new\nline.png").read_bytes() == odd.read_bytes()
    assert (out / "plain.jpg").read_bytes() == plain.read_bytes()


def test_dry_run_lists_the_plan_writes_nothing_and_loads_no_model(tiny_env, tmp_path, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    a, b = _plain(src / "a.png", 10), _plain(src / "b.jpg", 20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("facerestore_cli.runner.load_models", _no_models)
        code, stdout, err = tiny_run(tiny_env, src, "-o", out, "--dry-run", "--report", tmp_path / "r.jsonl")
    assert code == 0, err
    assert stdout.splitlines() == [f"run\t{a}\t{out / 'a.png'}\tnew", f"run\t{b}\t{out / 'b.jpg'}\tnew"]
    assert not out.exists() and not (tmp_path / "r.jsonl").exists()

    code, _o, err = tiny_run(tiny_env, src, "-o", out)
    assert code == 0, err
    _plain(src / "c.png", 30)
    _plain(b, 200)  # b changed
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a touched: same bytes (a run would note the new mtime)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    monkeypatch.setattr("facerestore_cli.runner.load_models", _no_models)
    code, stdout, err = tiny_run(tiny_env, src, "-o", out, "--dry-run", "--force")
    assert code == 0, err
    assert {line.split("\t")[0] for line in stdout.splitlines()} == {"run"}
    code, stdout, err = tiny_run(tiny_env, src, "-o", out, "--dry-run")
    assert code == 0, err
    plan = {Path(line.split("\t")[1]).name: line.split("\t") for line in stdout.splitlines()}
    assert plan["a.png"] == ["skip", str(a), str(out / "a.png"), "unchanged since last run"]
    assert plan["c.png"] == ["run", str(src / "c.png"), str(out / "c.png"), "new"]
    assert plan["b.jpg"][0] == "run" and plan["b.jpg"][3] == "input changed"
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert after == before and set(before) == {"a.png", "b.jpg", STATE, LOCK}


def test_print_outputs_prints_exactly_the_output_paths_also_when_skipped(tiny_env, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _plain(src / "a.png", 10)
    _plain(src / "b.jpg", 20)
    _plain(src / "sub" / "c.png", 30)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "d.gif")
    (src / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt: fails
    want = [str(out / n) for n in ("a.png", "b.jpg", "d.png", "sub/c.png")]
    code, stdout, err = tiny_run(tiny_env, src, "-r", "-o", out, "--print-outputs")
    assert code == 1 and f"{src / 'e.png'}:" in err
    assert sorted(stdout.splitlines()) == sorted(want) and stdout.endswith("\n")
    code, stdout, err = tiny_run(tiny_env, src, "-r", "-o", out, "--print-outputs")  # all skipped now
    assert code == 0, err
    assert sorted(stdout.splitlines()) == sorted(want)  # not the output of e.png, which failed last time
    code, stdout, err = tiny_run(tiny_env, src, "-r", "-o", out, "--print-outputs", "-0", "--redo-failed",
                                 binary=True)
    assert code == 1
    assert sorted(stdout.split(b"\0")[:-1]) == sorted(p.encode() for p in want) and stdout.endswith(b"\0")


def test_json_prints_one_record_per_file_and_a_summary(tiny_env, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _plain(src / "a.png", 10)
    _plain(src / "b.jpg", 20)
    (src / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    for attempt in ("first", "rerun"):
        code, stdout, err = tiny_run(tiny_env, src, "-o", out, "--json")
        lines = [json.loads(line) for line in stdout.splitlines()]  # nothing but JSON
        assert len(lines) == 4 and "summary" in lines[-1], attempt
        records = by_name(lines[:-1])
        assert set(records) == {"a.png", "b.jpg", "c.png"}
        if attempt == "first":
            assert code == 1
            assert [records[n]["status"] for n in ("a.png", "b.jpg", "c.png")] == ["no_face", "no_face", "failed"]
            assert lines[-1]["summary"]["failed"] == 1
        else:
            assert code == 0, err
            assert {r["status"] for r in records.values()} == {"skipped"}
            assert lines[-1]["summary"]["skipped"] == 3


# ---------------------------------------------------------------------------------------- stopping early


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Sorted: bad, ok, bad, ok, bad, ok (all without faces)."""
    src = tmp_path / "in"
    src.mkdir()
    expected = make_corpus(tmp_path / "corpus")
    for i, name in enumerate(("garbage.jpg", "x1.png", "truncated.jpg", "x2.png", "garbage.png", "x3.png")):
        target = src / f"{i}-{name}"
        if name.startswith("x"):
            _plain(target, 40 * i)
        else:
            assert expected[name][0] == "error"
            shutil.copyfile(tmp_path / "corpus" / name, target)
    return src


@pytest.mark.parametrize("option, failed, seen, stopped", [
    (("--fail-fast",), 1, 1, "--fail-fast"),
    (("--max-failures", "2"), 2, 3, "--max-failures 2 reached"),
])
def test_stop_early(tiny_env, tmp_path, mixed, option, failed, seen, stopped):
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    code, _o, err = tiny_run(tiny_env, mixed, "-o", out, "--report", report, *option)
    assert code == 1
    lines = report_lines(report)
    summary = lines[-1]["summary"]
    assert summary["failed"] == failed and summary["stopped_early"] == stopped
    assert summary["photos"] == 6 and summary["unfinished"] == 6 - seen  # every input: done, failed or not reached
    assert len(lines) - 1 == seen
    assert f"stopping: {stopped}" in err
    # the rest is left for the next run, which goes on where this one stopped
    code, _o, err = tiny_run(tiny_env, mixed, "-o", out, "--report", report)
    records = by_name(report_lines(report)[:-1])
    assert code == 1
    assert sum(r["status"] == "skipped" for r in records.values()) == seen
    assert {p.name for p in visible_files(out)} == {"1-x1.png", "3-x2.png", "5-x3.png"}


# ------------------------------------------------------------------------------------------ output options


def test_format_png_and_provenance(tiny_env, tmp_path):
    from facerestore_cli.imageio import read_image

    src, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "r.jsonl"
    make_one_face_photos(src, ["face.jpg"])
    expected = make_corpus(tmp_path / "corpus")
    shutil.copyfile(tmp_path / "corpus" / "rotated.jpg", src / "rotated.jpg")
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--format", "png", "--provenance", "--report", report)
    assert code == 0, err
    records = by_name(report_lines(report)[:-1])
    assert records["face.jpg"]["status"] == "restored" and records["rotated.jpg"]["status"] == "no_face"
    assert {p.name for p in visible_files(out)} == {"face.png", "rotated.png"}
    sizes = {"face.png": Image.open(src / "face.jpg").size, "rotated.png": expected["rotated.jpg"][1]["size"]}
    for name, size in sizes.items():
        picture = read_image(out / name)
        assert picture.format == "PNG" and picture.size == size
        software = Image.open(out / name).getexif().get(0x0131)
        assert software and "facerestore" in software and "difface-tiny" in software, software
        assert records[Path(name).stem + ".jpg"]["output"] == str(out / name)


def test_metadata_strip_drops_exif_icc_xmp_iptc(tiny_env, tmp_path):
    from facerestore_cli.imageio import read_image

    src, out = tmp_path / "in", tmp_path / "out"
    expected = make_corpus(tmp_path / "corpus")
    src.mkdir()
    for name in ("rotated.jpg", "rgba.png", "rgb8.tif"):
        assert expected[name][1]["exif"]
        shutil.copyfile(tmp_path / "corpus" / name, src / name)
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--metadata", "strip")
    assert code == 0, err
    for name in ("rotated.jpg", "rgba.png", "rgb8.tif"):
        before, after = read_image(src / name), read_image(out / name)
        assert (after.exif, after.icc_profile, after.xmp, after.iptc) == (None, None, None, None), name
        assert after.text == {} and (before.text or name == "rgb8.tif"), name
        assert after.format == before.format and after.size == before.size
        assert np.array_equal(after.rgb, before.rgb) or name.endswith(".jpg")
    info = Image.open(out / "rotated.jpg").info
    assert "exif" not in info and "icc_profile" not in info


def test_max_pixels_fails_larger_photos_with_the_limit_in_the_reason(tiny_env, tmp_path):
    src, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "r.jsonl"
    _plain(src / "small.png", 10, size=(25, 40))  # 1,000 pixels: at the limit
    _plain(src / "large.png", 20, size=(30, 40))  # 1,200 pixels
    code, _o, err = tiny_run(tiny_env, src, "-o", out, "--max-pixels", 1000, "--report", report)
    assert code == 1
    records = by_name(report_lines(report)[:-1])
    assert records["small.png"]["status"] == "no_face"
    assert records["large.png"]["status"] == "failed"
    assert "40×30 = 1,200 pixels, above the limit of 1,000" in records["large.png"]["reason"]
    assert f"{src / 'large.png'}:" in err and "limit of 1,000" in err
    assert {p.name for p in visible_files(out)} == {"small.png"}


def test_what_the_output_format_or_reading_changed_is_in_the_report(tiny_env, tmp_path):
    """No silent loss: alpha dropped by --format jpg, and a CMYK input converted on reading, are reported."""
    src, report = tmp_path / "in", tmp_path / "r.jsonl"
    make_corpus(tmp_path / "corpus")
    src.mkdir()
    for name in ("rgba.png", "cmyk.jpg"):
        shutil.copyfile(tmp_path / "corpus" / name, src / name)
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "out", "--format", "jpg", "--report", report)
    assert code == 0, err
    records = by_name(report_lines(report)[:-1])
    assert any("alpha" in note for note in records["rgba.png"]["notes"]), records["rgba.png"]
    assert any("CMYK" in note for note in records["cmyk.jpg"]["notes"]), records["cmyk.jpg"]
    code, _o, err = tiny_run(tiny_env, src, "-o", tmp_path / "same", "--report", report)
    assert code == 0, err
    records = by_name(report_lines(report)[:-1])
    assert records["rgba.png"]["notes"] == []  # PNG keeps everything: nothing to report
