"""The papers' synthetic degradations, implemented once (`facerestore degrade` and `facerestore train` use them):

    diffbfr  DiffBFR Eq. 13:  y = [(x ⊛ k_σ)↓r + n_δ]_JPEG_q, σ ∈ [0.1, 10], r ∈ [0.8, 8], δ ∈ [0, 20],
             q ∈ [60, 100], and gray with probability 0.01 (the paper adds "gray color probability" without a value;
             0.01 is GFPGAN's, whose degradation model the paper cites)
    difface  DifFace Eq. 17:  y = {[(x ∗ k_l)↓s + n_σ]_JPEG_q}↑s, l ∈ [0.1, 15], s ∈ [0.8, 32], σ ∈ [0, 20],
             q ∈ [30, 100]
    dnr      Diffuse and Restore Eq. 10 (§4.1): y = ((x ⊗ k)↓s + n_σ)_q, σ ∈ [0, 20], s ∈ [1, 32], q ∈ [30, 90], resized
             back; the paper names a blur kernel k without its width: chosen here a Gaussian of σ_k ∈ [0.1, 10],
             the range of DiffBFR's Eq. 13 above
    difface-celeba-test
             DifFace's CelebA-Test (Appendix A): Eq. 17 with s ∈ {4, 8, 16, 20, …, 40}, σ ∈ {1, 5, 10, 15, 20},
             q ∈ {30, 40, …, 70} and an anisotropic Gaussian k of covariance Σ = UΛUᵀ (Eq. 18), θ ∈ {0, π/4, π/2,
             3π/4}, l_x, l_y ∈ {4, 8, 12, 16}: each drawn uniformly from its set
    dr2      DR2 Eq. 13 (its CelebA-Test synthesis; DR2 itself trains on HQ faces only): r ∈ {4, 8, 16}, a split
             mild / medium / severe with σ, δ, q from {3:5, 5:20, 60:80} / {5:7, 15:40, 40:60} / {7:9, 25:50, 30:40},
             and noise Gaussian, Laplace or Poisson

k is (but for difface-celeba-test) an isotropic Gaussian kernel of the given standard deviation (pixels of the HQ image), ↓/↑ bicubic resizing,
n additive noise of the given standard deviation on the 0–255 scale, JPEG the codec at quality q. Every parameter is
sampled uniformly from its range (q and r's choices as integers) by a generator seeded from (seed, relative path),
so a degradation is the same on every run and machine."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from facerestore_cli.seeds import hashed_seed

GRAY_PROBABILITY_DIFFBFR = 0.01
DR2_SCALES = (4, 8, 16)  # DR2 §4.1: the 4×, 8× and 16× tasks
DR2_SPLITS = {"mild": ((3, 5), (5, 20), (60, 80)), "medium": ((5, 7), (15, 40), (40, 60)),
              "severe": ((7, 9), (25, 50), (30, 40))}


def image_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one image's degradation: from (seed, key), key the image's relative path."""
    return np.random.default_rng(hashed_seed("degrade", seed, key, bits=64))


# -- the operations --------------------------------------------------------------------------------------------

def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Convolution with an isotropic Gaussian of standard deviation sigma (kernel 2·⌈3σ⌉ + 1, reflected border)."""
    radius = max(1, math.ceil(3 * sigma))
    return cv2.GaussianBlur(image, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT_101)


def anisotropic_blur(image: np.ndarray, lx: float, ly: float, theta: float) -> np.ndarray:
    """Convolution with the Gaussian of covariance Σ = U Λ Uᵀ, U the rotation by θ, Λ = diag(l_x², l_y²) (DifFace
    Appendix A, Eq. 18); kernel 2·⌈3·max(l_x, l_y)⌉ + 1 a side, normalised to sum 1, reflected border."""
    u = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inverse = np.linalg.inv(u @ np.diag([lx * lx, ly * ly]) @ u.T)
    radius = math.ceil(3 * max(lx, ly))
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    xy = np.stack(np.meshgrid(ax, ax, indexing="xy"), axis=-1)  # [..., (x, y)]
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, inverse, xy))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def resize_by(image: np.ndarray, scale: float) -> np.ndarray:
    """Bicubic resize by 1/scale (scale > 1 shrinks), at least 1 pixel a side."""
    h, w = image.shape[:2]
    return resize_to(image, (max(1, round(w / scale)), max(1, round(h / scale))))


def resize_to(image: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, wh, interpolation=cv2.INTER_CUBIC)


def add_noise(image: np.ndarray, level: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Additive noise of standard deviation `level` (0–255 scale): Gaussian, Laplace, or Poisson (photon noise
    whose standard deviation is `level` at mid-gray, λ = 128/level²)."""
    if level <= 0:
        return image
    if kind == "gaussian":
        return image + rng.normal(0.0, level, image.shape).astype(np.float32)
    if kind == "laplace":
        return image + rng.laplace(0.0, level / math.sqrt(2), image.shape).astype(np.float32)
    if kind == "poisson":
        lam = 128.0 / level**2
        return (rng.poisson(np.clip(image, 0, None) * lam) / lam).astype(np.float32)
    raise ValueError(f"unknown noise kind {kind!r}")


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Through the JPEG codec at quality q (RGB float in, RGB float out)."""
    bgr = np.clip(np.rint(image), 0, 255).astype(np.uint8)[..., ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)


def to_gray(image: np.ndarray) -> np.ndarray:
    gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(gray[..., None], 3, axis=2)


# -- the models --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Degradation:
    """One paper's model: `sample(rng)` draws an image's parameters, the pipeline applies them."""

    name: str
    equation: str
    sample: Callable[[np.random.Generator], dict]

    def apply(self, hq: np.ndarray, params: dict, rng: np.random.Generator, keep_scale: bool = False) -> np.ndarray:
        """HQ RGB uint8 → LQ RGB uint8: blur, downscale, noise, JPEG, (gray), and back to the HQ size unless
        keep_scale."""
        h, w = hq.shape[:2]
        image = hq.astype(np.float32)
        kernel = params.get("kernel")
        image = anisotropic_blur(image, **kernel) if kernel else gaussian_blur(image, params["blur"])
        image = resize_by(image, params["scale"])
        image = add_noise(image, params["noise"], params.get("noise_kind", "gaussian"), rng)
        image = jpeg(image, params["quality"])
        if params.get("gray"):
            image = to_gray(image)
        if not keep_scale:
            image = resize_to(image, (w, h))
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def __call__(self, hq: np.ndarray, rng: np.random.Generator, keep_scale: bool = False) -> tuple[np.ndarray, dict]:
        params = self.sample(rng)
        return self.apply(hq, params, rng, keep_scale), params


def _diffbfr(rng: np.random.Generator) -> dict:
    return {"blur": float(rng.uniform(0.1, 10)), "scale": float(rng.uniform(0.8, 8)), "noise": float(rng.uniform(0, 20)),
            "quality": int(rng.integers(60, 101)), "gray": bool(rng.random() < GRAY_PROBABILITY_DIFFBFR)}


def _difface(rng: np.random.Generator) -> dict:
    return {"blur": float(rng.uniform(0.1, 15)), "scale": float(rng.uniform(0.8, 32)), "noise": float(rng.uniform(0, 20)),
            "quality": int(rng.integers(30, 101))}


DIFFACE_CELEBA_TEST = {"scale": (4, 8, 16, 20, 24, 28, 32, 36, 40), "noise": (1, 5, 10, 15, 20),
                       "quality": (30, 40, 50, 60, 70), "theta": (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4),
                       "lx": (4, 8, 12, 16), "ly": (4, 8, 12, 16)}


def _difface_celeba_test(rng: np.random.Generator) -> dict:
    pick = {name: values[int(rng.integers(len(values)))] for name, values in DIFFACE_CELEBA_TEST.items()}
    return {"kernel": {"lx": float(pick["lx"]), "ly": float(pick["ly"]), "theta": float(pick["theta"])},
            "scale": float(pick["scale"]), "noise": float(pick["noise"]), "quality": int(pick["quality"])}


def _dnr(rng: np.random.Generator) -> dict:
    return {"blur": float(rng.uniform(0.1, 10)), "scale": float(rng.uniform(1, 32)), "noise": float(rng.uniform(0, 20)),
            "quality": int(rng.integers(30, 91))}


def _dr2(rng: np.random.Generator, scale: int | None = None, split: str | None = None) -> dict:
    split = split or str(rng.choice(list(DR2_SPLITS)))
    (b0, b1), (n0, n1), (q0, q1) = DR2_SPLITS[split]
    return {"split": split, "scale": scale or int(rng.choice(DR2_SCALES)), "blur": float(rng.uniform(b0, b1)),
            "noise": float(rng.uniform(n0, n1)), "noise_kind": str(rng.choice(["gaussian", "laplace", "poisson"])),
            "quality": int(rng.integers(q0, q1 + 1))}


MODELS = {
    "diffbfr": Degradation("diffbfr", "DiffBFR Eq. 13", _diffbfr),
    "difface": Degradation("difface", "DifFace Eq. 17", _difface),
    "difface-celeba-test": Degradation("difface-celeba-test", "DifFace Eq. 17, Appendix A Eq. 18",
                                       _difface_celeba_test),
    "dr2": Degradation("dr2", "DR2 Eq. 13", _dr2),
    "dnr": Degradation("dnr", "Diffuse and Restore Eq. 10", _dnr),
}


def dr2_test_set(scale: int, split: str) -> Degradation:
    """One of DR2's nine CelebA-Test sets (§4.1, Eq. 13): the scale r and the split fixed, σ, δ, q and the noise kind
    drawn per image."""
    if scale not in DR2_SCALES or split not in DR2_SPLITS:
        raise ValueError(f"DR2's test sets take r in {DR2_SCALES} and a split in {tuple(DR2_SPLITS)}")
    return Degradation(f"dr2-{scale}x-{split}", "DR2 Eq. 13, §4.1", functools.partial(_dr2, scale=scale, split=split))


def degrade_files(jobs, model: Degradation, seed: int, keep_scale: bool, warn: Callable[[str], None]) -> list[dict]:
    """Degrade each job's image into its destination (PNG, the same relative path); one record per image with the
    parameters drawn, or the reason it failed (the rest go on). Records are returned for `degradations.jsonl`."""
    from facerestore_cli.errors import InputError
    from facerestore_cli.files import atomic_write_bytes
    from facerestore_cli.imageio import read_image
    from facerestore_cli.pixels import to_uint8

    records = []
    for job in jobs:
        dest = job.dest.with_suffix(".png")
        try:
            hq = to_uint8(read_image(job.src).rgb)
        except (InputError, OSError) as exc:
            reason = getattr(exc, "message", None) or str(exc)
            warn(f"error: {job.src}: {reason}")
            records.append({"input": str(job.src), "output": None, "status": "failed", "reason": reason})
            continue
        lq, params = model(hq, image_rng(seed, job.rel), keep_scale)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(lq[..., ::-1]))
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, png.tobytes())
        records.append({"input": str(job.src), "output": str(dest), "status": "degraded", "model": model.name,
                        "equation": model.equation, "seed": seed, "keep_scale": keep_scale, "size": list(lq.shape[1::-1]),
                        "params": params})
    return records
