"""Extra outputs: restored face crops (--save-faces), before/after sheets (--save-compare) and a copy of the output
with numbered face boxes (--draw-boxes).

A compare sheet shows, for each face, the input crop beside the same crop of the written photo at a readable size,
labelled with the index the report uses, under an overview of the photo with numbered boxes. It is made from the
input, the output and the faces' landmarks alone, so a rerun can make a missing sheet without restoring again; the
boxes copy likewise from the output and the recorded boxes."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from facerestore_cli.faces.align import estimate_affine, warp_face
from facerestore_cli.files import atomic_write_bytes
from facerestore_cli.pixels import from_float, to_uint8

FACE_PX = 256  # each crop on the sheet
GAP = 8
MAX_COLUMNS = 4  # face pairs per row
OVERVIEW_MIN_WIDTH = 2 * FACE_PX + GAP
BOX_BGR = (0, 220, 0)
LEFT_OUT_BGR = (0, 0, 230)  # --draw-boxes: faces found but not restored
TEXT_BGR = (255, 255, 255)
BACKGROUND = 32
FONT = cv2.FONT_HERSHEY_SIMPLEX


def encode(bgr: np.ndarray, ext: str, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"could not encode {ext} image")
    return buf.tobytes()


def save_face_crop(restored: np.ndarray, path: Path) -> None:
    """A restored aligned crop (HxWx3 float [0, 1]) as an 8-bit PNG, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = from_float(restored, np.uint8)[..., ::-1]
    atomic_write_bytes(path, encode(np.ascontiguousarray(bgr), ".png", []))


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a dark box, readable on any photo."""
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = origin
    cv2.rectangle(image, (x, y - h - base - 2), (x + w + 4, y + 2), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 2, y - base // 2), FONT, scale, TEXT_BGR, thickness, cv2.LINE_AA)


def _overview(rgb: np.ndarray, faces: list[dict], left_out: list[dict], width: int) -> np.ndarray:
    """The input photo at `width`, restored faces boxed green and left-out ones red, each with its number."""
    h, w = rgb.shape[:2]
    scale = width / w
    bgr = cv2.resize(np.ascontiguousarray(to_uint8(rgb)[..., ::-1]), (width, max(1, round(h * scale))),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    text_scale = max(0.45, min(1.0, width / 1600))
    for entries, colour in ((faces, BOX_BGR), (left_out, LEFT_OUT_BGR)):
        for face in entries:
            x1, y1, x2, y2 = (round(v * scale) for v in face["box"])
            cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, 2)
            _label(bgr, f"#{face['index']}", (x1, max(y1, 20)), text_scale)
    return bgr


def aligned_crop(rgb: np.ndarray, face: dict | None, scale: float = 1.0, size: int = FACE_PX) -> np.ndarray:
    """The face's aligned crop at size × size (the whole image for --aligned inputs), uint8 BGR; scale: of rgb
    against the photo the landmarks were found in (--upscale)."""
    image = to_uint8(rgb)
    if face is None or face.get("landmarks") is None:
        crop = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    else:
        landmarks = np.asarray(face["landmarks"], dtype=np.float32) * np.float32(scale)
        crop = warp_face(image, estimate_affine(landmarks, size), size)
    return np.ascontiguousarray(crop[..., ::-1])


def compare_sheet(before: np.ndarray, after: np.ndarray, faces: list[dict], left_out=()) -> np.ndarray:
    """BGR uint8 sheet: overview with numbered boxes, green restored and red left out (not for --aligned inputs),
    then per restored face `#k input | output`. faces: report face records (index, box, landmarks), landmarks None
    meaning the image is the aligned face; left_out: the report's skipped_faces."""
    aligned = not faces or faces[0].get("landmarks") is None
    scale = after.shape[1] / before.shape[1]
    pairs = [(face["index"], aligned_crop(before, face), aligned_crop(after, face, scale)) for face in faces] if not aligned \
        else [(0, aligned_crop(before, None), aligned_crop(after, None))]
    columns = min(MAX_COLUMNS, max(1, math.ceil(math.sqrt(len(pairs)))))
    pair_w, label_h = 2 * FACE_PX + GAP, 28
    width = max(OVERVIEW_MIN_WIDTH, columns * pair_w + (columns - 1) * 2 * GAP)
    rows = [] if aligned else [_overview(before, faces, list(left_out), width)]
    header = np.full((label_h, width, 3), BACKGROUND, np.uint8)
    _label(header, "input | restored", (4, label_h - 6), 0.6)
    rows.append(header)
    for start in range(0, len(pairs), columns):
        row = np.full((label_h + FACE_PX, width, 3), BACKGROUND, np.uint8)
        for col, (index, a, b) in enumerate(pairs[start:start + columns]):
            x = col * (pair_w + 2 * GAP)
            row[label_h:, x:x + FACE_PX] = a
            row[label_h:, x + FACE_PX + GAP:x + pair_w] = b
            _label(row, f"#{index}", (x + 2, label_h - 6), 0.6)
        rows.append(row)
    return np.concatenate(rows, axis=0)


def save_compare_sheet(before: np.ndarray, after: np.ndarray, faces: list[dict], left_out, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode(compare_sheet(before, after, faces, left_out), ".jpg",
                                    [cv2.IMWRITE_JPEG_QUALITY, 90]))


def face_crop_path(output: Path, rel: str, index: int) -> Path:
    return output / "_faces" / f"{Path(rel).with_suffix('')}_face{index:02d}.png"


def sample_path(output: Path, rel: str, index: int, k: int) -> Path:
    return output / "_samples" / f"{Path(rel).with_suffix('')}_face{index:02d}_sample{k}.png"


def save_samples(opts, rel: str, faces) -> dict:
    """--save-samples: every restoration of each face restored --samples K times; the report field naming them."""
    if not opts.save_samples:
        return {}
    files = []
    for face in faces:
        for k, image in enumerate(face.sample_images or ()):
            path = sample_path(opts.output, rel, face.index, k)
            save_face_crop(image, path)
            files.append(str(path))
    return {"sample_files": files}


def compare_path(output: Path, rel: str) -> Path:
    return output / "_compare" / f"{Path(rel).with_suffix('')}.jpg"


def boxes_image(rgb: np.ndarray, faces: list[dict], left_out: list[dict], scale: int = 1) -> np.ndarray:
    """BGR uint8 copy of rgb (the written photo) with each face's box and number: green for restored faces, red for
    faces found but left out; scale: rgb's size against the photo the boxes were found in."""
    bgr = np.ascontiguousarray(to_uint8(rgb)[..., ::-1])
    thickness = max(2, round(bgr.shape[1] / 600))
    text_scale = max(0.5, min(2.0, bgr.shape[1] / 1600))
    for entries, colour in ((faces, BOX_BGR), (left_out, LEFT_OUT_BGR)):
        for face in entries:
            x1, y1, x2, y2 = (round(v * scale) for v in face["box"])
            cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, thickness)
            _label(bgr, f"#{face['index']}", (max(x1, 0), max(y1, 24)), text_scale)
    return bgr


def boxes_path(output: Path, rel: str) -> Path:
    return output / "_boxes" / f"{Path(rel).with_suffix('')}.jpg"


def save_boxes(rgb: np.ndarray, faces: list[dict], left_out: list[dict], scale: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode(boxes_image(rgb, faces, left_out, scale), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]))


def save_extras(opts, rel: str, before: np.ndarray, after: np.ndarray, faces: list[dict], restored=(),
                left_out=(), compare: bool = True) -> dict:
    """--save-faces (restored: the faces' restored crops), --save-compare (unless compare is False: no face was
    restored) and --draw-boxes (left_out: the report's skipped_faces) for one photo; the report fields naming the
    files."""
    extras: dict = {}
    if opts.save_faces and restored:
        extras["face_files"] = []
        for face, crop in zip(faces, restored):
            path = face_crop_path(opts.output, rel, face["index"])
            save_face_crop(crop, path)
            extras["face_files"].append(str(path))
    if opts.save_compare and compare:
        path = compare_path(opts.output, rel)
        save_compare_sheet(before, after, faces, left_out, path)
        extras["compare_file"] = str(path)
    if opts.faces.draw_boxes and not opts.aligned:
        path = boxes_path(opts.output, rel)
        save_boxes(after, faces, list(left_out), opts.faces.upscale, path)
        extras["boxes_file"] = str(path)
    return extras
