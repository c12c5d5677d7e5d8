"""RetinaFace face detection, a faithful port of facexlib's ``RetinaFace.detect_faces``.

facexlib's method is not called directly: it reads the device from an attribute fixed at construction
(so a module moved with ``.to()`` breaks) and builds its anchors in a slow Python loop. The arithmetic
here is the same: BGR float pixels minus (104, 117, 123) at the original size, anchor decoding, a strict
``score > threshold`` filter, NMS at 0.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from facexlib.detection.retinaface_utils import decode, decode_landm, py_cpu_nms
from torch import nn

DEFAULT_THRESHOLD = 0.97  # facexlib FaceRestoreHelper
DEFAULT_NMS = 0.4
BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face in input-image pixel coordinates.

    landmarks: float32 (5, 2) x, y of left eye, right eye, nose, left mouth corner, right mouth corner
    ("left" as seen in the image).
    """

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray



def retinaface_priors(cfg: dict, height: int, width: int) -> torch.Tensor:
    """Anchors (cx, cy, w, h), normalised; same values and order as facexlib's PriorBox."""
    blocks = []
    for step, min_sizes in zip(cfg["steps"], cfg["min_sizes"]):
        rows, cols = -(-height // step), -(-width // step)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        cy, cx = np.meshgrid(cy, cx, indexing="ij")
        per_size = [
            np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], axis=-1)
            for s in min_sizes
        ]
        blocks.append(np.stack(per_size, axis=2).reshape(-1, 4))  # (row, col, size) order
    priors = torch.from_numpy(np.concatenate(blocks).astype(np.float32))
    if cfg.get("clip"):
        priors.clamp_(0, 1)
    return priors


class FaceDetector:
    """Detects faces in RGB images with a facexlib RetinaFace module that has its weights loaded.

    Faces come back ordered left to right by box edge (then top to bottom), so face indices are stable.
    ``max_side``: when set, images whose longer side exceeds it are shrunk (INTER_AREA) for detection
    and the results are scaled back; ``None`` (default) detects at the original size, as facexlib does.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        nms: float = DEFAULT_NMS,
        max_side: int | None = None,
    ):
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.threshold = float(threshold)
        self.nms = float(nms)
        self.max_side = max_side
        self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """rgb: H×W×3 uint8 (or uint16, scaled to 0..255 like facexlib) in RGB order."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 RGB image, got shape {rgb.shape}")
        if rgb.dtype == np.uint16:
            bgr = rgb[:, :, ::-1].astype(np.float32) / 65535 * 255
        elif rgb.dtype == np.uint8:
            bgr = rgb[:, :, ::-1].astype(np.float32)
        else:
            raise ValueError(f"expected uint8 or uint16 pixels, got {rgb.dtype}")
        height, width = bgr.shape[:2]
        scale_x = scale_y = 1.0
        if self.max_side is not None and max(height, width) > self.max_side:
            factor = self.max_side / max(height, width)
            new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
            bgr = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
            scale_x, scale_y = width / new_w, height / new_h
        boxes, scores, landmarks = self._detect_bgr(np.ascontiguousarray(bgr))
        faces = []
        for box, score, lm in zip(boxes, scores, landmarks):
            lm = lm.reshape(5, 2) * np.array([scale_x, scale_y], dtype=np.float32)
            box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
            faces.append(DetectedFace(tuple(float(v) for v in box), float(score), lm.astype(np.float32)))
        faces.sort(key=lambda f: (f.box[0], f.box[1], f.box[2], f.box[3]))
        return faces

    @torch.inference_mode()
    def _detect_bgr(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = bgr.shape[:2]
        image = torch.from_numpy(bgr.transpose(2, 0, 1)).unsqueeze(0).to(self.device)
        image = (image - self._mean).to(self.dtype)
        loc, conf, landms = self.model(image)
        cfg = self.model.cfg
        priors = retinaface_priors(cfg, height, width).to(self.device)
        scale4 = torch.tensor([width, height] * 2, dtype=torch.float32, device=self.device)
        scale10 = torch.tensor([width, height] * 5, dtype=torch.float32, device=self.device)
        boxes = (decode(loc.squeeze(0).float(), priors, cfg["variance"]) * scale4).cpu().numpy()
        points = (decode_landm(landms.squeeze(0).float(), priors, cfg["variance"]) * scale10).cpu().numpy()
        scores = conf.squeeze(0).float().cpu().numpy()[:, 1]

        keep = np.where(scores > self.threshold)[0]
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = scores.argsort()[::-1]
        boxes, points, scores = boxes[order], points[order], scores[order]
        dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
        keep = py_cpu_nms(dets, self.nms) if len(dets) else []
        keep = np.asarray([int(k) for k in keep], dtype=np.int64)
        return dets[keep, :4], dets[keep, 4], points[keep]
