"""Which of a photo's detected faces a run restores, by its face settings (faces/settings.py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facerestore_cli.faces.settings import EYE_DISTANCE_SHORT_SIDE, FaceSettings


def eye_distance(landmarks: np.ndarray, height: int, width: int) -> float:
    """Eye-to-eye distance in px on the photo scaled up so its short side is at least 512 px (DifFace's
    get_face_landmarks_5(eye_dist_threshold=5) runs on its read_image's upscaled copy)."""
    left, right = np.asarray(landmarks, dtype=np.float64)[:2]
    return float(np.linalg.norm(left - right)) * max(1.0, EYE_DISTANCE_SHORT_SIDE / min(height, width))


def _box_size(box) -> float:
    x1, y1, x2, y2 = box
    return min(x2 - x1, y2 - y1)


def _clipped_area(box, height: int, width: int) -> float:
    """facexlib's get_largest_face: the box's area inside the photo."""
    x1, y1, x2, y2 = box
    return (min(max(x2, 0), width) - min(max(x1, 0), width)) * (min(max(y2, 0), height) - min(max(y1, 0), height))


def _centre_distance(box, height: int, width: int) -> float:
    x1, y1, x2, y2 = box
    return float(np.hypot((x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2))


def choose_faces(detections: Sequence, height: int, width: int, settings: FaceSettings):
    """(kept: [(number, detection)], left: [report entries of the faces left out, with number and reason]).

    The size rules go first (eye distance, --min-face, --min-score), then --faces, then the center or largest face
    among those still in, as facexlib's helper chooses them after its eye-distance filter."""
    kept, left = [], []

    def leave(number, det, reason):
        left.append({"index": number, "box": [round(float(v), 2) for v in det.box], "score": round(float(det.score), 4),
                     "reason": reason})

    for number, det in enumerate(detections):
        eyes = eye_distance(det.landmarks, height, width) if settings.eye_distance else None
        if eyes is not None and eyes < settings.eye_distance:
            leave(number, det, f"eye distance {eyes:.1f} px < {settings.eye_distance:g} (at a 512-px short side)")
        elif _box_size(det.box) < settings.min_face:
            leave(number, det, f"face {_box_size(det.box):.0f} px < --min-face {settings.min_face}")
        elif det.score < settings.min_score:
            leave(number, det, f"score {det.score:.3f} < --min-score {settings.min_score:g}")
        elif settings.indices is not None and number not in settings.indices:
            leave(number, det, "not in --faces " + ",".join(map(str, settings.indices)))
        else:
            kept.append((number, det))
    if settings.select != "all" and len(kept) > 1:
        if settings.select == "largest":
            best = max(kept, key=lambda item: _clipped_area(item[1].box, height, width))
            reason = "not the largest face (--largest-face)"
        else:
            best = min(kept, key=lambda item: _centre_distance(item[1].box, height, width))
            reason = "not the center face (--only-center-face)"
        for number, det in kept:
            if number != best[0]:
                leave(number, det, reason)
        kept = [best]
    left.sort(key=lambda entry: entry["index"])
    return kept, left
