"""Extra outputs: restored face crops (--save-faces) and before/after sheets (--save-compare)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facerestore_cli.files import atomic_write_bytes

from facerestore_cli.pixels import from_float, to_uint8

SHEET_MAX_SIDE = 2048
BOX_COLOR = (0, 255, 0)  # BGR


def _encode(bgr: np.ndarray, ext: str, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"could not encode {ext} image")
    return buf.tobytes()


def save_face_crop(restored: np.ndarray, path: Path) -> None:
    """A restored aligned crop (HxWx3 float [0, 1]) as an 8-bit PNG, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = from_float(restored, np.uint8)[..., ::-1]
    atomic_write_bytes(path, _encode(np.ascontiguousarray(bgr), ".png", []))


def compare_sheet(before: np.ndarray, after: np.ndarray, boxes) -> np.ndarray:
    """input | restored, side by side, every restored face boxed on both halves; BGR uint8."""
    halves = []
    thickness = max(2, round(max(before.shape[:2]) / 400))
    for rgb in (before, after):
        bgr = np.ascontiguousarray(to_uint8(rgb)[..., ::-1])
        for x1, y1, x2, y2 in boxes:
            cv2.rectangle(bgr, (int(x1), int(y1)), (int(x2), int(y2)), BOX_COLOR, thickness)
        halves.append(bgr)
    sheet = np.concatenate(halves, axis=1)
    scale = SHEET_MAX_SIDE / max(sheet.shape[:2])
    if scale < 1:
        sheet = cv2.resize(sheet, (round(sheet.shape[1] * scale), round(sheet.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return sheet


def save_compare_sheet(before: np.ndarray, after: np.ndarray, boxes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = compare_sheet(before, after, boxes)
    atomic_write_bytes(path, _encode(sheet, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]))


def save_extras(opts, photo, rgb: np.ndarray) -> dict:
    """--save-faces / --save-compare for one finished photo; returns the report fields naming the files."""
    extras: dict = {}
    stem = Path(photo.job.rel).with_suffix("")
    if opts.save_faces:
        extras["face_files"] = []
        for face in photo.faces:
            path = opts.output / "_faces" / f"{stem}_face{face.index:02d}.png"
            save_face_crop(face.restored, path)
            extras["face_files"].append(str(path))
    if opts.save_compare:
        path = opts.output / "_compare" / f"{stem}.jpg"
        save_compare_sheet(photo.picture.rgb, rgb, [f.box for f in photo.faces], path)
        extras["compare_file"] = str(path)
    return extras
