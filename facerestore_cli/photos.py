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
from facerestore_cli.errors import FacerestoreError
from facerestore_cli.background import enlarge, resize
from facerestore_cli.faces import masks
from facerestore_cli.faces.align import estimate_affine, paste_faces, warp_face_float
from facerestore_cli.faces.frontend import choose_faces
from facerestore_cli.files import atomic_copy, atomic_write_bytes
from facerestore_cli.imageio import DEFAULT_MAX_PIXELS, read_image
from facerestore_cli.imagewrite import encode_image
from facerestore_cli.overlap import Outcome, capture, ordered_map
from facerestore_cli.pixels import from_float, resize_float, to_float, to_uint8
from facerestore_cli.report import face_record
from facerestore_cli.keeping import is_left_out
from facerestore_cli.sheets import save_extras, save_samples
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
    paste_mask: str | None = None  # the mask it was pasted back with: parsenet-in-square | square (None: --aligned)
    method_info: dict = field(default_factory=dict)  # what the method used for it (Restoration.face_info)
    identity: dict | None = None  # ArcFace cosines, with --identity-score (of the kept sample)
    estimate: Any = None  # the method's own estimate beside the kept restoration (None: it makes none)
    samples: list | None = None  # with --samples K > 1: each sample's k, seed and identity cosines
    kept: int | None = None  # which of them was kept
    sample_images: list | None = None  # their restorations (--save-samples)
    gate: dict | None = None  # with --min-identity: {identity, threshold, action}
    pending_samples: dict = field(default_factory=dict)  # k → keeping.Sample, until all K are restored


@dataclass
class Photo:
    job: Any
    picture: Any
    faces: list[Face]
    skipped: list[dict]
    started: float
    pending: int = 0
    restore_seconds: float = 0.0  # its share of the network time of the batches its faces were in
    enlarged: Any = None  # the picture at --upscale size, when enlarged ahead (on Ray's GPU actors)


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
        """The faces the front end keeps become aligned crops, numbered by detection order; the others are noted as
        skipped, with their numbers and why."""
        with self.timings.measure("align"):
            size = self.opts.preset.face_size
            height, width = photo.picture.rgb.shape[:2]
            kept, photo.skipped = choose_faces(detections, height, width, self.opts.faces)
            absent = [n for n in self.opts.faces.indices or () if n >= len(detections)]
            if absent:
                numbers = {0: "", 1: ", numbered 0"}.get(len(detections), f", numbered 0–{len(detections) - 1}")
                photo.picture.notes.append(f"--faces {','.join(map(str, absent))}: no such face in this photo "
                                           f"({len(detections)} detected{numbers})")
            for number, det in kept:
                affine = estimate_affine(np.asarray(det.landmarks), size)
                photo.faces.append(Face(number, tuple(det.box), float(det.score), affine,
                                        warp_face_float(photo.picture.rgb, affine, size), np.asarray(det.landmarks)))
        return photo


def resized_picture(picture, rgb, alpha, scale: int):
    """picture with new pixels `scale` times its size; the resolution (dpi) scaled with them, so the print size
    stays."""
    dpi = None if picture.dpi is None or scale == 1 else (picture.dpi[0] * scale, picture.dpi[1] * scale)
    return dataclasses.replace(picture, rgb=rgb, alpha=alpha, dpi=dpi)


def read_failure(exc: Exception) -> str:
    """A photo's failure reason when reading it raised exc (a FacerestoreError or an OSError)."""
    return exc.message if isinstance(exc, FacerestoreError) else f"cannot read: {exc.strerror or exc}"


def restore_failure(exc: Exception) -> str:
    """A photo's failure reason when restoring its faces raised exc (a FacerestoreError or a device's error)."""
    reason = exc.message if isinstance(exc, FacerestoreError) else f"device error: {exc}".splitlines()[0]
    return f"restoration failed: {reason}"


def write_failure(exc: Exception, dest: Path) -> str:
    """A photo's failure reason when pasting, encoding or writing it to dest raised exc."""
    return exc.message if isinstance(exc, FacerestoreError) else f"cannot write {dest}: {exc.strerror or exc}"


class PhotoWriter:
    """Paste a photo's restored faces back, encode and write it (and its extras) atomically. background: the
    Real-ESRGAN TiledUpsampler when the run enlarges photos with it."""

    def __init__(self, opts, timings: StageTimer, background=None):
        self.opts, self.timings, self.background = opts, timings, background

    def finish(self, photo: Photo) -> tuple[str, str | None, dict]:
        picture, faces, scale = photo.picture, photo.faces, self.opts.faces.upscale
        if self.opts.aligned:
            with self.timings.measure("paste"):
                h, w = picture.rgb.shape[:2]
                rgb = from_float(resize_float(self.blended(faces[0]), (w * scale, h * scale)), picture.rgb.dtype)
                alpha = None if picture.alpha is None else resize(picture.alpha, scale, "none")
            big = resized_picture(picture, rgb, alpha, scale)
        else:
            big = photo.enlarged or self.enlarged(picture)
            with self.timings.measure("paste"):
                big.rgb = self.paste(big.rgb, [f for f in faces if not is_left_out(f)])
        if all(is_left_out(f) for f in faces):  # every face gated (--min-identity): the photo as it came
            extras = self.write_input(photo)
        else:
            extras = self.write(big, photo.job.dest)
        records = [face_record(f) for f in faces]
        extras.update(save_extras(self.opts, photo.job.rel, picture.rgb, big.rgb, records, [f.restored for f in faces],
                                  photo.skipped))
        extras.update(save_samples(self.opts, photo.job.rel, faces))
        return "restored", None, extras

    def enlarged(self, picture):
        """The picture --upscale times larger (a copy of it at 1): Real-ESRGAN, bicubic or bilinear under the
        faces."""
        scale = self.opts.faces.upscale
        if scale == 1:
            return dataclasses.replace(picture)
        with self.timings.measure("upscale"):
            rgb, alpha = enlarge(picture.rgb, picture.alpha, scale, self.opts.faces.bg_upsampler, self.background)
        return resized_picture(picture, rgb, alpha, scale)

    def blended(self, face: Face) -> np.ndarray:
        """--blend W: W · restored + (1 − W) · the input crop (W = 1: the restored face as it is)."""
        weight = self.opts.faces.blend
        if weight == 1.0:
            return face.restored
        h, w = face.restored.shape[:2]
        crop = resize_float(face.crop, (w, h))
        return (np.float32(weight) * face.restored + np.float32(1 - weight) * crop).astype(np.float32)

    def paste(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """The faces blended back with min(ParseNet's mask, the square mask) where ParseNet parsed them (in the
        network stage), as DifFace's and CodeFormer's helpers do; else with the square mask. rgb: the photo at
        --upscale size."""
        face_masks = [None if f.parse_labels is None else masks.parse_soft_mask(f.parse_labels) for f in faces]
        for face, mask in zip(faces, face_masks):
            face.paste_mask = masks.MASK_SQUARE if mask is None else masks.MASK_PARSENET_IN_SQUARE
        crops, affines = [self.blended(f) for f in faces], [f.affine for f in faces]
        return paste_faces(rgb, crops, affines, face_masks, clip_to_square=True, upscale=self.opts.faces.upscale)

    def copy_through(self, photo: Photo) -> tuple[str, str | None, dict]:
        """No face to restore: the photo goes through unchanged (byte for byte unless a format/metadata change or
        --upscale was asked)."""
        extras = self.write_input(photo)
        big = photo.enlarged or photo.picture
        extras.update(save_extras(self.opts, photo.job.rel, photo.picture.rgb, big.rgb, [], (), photo.skipped,
                                  compare=False))
        return "no_face", "no face found" if not photo.skipped else "no face chosen (see skipped_faces)", extras

    def write_input(self, photo: Photo) -> dict:
        """The photo as it came (byte for byte unless a format/metadata change or --upscale was asked)."""
        o, job = self.opts, photo.job
        if o.fmt or o.metadata != "keep" or o.provenance or job.dest.suffix != job.src.suffix or o.faces.upscale > 1:
            photo.enlarged = photo.enlarged or self.enlarged(photo.picture)
            return self.write(photo.enlarged, job.dest)
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        with self.timings.measure("write"):
            atomic_copy(job.src, job.dest)
        return {"notes": list(photo.picture.notes)} if photo.picture.notes else {}

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
