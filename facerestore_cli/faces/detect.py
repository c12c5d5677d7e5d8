"""RetinaFace face detection, a faithful port of facexlib's ``RetinaFace.detect_faces``.

facexlib's method is not called directly: it reads the device from an attribute fixed at construction
(so a module moved with ``.to()`` breaks), builds its anchors in a slow Python loop and imports torchvision for
its NMS. The arithmetic here is the same: BGR float pixels minus (104, 117, 123), anchor decoding, a strict
``score > threshold`` filter, greedy NMS at 0.4 with torchvision's IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
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


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances) -> torch.Tensor:
    """Box offsets → (x1, y1, x2, y2), normalised (facexlib's ``decode``, the SSD box encoding inverted)."""
    centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    top_left = centre - size / 2
    return torch.cat((top_left, top_left + size), 1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor, variances) -> torch.Tensor:
    """Landmark offsets → five (x, y) points per anchor, normalised (facexlib's ``decode_landm``)."""
    points = pre.view(-1, 5, 2) * variances[0] * priors[:, None, 2:] + priors[:, None, :2]
    return points.reshape(-1, 10)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first: a box goes when its IoU with a kept one
    exceeds threshold. Same arithmetic as torchvision.ops.nms (float32, areas without the +1)."""
    boxes = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return np.asarray(keep, dtype=np.int64)


class FaceDetector:
    """Detects faces in RGB images with a facexlib RetinaFace module that has its weights loaded.

    Faces come back ordered left to right by box edge (then top to bottom), so face indices are stable.
    ``min_side``: images whose short side is below it are scaled up (bilinear) for detection, as DifFace's helper
    does (``get_face_landmarks_5(resize=640)``); ``max_side``: images whose longer side exceeds it are shrunk
    (INTER_AREA), and it wins over min_side. Results are scaled back to the image's pixels. ``None`` (default):
    detection at the original size, as facexlib does.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        nms: float = DEFAULT_NMS,
        max_side: int | None = None,
        min_side: int | None = None,
    ):
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.threshold = float(threshold)
        self.nms = float(nms)
        self.max_side, self.min_side = max_side, min_side
        self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """rgb: H×W×3 uint8 (or uint16, scaled to 0..255 like facexlib) in RGB order."""
        return self.detect_many([rgb])[0]

    def detect_many(self, images: list[np.ndarray], batch: int = 1) -> list[list[DetectedFace]]:
        """The faces of each image. Images of one shape go through the network `batch` at a time, each batch padded
        to exactly `batch` images: the network's per-image results then do not depend on the neighbours (batch
        invariance, as for the restoration batches)."""
        prepared = [self._prepare(rgb) for rgb in images]
        results: list[list[DetectedFace] | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for index, (bgr, _scale) in enumerate(prepared):
            by_shape.setdefault(bgr.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), batch):
                chunk = indices[start: start + batch]
                found = self._detect_bgr(np.stack([prepared[i][0] for i in chunk]), batch)
                for i, (boxes, scores, landmarks) in zip(chunk, found):
                    results[i] = self._faces(boxes, scores, landmarks, prepared[i][1])
        return results

    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """BGR float32 pixels in 0..255, scaled to min_side / shrunk to max_side; and the scale back to the image's
        pixels."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 RGB image, got shape {rgb.shape}")
        if rgb.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected uint8 or uint16 pixels, got {rgb.dtype}")
        height, width = rgb.shape[:2]
        scale = (1.0, 1.0)
        factor = 1.0
        if self.min_side and min(height, width) < self.min_side:
            factor = self.min_side / min(height, width)
        if self.max_side is not None and max(height, width) * factor > self.max_side:
            factor = self.max_side / max(height, width)
        if factor != 1.0:
            # DifFace truncates a scaled-up size (int(h * scale)); resizing before the float copy keeps it cheap.
            size = int if factor > 1 else round
            new_w, new_h = max(1, size(width * factor)), max(1, size(height * factor))
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
            scale = (width / new_w, height / new_h)
        bgr = rgb[:, :, ::-1].astype(np.float32)
        if rgb.dtype == np.uint16:
            bgr = bgr / 65535 * 255
        return np.ascontiguousarray(bgr), scale

    @staticmethod
    def _faces(boxes, scores, landmarks, scale: tuple[float, float]) -> list[DetectedFace]:
        """In the image's pixels, ordered left to right by box edge (then top to bottom)."""
        scale_x, scale_y = scale
        faces = []
        for box, score, lm in zip(boxes, scores, landmarks):
            lm = lm.reshape(5, 2) * np.array([scale_x, scale_y], dtype=np.float32)
            box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
            faces.append(DetectedFace(tuple(float(v) for v in box), float(score), lm.astype(np.float32)))
        faces.sort(key=lambda f: (f.box[0], f.box[1], f.box[2], f.box[3]))
        return faces

    @torch.inference_mode()
    def _detect_bgr(self, bgr: np.ndarray, batch: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """bgr: N×H×W×3, N ≤ batch (padded to batch with blank images); (boxes, scores, landmarks) per image."""
        count, height, width = bgr.shape[:3]
        # One image goes in as facexlib makes it (an HWC array viewed as 1×C×H×W): the strides pick the convolution
        # kernels, and with them the last float bits of the landmarks.
        images = torch.cat([torch.from_numpy(image.transpose(2, 0, 1)).unsqueeze(0) for image in bgr])
        images = images.to(self.device) - self._mean
        if count < batch:
            images = torch.cat([images, images.new_zeros((batch - count, *images.shape[1:]))])
        loc, conf, landms = self.model(images.to(self.dtype))
        cfg = self.model.cfg
        priors = retinaface_priors(cfg, height, width).to(self.device)
        scale4 = torch.tensor([width, height] * 2, dtype=torch.float32, device=self.device)
        scale10 = torch.tensor([width, height] * 5, dtype=torch.float32, device=self.device)
        results = []
        for k in range(count):
            boxes = (decode_boxes(loc[k].float(), priors, cfg["variance"]) * scale4).cpu().numpy()
            points = (decode_landmarks(landms[k].float(), priors, cfg["variance"]) * scale10).cpu().numpy()
            scores = conf[k].float().cpu().numpy()[:, 1]
            keep = np.where(scores > self.threshold)[0]
            boxes, points, scores = boxes[keep], points[keep], scores[keep]
            order = scores.argsort()[::-1]
            boxes, points, scores = boxes[order], points[order], scores[order]
            dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
            keep = greedy_nms(dets[:, :4], dets[:, 4], self.nms)
            results.append((dets[keep, :4], dets[keep, 4], points[keep]))
        return results
