"""The measures `eval` reports, each from the implementation the papers' numbers come from.

    PSNR, SSIM  basicsr 1.4.2's calculate_psnr / calculate_ssim (RGB, or the MATLAB Y channel with --y-channel)
    LPIPS       the lpips 0.1.4 package (Zhang et al., CVPR 2018), AlexNet (or VGG-16) backbone, v0.1 linear layers
    IDS, Deg.   cosine of ArcFace IR-SE50 embeddings and its angle in degrees (DifFace Table III, VQFR)
    LMD         mean distance in px between RetinaFace's 5 landmarks on the restored face and on the ground truth
    NIQE        basicsr 1.4.2's calculate_niqe (MATLAB's pristine-image parameters, which basicsr ships)
    FID         pytorch-fid 0.3.0: InceptionV3 pool3 features, Fréchet distance to a reference set
    IDS-in      ArcFace cosine of the restored face to its input (real sets without ground truth)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRUTH, INPUT, ALONE, SET = "truth", "input", "alone", "set"  # what a metric compares a restored image with


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # the table's column head
    higher_is_better: bool
    needs: str  # TRUTH, INPUT, ALONE or SET
    help: str

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS = {m.name: m for m in (
    Metric("psnr", "PSNR", True, TRUTH, "peak signal-to-noise ratio to the ground truth, dB (basicsr)"),
    Metric("ssim", "SSIM", True, TRUTH, "structural similarity to the ground truth (basicsr)"),
    Metric("lpips", "LPIPS", False, TRUTH, "learned perceptual distance to the ground truth (lpips)"),
    Metric("ids", "IDS", True, TRUTH, "ArcFace IR-SE50 cosine to the ground truth"),
    Metric("deg", "Deg.", False, TRUTH, "the ArcFace angle to the ground truth, degrees"),
    Metric("lmd", "LMD", False, TRUTH, "mean distance of RetinaFace's 5 landmarks to the ground truth's, px"),
    Metric("niqe", "NIQE", False, ALONE, "naturalness without reference (basicsr)"),
    Metric("fid", "FID", False, SET, "Fréchet Inception distance of the set to --fid-ref (pytorch-fid)"),
    Metric("ids-in", "IDS-in", True, INPUT, "ArcFace IR-SE50 cosine to the input"),
)}
WITH_TRUTH = ("psnr", "ssim", "lpips", "ids", "deg", "lmd", "niqe")
WITHOUT_TRUTH = ("niqe", "ids-in")


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _basicsr(module: str):
    import importlib

    import facerestore_cli.compat  # noqa: F401  (before basicsr)

    return importlib.import_module(f"basicsr.metrics.{module}")


def psnr(restored: np.ndarray, truth: np.ndarray, crop_border: int, y_channel: bool) -> float:
    """basicsr's PSNR of two uint8 RGB images (basicsr reads BGR: its Y channel weighs them so)."""
    return float(_basicsr("psnr_ssim").calculate_psnr(_bgr(restored), _bgr(truth), crop_border, "HWC", test_y_channel=y_channel))


def ssim(restored: np.ndarray, truth: np.ndarray, crop_border: int, y_channel: bool) -> float:
    return float(_basicsr("psnr_ssim").calculate_ssim(_bgr(restored), _bgr(truth), crop_border, "HWC", test_y_channel=y_channel))


NIQE_BLOCK = 96  # basicsr's (and MATLAB's) NIQE block size


def niqe(image: np.ndarray, crop_border: int) -> float | None:
    """basicsr's NIQE of a uint8 RGB image, on its MATLAB Y channel; None for an image with fewer than two 96-px
    blocks (NIQE fits a covariance over the blocks: 192×96 px at least)."""
    h, w = (side - 2 * crop_border for side in image.shape[:2])
    if (h // NIQE_BLOCK) * (w // NIQE_BLOCK) < 2:
        return None
    return float(_basicsr("niqe").calculate_niqe(_bgr(image), crop_border, "HWC", convert_to="y"))


def cosines(a, b) -> list[float]:
    """Row-wise cosine of two embedding batches, in float64 (an image against itself gives 1 to 1e-15)."""
    a, b = a.double(), b.double()
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).tolist()


def degrees(cosine: float) -> float:
    """The angle of an identity cosine, in degrees (DifFace Table III's Deg.)."""
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding landmarks ([5, 2] each), px."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=1).mean())


@dataclass
class FeatureMoments:
    """Streaming mean and covariance of feature vectors (float64), as pytorch-fid's np.mean / np.cov(rowvar=False)
    compute them from all features at once, without holding the features."""

    count: int = 0
    total: np.ndarray | None = None
    outer: np.ndarray | None = None

    def add(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        if self.total is None:
            self.total, self.outer = np.zeros(features.shape[1]), np.zeros((features.shape[1],) * 2)
        self.count += features.shape[0]
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ, Σ); Σ with the n − 1 of np.cov."""
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 images, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's calculate_frechet_distance. With fewer images than features (2048) a covariance is singular,
    which scipy warns of: the caller reports the set sizes instead (FID compares sets of equal size only)."""
    import warnings

    from pytorch_fid.fid_score import calculate_frechet_distance
    from scipy.linalg import LinAlgWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
