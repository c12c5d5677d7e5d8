"""ArcFace identity embedding: the FFHQ-512 → ArcFace-112 crop, channel order and range, differentiability,
batch invariance, and the arcface-ir-se50 weight layout. A randomly initialised IR-SE50 stands in for the real
weights (none of the checks depends on trained values)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facerestore_cli.archs.facexlib_nets import build_arcface
from facerestore_cli.archs.retinaface import build_retinaface
from facerestore_cli.errors import WeightsError
from facerestore_cli.faces.align import FFHQ_TEMPLATE_512
from facerestore_cli.faces.identity import (
    ARCFACE_CHANNEL_ORDER,
    ARCFACE_TEMPLATE_112,
    FFHQ512_TO_ARCFACE,
    IdentityScorer,
    arcface_input,
    identity_cosine,
    identity_crop,
    identity_embedding,
)
from facerestore_cli.weights.store import WeightStore


@pytest.fixture(scope="module")
def arcface():
    torch.manual_seed(0)
    return build_arcface().requires_grad_(False)


def faces(n: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def map_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.c_[points, np.ones(len(points))] @ affine.T


def blob_image(size: int, sigma: float = 8.0) -> np.ndarray:
    """size×size gray image: Gaussian dots at the five FFHQ landmarks, black elsewhere."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size))
    for x, y in FFHQ_TEMPLATE_512 * (size / 512.0):
        image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (sigma * size / 512.0) ** 2))
    return image


def centroid(image: np.ndarray, near: np.ndarray, radius: int = 7) -> np.ndarray:
    x0, y0 = np.round(near).astype(int)
    patch = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(patch * xx).sum(), (patch * yy).sum()]) / patch.sum()


def test_transform_maps_ffhq_template_onto_arcface_template():
    scale = np.hypot(*FFHQ512_TO_ARCFACE[:, 0])
    assert scale == pytest.approx(0.29209, abs=1e-5)
    residual = np.linalg.norm(map_points(FFHQ512_TO_ARCFACE, FFHQ_TEMPLATE_512) - ARCFACE_TEMPLATE_112, axis=1)
    assert residual[:2].max() < 1.1 and residual.max() < 2.5  # eyes / all five points
    lmeds, _ = cv2.estimateAffinePartial2D(FFHQ_TEMPLATE_512.astype(np.float32),
                                           ARCFACE_TEMPLATE_112.astype(np.float32), method=cv2.LMEDS)
    np.testing.assert_allclose(FFHQ512_TO_ARCFACE, lmeds, atol=1e-4)


@pytest.mark.parametrize("size", [512, 256])
@pytest.mark.parametrize("antialias", [True, False])
def test_crop_puts_ffhq_landmarks_on_arcface_landmarks(size, antialias):
    image = torch.from_numpy(blob_image(size)).float().expand(1, 3, size, size)
    crop = identity_crop(image, antialias=antialias)[0, 1].numpy()
    assert crop.shape == (112, 112)
    exact = map_points(FFHQ512_TO_ARCFACE, FFHQ_TEMPLATE_512)
    found = np.array([centroid(crop, p) for p in exact])
    np.testing.assert_allclose(found, exact, atol=0.25)  # the crop applies the transform itself, sub-pixel
    eyes = np.linalg.norm(found[:2] - ARCFACE_TEMPLATE_112[:2], axis=1)
    assert eyes.max() < 1.5
    assert np.linalg.norm(found - ARCFACE_TEMPLATE_112, axis=1).max() < 2.7


@pytest.mark.parametrize("size", [512, 256])
def test_crop_without_antialias_matches_cv2_warp_affine(size):
    rng = np.random.default_rng(3)
    rgb = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 3)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
    affine = FFHQ512_TO_ARCFACE.copy()
    affine[:, :2] *= 512.0 / size
    expected = cv2.warpAffine(rgb, affine, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    crop = identity_crop(torch.from_numpy(rgb).permute(2, 0, 1)[None], antialias=False)
    np.testing.assert_allclose(crop[0].permute(1, 2, 0).numpy(), expected, atol=2e-3)


def test_channel_order_and_range():
    """Crops stay RGB; the network gets BGR in [-1, 1] (TreB1eN trained on BGR, see faces/identity.py)."""
    assert ARCFACE_CHANNEL_ORDER == "BGR"
    red = torch.zeros(1, 3, 512, 512)
    red[:, 0] = 1.0
    x = arcface_input(identity_crop(red))
    assert x.shape == (1, 3, 112, 112)
    torch.testing.assert_close(x[0, 2], torch.ones(112, 112))  # red lands in the last channel
    torch.testing.assert_close(x[0, :2], -torch.ones(2, 112, 112))
    assert torch.equal(arcface_input(torch.full((1, 3, 4, 4), 0.5)), torch.zeros(1, 3, 4, 4))


def test_crop_gradient_matches_finite_differences():
    x = torch.rand(1, 3, 512, 512, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = torch.rand(1, 3, 112, 112, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    (identity_crop(x) * weights).sum().backward()
    h = 1e-3
    with torch.no_grad():
        numeric = ((identity_crop(x + h * direction) - identity_crop(x - h * direction)) * weights).sum() / (2 * h)
    assert float((x.grad * direction).sum()) == pytest.approx(float(numeric), rel=1e-6)


def test_embedding_shape_norm_and_identity(arcface):
    x = faces(2)
    emb = identity_embedding(arcface, x)
    assert emb.shape == (2, 512) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(identity_cosine(emb, identity_embedding(arcface, x.clone())), torch.ones(2))
    assert float(identity_cosine(emb[:1], emb[1:])) < 0.9999


def test_gradient_flows_to_the_512_face_through_the_crop(arcface):
    x = faces(1, 512, seed=4).requires_grad_(True)
    target = identity_embedding(arcface, faces(1, 512, seed=5)).detach()
    loss = 1 - identity_cosine(identity_embedding(arcface, x), target)
    loss.sum().backward()
    grad = x.grad[0].abs().sum(0)
    assert torch.isfinite(x.grad).all() and grad.sum() > 0
    assert not grad[:40, :40].any() and not grad[-40:, -40:].any()  # outside the identity crop
    assert (grad[90:420, 90:420] > 0).float().mean() > 0.99  # antialiased: every crop pixel gets gradient


def test_embedding_is_batch_invariant(arcface):
    xs = faces(5, seed=6)
    with torch.no_grad():
        a = identity_embedding(arcface, xs[[0, 1, 2]])
        b = identity_embedding(arcface, xs[[3, 0, 4]])
        alone = identity_embedding(arcface, xs[[0]])
    assert torch.equal(a[0], b[1])  # same batch shape, other batch-mates and position
    torch.testing.assert_close(alone[0], a[0], rtol=1e-5, atol=1e-5)  # batch size 1 may pick other kernels


def test_training_mode_is_refused(arcface):
    arcface.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            identity_embedding(arcface, faces(1))
    finally:
        arcface.eval()


def test_scorer(arcface):
    scorer = IdentityScorer(arcface, "cpu")
    x, y = faces(2, seed=7), faces(2, 256, seed=8)
    assert scorer.score(x[:1], x[:1].clone()) == pytest.approx([1.0], abs=1e-5)
    other = scorer.score(x, y)
    assert all(isinstance(s, float) and -1 <= s < 0.9999 for s in other)
    expected = identity_cosine(identity_embedding(arcface, x[1:]), identity_embedding(arcface, y[1:]))
    assert other[1] == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(ValueError, match="2 restored faces but 1 references"):
        scorer.score(x, y[:1])


def layout_only(state_dict: dict, prefix: str = "") -> dict:
    """The state dict's keys, shapes and dtypes over a one-element storage each: a tiny file torch.save can write
    and the layout check reads like the real one."""
    return {prefix + k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state_dict.items()}


@pytest.mark.parametrize("prefix", ["", "module."])
def test_weights_import_accepts_arcface_layout(tmp_path, arcface, prefix):
    src = tmp_path / "recognition_arcface_ir_se50.pth"
    torch.save(layout_only(arcface.state_dict(), prefix), src)
    store = WeightStore(root=tmp_path / "home", offline=True)
    dest = store.import_file("arcface-ir-se50", src)
    assert dest.read_bytes() == src.read_bytes() and store.status("arcface-ir-se50") == "present"


def test_weights_import_rejects_another_network(tmp_path):
    src = tmp_path / "detection_mobilenet0.25_Final.pth"
    torch.save(layout_only(build_retinaface({"network": "mobile0.25"}).state_dict()), src)
    store = WeightStore(root=tmp_path / "home", offline=True)
    with pytest.raises(WeightsError, match=r"does not fit arcface-ir-se50 \(network arcface\)"):
        store.import_file("arcface-ir-se50", src)
    assert not store.path("arcface-ir-se50").exists()
