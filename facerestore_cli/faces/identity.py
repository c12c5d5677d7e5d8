"""ArcFace identity embedding of FFHQ-aligned face crops: the identity crop, preprocessing, cosine scores.

The embedding is differentiable w.r.t. the face pixels (ipc-guided backpropagates L_arc = 1 − cos through it,
Diffuse and Restore Eq. 7/9); ``IdentityScorer`` is the no-grad version for reports.

Identity crop. ArcFace IR-SE50 (TreB1eN/InsightFace_Pytorch, shipped by facexlib) was trained on 112×112
faces aligned to the insightface 5-point template ``ARCFACE_TEMPLATE_112``. Our faces are FFHQ crops aligned
to ``FFHQ_TEMPLATE_512`` (faces/align.py), so one fixed similarity transform maps a face of any size S (the
template scaled by S/512) onto the ArcFace crop: the least-squares fit of the five template points,
scale 0.29209 (112 px ← 383.4 px of a 512 face), rotation −0.009°, shift (−18.930, −17.860). The two
templates differ slightly in shape: residuals at 112 are 1.0 px at the eyes, 2.1 at the nose, 2.4–2.5 at the
mouth corners. The crop is the square x ∈ [63.1, 446.5], y ∈ [59.4, 442.9] of the 512 face (pixel edges):
the central face from above the brows to the chin, cheeks included, most hair and background left out.
It is sampled with ``affine_grid`` + ``grid_sample`` (bilinear, align_corners=False, border padding) after
an antialiased bilinear resize of the whole face to 150 px (the crop's own scale), so every input pixel
contributes and gets gradient instead of a 3.4× aliased subsampling; ``antialias=False`` samples the input
directly, like ``cv2.warpAffine``.

Channel order BGR. TreB1eN's training images were unpacked with ``mx.recordio.unpack_img`` (``cv2.imdecode``,
BGR) and saved through ``PIL.Image.fromarray`` as if RGB (data/data_pipe.py ``load_mx_rec``; its issues #13,
#35 and insightface#1062 show the resulting blue faces), then read back with PIL: the network saw channel 0 =
blue. Its validation bins are converted RGB→BGR explicitly (``load_bin``) and face_verify.py feeds OpenCV
frames with the BGR→RGB line commented out. facexlib itself has no preprocessing. So crops are RGB here and
``arcface_input`` flips them to BGR. Range [−1, 1]: ToTensor then Normalize(0.5, 0.5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerestore_cli.faces.align import FFHQ_TEMPLATE_512

ARCFACE_SIZE = 112
# insightface's arcface_src (face_align.py): left eye, right eye, nose, left / right mouth corner, at 112×112.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
ARCFACE_CHANNEL_ORDER = "BGR"
EMBEDDING_DIM = 512


IDENTITY_WEIGHTS = "arcface-ir-se50"  # the ArcFace of identity scores, guidance and `eval`

def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 least-squares similarity (rotation, uniform scale, shift) taking src points onto dst, float64."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1.0, 0.0], [y, x, 0.0, 1.0]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


# Pixel coordinates (cv2 convention, pixel centres at integers) of a 512 FFHQ face → of the 112 ArcFace crop.
FFHQ512_TO_ARCFACE = _fit_similarity(FFHQ_TEMPLATE_512, ARCFACE_TEMPLATE_112)
# Size of the antialiased intermediate face: the crop's own scale, so the final warp is ~1:1.
_PREFILTER_SIZE = int(np.ceil(512 * np.hypot(*FFHQ512_TO_ARCFACE[:, 0])))  # 150


def _normalize_matrix(size: int) -> np.ndarray:
    """Pixel coordinate → grid_sample coordinate with align_corners=False: (2p + 1) / size − 1."""
    return np.array([[2.0 / size, 0.0, 1.0 / size - 1.0], [0.0, 2.0 / size, 1.0 / size - 1.0], [0.0, 0.0, 1.0]])


def crop_theta(face_size: int) -> np.ndarray:
    """2×3 ``affine_grid`` matrix: normalised 112-crop coordinates → normalised coordinates of a face_size face.

    Normalised coordinates (align_corners=False) do not depend on resolution, so the same matrix samples the
    antialiased resized face.
    """
    scale_up = np.diag([face_size / 512.0, face_size / 512.0, 1.0])
    crop_to_512 = np.linalg.inv(np.vstack([FFHQ512_TO_ARCFACE, [0.0, 0.0, 1.0]]))
    theta = _normalize_matrix(face_size) @ scale_up @ crop_to_512 @ np.linalg.inv(_normalize_matrix(ARCFACE_SIZE))
    return theta[:2]


def identity_crop(faces01: torch.Tensor, antialias: bool = True) -> torch.Tensor:
    """[B, 3, S, S] FFHQ-aligned RGB faces in [0, 1] → [B, 3, 112, 112] ArcFace-aligned RGB crops in [0, 1].

    Differentiable w.r.t. ``faces01``. Half-precision input is computed in float32 (a bf16 sampling grid
    would be off by ~0.2 px).
    """
    if faces01.ndim != 4 or faces01.shape[1] != 3 or faces01.shape[2] != faces01.shape[3]:
        raise ValueError(f"expected faces [B, 3, S, S], got {tuple(faces01.shape)}")
    x = faces01 if faces01.dtype in (torch.float32, torch.float64) else faces01.float()
    size = x.shape[-1]
    theta = torch.as_tensor(crop_theta(size), dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    if antialias and size > _PREFILTER_SIZE:
        x = F.interpolate(x, size=(_PREFILTER_SIZE, _PREFILTER_SIZE), mode="bilinear", align_corners=False,
                          antialias=True)
    grid = F.affine_grid(theta, [x.shape[0], 3, ARCFACE_SIZE, ARCFACE_SIZE], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def arcface_input(crops01: torch.Tensor) -> torch.Tensor:
    """RGB crops in [0, 1] → the network's input: channel order ``ARCFACE_CHANNEL_ORDER``, range [−1, 1]."""
    x = crops01.flip(1) if ARCFACE_CHANNEL_ORDER == "BGR" else crops01
    return (x - 0.5) / 0.5


def _check_eval(arcface: nn.Module) -> None:
    if any(m.training for m in arcface.modules()):
        raise ValueError("ArcFace must be in eval mode (BatchNorm running statistics, no dropout): call .eval()")


def identity_embedding(arcface: nn.Module, faces01: torch.Tensor, antialias: bool = True) -> torch.Tensor:
    """[B, 512] L2-normalised ArcFace embeddings of FFHQ-aligned RGB faces in [0, 1]; keeps the autograd graph."""
    _check_eval(arcface)
    x = arcface_input(identity_crop(faces01, antialias))
    param = next(arcface.parameters(), None)
    if param is not None and param.dtype != x.dtype:
        x = x.to(param.dtype)
    return F.normalize(arcface(x).float(), dim=1)


def identity_cosine(a_emb: torch.Tensor, b_emb: torch.Tensor) -> torch.Tensor:
    """[B] cosine similarity of two [B, D] embedding batches (1 = same direction); D_cos = 1 − this."""
    return F.cosine_similarity(a_emb, b_emb, dim=1)


class IdentityScorer:
    """Identity similarity for reports: cos(ArcFace(restored), ArcFace(reference)) per face, without gradients.

    Each face is embedded alone (batch 1), so a score never depends on the face's batch-mates.
    """

    def __init__(self, arcface: nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.arcface = arcface.to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def embed(self, faces01: torch.Tensor) -> torch.Tensor:
        """[B, 512] embeddings, on the CPU, float32."""
        faces01 = faces01.to(self.device)
        rows = [identity_embedding(self.arcface, faces01[i : i + 1]) for i in range(faces01.shape[0])]
        return torch.cat(rows).cpu() if rows else torch.empty(0, EMBEDDING_DIM)

    @torch.no_grad()
    def score(self, restored01: torch.Tensor, reference01: torch.Tensor) -> list[float]:
        """Per-face cosine similarity of restored and reference faces ([B, 3, S, S] each, sizes may differ)."""
        if restored01.shape[0] != reference01.shape[0]:
            raise ValueError(f"{restored01.shape[0]} restored faces but {reference01.shape[0]} references")
        return [float(c) for c in identity_cosine(self.embed(restored01), self.embed(reference01))]

