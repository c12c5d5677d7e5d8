"""End to end `facerestore run` on the real photos in ../shared with tiny random DifFace weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from cli_helpers import read_report, run_cli
from conftest import ALIGNED_LQ, KEEPING_PARAMETERS, PHOTOS, PRESET_FACE_PARAMETERS

DET = ("--detector", "retinaface_mobile0.25")


def far_from_faces_mask(shape, boxes, margin: float = 0.6) -> np.ndarray:
    """True where a pixel is far (box size × margin) from every face box."""
    h, w = shape[:2]
    keep = np.ones((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        keep[max(0, int(y1 - my)):int(y2 + my) + 1, max(0, int(x1 - mx)):int(x2 + mx) + 1] = False
    return keep


@pytest.fixture(scope="module")
def group_run(tiny_home, tmp_path_factory):
    """One run over group-of-eight.jpg and whole-02.png (RGBA PNG), shared by the assertions below."""
    import _pytest.capture  # noqa: F401

    mp = pytest.MonkeyPatch()
    mp.setenv("FACERESTORE_HOME", str(tiny_home))
    mp.setenv("FACERESTORE_OFFLINE", "1")
    src = tmp_path_factory.mktemp("in")
    for name in ("group-of-eight.jpg", "whole-02.png"):
        shutil.copy(PHOTOS / name, src / name)
    out = tmp_path_factory.mktemp("out")
    report = out.parent / (out.name + "-report.jsonl")
    from facerestore_cli.cli import main

    try:
        main(["run", str(src), "-o", str(out), "--preset", str(tiny_home / "difface-tiny.yaml"), *DET,
              "--report", str(report), "--save-faces", "--save-compare", "-q", "--batch-size", "3"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    mp.undo()
    return code, src, out, report


def test_group_run_exits_zero_and_reports_every_photo(group_run):
    code, src, out, report = group_run
    assert code == 0
    records, summary = read_report(report)
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in records}
    assert set(by_name) == {"group-of-eight.jpg", "whole-02.png"}
    group = by_name["group-of-eight.jpg"]
    assert group["status"] == "restored" and len(group["faces"]) == 8
    assert by_name["whole-02.png"]["status"] == "restored" and len(by_name["whole-02.png"]["faces"]) == 4
    for rec in records:
        assert rec["method"] == "difface-tiny"
        assert rec["parameters"] == {"steps": 3, "eta": 0.5, "start_t": 400, "seed": 12345,
                                     "detector": "retinaface_mobile0.25", **PRESET_FACE_PARAMETERS, "detect_max_side": None,
                                     "aligned": False, "precision": "fp32", "compile": False,
                                     "channels_last": False, "tool_version": "0.1.0", **KEEPING_PARAMETERS}
        assert set(rec["weights"]) == {"difface-swinir", "difface-unet", "retinaface-mobile0.25"}
        assert all(isinstance(v, str) and len(v) == 64 for v in rec["weights"].values())
        assert rec["mask"] == "square" and rec["seconds"] >= 0 and rec["device"].startswith("cpu")
        for face in rec["faces"]:
            assert len(face["box"]) == 4 and 0.9 < face["score"] <= 1.0
    assert summary["photos"] == 2 and summary["restored"] == 2 and summary["faces"] == 12 and summary["failed"] == 0


def test_outputs_keep_name_format_size_and_alpha(group_run):
    _code, src, out, _report = group_run
    for name in ("group-of-eight.jpg", "whole-02.png"):
        a, b = Image.open(src / name), Image.open(out / name)
        assert (b.format, b.size, b.mode) == (a.format, a.size, a.mode)
    alpha_in = np.asarray(Image.open(src / "whole-02.png"))[..., 3]
    alpha_out = np.asarray(Image.open(out / "whole-02.png"))[..., 3]
    assert np.array_equal(alpha_in, alpha_out)


def test_faces_change_and_far_pixels_do_not(group_run):
    _code, src, out, report = group_run
    records, _ = read_report(report)
    for rec in records:
        name = rec["input"].rsplit("/", 1)[-1]
        a = np.asarray(Image.open(src / name).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(out / name).convert("RGB"), dtype=np.int16)
        boxes = [f["box"] for f in rec["faces"]]
        far = far_from_faces_mask(a.shape, boxes)
        assert far.sum() > 0.1 * far.size
        if name.endswith(".png"):
            assert np.array_equal(a[far], b[far])  # lossless output: bit-identical away from faces
        else:
            assert np.abs(a[far] - b[far]).mean() < 1.5  # JPEG re-encode only
        for x1, y1, x2, y2 in boxes:
            cy, cx = int((y1 + y2) / 2), int((x1 + x2) / 2)
            patch = (slice(cy - 8, cy + 8), slice(cx - 8, cx + 8))
            assert np.abs(a[patch] - b[patch]).mean() > 3  # the face itself was replaced


def test_save_faces_and_compare_sheets(group_run):
    _code, _src, out, _report = group_run
    faces = sorted((out / "_faces").glob("group-of-eight_face*.png"))
    assert len(faces) == 8 and Image.open(faces[0]).size == (128, 128)
    sheet = Image.open(out / "_compare" / "group-of-eight.jpg")
    # 8 faces: an overview of the photo at the sheet's width, a header, then 3 rows of up to 3 pairs of 256 px crops
    width = 3 * (2 * 256 + 8) + 2 * 16
    assert sheet.size == (width, round(768 * width / 1024) + 28 + 3 * (28 + 256))
    assert (out / "_compare" / "whole-02.jpg").exists()


def test_aligned_inputs(tiny_env, tmp_path, capsys):
    out = tmp_path / "out"
    report = tmp_path / "r.jsonl"
    code, stdout, err = run_cli(capsys, "run", ALIGNED_LQ, "-o", out, "--preset", tiny_env, "--aligned", "--report", report, "-q")
    assert code == 0, err
    assert stdout == ""
    records, summary = read_report(report)
    assert summary["restored"] == len(list(ALIGNED_LQ.glob("*.png"))) == len(records)
    for rec in records:
        assert rec["status"] == "restored" and rec["mask"] is None and len(rec["faces"]) == 1
        a, b = Image.open(rec["input"]), Image.open(rec["output"])
        assert b.size == a.size == (512, 512) and b.format == "PNG"


def test_photo_without_face_is_copied_through(tiny_env, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(src / "wall.jpg", quality=80)
    report = tmp_path / "r.jsonl"
    code, _out, err = run_cli(capsys, "run", src, "-o", tmp_path / "out", "--preset", tiny_env, *DET, "--report", report, "-q")
    assert code == 0, err
    assert (tmp_path / "out" / "wall.jpg").read_bytes() == (src / "wall.jpg").read_bytes()
    records, summary = read_report(report)
    assert records[0]["status"] == "no_face" and records[0]["reason"] and summary["no_face"] == 1


def test_small_faces_are_skipped_and_reported(tiny_env, tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    code, _out, err = run_cli(capsys, "run", PHOTOS / "group-of-eight.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                              *DET, "--report", report, "--min-face", "1000", "-q")
    assert code == 0, err
    records, _ = read_report(report)
    assert records[0]["status"] == "no_face" and len(records[0]["skipped_faces"]) == 8
    assert "--min-face" in records[0]["skipped_faces"][0]["reason"]


def test_batch_invariance(tiny_env, tmp_path, capsys):
    """A face's result is bit-identical whatever batch it lands in: alone (padded), with faces of other photos,
    or at another position in the batch."""
    name = "old-portrait-00.jpg"
    runs = {}
    for label, extra in (("alone", []), ("after-group", [PHOTOS / "group-of-eight.jpg"]),
                         ("after-portrait", [PHOTOS / "old-portrait-01.jpg"])):
        out = tmp_path / label
        code, _o, err = run_cli(capsys, "run", *extra, PHOTOS / name, "-o", out, "--preset", tiny_env, *DET,
                                "--batch-size", 3, "--save-faces", "-q")
        assert code == 0, err
        runs[label] = sorted((out / "_faces").glob("old-portrait-00_face*.png"))
    assert len(runs["alone"]) == len(runs["after-group"]) == len(runs["after-portrait"]) == 4
    for label in ("after-group", "after-portrait"):
        for a, b in zip(runs["alone"], runs[label]):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), (label, a.name)


def test_seed_changes_result_and_is_reproducible(tiny_env, tmp_path, capsys):
    def faces(seed, label):
        out = tmp_path / label
        code, _o, err = run_cli(capsys, "run", ALIGNED_LQ / "256.png", "-o", out, "--preset", tiny_env, "--aligned",
                                "--seed", seed, "-q")
        assert code == 0, err
        return np.asarray(Image.open(out / "256.png"))

    a, b, c = faces(1, "a"), faces(1, "b"), faces(2, "c")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
