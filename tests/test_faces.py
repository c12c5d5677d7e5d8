"""Face detection, alignment, masks and paste-back against facexlib's behaviour on real photos."""

from __future__ import annotations

import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from facerestore_cli.archs.facexlib_nets import build_parsenet
from facerestore_cli.archs.retinaface import build_retinaface
from facerestore_cli.faces.align import (
    BORDER_RGB,
    FFHQ_TEMPLATE_512,
    crop_to_unit_float,
    estimate_affine,
    paste_faces,
    warp_face,
)
from facerestore_cli.faces.detect import FaceDetector, greedy_nms, retinaface_priors

from conftest import SHARED
from facerestore_cli.faces.masks import (
    MASK_COLORMAP,
    parse_soft_mask,
    run_parsenet,
    square_soft_mask,
)
from facerestore_cli.imageio import read_image

PHOTOS = SHARED / "data" / "photos"
WEIGHTS = SHARED / "weights" / "detection_mobilenet0.25_Final.pth"
needs_data = pytest.mark.skipif(not (WEIGHTS.exists() and PHOTOS.exists()), reason="shared photos/weights absent")


@pytest.fixture(scope="module")
def retinaface():
    model = build_retinaface({"network": "mobile0.25"})
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def detector(retinaface):
    return FaceDetector(retinaface, "cpu")


@pytest.fixture(scope="module")
def group(detector):
    rgb = read_image(PHOTOS / "group-of-eight.jpg").rgb
    return rgb, detector.detect(rgb)


def facexlib_helper(bgr: np.ndarray, landmarks: list[np.ndarray]):
    """A FaceRestoreHelper without its model downloads, set up for upscale 1."""
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    helper = object.__new__(FaceRestoreHelper)
    helper.__dict__.update(
        upscale_factor=1, face_size=(512, 512), face_template=FFHQ_TEMPLATE_512.copy(), pad_blur=False,
        template_3points=False, all_landmarks_5=list(landmarks), affine_matrices=[], inverse_affine_matrices=[],
        cropped_faces=[], restored_faces=[], input_img=bgr, device=torch.device("cpu"), use_parse=False,
    )
    helper.align_warp_face()
    helper.get_inverse_affine()
    return helper


@needs_data
@pytest.mark.parametrize(("name", "count"), [("group-of-eight.jpg", 8), ("old-portrait-00.jpg", 4),
                                             ("whole-02.png", 4)])
def test_detects_faces_in_real_photos(detector, name, count):
    faces = detector.detect(read_image(PHOTOS / name).rgb)
    assert len(faces) == count
    assert all(f.score > 0.97 and f.landmarks.shape == (5, 2) for f in faces)
    lefts = [f.box[0] for f in faces]
    assert lefts == sorted(lefts)
    for f in faces:  # left eye left of right eye, eyes above mouth
        assert f.landmarks[0, 0] < f.landmarks[1, 0] and f.landmarks[:2, 1].max() < f.landmarks[3:, 1].min()


@needs_data
def test_detection_matches_facexlib_detect_faces(retinaface, detector):
    bgr = cv2.imread(str(PHOTOS / "old-portrait-00.jpg"))
    with torch.no_grad():
        reference = facexlib_retinaface("mobile0.25", retinaface.state_dict()).detect_faces(bgr, 0.97, 0.4)
    reference = reference[np.lexsort((reference[:, 1], reference[:, 0]))]
    ours = np.array([[*f.box, f.score, *f.landmarks.ravel()] for f in detector.detect(bgr[:, :, ::-1].copy())])
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def facexlib_retinaface(network: str, state: dict | None = None):
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():  # facexlib calls torchvision's deprecated resnet50(pretrained=False)
        warnings.simplefilter("ignore", UserWarning)
        model = RetinaFace(network_name=network, half=False, phase="test", device=torch.device("cpu"))
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("network", ["mobile0.25", "resnet50"])
def test_retinaface_is_facexlibs_network_without_torchvision(network):
    reference = facexlib_retinaface(network)
    ours = build_retinaface({"network": network})
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    torch.manual_seed(3)
    state = {k: torch.randn_like(v) * 0.05 if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    reference.load_state_dict(state)
    ours.load_state_dict(state, strict=True)
    image = torch.randn(1, 3, 70, 45) * 50
    with torch.no_grad():
        for mine, theirs in zip(ours(image), reference(image)):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_greedy_nms_keeps_what_torchvision_keeps():
    from torchvision.ops import nms

    rng = np.random.default_rng(5)
    for count in (0, 1, 40, 300):
        xy = rng.uniform(0, 200, (count, 2)).astype(np.float32)
        boxes = np.hstack([xy, xy + rng.uniform(5, 60, (count, 2)).astype(np.float32)])
        scores = rng.uniform(0.5, 1, count).astype(np.float32)
        for threshold in (0.2, 0.4, 0.7):
            expected = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
            np.testing.assert_array_equal(greedy_nms(boxes, scores, threshold), expected)


def test_detection_imports_no_torchvision():
    code = ("import sys, numpy; from facerestore_cli.faces.detect import FaceDetector; "
            "from facerestore_cli.archs.retinaface import build_retinaface; "
            "FaceDetector(build_retinaface({'network': 'mobile0.25'})).detect(numpy.zeros((64, 64, 3), numpy.uint8)); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_priors_match_facexlib_priorbox():
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    cfg = generate_config("mobile0.25")
    for h, w in [(310, 491), (33, 17), (64, 64)]:
        assert torch.equal(retinaface_priors(cfg, h, w), PriorBox(cfg, image_size=(h, w)).forward())


@needs_data
def test_large_photo_downscaled_for_detection(retinaface, group):
    rgb, faces = group
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    big_faces = FaceDetector(retinaface, max_side=2000).detect(big)
    assert len(big_faces) == 8
    centres = np.array([[(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] for f in faces])
    for large in big_faces:  # every face found again, at twice the coordinates
        centre = np.array([(large.box[0] + large.box[2]) / 4, (large.box[1] + large.box[3]) / 4])
        assert np.linalg.norm(centres - centre, axis=1).min() < 0.1 * (large.box[2] - large.box[0]) / 2
    assert FaceDetector(retinaface, max_side=2000).detect(rgb)[0].box == faces[0].box  # no-op below the limit


@needs_data
def test_alignment_puts_landmarks_on_template(group):
    rgb, faces = group
    for face in faces:
        affine = estimate_affine(face.landmarks)
        mapped = np.hstack([face.landmarks, np.ones((5, 1))]) @ affine.T
        assert np.abs(mapped[:2] - FFHQ_TEMPLATE_512[:2]).max() < 12  # eyes
        assert np.linalg.norm(mapped - FFHQ_TEMPLATE_512, axis=1).mean() < 20  # turned heads fit worse
    half = estimate_affine(faces[0].landmarks, size=256)
    np.testing.assert_allclose(half, estimate_affine(faces[0].landmarks) / 2, atol=1e-6)


@needs_data
def test_crops_match_facexlib_in_rgb(group):
    rgb, faces = group
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    helper = facexlib_helper(bgr, [f.landmarks for f in faces])
    for face, affine_ref, crop_ref in zip(faces, helper.affine_matrices, helper.cropped_faces):
        affine = estimate_affine(face.landmarks)
        np.testing.assert_array_equal(affine, affine_ref)
        np.testing.assert_array_equal(warp_face(rgb, affine)[:, :, ::-1], crop_ref)


def test_warp_border_is_facexlib_gray_in_rgb():
    away = np.array([[1.0, 0, 5000], [0, 1.0, 5000]])
    crop8 = warp_face(np.zeros((10, 10, 3), np.uint8), away, 16)
    assert tuple(crop8[0, 0]) == tuple(int(v) for v in BORDER_RGB) == (132, 133, 135)
    crop16 = warp_face(np.zeros((10, 10, 3), np.uint16), away, 16)
    assert tuple(crop16[0, 0]) == (132 * 257, 133 * 257, 135 * 257)


def _inside_any_square(affines, shape, size=512) -> np.ndarray:
    inside = np.zeros(shape[:2], bool)
    for affine in affines:
        inv = cv2.invertAffineTransform(affine)
        inside |= cv2.warpAffine(np.ones((size, size), np.uint8), inv, shape[1::-1]) > 0
    return cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


@needs_data
def test_identity_paste_changes_little_and_leaves_far_pixels(group):
    rgb, faces = group
    affines = [estimate_affine(f.landmarks) for f in faces]
    crops = [crop_to_unit_float(warp_face(rgb, a)) for a in affines]
    out = paste_faces(rgb, crops, affines)
    assert out.dtype == rgb.dtype and out.shape == rgb.shape
    inside = _inside_any_square(affines, rgb.shape)
    np.testing.assert_array_equal(out[~inside], rgb[~inside])
    diff = np.abs(out.astype(int) - rgb)
    assert diff[inside].mean() < 1.5 and diff.max() < 64
    # 16-bit images keep their depth and the same geometry
    out16 = paste_faces(rgb.astype(np.uint16) * 257, crops, affines)
    assert out16.dtype == np.uint16
    assert np.abs(out16 / 257 - out).max() <= 1.01


@needs_data
@pytest.mark.parametrize("name", ["group-of-eight.jpg", "old-portrait-01.jpg"])  # the latter: crops overhang
def test_square_paste_matches_facexlib(detector, name):
    rgb = read_image(PHOTOS / name).rgb
    faces = detector.detect(rgb)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    helper = facexlib_helper(bgr, [f.landmarks for f in faces])
    restored = [np.clip(c.astype(np.float32) * 1.1 + 5, 0, 255).astype(np.uint8) for c in helper.cropped_faces]
    helper.restored_faces = restored
    reference = helper.paste_faces_to_input_image()[:, :, ::-1]
    ours = paste_faces(rgb, [crop_to_unit_float(r[:, :, ::-1]) for r in restored], helper.affine_matrices)
    # facexlib truncates to uint8 where this module rounds: at most one level apart
    assert np.abs(ours.astype(int) - reference).max() <= 1


class FixedParse(nn.Module):
    """Stands in for ParseNet: always returns the logits of one label map."""

    def __init__(self, labels: np.ndarray):
        super().__init__()
        onehot = np.eye(19, dtype=np.float32)[labels].transpose(2, 0, 1)
        self.register_buffer("logits", torch.from_numpy(onehot)[None])
        self.seen: torch.Tensor | None = None

    def forward(self, x):
        self.seen = x
        return self.logits.expand(x.shape[0], -1, -1, -1), x


def face_labels(size=512) -> np.ndarray:
    """A label map in ParseNet's class order (facexlib's mapping: 1 skin, 4 l_eye, 13 hair, 14 hat, 17 neck)."""
    labels = np.zeros((size, size), np.int64)  # 0 background
    labels[120:420, 110:400] = 1  # skin
    labels[200:240, 160:220] = 4  # an eye
    labels[60:130, 100:410] = 13  # hair: kept by facexlib's paste mask (255)
    labels[10:60, 150:360] = 14  # hat: zeroed
    labels[420:512, 150:360] = 17  # neck: zeroed
    return labels


@needs_data
def test_parse_paste_matches_facexlib(group):
    rgb, faces = group
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    helper = facexlib_helper(bgr, [f.landmarks for f in faces[:3]])
    restored = [np.clip(c.astype(np.float32) * 0.9, 0, 255).astype(np.uint8) for c in helper.cropped_faces]
    helper.restored_faces, helper.use_parse = restored, True
    helper.face_parse = FixedParse(face_labels())
    reference = helper.paste_faces_to_input_image()[:, :, ::-1]
    mask = parse_soft_mask(face_labels())
    ours = paste_faces(rgb, [crop_to_unit_float(r[:, :, ::-1]) for r in restored], helper.affine_matrices,
                       [mask] * 3)
    diff = np.abs(ours.astype(int) - reference)
    assert diff.max() <= 2 and diff.mean() < 0.5  # facexlib warps the face in uint8 and truncates


@needs_data
def test_clip_to_square_with_full_parse_mask_is_square_paste(group):
    rgb, faces = group
    affines = [estimate_affine(f.landmarks) for f in faces[:2]]
    crops = [np.full((512, 512, 3), 0.6, np.float32)] * 2
    ones = [np.ones((512, 512), np.float32)] * 2
    square = paste_faces(rgb, crops, affines).astype(int)
    clipped = paste_faces(rgb, crops, affines, ones, clip_to_square=True)
    assert np.abs(clipped - square).max() <= 1  # bilinear-warped ones are 1 - 1e-7 in places
    assert np.abs(paste_faces(rgb, crops, affines, ones) - square).max() > 10


def test_square_soft_mask_shape():
    inverse = np.array([[0.5, 0, 100], [0, 0.5, 50]])  # 512 crop → 256 px square at (100, 50)
    soft, eroded = square_soft_mask(inverse, (500, 400))
    assert soft.shape == eroded.shape == (400, 500) and soft.dtype == np.float32
    assert soft.min() >= 0 and soft.max() <= 1 + 1e-6
    assert soft[178, 228] == pytest.approx(1.0)  # centre of the pasted square
    assert soft[:50].max() == 0 and soft[:, :100].max() == 0 and soft[307:].max() == 0
    assert eroded[60, 110] == 1 and eroded[50, 100] == 0  # 2 px erosion at the square's edge
    row = soft[178, 100:229]
    assert np.all(np.diff(row) >= -1e-6) and row[0] == 0  # rises from the edge to the centre
    w_edge = int(float(eroded.sum()) ** 0.5) // 20
    assert soft[178, 100 + 2 * w_edge] > 0.5 and soft[178, 100 + 3] < 0.1


def test_tiny_face_square_paste_matches_facexlib():
    """A 10 px face: facexlib's erosion kernel is zero-sized there (OpenCV then erodes 3×3), the same here."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    landmarks = FFHQ_TEMPLATE_512 * (10 / 512) + (17.3, 14.6)
    helper = facexlib_helper(np.ascontiguousarray(rgb[:, :, ::-1]), [landmarks])
    restored = [np.clip(c.astype(np.float32) * 0.7 + 40, 0, 255).astype(np.uint8) for c in helper.cropped_faces]
    helper.restored_faces = restored
    reference = helper.paste_faces_to_input_image()[:, :, ::-1]
    ours = paste_faces(rgb, [crop_to_unit_float(r[:, :, ::-1]) for r in restored], helper.affine_matrices)
    assert np.abs(ours.astype(int) - reference).max() <= 1  # facexlib truncates where this module rounds
    assert np.abs(ours.astype(int) - rgb).max() > 20  # and the face was pasted at all
    soft, _ = square_soft_mask(cv2.invertAffineTransform(helper.affine_matrices[0]), (48, 40))
    assert 0 < soft.max() <= 1


def test_parse_soft_mask_from_labels_and_logits():
    labels = face_labels()
    mask = parse_soft_mask(labels)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[220, 190] == pytest.approx(1.0, abs=0.02)  # eye centre
    assert mask[300, 250] > 0.95  # skin
    assert mask[95, 250] > 0.95  # hair (class 13) is part of the pasted face
    assert mask[475, 250] < 0.01  # neck (class 17) is not
    assert mask[25, 250] < 0.05  # hat (class 14) is not; the ramp from the hair starts about 30 px below
    assert mask[505, 250] == 0 and mask[:10].max() == 0 and mask[:, -10:].max() == 0  # 10 px border
    logits = torch.from_numpy(np.eye(19, dtype=np.float32)[labels].transpose(2, 0, 1))
    np.testing.assert_array_equal(parse_soft_mask(logits), mask)
    assert [i for i, v in enumerate(MASK_COLORMAP) if v == 0] == [0, 14, 16, 17, 18]


def test_run_parsenet_feeds_normalised_rgb():
    net = FixedParse(face_labels())
    crops = torch.zeros(2, 3, 512, 512)
    crops[:, 0] = 1.0  # pure red
    labels = run_parsenet(net, crops)
    assert labels.shape == (2, 512, 512)
    np.testing.assert_array_equal(labels[1], face_labels())
    assert net.seen[:, 0].min() == 1 and net.seen[:, 1].max() == -1 and net.seen[:, 2].max() == -1
    assert run_parsenet(net, torch.zeros(1, 3, 256, 256)).shape == (1, 512, 512)  # resized to 512 first


def test_builders():
    parsenet = build_parsenet({})
    assert parsenet.out_mask_conv.conv2d.out_channels == 19 and not parsenet.training
    with pytest.raises(ValueError, match="unknown RetinaFace network"):
        build_retinaface({"network": "resnet18"})


@needs_data
def test_aligned_crops_from_the_face_region_are_the_whole_float_photos(group):
    """The crops the networks get are warped from a float copy of each face's region only (large scans): the same
    values as from the whole photo converted to float — 8 and 16 bit, faces inside and across edges — to the float32
    rounding of OpenCV's source coordinates, which moving the origin changes (6e-5 px at x ≈ 1000, times the
    local contrast: < 1e-4, 1/40 of an 8-bit level)."""
    from facerestore_cli.faces.align import warp_face_float
    from facerestore_cli.pixels import to_float

    rgb, faces = group
    deep = (rgb.astype(np.uint16) * 257 + np.arange(rgb.size, dtype=np.uint16).reshape(rgb.shape) % 251)
    height, width = rgb.shape[:2]
    shifts = [(0, 0), (-faces[0].box[0] - 30, 0), (width - faces[-1].box[2] + 40, -faces[-1].box[1] - 25)]
    for image in (rgb, deep):
        whole = to_float(image)
        for face in faces:
            for dx, dy in shifts:
                affine = estimate_affine(face.landmarks + np.float32([dx, dy]), 128)
                np.testing.assert_allclose(warp_face_float(image, affine, 128), warp_face(whole, affine, 128),
                                           rtol=0, atol=1e-4)
