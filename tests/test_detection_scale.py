"""Large scans (#24): at its defaults `run` finds every face the official front end finds at full resolution
(DifFace's: facexlib's detect_faces at threshold 0.8 on the photo, scaled up only when its short side is under 640),
on the real photos enlarged, reduced and tiled into a strip of small faces; `--detect-max-side PX` trades faces
for speed, and what it can lose is what the README states: faces less than 10 px between the eyes on the copy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import PHOTOS

MISS_BELOW_EYES_PX = 10  # README / --detect-max-side help: on the shrunk copy


def photo(name: str, width: int, tiles: int = 1) -> np.ndarray:
    """A photo of ../shared resized to `width` (INTER_AREA down, cubic up), `tiles` copies side by side (RGB)."""
    bgr = cv2.imread(str(PHOTOS / name))
    height = round(bgr.shape[0] * width / bgr.shape[1])
    resized = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA if width < bgr.shape[1] else cv2.INTER_CUBIC)
    return np.ascontiguousarray(np.concatenate([resized] * tiles, axis=1)[:, :, ::-1])


@pytest.fixture(scope="module")
def run_detector(tiny_home):
    """The detector `run` builds from its default options (the tiny preset's front end: DifFace's)."""
    import typer

    from conftest import home_environment
    from facerestore_cli.cli import build_app
    from facerestore_cli.cli_run import prepare_run
    from facerestore_cli.device import resolve
    from facerestore_cli.models import load_detector
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.weights.store import WeightStore

    with home_environment(tiny_home):
        args = ["run", str(PHOTOS), "-o", str(tiny_home / "unused"), "--preset", str(tiny_home / "difface-tiny.yaml"),
                "--detector", "retinaface_mobile0.25"]
        ctx = typer.main.get_command(build_app(args)).commands["run"].make_context("run", args[1:])
        values = {**ctx.params, "knobs": {}}
        opts = prepare_run(ctx, values)[0]
        yield opts, load_detector(opts, NetworkLoader(WeightStore(offline=True), resolve("cpu")))


def official_front_end(rgb: np.ndarray, model) -> np.ndarray:
    """facexlib's RetinaFace.detect_faces(threshold 0.8) on the photo as DifFace's helper scales it (short side up
    to 640, never down), rows mapped back to the photo's pixels and sorted as ours."""
    from test_faces import facexlib_retinaface

    height, width = rgb.shape[:2]
    scale = max(1.0, 640 / min(height, width))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if scale > 1:
        bgr = cv2.resize(bgr, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        rows = facexlib_retinaface("mobile0.25", model.state_dict()).detect_faces(bgr, 0.8, 0.4)
    rows[:, [0, 2, *range(5, 15, 2)]] *= width / bgr.shape[1]
    rows[:, [1, 3, *range(6, 15, 2)]] *= height / bgr.shape[0]
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("name, width, tiles", [("group-of-eight.jpg", 2200, 1), ("group-of-eight.jpg", 400, 1),
                                                ("group-of-eight.jpg", 300, 13)],
                         ids=["enlarged-3.6MP", "reduced", "strip-of-104-small-faces"])
def test_default_detection_finds_what_full_resolution_finds(run_detector, name, width, tiles):
    opts, detector = run_detector
    assert opts.detect_max_side is None  # the default: no shrunk copy
    rgb = photo(name, width, tiles)
    ours = detector.detect(rgb)
    reference = official_front_end(rgb, detector.model)
    assert len(ours) == len(reference) >= 8 * tiles
    landmarks = np.array([f.landmarks.ravel() for f in ours])
    np.testing.assert_allclose(landmarks, reference[:, 5:], atol=0.05)  # px; same faces, same points


def test_a_capped_detection_loses_only_faces_below_the_stated_size(run_detector):
    """The trade --detect-max-side makes, on the strip of small faces: some are lost, each below 10 px between the
    eyes on the shrunk copy."""
    from facerestore_cli.faces.detect import FaceDetector

    _opts, detector = run_detector
    rgb = photo("group-of-eight.jpg", 300, 13)
    full = detector.detect(rgb)
    capped = FaceDetector(detector.model, threshold=detector.threshold, min_side=detector.min_side, max_side=2048)
    kept = capped.detect(rgb)
    copy_scale = 2048 / max(rgb.shape[:2])

    def found(face) -> bool:
        width = face.box[2] - face.box[0]
        return any(abs(face.box[0] - k.box[0]) < 0.3 * width and abs(face.box[1] - k.box[1]) < 0.3 * width
                   for k in kept)

    lost = [f for f in full if not found(f)]
    assert 0 < len(lost) < len(full)
    eyes = [float(np.linalg.norm(f.landmarks[0] - f.landmarks[1])) * copy_scale for f in lost]
    assert max(eyes) < MISS_BELOW_EYES_PX


def test_on_the_real_photos_every_face_the_reference_keeps_is_kept_and_the_hand_is_not(run_detector):
    """DifFace's front end (0.8) restores a hand on a shoulder in old-portrait-01.jpg (27 px, score 0.936, the README's
    former "faint fifth face"); the presets' --min-score 0.97 (facexlib's own threshold) leaves it out, said in the
    report, and keeps every other face the reference keeps on every photo of ../shared."""
    from facerestore_cli.faces.frontend import choose_faces, eye_distance
    from facerestore_cli.imageio import read_image

    opts, detector = run_detector
    assert opts.faces.min_score == 0.97 and opts.faces.det_threshold == 0.8
    hands = 0
    for path in sorted(PHOTOS.iterdir()):
        rgb = read_image(path).rgb
        height, width = rgb.shape[:2]
        reference = [row for row in official_front_end(rgb, detector.model)
                     if eye_distance(row[5:9].reshape(2, 2), height, width) >= 5]
        kept, left = choose_faces(detector.detect(rgb), height, width, opts.faces)
        hand = [row for row in reference if path.name == "old-portrait-01.jpg" and row[0] < 10]
        hands += len(hand)
        expected = [row[:4] for row in reference if not any(row is h for h in hand)]
        np.testing.assert_allclose([det.box for _n, det in kept], np.reshape(expected, (-1, 4)), atol=0.05)
        assert [entry["reason"] for entry in left] == [f"score {h[4]:.3f} < --min-score 0.97" for h in hand]
    assert hands == 1
