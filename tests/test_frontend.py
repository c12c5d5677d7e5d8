"""The face front end on the real photos in ../shared: DifFace's detection (threshold 0.8, detection copy scaled up to
a 640-px short side, eye-distance rule), face selection and numbering, the paste-back mask, --blend, --draw-boxes."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from cli_helpers import read_report, run_cli
from conftest import PHOTOS, RETINA_MOBILE, require_shared, write_random_parsenet

DET = ("--detector", "retinaface_mobile0.25")
FACEXLIB = ("--det-threshold", "0.97", "--det-min-side", "0", "--min-face", "20")  # facexlib's front end


@pytest.fixture(scope="module")
def detector():
    require_shared()
    import torch

    from facerestore_cli.archs import build_arch
    from facerestore_cli.faces.detect import FaceDetector

    model = build_arch("retinaface", {"network": "mobile0.25"})
    state = torch.load(RETINA_MOBILE, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})

    def make(threshold=0.97, min_side=None):
        return FaceDetector(model, threshold=threshold, min_side=min_side)

    return make


def photo(name: str, scale: float = 1.0) -> np.ndarray:
    from facerestore_cli.imageio import read_image

    rgb = read_image(PHOTOS / name).rgb
    return rgb if scale == 1 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def widths(faces) -> list[int]:
    return [round(f.box[2] - f.box[0]) for f in faces]


def test_difface_detection_finds_the_faint_face_facexlib_misses(detector):
    """old-portrait-01 (248×189): facexlib's front end finds 4 faces; DifFace's (0.8, 640-px short side) also the
    small faint one at the left edge (about 27 px, score ≈ 0.94), which becomes face #0."""
    rgb = photo("old-portrait-01.jpg")
    before = detector().detect(rgb)
    after = detector(0.8, 640).detect(rgb)
    assert len(before) == 4 and len(after) == 5
    assert 20 <= widths(after)[0] <= 35 and 0.85 < after[0].score < 0.97
    assert after[0].box[0] < min(f.box[0] for f in before)


def test_scaled_up_detection_agrees_with_full_size_within_3_px(detector):
    """The detection copy's boxes and landmarks map back onto the photo: on old-portrait-00 (310 px short side,
    scaled ×2.06 for detection; faces 31–43 px) they agree with detection at its own size within a tenth of the
    face's width (the network sees more detail, so it is not the same answer)."""
    rgb = photo("old-portrait-00.jpg")
    plain, scaled = detector().detect(rgb), detector(0.97, 640).detect(rgb)
    assert len(plain) == len(scaled) == 4
    for a, b in zip(plain, scaled):
        tolerance = 0.1 * (a.box[2] - a.box[0])
        assert np.abs(np.subtract(a.box, b.box)).max() < tolerance
        assert np.abs(a.landmarks - b.landmarks).max() < tolerance


def test_eye_distance_is_measured_at_a_512_px_short_side(detector):
    from facerestore_cli.faces.frontend import choose_faces, eye_distance
    from facerestore_cli.faces.settings import FaceSettings

    rgb = photo("old-portrait-01.jpg")  # 189 px short side: ×2.71
    faces = detector(0.8, 640).detect(rgb)
    h, w = rgb.shape[:2]
    raw = np.linalg.norm(faces[1].landmarks[0] - faces[1].landmarks[1])
    assert eye_distance(faces[1].landmarks, h, w) == pytest.approx(raw * 512 / 189, rel=1e-6)
    kept, left = choose_faces(faces, h, w, FaceSettings(eye_distance=40, min_face=0))
    assert [n for n, _ in kept] == [1, 2, 3, 4]  # the faint face's eyes are ~10 px apart, ×2.71 = 27 < 40
    assert left[0]["index"] == 0 and left[0]["reason"].startswith("eye distance")


def test_selection_rules_number_by_detection_order():
    from facerestore_cli.faces.detect import DetectedFace
    from facerestore_cli.faces.frontend import choose_faces
    from facerestore_cli.faces.settings import FaceSettings

    def face(x, size, score=0.99):
        eyes = np.array([[x + size * 0.3, 50], [x + size * 0.7, 50], [0, 0], [0, 0], [0, 0]], np.float32)
        return DetectedFace((x, 40, x + size, 40 + size), score, eyes)

    dets = [face(0, 10), face(100, 60, 0.9), face(450, 30), face(900, 80)]  # a 1000×600 photo
    def numbers(**kw):
        kept, left = choose_faces(dets, 600, 1000, FaceSettings(**kw))
        return [n for n, _ in kept], {e["index"]: e["reason"] for e in left}

    assert numbers(min_face=20) == ([1, 2, 3], {0: "face 10 px < --min-face 20"})
    kept, left = numbers(min_face=0, min_score=0.95)
    assert kept == [0, 2, 3] and left[1].startswith("score 0.900 < --min-score")
    assert numbers(min_face=0, indices=(0, 2))[0] == [0, 2]
    assert numbers(min_face=0, select="largest")[0] == [3]
    assert numbers(min_face=0, select="center")[0] == [2]
    kept, left = numbers(min_face=20, select="largest", indices=None)
    assert kept == [3] and left[0].startswith("face") and left[1] == "not the largest face (--largest-face)"


@pytest.mark.parametrize("args, message", [
    (("--faces", "a,b"), "--faces takes comma-separated face numbers"),
    (("--only-center-face", "--largest-face"), "contradict"),
    (("--faces", "0", "--largest-face"), "cannot be combined"),
    (("--blend", "1.5"), "--blend must be in [0, 1]"),
    (("--upscale", "3"), "--upscale must be one of 1, 2, 4"),
    (("--bg-upsampler", "lanczos"), "--bg-upsampler must be one of"),
    (("--bg-tile", "101"), "--bg-tile must be 0"),
    (("--det-threshold", "1.2"), "--det-threshold must be in [0, 1)"),
])
def test_bad_front_end_options_are_usage_errors(tiny_env, tmp_path, capsys, args, message):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                              *DET, *args)
    assert code == 2 and message in err and not (tmp_path / "out").exists()


def test_aligned_refuses_photo_only_options(tiny_env, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "run", PHOTOS / "old-portrait-01.jpg", "-o", tmp_path / "out", "--preset", tiny_env,
                              "--aligned", "--det-threshold", "0.5", "--draw-boxes")
    assert code == 2 and "--det-threshold/--draw-boxes do not apply with --aligned" in err


def run_photo(capsys, preset, src, out, *args):
    report = out.parent / (out.name + ".jsonl")
    code, _o, err = run_cli(capsys, "run", src, "-o", out, "--preset", preset, *DET, "--report", report, "-q",
                            "--format", "png", *args)
    assert code == 0, err
    records, _summary = read_report(report)
    return records[0]


def test_a_face_facexlib_skips_as_too_small_is_restored(tiny_env, tmp_path, capsys):
    """old-portrait-00 at half size (246×155): facexlib's front end finds two faces of 15–18 px and skips both as
    below 20 px, so the photo goes through unrestored; the preset's DifFace front end restores all four."""
    src = tmp_path / "small.png"
    cv2.imwrite(str(src), cv2.resize(cv2.imread(str(PHOTOS / "old-portrait-00.jpg")), None, fx=0.5, fy=0.5,
                                     interpolation=cv2.INTER_AREA))
    before = run_photo(capsys, tiny_env, src, tmp_path / "before", *FACEXLIB)
    after = run_photo(capsys, tiny_env, src, tmp_path / "after")
    assert before["status"] == "no_face" and before["reason"] == "no face chosen (see skipped_faces)"
    assert len(before["skipped_faces"]) == 2 and all("--min-face 20" in s["reason"] for s in before["skipped_faces"])
    assert after["status"] == "restored" and len(after["faces"]) == 4 and after["skipped_faces"] == []
    assert min(f["box"][2] - f["box"][0] for f in after["faces"]) < 20
    assert after["parameters"]["det_threshold"] == 0.8 and after["parameters"]["det_min_side"] == 640


def test_faces_option_leaves_the_others_untouched(tiny_env, tmp_path, capsys):
    from facerestore_cli.imageio import read_image

    src = PHOTOS / "group-of-eight.jpg"
    rec = run_photo(capsys, tiny_env, src, tmp_path / "out", "--faces", "0,2")
    assert [f["index"] for f in rec["faces"]] == [0, 2]
    assert [s["index"] for s in rec["skipped_faces"]] == [1, 3, 4, 5, 6, 7]
    assert all(s["reason"] == "not in --faces 0,2" for s in rec["skipped_faces"])
    before = read_image(src).rgb
    after = read_image(tmp_path / "out" / "group-of-eight.png").rgb
    for skipped in rec["skipped_faces"]:
        x1, y1, x2, y2 = (int(round(v)) for v in skipped["box"])
        inner = (slice(y1 + (y2 - y1) // 4, y2 - (y2 - y1) // 4), slice(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4))
        assert np.array_equal(before[inner], after[inner]), skipped
    for face in rec["faces"]:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        assert not np.array_equal(before[y1:y2, x1:x2], after[y1:y2, x1:x2])


def test_largest_center_and_min_score_choose_as_documented(tiny_env, tmp_path, capsys):
    src = PHOTOS / "old-portrait-01.jpg"
    largest = run_photo(capsys, tiny_env, src, tmp_path / "largest", "--largest-face")
    center = run_photo(capsys, tiny_env, src, tmp_path / "center", "--only-center-face")
    scored = run_photo(capsys, tiny_env, src, tmp_path / "scored", "--min-score", "0.99")
    every = [*largest["faces"], *largest["skipped_faces"]]
    area = {f["index"]: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in every}
    assert [f["index"] for f in largest["faces"]] == [max(area, key=area.get)]
    centre = {f["index"]: np.hypot((f["box"][0] + f["box"][2]) / 2 - 124, (f["box"][1] + f["box"][3]) / 2 - 94.5)
              for f in every}
    assert [f["index"] for f in center["faces"]] == [min(centre, key=centre.get)]
    assert [s["index"] for s in scored["skipped_faces"]] == [0] and len(scored["faces"]) == 4


def test_blend_mixes_restored_and_input_linearly(tiny_env, tmp_path, capsys):
    """--blend W mixes before the paste, which is linear in the face: W = 0.5 lies halfway between W = 1 and W = 0
    (within rounding), and W = 0 leaves faces close to the input."""
    from facerestore_cli.imageio import read_image

    src = PHOTOS / "old-portrait-01.jpg"
    out = {w: read_image(run_photo(capsys, tiny_env, src, tmp_path / f"w{w}", "--blend", w)["output"]).rgb.astype(int)
           for w in ("1", "0.5", "0")}
    assert np.abs(out["0.5"] - (out["1"] + out["0"]) / 2).max() <= 1
    assert np.abs(out["1"] - out["0"]).max() > 50
    original = read_image(src).rgb.astype(int)
    assert np.abs(out["0"] - original).mean() < 1.5 < np.abs(out["1"] - original).mean()


def test_draw_boxes_writes_a_copy_and_never_touches_the_output(tiny_env, tmp_path, capsys):
    src = PHOTOS / "old-portrait-01.jpg"
    run_photo(capsys, tiny_env, src, tmp_path / "plain", "--min-score", "0.99")
    boxed = run_photo(capsys, tiny_env, src, tmp_path / "boxed", "--min-score", "0.99", "--draw-boxes")
    out_plain, out_boxed = (tmp_path / d / "old-portrait-01.png" for d in ("plain", "boxed"))
    assert out_plain.read_bytes() == out_boxed.read_bytes()
    boxes = cv2.imread(boxed["boxes_file"])
    assert boxed["boxes_file"].endswith("_boxes/old-portrait-01.jpg") and boxes.shape[:2] == (189, 248)
    written = cv2.imread(str(out_boxed))
    x1, y1, x2, y2 = (int(round(v)) for v in boxed["skipped_faces"][0]["box"])
    edge = boxes[y1 + 5:y2 - 5, max(x1, 0) + 1].astype(int)  # the left-out face's box edge is red
    assert (edge[:, 2] - edge[:, 1]).mean() > 100
    assert np.abs(boxes.astype(int) - written.astype(int)).mean() > 1
    # a rerun asking for boxes after a run without them makes them from the output, without restoring
    report = tmp_path / "again.jsonl"
    code, _o, err = run_cli(capsys, "run", src, "-o", tmp_path / "plain", "--preset", tiny_env, *DET, "--report", report,
                            "-q", "--format", "png", "--min-score", "0.99", "--draw-boxes")
    records, summary = read_report(report)
    assert code == 0 and summary["restored"] == 0, err
    assert records[0]["reason"] == "unchanged since last run; boxes copy made"
    assert np.array_equal(cv2.imread(records[0]["boxes_file"]), boxes)


@pytest.fixture
def parse_home(tiny_home, tmp_path_factory, monkeypatch):
    """The tiny home plus a random tiny ParseNet, so faces go back with the parse-in-square mask."""
    home = tmp_path_factory.mktemp("parse-home")
    shutil.copytree(tiny_home / "weights", home / "weights")
    write_random_parsenet(home / "weights")
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")
    return tiny_home / "difface-tiny.yaml"


def test_run_pastes_with_parse_in_square_and_reports_it(parse_home, tmp_path, capsys):
    rec = run_photo(capsys, parse_home, PHOTOS / "old-portrait-01.jpg", tmp_path / "out")
    assert rec["mask"] == "parsenet-in-square" and {f["mask"] for f in rec["faces"]} == {"parsenet-in-square"}


def test_parse_mask_is_held_inside_the_square():
    """min(parse, square): pixels the square mask leaves alone never change, and near the square's edge, where the
    parse map says face, the face comes in no more than the square lets it; the bare parse mask pastes the face
    there almost fully (so the check can fail)."""
    from facerestore_cli.faces.align import estimate_affine, paste_faces
    from facerestore_cli.faces.masks import parse_soft_mask, square_soft_mask

    image = np.full((300, 300, 3), 40, np.uint8)
    landmarks = np.array([[120, 130], [180, 130], [150, 165], [125, 195], [175, 195]], np.float32)
    affine = estimate_affine(landmarks, 128)
    crop = np.full((128, 128, 3), 0.9, np.float32)
    parse = parse_soft_mask(np.ones((512, 512), np.uint8))  # all skin: face everywhere but the 10-px border
    clipped = paste_faces(image, [crop], [affine], [parse], clip_to_square=True).astype(float)
    bare = paste_faces(image, [crop], [affine], [parse]).astype(float)
    inverse = cv2.invertAffineTransform(affine)
    square = square_soft_mask(inverse, (300, 300), 128).soft
    warped_parse = cv2.warpAffine(cv2.resize(parse, (128, 128)), inverse, (300, 300))
    assert np.array_equal(clipped[square == 0], image[square == 0])
    ring = (square < 0.2) & (warped_parse > 0.9)
    full = 0.9 * 255 - 40
    assert ring.sum() > 100
    assert (clipped[ring] - 40).max() <= 0.2 * full + 1
    assert (bare[ring] - 40).min() >= 0.85 * full
