"""The restoration pipeline, top to bottom: discover → plan (skip what is done) → read → detect/align →
batch restore → paste → write → report.

Faces from many photos share batches; a photo is pasted and written as soon as its last face is restored, so
memory stays bounded by the batch size, not by the number of photos. Every output is written atomically and
recorded in the run state only once it is in place, so a crash at any moment costs at most a redo."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerestore_cli.errors import FacerestoreError, NoInputsError
from facerestore_cli.interrupts import Interrupted
from facerestore_cli.presets import Preset
from facerestore_cli.report import ReportWriter, StdoutSink, Summary, photo_record, round_box

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
    force: bool = False
    redo_failed: bool = False
    wait_lock: float | None = None
    fail_fast: bool = False
    max_failures: int | None = None
    dry_run: bool = False
    fmt: str | None = None
    quality: int | None = None
    metadata: str = "keep"
    provenance: bool = False
    max_pixels: int | None = None
    identity_score: bool = False


@dataclass
class Face:
    index: int
    box: tuple[float, float, float, float]
    score: float
    affine: Any  # 2x3 float array; None for --aligned inputs
    crop: Any  # HxWx3 float32 RGB [0, 1]
    restored: Any = None
    seed: int | None = None  # the seed of the noise stream this face's restoration drew from
    paste_mask: str | None = None  # the mask it was pasted back with: parsenet | square (None for --aligned)
    method_info: dict = dataclasses.field(default_factory=dict)  # what the method used for it (Restoration)
    identity: dict | None = None  # ArcFace cosines, with --identity-score


@dataclass
class Photo:
    job: Any
    picture: Any
    faces: list[Face]
    skipped: list[dict]
    started: float
    pending: int = 0


class StopRun(Exception):
    """--fail-fast / --max-failures reached."""


class Pipeline:
    def __init__(self, opts: RunOptions, progress, sink: StdoutSink):
        self.opts, self.progress, self.sink = opts, progress, sink
        self.summary = Summary()
        self.models = None
        self.guard = None
        self.why: dict[str, str] = {}

    # -- plan: what is already done ------------------------------------------------------------------------------
    def signature(self, weights: dict) -> str:
        from facerestore_cli import __version__
        from facerestore_cli.state import run_signature

        o = self.opts
        return run_signature({
            "tool": __version__, "preset": o.preset.name, "method": o.preset.method, "parameters": o.params,
            "weights": weights, "detector": None if o.aligned else o.detector, "min_face": o.min_face,
            "aligned": o.aligned, "precision": o.precision, "format": o.fmt, "quality": o.quality,
            "metadata": o.metadata, "provenance": o.provenance, "face_size": o.preset.face_size,
            "identity_score": o.identity_score,
        })

    def plan(self, jobs, state, signature) -> list:
        todo = []
        for job in jobs:
            decision = state.decide(job.rel, job.src, job.dest, signature, force=self.opts.force,
                                    redo_failed=self.opts.redo_failed)
            if decision.action == "run":
                todo.append((job, decision.reason))
            elif not self.opts.dry_run:
                self.summary.skipped += 1
                rec = self.record(job, "skipped", reason=decision.reason)
                if state.entries[job.rel]["status"] == "failed":
                    rec["output"] = None  # failed last time: no output exists (nor goes to --print-outputs)
                self.emit(rec, progress=False)
            else:
                todo.append((job, None))
                self.emit_plan(job, "skip", decision.reason)
        return todo

    def emit_plan(self, job, action: str, reason: str) -> None:
        if self.sink.mode == "json":
            self.sink.record({"input": str(job.src), "output": str(job.dest), "action": action, "reason": reason})
        else:
            print(f"{action}\t{job.src}\t{job.dest}\t{reason}", flush=True)

    # -- per photo -------------------------------------------------------------------------------------------------
    def read(self, job) -> Photo:
        import numpy as np

        from facerestore_cli.faces.align import estimate_affine, warp_face
        from facerestore_cli.imageio import DEFAULT_MAX_PIXELS, read_image
        from facerestore_cli.pixels import to_float, to_uint8

        picture = read_image(job.src, max_pixels=self.opts.max_pixels or DEFAULT_MAX_PIXELS)
        photo = Photo(job, picture, [], [], time.monotonic())
        image = to_float(picture.rgb)
        if self.opts.aligned:
            h, w = image.shape[:2]
            photo.faces.append(Face(0, (0.0, 0.0, float(w), float(h)), 1.0, None, image))
            return photo
        size = self.opts.preset.face_size
        for det in self.models.detector.detect(to_uint8(picture.rgb)):
            x1, y1, x2, y2 = det.box
            if min(x2 - x1, y2 - y1) < self.opts.min_face:
                photo.skipped.append({"box": round_box(det.box), "score": round(det.score, 4),
                                      "reason": f"face {min(x2 - x1, y2 - y1):.0f} px < --min-face {self.opts.min_face}"})
                continue
            affine = estimate_affine(np.asarray(det.landmarks), size)
            photo.faces.append(Face(len(photo.faces), tuple(det.box), float(det.score), affine, warp_face(image, affine, size)))
        return photo

    def restore_batch(self, batch: list[tuple[Photo, Face]]) -> None:
        """Restore one batch of faces. A short batch is padded with blank faces to exactly the batch size: kernels
        pick their blocking from the batch shape, so a fixed shape is what makes a face's result bit-identical
        whatever photos share its batch and wherever it sits in it."""
        import torch

        from facerestore_cli.diffusion.noise import face_seed, seeded_generator
        from facerestore_cli.pixels import resize_batch, to_tensor

        seed = int(self.opts.params.get("seed", 0))
        size = self.opts.preset.face_size
        faces = torch.cat([resize_batch(to_tensor(face.crop), size) for _photo, face in batch])
        for photo, face in batch:
            face.seed = face_seed(seed, photo.job.rel, face.index)
        generators = [seeded_generator(face.seed) for _photo, face in batch]
        padding = self.models.batch_size - len(batch)
        if padding > 0:
            faces = torch.cat([faces, faces.new_zeros((padding, *faces.shape[1:]))])
            generators += [seeded_generator(face_seed(seed, "\0padding", i)) for i in range(padding)]
        result = self.models.restorer.restore(faces, generators, callback=lambda _step: self.guard.check())
        scores = self.identity_scores(faces, result)
        restored = result.images[: len(batch)].permute(0, 2, 3, 1).float().cpu().numpy()
        for k, ((_photo, face), image) in enumerate(zip(batch, restored)):
            face.restored = image
            face.method_info = result.info(k)
            face.identity = {name: round(values[k], 4) for name, values in scores.items()} or None
        self.progress.faces(len(batch))

    def identity_scores(self, faces, result) -> dict[str, list[float]]:
        """ArcFace cosine of each restored face to its input crop and to the method's own estimate (DifFace's and
        ipc-guided's g_φ(x)), when identity scores are on."""
        identity = self.models.identity
        if identity is None:
            return {}
        scores = {"vs_input": identity.score(result.images, faces.to(result.images.device))}
        if result.estimate is not None:
            scores["vs_estimate"] = identity.score(result.images, result.estimate)
        return scores

    def restore_with_retry(self, batch: list[tuple[Photo, Face]]) -> None:
        """Out of memory: halve the batch size (for the rest of the run) and retry the same faces. Only a single
        face that still does not fit fails — its photo, never the run."""
        from facerestore_cli.device import empty_cache, is_out_of_memory

        try:
            self.restore_batch(batch)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            empty_cache(self.models.compute)
            size = max(len(batch), self.models.batch_size)  # what did not fit: a short batch is padded to the size
            if size == 1:
                raise FacerestoreError("out of memory restoring a single face; try --precision bf16 or another device") from None
            self.models.batch_size = size // 2
            self.progress.warn(f"warning: out of memory with {size} faces per batch; "
                               f"continuing with {self.models.batch_size}")
            start = 0
            while start < len(batch):  # chunks of the current size: a retry below may halve it again
                chunk = batch[start: start + self.models.batch_size]
                self.restore_with_retry(chunk)
                start += len(chunk)

    def finish(self, photo: Photo) -> None:
        import numpy as np

        from facerestore_cli.faces import masks
        from facerestore_cli.faces.align import paste_faces
        from facerestore_cli.pixels import from_float, resize_float, to_float
        from facerestore_cli.sheets import save_extras

        picture, faces = photo.picture, photo.faces
        if self.opts.aligned:
            h, w = picture.rgb.shape[:2]
            result = resize_float(faces[0].restored, (w, h))
        else:
            face_masks = [None] * len(faces)
            if self.models.parsenet is not None:
                face_masks = masks.parse_masks(self.models.parsenet, [f.restored for f in faces], self.models.compute.device)
            for face, mask in zip(faces, face_masks):
                face.paste_mask = masks.MASK_SQUARE if mask is None else masks.MASK_PARSENET
            result = paste_faces(to_float(picture.rgb), [f.restored for f in faces], [f.affine for f in faces], face_masks)
        rgb = from_float(np.clip(result, 0.0, 1.0), picture.rgb.dtype)
        extras = self.write(dataclasses.replace(picture, rgb=rgb), photo.job.dest)
        extras.update(save_extras(self.opts, photo, rgb))
        self.summary.restored += 1
        self.summary.faces += len(faces)
        self.done(photo, "restored", None, extras)

    def write(self, picture, dest: Path) -> dict:
        """Write atomically; returns the report fields for what reading or the output format changed (CMYK
        converted, alpha or 16 bits the target cannot hold, metadata stripped, ...), so no loss goes unreported."""
        from facerestore_cli import __version__
        from facerestore_cli.imageio import write_image

        provenance = None
        if self.opts.provenance:
            params = " ".join(f"{k}={v}" for k, v in self.opts.params.items())
            provenance = f"facerestore {__version__}; method={self.opts.preset.name}; {params}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = write_image(picture, dest, fmt=self.opts.fmt, quality=self.opts.quality, metadata=self.opts.metadata,
                              provenance=provenance)
        notes = list(picture.notes) + list(written)
        return {"notes": notes} if notes else {}

    def copy_through(self, photo: Photo) -> None:
        """No face: the photo goes through unchanged (byte for byte unless a format/metadata change was asked)."""
        from facerestore_cli.imageio import atomic_copy

        if self.opts.fmt or self.opts.metadata != "keep" or self.opts.provenance or photo.job.dest.suffix != photo.job.src.suffix:
            extras = self.write(photo.picture, photo.job.dest)
        else:
            photo.job.dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(photo.job.src, photo.job.dest)
            extras = {"notes": list(photo.picture.notes)} if photo.picture.notes else {}
        self.summary.no_face += 1
        self.done(photo, "no_face", "no face found" if not photo.skipped else "every face below --min-face", extras)

    def done(self, photo: Photo, status: str, reason: str | None, extras: dict | None = None) -> None:
        job = photo.job
        self.state.record(job.rel, job.src, job.dest, "done" if status == "restored" else status, reason, self.sig)
        self.emit(self.record(job, status, photo, reason, extras))
        self.state.maybe_flush()

    def fail(self, job, reason: str, photo: Photo | None = None) -> None:
        self.summary.failed += 1
        self.progress.warn(f"error: {job.src}: {reason}")
        self.state.record(job.rel, job.src, None, "failed", reason, self.sig)
        self.emit(self.record(job, "failed", photo, reason))
        self.state.maybe_flush()
        if self.opts.fail_fast or (self.opts.max_failures is not None and self.summary.failed >= self.opts.max_failures):
            raise StopRun("--fail-fast" if self.opts.fail_fast else f"--max-failures {self.opts.max_failures} reached")

    def record(self, job, status: str, photo: Photo | None = None, reason: str | None = None, extras=None) -> dict:
        return photo_record(job, status, photo, reason, extras, self.opts, self.models, self.weights,
                            None if status == "skipped" else self.why.get(job.rel))

    def emit(self, rec: dict, progress: bool = True) -> None:
        self.report.write(rec)
        self.sink.record(rec)
        if progress:
            self.progress.photo(rec)

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(self, jobs) -> Summary:
        from facerestore_cli.device import resolve
        from facerestore_cli.interrupts import InterruptGuard
        from facerestore_cli.models import load_models, weight_hashes
        from facerestore_cli.state import RunState
        from facerestore_cli.weights.store import WeightStore

        started = time.monotonic()
        compute = resolve(self.opts.device, self.opts.precision)
        store = WeightStore(offline=self.opts.offline)
        self.state = RunState.load(self.opts.output)
        if self.state.warning:
            self.progress.warn(f"warning: {self.state.warning}")
        self.weights = weight_hashes(self.opts, store)
        self.sig = self.signature(self.weights)
        self.report = ReportWriter(None if self.opts.dry_run else self.opts.report)
        interrupted = None
        with InterruptGuard() as self.guard:
            try:
                todo = self.plan(jobs, self.state, self.sig)
                if self.opts.dry_run:
                    for job, reason in todo:
                        if reason is not None:
                            self.emit_plan(job, "run", reason)
                    return self.summary
                if todo:
                    self.models = load_models(self.opts, compute, store)
                    self.sig = self.signature(self.models.weights)
                    self.progress.start(len(todo), compute.describe(), self.opts.preset.name)
                    self.why = {job.rel: reason for job, reason in todo}
                    self.process([job for job, _reason in todo])
            except Interrupted as exc:
                interrupted = exc
                self.summary.interrupted = signal.Signals(exc.signum).name
            except StopRun as exc:
                self.summary.stopped_early = str(exc)
                self.progress.warn(f"stopping: {exc}")
            finally:
                self.progress.stop()
                self.summary.seconds = round(time.monotonic() - started, 3)
                self.report.write(self.summary.as_record())
                self.report.close()
                self.sink.summary(self.summary)
                if not self.opts.dry_run:
                    self.state.flush()
        if interrupted is not None:
            s = self.summary
            interrupted.message += f" after {s.restored + s.no_face} photo(s) ({s.failed} failed); report and state saved"
            raise interrupted
        return self.summary

    def process(self, jobs) -> None:
        queue: deque[tuple[Photo, Face]] = deque()
        for job in jobs:
            self.guard.check()
            self.summary.photos += 1
            try:
                photo = self.read(job)
            except FacerestoreError as exc:
                self.fail(job, exc.message)
                continue
            except OSError as exc:
                self.fail(job, f"cannot read: {exc.strerror or exc}")
                continue
            if not photo.faces:
                self._complete(photo, self.copy_through)
                continue
            photo.pending = len(photo.faces)
            queue.extend((photo, face) for face in photo.faces)
            while len(queue) >= self.models.batch_size:
                self._drain(queue)
        while queue:
            self._drain(queue)

    def _drain(self, queue: deque) -> None:
        batch = [queue.popleft() for _ in range(min(self.models.batch_size, len(queue)))]
        try:
            self.restore_with_retry(batch)
        except Interrupted:
            raise  # not a failure: the batch's photos are left unrecorded, so the next run does them
        except (FacerestoreError, RuntimeError) as exc:
            reason = exc.message if isinstance(exc, FacerestoreError) else f"device error: {exc}".splitlines()[0]
            failed = {id(photo): photo for photo, _face in batch}
            kept = [(photo, face) for photo, face in queue if id(photo) not in failed]
            queue.clear()
            queue.extend(kept)
            for photo in failed.values():
                self.fail(photo.job, f"restoration failed: {reason}", photo)
            return
        for photo, _face in batch:
            photo.pending -= 1
            if photo.pending == 0:
                self._complete(photo, self.finish)

    def _complete(self, photo: Photo, step) -> None:
        try:
            step(photo)
        except FacerestoreError as exc:
            self.fail(photo.job, exc.message, photo)
        except OSError as exc:
            self.fail(photo.job, f"cannot write {photo.job.dest}: {exc.strerror or exc}", photo)


def run(opts: RunOptions, progress, jobs, skipped_hidden: int = 0, skipped_not_image: int = 0,
        sink: StdoutSink | None = None) -> Summary:
    """Lock the output folder, clean what a killed run left, run the jobs."""
    from facerestore_cli.atomic import remove_stale_temps
    from facerestore_cli.runlock import run_lock

    if not jobs:
        raise NoInputsError("no input images found", hint="check the paths; folders are scanned one level deep unless --recursive")
    pipeline = Pipeline(opts, progress, sink or StdoutSink())
    pipeline.summary.skipped_hidden, pipeline.summary.skipped_not_image = skipped_hidden, skipped_not_image
    if opts.dry_run:
        return pipeline.run(jobs)
    with run_lock(opts.output, wait_seconds=opts.wait_lock):
        remove_stale_temps(opts.output)
        return pipeline.run(jobs)
