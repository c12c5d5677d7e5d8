"""The restoration pipeline, top to bottom: discover → read → detect/align → batch restore → paste → write → report.

Faces from many photos share batches; a photo is pasted and written as soon as its last face is restored, so
memory stays bounded by the batch size, not by the number of photos."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerestore_cli.errors import FacerestoreError, NoInputsError
from facerestore_cli.presets import Preset

DETECTOR_WEIGHTS = {"retinaface_resnet50": "retinaface-resnet50", "retinaface_mobile0.25": "retinaface-mobile0.25"}


@dataclass
class RunOptions:
    inputs: list[Path]
    output: Path
    preset: Preset
    params: dict[str, Any]
    recursive: bool = False
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    detector: str = "retinaface_resnet50"
    aligned: bool = False
    save_faces: bool = False
    save_compare: bool = False
    report: Path | None = None
    min_face: int = 20
    offline: bool = False


@dataclass
class Face:
    index: int
    box: tuple[float, float, float, float]
    score: float
    affine: Any  # 2x3 float array; None for --aligned inputs
    crop: Any  # HxWx3 float32 RGB [0, 1]
    restored: Any = None


@dataclass
class Photo:
    job: Any
    picture: Any
    faces: list[Face]
    skipped: list[dict]
    started: float
    error: str | None = None
    pending: int = 0


@dataclass
class Summary:
    photos: int = 0
    restored: int = 0
    no_face: int = 0
    failed: int = 0
    faces: int = 0
    seconds: float = 0.0
    skipped_hidden: int = 0
    skipped_not_image: int = 0
    outputs: list[str] = field(default_factory=list)

    def as_record(self) -> dict:
        rec = dataclasses.asdict(self)
        rec.pop("outputs")
        rec["faces_per_second"] = round(self.faces / self.seconds, 3) if self.seconds else None
        return {"summary": rec}


class Pipeline:
    def __init__(self, opts: RunOptions, progress):
        self.opts, self.progress = opts, progress
        self.summary = Summary()

    # -- setup -------------------------------------------------------------------------------------------------
    def prepare_models(self) -> None:
        from facerestore_cli.device import default_batch_size, resolve
        from facerestore_cli.methods import build_method
        from facerestore_cli.weights.store import WeightStore

        opts = self.opts
        self.compute = resolve(opts.device, opts.precision)
        self.store = WeightStore(offline=opts.offline)
        needed = list(opts.preset.weight_ids())
        if not opts.aligned:
            needed.append(DETECTOR_WEIGHTS[opts.detector])
        self.store.require(needed)
        self.restorer = build_method(opts.preset, opts.params, self.store, self.compute)
        self.detector = None if opts.aligned else self._load_detector(DETECTOR_WEIGHTS[opts.detector])
        self.parsenet = None
        if not opts.aligned and self.store.is_present("parsenet"):
            self.parsenet = self._load_aux("parsenet")
        self.mask_kind = "parsenet" if self.parsenet is not None else "square"
        self.batch_size = opts.batch_size or default_batch_size(self.compute)
        self.weights = {wid: self.store.recorded_sha256(wid) for wid in needed + (["parsenet"] if self.parsenet else [])}

    def _load_aux(self, weight_id: str):
        from facerestore_cli.methods.components import load_network

        return load_network(self.store, {"weights": weight_id}, self.compute)

    def _load_detector(self, weight_id: str):
        from facerestore_cli.faces.detect import FaceDetector

        return FaceDetector(self._load_aux(weight_id), self.compute.device)

    # -- per photo ---------------------------------------------------------------------------------------------
    def read(self, job) -> Photo:
        import numpy as np

        from facerestore_cli.faces.align import estimate_affine, warp_face
        from facerestore_cli.imageio import read_image
        from facerestore_cli.pixels import to_float, to_uint8

        picture = read_image(job.src)
        photo = Photo(job, picture, [], [], time.monotonic())
        image = to_float(picture.rgb)
        if self.opts.aligned:
            h, w = image.shape[:2]
            photo.faces.append(Face(0, (0.0, 0.0, float(w), float(h)), 1.0, None, image))
            return photo
        size = self.opts.preset.face_size
        for det in self.detector.detect(to_uint8(picture.rgb)):
            x1, y1, x2, y2 = det.box
            if min(x2 - x1, y2 - y1) < self.opts.min_face:
                photo.skipped.append({"box": _round(det.box), "score": round(det.score, 4),
                                      "reason": f"face {min(x2 - x1, y2 - y1):.0f} px < --min-face {self.opts.min_face}"})
                continue
            affine = estimate_affine(np.asarray(det.landmarks), size)
            crop = warp_face(image, affine, size)
            photo.faces.append(Face(len(photo.faces), tuple(det.box), float(det.score), affine, crop))
        return photo

    def restore_batch(self, batch: list[tuple[Photo, Face]]) -> None:
        """Restore one batch of faces. A short batch is padded with blank faces to exactly --batch-size: kernels
        pick their blocking from the batch shape, so a fixed shape is what makes a face's result bit-identical
        whatever photos share its batch and wherever it sits in it."""
        import torch

        from facerestore_cli.diffusion.noise import face_generator
        from facerestore_cli.pixels import resize_batch, to_tensor

        seed = int(self.opts.params.get("seed", 0))
        size = self.opts.preset.face_size
        faces = torch.cat([resize_batch(to_tensor(face.crop), size) for _photo, face in batch])
        generators = [face_generator(seed, photo.job.rel, face.index) for photo, face in batch]
        padding = self.batch_size - len(batch)
        if padding > 0:
            faces = torch.cat([faces, faces.new_zeros((padding, *faces.shape[1:]))])
            generators += [face_generator(seed, "\0padding", i) for i in range(padding)]
        out = self.restorer.restore(faces, generators)[: len(batch)]
        out = out.permute(0, 2, 3, 1).float().cpu().numpy()
        for (_photo, face), restored in zip(batch, out):
            face.restored = restored
        self.progress.faces(len(batch))

    def masks_for(self, photo: Photo):
        from facerestore_cli.faces import masks

        if self.parsenet is None:
            return None
        return masks.parse_masks(self.parsenet, [f.restored for f in photo.faces], self.compute.device)

    def finish(self, photo: Photo) -> None:
        import numpy as np

        from facerestore_cli.faces.align import paste_faces
        from facerestore_cli.imageio import write_image
        from facerestore_cli.pixels import from_float, resize_float, to_float

        job, picture = photo.job, photo.picture
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        if self.opts.aligned:
            h, w = picture.rgb.shape[:2]
            result = resize_float(photo.faces[0].restored, (w, h))
        else:
            result = paste_faces(to_float(picture.rgb), [f.restored for f in photo.faces],
                                 [f.affine for f in photo.faces], self.masks_for(photo))
        rgb = from_float(np.clip(result, 0.0, 1.0), picture.rgb.dtype)
        write_image(dataclasses.replace(picture, rgb=rgb), job.dest)
        extras = self.save_extras(photo, rgb)
        self.summary.restored += 1
        self.summary.faces += len(photo.faces)
        self.record(photo, "restored", extras=extras)

    def save_extras(self, photo: Photo, rgb) -> dict:
        from facerestore_cli.sheets import save_compare_sheet, save_face_crop

        extras: dict[str, Any] = {}
        stem = Path(photo.job.rel).with_suffix("")
        if self.opts.save_faces:
            extras["face_files"] = []
            for face in photo.faces:
                path = self.opts.output / "_faces" / f"{stem}_face{face.index:02d}.png"
                save_face_crop(face.restored, path)
                extras["face_files"].append(str(path))
        if self.opts.save_compare:
            path = self.opts.output / "_compare" / f"{stem}.jpg"
            save_compare_sheet(photo.picture.rgb, rgb, [f.box for f in photo.faces], path)
            extras["compare_file"] = str(path)
        return extras

    def copy_through(self, photo: Photo) -> None:
        from facerestore_cli.imageio import atomic_copy

        photo.job.dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(photo.job.src, photo.job.dest)
        self.summary.no_face += 1
        self.record(photo, "no_face", reason="no face found" if not photo.skipped else "every face below --min-face")

    def fail(self, job, reason: str, photo: Photo | None = None) -> None:
        self.summary.failed += 1
        self.progress.warn(f"error: {job.src}: {reason}")
        self.record(photo or Photo(job, None, [], [], time.monotonic()), "failed", reason=reason)

    def record(self, photo: Photo, status: str, reason: str | None = None, extras: dict | None = None) -> None:
        job = photo.job
        rec = {
            "input": str(job.src), "output": str(job.dest) if status != "failed" else None, "status": status,
            "reason": reason,
            "faces": [{"index": f.index, "box": _round(f.box), "score": round(f.score, 4)} for f in photo.faces],
            "skipped_faces": photo.skipped,
            "mask": self.mask_kind if status == "restored" and not self.opts.aligned else None,
            "seconds": round(time.monotonic() - photo.started, 3),
            "method": self.opts.preset.name, "parameters": self.opts.params,
            "weights": self.weights, "device": self.compute.describe(),
        }
        if extras:
            rec.update(extras)
        if status != "failed":
            self.summary.outputs.append(str(job.dest))
        self.report.write(rec)
        self.progress.photo(rec)

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self, jobs) -> Summary:
        from facerestore_cli.report import ReportWriter

        started = time.monotonic()
        self.prepare_models()
        self.report = ReportWriter(self.opts.report)
        self.progress.start(len(jobs), self.compute.describe(), self.opts.preset.name)
        queue: deque[tuple[Photo, Face]] = deque()
        try:
            for job in jobs:
                self.summary.photos += 1
                try:
                    photo = self.read(job)
                except FacerestoreError as exc:
                    self.fail(job, exc.message)
                    continue
                if not photo.faces:
                    self.copy_through(photo)
                    continue
                photo.pending = len(photo.faces)
                queue.extend((photo, face) for face in photo.faces)
                while len(queue) >= self.batch_size:
                    self._drain(queue, self.batch_size)
            while queue:
                self._drain(queue, self.batch_size)
        finally:
            self.progress.stop()
            self.summary.seconds = round(time.monotonic() - started, 3)
            self.report.write(self.summary.as_record())
            self.report.close()
        return self.summary

    def _drain(self, queue: deque, n: int) -> None:
        batch = [queue.popleft() for _ in range(min(n, len(queue)))]
        try:
            self.restore_batch(batch)
        except FacerestoreError as exc:
            failed = {id(photo): photo for photo, _face in batch}
            kept = [(photo, face) for photo, face in queue if id(photo) not in failed]
            queue.clear()
            queue.extend(kept)
            for photo in failed.values():
                photo.error = exc.message
                self._complete(photo)
            return
        for photo, _face in batch:
            photo.pending -= 1
            if photo.pending == 0:
                self._complete(photo)

    def _complete(self, photo: Photo) -> None:
        if photo.error is not None:
            self.fail(photo.job, f"restoration failed: {photo.error}", photo)
            return
        try:
            self.finish(photo)
        except FacerestoreError as exc:
            self.fail(photo.job, exc.message, photo)
        except OSError as exc:
            self.fail(photo.job, f"cannot write {photo.job.dest}: {exc.strerror or exc}", photo)


def _round(box) -> list[float]:
    return [round(float(v), 2) for v in box]


def run(opts: RunOptions, progress, jobs, skipped_hidden: int = 0, skipped_not_image: int = 0) -> Summary:
    """Run the jobs; the discovery's skip counts go into the summary before it is written to the report."""
    if not jobs:
        raise NoInputsError("no input images found", hint="check the paths; folders are scanned one level deep unless --recursive")
    pipeline = Pipeline(opts, progress)
    pipeline.summary.skipped_hidden, pipeline.summary.skipped_not_image = skipped_hidden, skipped_not_image
    return pipeline.run(jobs)
