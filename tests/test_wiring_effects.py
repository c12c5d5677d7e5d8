"""What the report says a run used is what it used: each test changes one thing and asserts its effect on the
output, not only the label (paste mask, identity mask, each face's noise stream, one face's input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PHOTOS, require_shared
from pinned_outputs import load, run_case

# Faces cut from ../shared photos (box in the source photo), one face each.
GROUP_FACE = ("group-of-eight.jpg", (130, 110, 310, 310))
OTHER_FACES = (("group-of-eight.jpg", (680, 150, 830, 320)), ("whole-02.png", (100, 0, 330, 260)))
GAP = 384  # px between faces: far beyond what one face's pixels can change in the detector's view of another


def records(arrays) -> list[dict]:
    return json.loads(str(arrays["records"]))


def level_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def compose(path: Path, faces, shift: tuple[int, int, int] | None = None) -> list[int]:
    """A gray canvas with the given face crops side by side, GAP apart, at x offsets that are multiples of 64 (the
    detector's anchor grid). shift=(k, dy, dx): brighten a 24 px patch at the centre of face k, moved by (dy, dx).
    Returns the x offsets."""
    crops = [Image.open(PHOTOS / name).convert("RGB").crop(box) for name, box in faces]
    xs, x = [], 64
    for crop in crops:
        xs.append(x)
        x += -(-(crop.width + GAP) // 64) * 64
    # 640 px tall: detection runs on the photo itself (a shorter one is scaled up to 640 first), so offsets that are
    # multiples of 64 keep every face on the same anchor grid
    canvas = np.full((max(max(c.height for c in crops) + 64, 640), x, 3), 128, np.uint8)
    for crop, x0 in zip(crops, xs):
        canvas[32:32 + crop.height, x0:x0 + crop.width] = np.asarray(crop)
    if shift is not None:
        k, dy, dx = shift
        cy, cx = 32 + crops[k].height // 2 + dy, xs[k] + crops[k].width // 2 + dx
        patch = canvas[cy - 12:cy + 12, cx - 12:cx + 12].astype(np.int16)
        canvas[cy - 12:cy + 12, cx - 12:cx + 12] = np.clip(patch + 60, 0, 255).astype(np.uint8)
    Image.fromarray(canvas).save(path)
    return xs


def test_paste_mask_in_the_report_is_the_one_pasted_with(tmp_path):
    """The pinned difface run pastes with min(ParseNet, square); the same run without ParseNet's file pastes with the
    square mask. The
    restored crops are the same, the photo is not, and each face's record names its mask."""
    require_shared()
    parsenet = load("difface")
    square = run_case("difface", tmp_path, extras=())
    assert {f["mask"] for f in records(parsenet)} == {"parsenet-in-square"}
    assert {f["mask"] for f in records(square)} == {"square"}
    assert level_diff(square["faces"], parsenet["faces"]).max() <= 1  # the mask touches only the paste
    changed = level_diff(square["photo"], parsenet["photo"])
    assert changed.max() > 30 and (changed > 2).mean() > 0.02


@pytest.mark.parametrize("id_mask", ["proxy", "none"])
def test_identity_mask_in_the_report_is_the_one_guided_with(id_mask, tmp_path):
    """The pinned ipc-guided run guides inside the ParseNet identity mask; another mask changes the faces, and
    each face's record names the mask its guidance used."""
    require_shared()
    parsing = load("ipc-guided")
    other = run_case("ipc-guided", tmp_path, args=("--id-mask", id_mask, "--guidance-scale", "20000"))
    assert {f["id_mask"] for f in records(parsing)} == {"parsing"}
    assert {f["id_mask"] for f in records(other)} == {id_mask}
    assert (level_diff(other["faces"], parsing["faces"]) > 2).mean() > 0.05


def test_no_guidance_means_no_identity_mask_and_difface_faces(tmp_path):
    require_shared()
    unguided = run_case("ipc-guided", tmp_path, args=("--id-mask", "parsing", "--guidance-scale", "0"))
    assert {f["id_mask"] for f in records(unguided)} == {None}
    assert level_diff(unguided["faces"], load("difface")["faces"]).max() <= 1


def test_every_face_draws_its_own_noise(tmp_path):
    """The same face twice in one photo, detected within a pixel of each other, restored very
    differently: each face has its own seed. (With a shared stream the two would come out nearly equal.)"""
    require_shared()
    photo = tmp_path / "twins.png"
    xs = compose(photo, [GROUP_FACE, GROUP_FACE])
    result = run_case("difface", tmp_path / "run", photo=photo)
    faces = records(result)
    assert len(faces) == 2
    assert np.allclose(np.subtract(faces[1]["box"], faces[0]["box"]), [xs[1] - xs[0], 0, xs[1] - xs[0], 0], atol=1.0)
    assert faces[0]["seed"] != faces[1]["seed"]
    assert level_diff(result["faces"][0], result["faces"][1]).mean() > 20


def test_changing_one_face_changes_only_that_face(tmp_path):
    require_shared()
    faces = [GROUP_FACE, *OTHER_FACES]
    (tmp_path / "b").mkdir()
    compose(tmp_path / "a.png", faces)
    compose(tmp_path / "b" / "a.png", faces, shift=(1, 0, 0))  # same name: the same seeds
    before = run_case("difface", tmp_path / "before", photo=tmp_path / "a.png")
    after = run_case("difface", tmp_path / "after", photo=tmp_path / "b" / "a.png")
    assert len(records(before)) == len(records(after)) == 3
    assert [f["seed"] for f in records(before)] == [f["seed"] for f in records(after)]  # same path, same index
    for k in (0, 2):
        assert np.array_equal(before["faces"][k], after["faces"][k]), k
    assert (level_diff(before["faces"][1], after["faces"][1]) > 0).mean() > 0.2
