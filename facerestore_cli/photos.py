"""One photo before and after the network: read (decode → detect → align) and finish (paste → encode → write).

Both sides are plain functions of a photo, safe to run in worker threads: they touch no run state (the ledger
records their outcomes, in order, on the pipeline's thread). Each stage is timed into the run's StageTimer.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from facerestore_cli import __version__
from facerestore_cli.faces import masks
from facerestore_cli.faces.align import estimate_affine, paste_faces, warp_face
from facerestore_cli.files import atomic_copy, atomic_write_bytes
from facerestore_cli.imageio import DEFAULT_MAX_PIXELS, read_image
from facerestore_cli.imagewrite import encode_image
from facerestore_cli.overlap import Outcome, capture, ordered_map
from facerestore_cli.pixels import from_float, resize_float, to_float, to_uint8
from facerestore_cli.report import face_record, round_box
from facerestore_cli.sheets import save_extras
from facerestore_cli.timings import StageTimer


@dataclass
class Face:
    index: int
    box: tuple[float, float, float, float]
    score: float
    affine: Any  # 2x3 float array; None for --aligned inputs
    crop: Any  # HxWx3 float32 RGB [0, 1]
    landmarks: Any = None  # (5, 2) float32 in photo pixels; None for --aligned inputs
    restored: Any = None
    seed: int | None = None  # the seed of the noise stream this face's restoration drew from
    parse_labels: Any = None  # ParseNet's labels (uint8 512×512) of the restored face, when pasted with its mask
    paste_mask: str | None = None  # the mask it was pasted back with: parsenet | square (None for --aligned)
    method_info: dict = field(default_factory=dict)  # what the method used for it (Restoration.face_info)
    identity: dict | None = None  # ArcFace cosines, with --identity-score


@dataclass
class Photo:
    job: Any
    picture: Any
    faces: list[Face]
    skipped: list[dict]
    started: float
    pending: int = 0


class PhotoReader:
    """Decode, detect (same-size photos together, `detect_batch` at a time) and align, in the order of the jobs."""

    def __init__(self, opts, detector, timings: StageTimer, detect_batch: int = 1):
        self.opts, self.detector, self.timings, self.detect_batch = opts, detector, timings, detect_batch

    def photos(self, jobs: Iterable, pool, window: int) -> Iterator[tuple[Any, Outcome]]:
        """(job, Outcome of its Photo) per job, in order; decoding runs in pool (inline without one)."""
        pending: list[tuple[Any, Photo]] = []
        for job, decoded in ordered_map(self.decode, jobs, pool, window):
            if decoded.error is not None or self.opts.aligned:
                yield from self._locate(pending)
                pending = []
                yield job, decoded if decoded.error is not None else self._aligned(decoded.value)
                continue
            if pending and (len(pending) == self.detect_batch
                            or pending[0][1].picture.rgb.shape != decoded.value.picture.rgb.shape):
                yield from self._locate(pending)
                pending = []
            pending.append((job, decoded.value))
        yield from self._locate(pending)

    def decode(self, job) -> Photo:
        started = time.monotonic()
        with self.timings.measure("decode"):
            picture = read_image(job.src, max_pixels=self.opts.max_pixels or DEFAULT_MAX_PIXELS)
        return Photo(job, picture, [], [], started)

    def _aligned(self, photo: Photo) -> Outcome:
        image = to_float(photo.picture.rgb)
        h, w = image.shape[:2]
        photo.faces.append(Face(0, (0.0, 0.0, float(w), float(h)), 1.0, None, image))
        return Outcome(photo)

    def _locate(self, batch: list[tuple[Any, Photo]]) -> Iterator[tuple[Any, Outcome]]:
        if not batch:
            return
        try:
            with self.timings.measure("detect"):
                found = self.detector.detect_many([to_uint8(p.picture.rgb) for _job, p in batch], self.detect_batch)
        except Exception as exc:  # noqa: BLE001  (each photo of the batch fails with it, in order)
            for job, _photo in batch:
                yield job, Outcome(error=exc)
            return
        for (job, photo), detections in zip(batch, found):
            yield job, capture(functools.partial(self.align, photo), detections)

    def align(self, photo: Photo, detections) -> Photo:
        """Faces at least --min-face px become aligned crops; smaller ones are noted as skipped."""
        with self.timings.measure("align"):
            size, min_face = self.opts.preset.face_size, self.opts.min_face
            image = to_float(photo.picture.rgb) if detections else None
            for det in detections:
                x1, y1, x2, y2 = det.box
                if min(x2 - x1, y2 - y1) < min_face:
                    photo.skipped.append({"box": round_box(det.box), "score": round(det.score, 4),
                                          "reason": f"face {min(x2 - x1, y2 - y1):.0f} px < --min-face {min_face}"})
                    continue
                affine = estimate_affine(np.asarray(det.landmarks), size)
                photo.faces.append(Face(len(photo.faces), tuple(det.box), float(det.score), affine,
                                        warp_face(image, affine, size), np.asarray(det.landmarks)))
        return photo


class PhotoWriter:
    """Paste a photo's restored faces back, encode and write it (and its extras) atomically. whole_image: convert
    the whole picture to float and back, as the official scripts do (the benchmark's reference); the default
    converts only the faces' regions, with the same result."""

    def __init__(self, opts, timings: StageTimer, whole_image: bool = False):
        self.opts, self.timings, self.whole_image = opts, timings, whole_image

    def finish(self, photo: Photo) -> tuple[str, str | None, dict]:
        picture, faces = photo.picture, photo.faces
        with self.timings.measure("paste"):
            if self.opts.aligned:
                h, w = picture.rgb.shape[:2]
                rgb = from_float(resize_float(faces[0].restored, (w, h)), picture.rgb.dtype)
            else:
                rgb = self.paste(picture.rgb, faces)
        extras = self.write(dataclasses.replace(picture, rgb=rgb), photo.job.dest)
        extras.update(save_extras(self.opts, photo.job.rel, picture.rgb, rgb, [face_record(f) for f in faces],
                                  [f.restored for f in faces]))
        return "restored", None, extras

    def paste(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """The faces blended back with ParseNet's mask where it parsed them (in the network stage), else the square
        mask."""
        face_masks = [None if f.parse_labels is None else masks.parse_soft_mask(f.parse_labels) for f in faces]
        for face, mask in zip(faces, face_masks):
            face.paste_mask = masks.MASK_SQUARE if mask is None else masks.MASK_PARSENET
        crops, affines = [f.restored for f in faces], [f.affine for f in faces]
        if self.whole_image:
            return from_float(paste_faces(to_float(rgb), crops, affines, face_masks), rgb.dtype)
        return paste_faces(rgb, crops, affines, face_masks)

    def copy_through(self, photo: Photo) -> tuple[str, str | None, dict]:
        """No face: the photo goes through unchanged (byte for byte unless a format/metadata change was asked)."""
        o, job = self.opts, photo.job
        if o.fmt or o.metadata != "keep" or o.provenance or job.dest.suffix != job.src.suffix:
            extras = self.write(photo.picture, job.dest)
        else:
            job.dest.parent.mkdir(parents=True, exist_ok=True)
            with self.timings.measure("write"):
                atomic_copy(job.src, job.dest)
            extras = {"notes": list(photo.picture.notes)} if photo.picture.notes else {}
        return "no_face", "no face found" if not photo.skipped else "every face below --min-face", extras

    def write(self, picture, dest: Path) -> dict:
        """Write atomically; returns the report fields for what reading or the output format changed (CMYK
        converted, alpha or 16 bits the target cannot hold, metadata stripped, ...), so no loss goes unreported."""
        provenance = None
        if self.opts.provenance:
            params = " ".join(f"{k}={v}" for k, v in self.opts.params.as_record().items())
            provenance = f"facerestore {__version__}; method={self.opts.preset.name}; {params}"
        with self.timings.measure("encode"):
            data, written = encode_image(picture, fmt=self.opts.fmt, quality=self.opts.quality,
                                         metadata=self.opts.metadata, provenance=provenance)
        with self.timings.measure("write"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, data)
        notes = list(picture.notes) + list(written)
        return {"notes": notes} if notes else {}
