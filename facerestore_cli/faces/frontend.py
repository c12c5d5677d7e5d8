"""The face front end of a run: how faces are found, which are restored, and how they go back into the photo.

Each preset states its settings in a `faces:` block (the diffusion presets: DifFace's official front end, see
`FaceSettings`); the run's flags override them. Faces are numbered by detection order (left to right), before any
is left out, so the numbers the report, the compare sheet and `--draw-boxes` show are the ones `--faces` takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from facerestore_cli.errors import UsageError

EYE_DISTANCE_SHORT_SIDE = 512  # DifFace measures eye distance on the photo scaled up so its short side is ≥ 512
BG_UPSAMPLERS = ("realesrgan", "bicubic", "none")
UPSCALES = (1, 2, 4)
SELECTIONS = ("all", "center", "largest")


@dataclass(frozen=True)
class FaceSettings:
    """Defaults are facexlib's FaceRestoreHelper (GFPGAN, CodeFormer); a preset without a `faces:` block gets them.

    det_threshold: detector score a face needs; det_min_side: detection runs on a copy scaled up (bilinear) so its
    short side is at least this (0: never scaled up); eye_distance: faces whose eyes are closer than this many px,
    measured on the photo scaled up to a 512-px short side, are left out (side views, specks); min_face: faces whose
    box is smaller than this many px of the photo are left out; min_score: faces scoring below it are left out;
    select: all, or only the center face / the largest face; indices: only these detection numbers (None: all);
    upscale: the output is this many times the input; bg_upsampler: what enlarges the photo under the faces;
    bg_tile: Real-ESRGAN's tile size in px (0: the whole photo at once); blend: weight of the restored face against
    its input crop; draw_boxes: also write a copy of the output with numbered boxes.
    """

    det_threshold: float = 0.97
    det_min_side: int = 0
    eye_distance: float = 0.0
    min_face: int = 20
    min_score: float = 0.0
    select: str = "all"
    indices: tuple[int, ...] | None = None
    upscale: int = 1
    bg_upsampler: str = "realesrgan"
    bg_tile: int = 400
    blend: float = 1.0
    draw_boxes: bool = False

    @classmethod
    def resolve(cls, preset_block: Mapping[str, Any] | None, given: Mapping[str, Any]) -> FaceSettings:
        """The preset's `faces:` block, then every flag given (None: not given), checked."""
        names = {f.name for f in dataclasses.fields(cls)}
        block = dict(preset_block or {})
        unknown = sorted(set(block) - names)
        if unknown:
            raise UsageError(f"preset faces block: unknown setting {', '.join(unknown)}", hint=f"known: {', '.join(sorted(names))}")
        values = {**block, **{k: v for k, v in given.items() if v is not None}}
        if values.get("indices") is not None:
            values["indices"] = tuple(int(i) for i in values["indices"])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not 0.0 <= self.det_threshold < 1.0:
            raise UsageError(f"--det-threshold must be in [0, 1), not {self.det_threshold}")
        if not 0.0 <= self.blend <= 1.0:
            raise UsageError(f"--blend must be in [0, 1], not {self.blend}",
                             hint="1 = restored face only, 0 = the input face unchanged")
        if self.upscale not in UPSCALES:
            raise UsageError(f"--upscale must be 1, 2 or 4, not {self.upscale}")
        if self.bg_upsampler not in BG_UPSAMPLERS:
            raise UsageError(f"--bg-upsampler must be one of {', '.join(BG_UPSAMPLERS)}, not '{self.bg_upsampler}'")
        if self.select not in SELECTIONS:
            raise UsageError(f"faces select must be one of {', '.join(SELECTIONS)}, not '{self.select}'")
        if self.select != "all" and self.indices is not None:
            raise UsageError("--faces cannot be combined with --only-center-face or --largest-face")
        if self.indices is not None and (not self.indices or min(self.indices) < 0):
            raise UsageError("--faces takes face numbers 0, 1, 2, ... as the report numbers them, e.g. --faces 0,2")
        if self.bg_tile < 0 or 0 < self.bg_tile < 32 or self.bg_tile % 2:
            raise UsageError(f"--bg-tile must be 0 (no tiling) or an even number of px ≥ 32, not {self.bg_tile}",
                             hint="Real-ESRGAN x2 reads pixels in 2×2 blocks, so tiles have even sides")

    def as_record(self, aligned: bool = False) -> dict:
        """The settings that shape an output (not draw_boxes, an extra file); the background's only at --upscale 2/4;
        with --aligned only blend and upscale apply, the rest are None."""
        record = dataclasses.asdict(self)
        record["indices"] = None if self.indices is None else list(self.indices)
        del record["draw_boxes"]
        if self.upscale == 1:
            record["bg_upsampler"] = record["bg_tile"] = None
        if aligned:
            record = {k: (v if k in ("blend", "upscale") else None) for k, v in record.items()}
        return record

    @property
    def background(self) -> str | None:
        """What enlarges the photo under the faces, None at --upscale 1."""
        return None if self.upscale == 1 else self.bg_upsampler


def parse_indices(text: str | None) -> tuple[int, ...] | None:
    """--faces "0,2" → (0, 2)."""
    if text is None:
        return None
    try:
        indices = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise UsageError(f"--faces takes comma-separated face numbers, e.g. --faces 0,2, not '{text}'") from None
    if not indices:
        raise UsageError("--faces names no face", hint="e.g. --faces 0,2")
    return indices


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
