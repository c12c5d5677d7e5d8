"""Input discovery through the real CLI: folder trees, hidden and non-image files, content sniffing,
--files-from, awkward file names and output collisions."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import PHOTOS

DET = ("--detector", "retinaface_mobile0.25")
ONE_FACE_BOX = (75, 90, 160, 189)  # a crop of old-portrait-01.jpg holding exactly one face


def plain(path: Path, value: int = 90, fmt: str | None = None) -> Path:
    """A small face-free image (copied through unchanged by a run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("PNG" if path.suffix == ".png" else "JPEG")
    Image.fromarray(np.full((40, 56, 3), value, np.uint8)).save(path, format=fmt)
    return path


def one_face(path: Path, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(PHOTOS / "old-portrait-01.jpg").convert("RGB").crop(ONE_FACE_BOX).save(path, format=fmt)
    return path


def restore(capsys, preset, *args, quiet: bool = True):
    """`facerestore run ... --preset tiny --detector mobile0.25 [-q]` → (code, stdout, stderr)."""
    return run_cli(capsys, "run", *args, "--preset", preset, *DET, *(["-q"] if quiet else []))


def files_under(root: Path) -> set[str]:
    """Outputs under root, without the run's own hidden state and lock files."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


# -- folder trees --------------------------------------------------------------------------------------------------

def _tree(src: Path) -> None:
    plain(src / "top.jpg")
    plain(src / "a" / "b" / "c.jpg", 120)
    plain(src / "a" / "d.png", 30)


def test_recursive_mirrors_the_input_tree(tiny_env, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _tree(src)
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, src, "-o", out, "--recursive", "--report", report)
    assert code == 0, err
    assert files_under(out) == {"top.jpg", "a/b/c.jpg", "a/d.png"}
    for rel in ("top.jpg", "a/b/c.jpg", "a/d.png"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()  # face-free: copied through
    records, summary = read_report(report)
    assert summary["photos"] == 3 and summary["no_face"] == 3
    assert {Path(r["output"]).relative_to(out).as_posix() for r in records} == {"top.jpg", "a/b/c.jpg", "a/d.png"}


def test_without_recursive_subfolders_are_not_entered(tiny_env, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _tree(src)
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, src, "-o", out, "--report", report)
    assert code == 0, err
    assert files_under(out) == {"top.jpg"}
    _records, summary = read_report(report)
    assert summary["photos"] == 1
    assert summary["skipped_hidden"] == 0 and summary["skipped_not_image"] == 0  # sub-folders are not "skipped files"


def test_folder_with_only_subfolders_needs_recursive(tiny_env, tmp_path, capsys):
    src = tmp_path / "in"
    plain(src / "sub" / "x.jpg")
    code, _o, err = restore(capsys, tiny_env, src, "-o", tmp_path / "out")
    assert code == 3 and "--recursive" in err


def test_output_inside_the_input_folder_is_not_read_back(tiny_env, tmp_path, capsys):
    src = tmp_path / "in"
    plain(src / "x.jpg")
    plain(src / "sub" / "y.jpg")
    out = src / "restored"
    plain(out / "old-result.jpg")  # left over from an earlier run
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, src, "-o", out, "-r", "--report", report)
    assert code == 0, err
    records, _summary = read_report(report)
    assert sorted(Path(r["input"]).relative_to(src).as_posix() for r in records) == ["sub/y.jpg", "x.jpg"]


def test_input_folder_inside_the_output_folder_is_read(tiny_env, tmp_path, capsys):
    """`run lib/raw -o lib`: the inputs lie under the output folder but are not earlier results."""
    lib = tmp_path / "lib"
    plain(lib / "raw" / "x.jpg")
    code, _o, err = restore(capsys, tiny_env, lib / "raw", "-o", lib)
    assert code == 0, err
    assert (lib / "x.jpg").read_bytes() == (lib / "raw" / "x.jpg").read_bytes()


# -- hidden and non-image files ------------------------------------------------------------------------------------

def test_hidden_and_non_image_files_are_skipped_and_counted(tiny_env, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    plain(src / "ok.jpg")
    plain(src / ".hidden.jpg")  # a real image, but hidden
    plain(src / "._ok.jpg")  # macOS AppleDouble companion
    (src / "notes.txt").write_text("not an image")
    (src / "Thumbs.db").write_bytes(b"\0" * 64)
    (src / "fake.jpg").write_text("text with an image extension")  # named like a photo: fails with its reason
    report = tmp_path / "r.jsonl"
    code, stdout, err = restore(capsys, tiny_env, src, "-o", out, "--report", report, quiet=False)
    assert code == 1, err
    assert stdout == ""
    assert files_under(out) == {"ok.jpg"}
    records, summary = read_report(report)
    assert sorted((Path(r["input"]).name, r["status"]) for r in records) == [("fake.jpg", "failed"), ("ok.jpg", "no_face")]
    assert "fake.jpg" in err and "text" in err
    assert summary["skipped_hidden"] == 2 and summary["skipped_not_image"] == 2
    done = [line for line in err.splitlines() if line.startswith("done:")]
    assert len(done) == 1, err
    assert "4 non-image/hidden files skipped" in done[0]


def test_hidden_folders_are_not_processed_with_recursive(tiny_env, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    plain(src / "ok.jpg")
    plain(src / ".thumbnails" / "ok.jpg")
    plain(src / "sub" / ".x.jpg")
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, src, "-o", out, "-r", "--report", report)
    assert code == 0, err
    assert files_under(out) == {"ok.jpg"}
    _records, summary = read_report(report)
    assert summary["photos"] == 1 and summary["skipped_hidden"] == 2


def test_explicit_hidden_file_is_taken(tiny_env, tmp_path, capsys):
    """Files named on the command line are always taken; only folder scans skip hidden entries."""
    src = plain(tmp_path / ".dot.jpg")
    code, _o, err = restore(capsys, tiny_env, src, "-o", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / ".dot.jpg").exists()


def test_png_named_jpg_is_processed_by_content(tiny_env, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    one_face(src / "portrait.jpg", fmt="PNG")
    assert (src / "portrait.jpg").read_bytes()[:4] == b"\x89PNG"
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, src, "-o", out, "--report", report)
    assert code == 0, err
    records, summary = read_report(report)
    assert summary["skipped_not_image"] == 0
    assert len(records) == 1 and records[0]["status"] == "restored" and len(records[0]["faces"]) == 1
    result = Image.open(out / "portrait.jpg")
    assert result.size == Image.open(src / "portrait.jpg").size
    assert result.format == "PNG"  # the source's real format is kept (lossless stays lossless)


# -- --files-from --------------------------------------------------------------------------------------------------

def _three(src: Path) -> list[Path]:
    return [plain(src / f"{name}.jpg", 40 * i) for i, name in enumerate(("a", "b", "c"), 1)]


def test_files_from_file(tiny_env, tmp_path, capsys):
    a, _b, c = _three(tmp_path / "in")
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{a}\r\n\n{c}\n".encode())  # CRLF and blank lines are tolerated
    out = tmp_path / "out"
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, "--files-from", listing, "-o", out, "--report", report)
    assert code == 0, err
    assert files_under(out) == {"a.jpg", "c.jpg"}
    records, _ = read_report(report)
    assert sorted(r["input"] for r in records) == sorted([str(a), str(c)])


def test_files_from_stdin(tiny_env, tmp_path, monkeypatch, capsys):
    _a, b, c = _three(tmp_path / "in")

    class FakeStdin:
        buffer = io.BytesIO(f"{b}\n{c}".encode())  # no trailing newline

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    out = tmp_path / "out"
    code, _o, err = restore(capsys, tiny_env, "--files-from", "-", "-o", out)
    assert code == 0, err
    assert files_under(out) == {"b.jpg", "c.jpg"}


def test_files_from_missing_list_is_usage_error(tiny_env, tmp_path, capsys):
    code, _o, err = restore(capsys, tiny_env, "--files-from", tmp_path / "nope.txt", "-o", tmp_path / "out")
    assert code == 2 and "nope.txt" in err


def test_files_from_naming_a_missing_file_fails_that_file_and_goes_on(tiny_env, tmp_path, capsys):
    """A list made earlier (find ... > list) may name files deleted since: each is a failed file with its reason."""
    a, _b, _c = _three(tmp_path / "in")
    gone = tmp_path / "in" / "gone.jpg"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a}\n{gone}\n")
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, "--files-from", listing, "-o", tmp_path / "out", "--report", report)
    assert code == 1, err
    records, summary = read_report(report)
    by_input = {r["input"]: r for r in records}
    assert by_input[str(gone)]["status"] == "failed" and by_input[str(gone)]["reason"] == "file not found"
    assert by_input[str(a)]["status"] in ("restored", "no_face") and (tmp_path / "out" / a.name).exists()
    assert f"error: {gone}: file not found" in err and summary["failed"] == 1


# -- awkward names -------------------------------------------------------------------------------------------------

def test_spaces_and_unicode_in_paths(tiny_env, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out ü"
    photo = one_face(src / "Ünïcode folder" / "fötö 1.jpg")
    report = tmp_path / "r.jsonl"
    code, _o, err = restore(capsys, tiny_env, src, "-o", out, "-r", "--report", report, "--save-faces")
    assert code == 0, err
    result = out / "Ünïcode folder" / "fötö 1.jpg"
    assert result.is_file() and Image.open(result).size == Image.open(photo).size
    assert (out / "_faces" / "Ünïcode folder" / "fötö 1_face00.png").is_file()
    records, _ = read_report(report)
    assert records[0]["input"] == str(photo) and records[0]["output"] == str(result)
    assert records[0]["status"] == "restored"
    assert "fötö 1.jpg" in report.read_text(encoding="utf-8")  # readable UTF-8, not \\u escapes


def test_brackets_in_paths_are_printed_verbatim(tiny_env, tmp_path, capsys):
    """Paths are not Rich markup: "[draft]" and "[/b]" must reach the terminal unchanged."""
    for folder in ("[draft] trip", "x[/b]"):
        missing = tmp_path / folder / "nope.jpg"
        code, _o, err = restore(capsys, tiny_env, missing, "-o", tmp_path / "out")
        assert code == 2, err
        assert str(missing) in err and "Traceback" not in err


# -- collisions ----------------------------------------------------------------------------------------------------

def test_two_inputs_with_the_same_output_is_usage_error(tiny_env, tmp_path, capsys):
    """x.png and x.gif (GIF is written as PNG) in one folder would both write x.png."""
    x1 = plain(tmp_path / "one" / "x.png")
    Image.new("RGB", (40, 30), (50, 50, 50)).save(tmp_path / "one" / "x.gif")
    out = tmp_path / "out"
    code, _o, err = restore(capsys, tiny_env, x1, tmp_path / "one" / "x.gif", "-o", out)
    assert code == 2
    assert "same output" in err and "x.png" in err
    assert not out.exists()


def test_named_files_from_several_folders_mirror_their_common_folder(tiny_env, tmp_path, monkeypatch, capsys):
    """find ... -print0 | facerestore run --files-from - -0: a/IMG_0001.jpg and b/IMG_0001.jpg both restored."""
    a, b = plain(tmp_path / "in" / "a" / "IMG_0001.jpg"), plain(tmp_path / "in" / "b" / "IMG_0001.jpg", 30)

    class FakeStdin:
        buffer = io.BytesIO(bytes(a) + b"\0" + bytes(b) + b"\0")

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    out = tmp_path / "out"
    code, _o, err = restore(capsys, tiny_env, "--files-from", "-", "-0", "-o", out)
    assert code == 0, err
    assert (out / "a" / "IMG_0001.jpg").read_bytes() == a.read_bytes()
    assert (out / "b" / "IMG_0001.jpg").read_bytes() == b.read_bytes()


def test_base_sets_the_folder_named_files_mirror(tiny_env, tmp_path, capsys):
    a = plain(tmp_path / "in" / "2019" / "x.jpg")
    out = tmp_path / "out"
    code, _o, err = restore(capsys, tiny_env, a, "--base", tmp_path, "-o", out)
    assert code == 0, err
    assert (out / "in" / "2019" / "x.jpg").is_file()
    code, _o, err = restore(capsys, tiny_env, a, "--base", tmp_path / "elsewhere", "-o", out)
    assert code == 2 and f"{a} is not inside --base" in err


def test_two_folders_with_the_same_name_collide(tiny_env, tmp_path, capsys):
    plain(tmp_path / "a" / "photos" / "x.jpg")
    plain(tmp_path / "b" / "photos" / "x.jpg", 30)
    code, _o, err = restore(capsys, tiny_env, tmp_path / "a" / "photos", tmp_path / "b" / "photos",
                            "-o", tmp_path / "out")
    assert code == 2 and "same output" in err


def test_two_folders_are_kept_apart_under_their_names(tiny_env, tmp_path, capsys):
    plain(tmp_path / "left" / "x.jpg")
    plain(tmp_path / "right" / "x.jpg", 30)
    out = tmp_path / "out"
    code, _o, err = restore(capsys, tiny_env, tmp_path / "left", tmp_path / "right", "-o", out)
    assert code == 0, err
    assert files_under(out) == {"left/x.jpg", "right/x.jpg"}


@pytest.mark.parametrize("where", ["same-folder", "explicit"])
def test_output_that_would_overwrite_its_input_is_refused(tiny_env, tmp_path, capsys, where):
    photo = plain(tmp_path / "x.jpg")
    before = photo.read_bytes()
    target = tmp_path if where == "same-folder" else photo
    code, _o, err = restore(capsys, tiny_env, target, "-o", tmp_path)
    assert code == 2 and "overwrite" in err
    assert photo.read_bytes() == before
