"""The restoration pipeline, top to bottom: lock the output folder → plan (skip what is done) → load → for each
photo: read → detect/align → batch restore → paste → write → record.

Faces from many photos share batches; a photo is pasted and written as soon as its last face is restored, so
memory stays bounded by the batch size, not by the number of photos. Every output is written atomically and
recorded in the run state only once it is in place, so a crash at any moment costs at most a redo."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerestore_cli import __version__
from facerestore_cli.files import atomic_copy, remove_stale_temps
from facerestore_cli.device import empty_cache, is_out_of_memory, resolve
from facerestore_cli.diffusion.noise import face_seed, seeded_generator
from facerestore_cli.errors import FacerestoreError, UsageError
from facerestore_cli.faces import masks
from facerestore_cli.faces.align import estimate_affine, paste_faces, warp_face
from facerestore_cli.imageio import DEFAULT_MAX_PIXELS, read_image, write_image
from facerestore_cli.interrupts import InterruptGuard, Interrupted
from facerestore_cli.ledger import Ledger, StopRun
from facerestore_cli.methods import Method
from facerestore_cli.methods.params import MethodParams
from facerestore_cli.models import Models, load_models, require_weights, weight_hashes
from facerestore_cli.pixels import from_float, resize_batch, resize_float, to_float, to_tensor, to_uint8
from facerestore_cli.presets import Preset
from facerestore_cli.report import StdoutSink, Summary, face_record, round_box
from facerestore_cli.runlock import LOCK_NAME, run_lock
from facerestore_cli.sheets import compare_path, save_compare_sheet, save_extras
from facerestore_cli.weights.store import WeightStore


@dataclass
class RunOptions:
    inputs: list[Path]
    output: Path
    preset: Preset
    method: Method
    params: MethodParams
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
    landmarks: Any = None  # (5, 2) float32 in photo pixels; None for --aligned inputs
    restored: Any = None
    seed: int | None = None  # the seed of the noise stream this face's restoration drew from
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


def run(opts: RunOptions, progress, jobs, skipped_hidden: int = 0, skipped_not_image: int = 0,
        sink: StdoutSink | None = None) -> Summary:
    """Check what a real run needs, lock the output folder (not for a dry run), plan, load, restore, record. A run
    that fails before any work leaves no output folder and no report behind."""
    check_output_folder(opts.output)
    compute = resolve(opts.device, opts.precision)
    store = WeightStore(offline=opts.offline)
    sink = sink or StdoutSink()
    if opts.dry_run:
        return _plan_only(opts, progress, jobs, store, sink)
    fresh = not opts.output.exists()
    if fresh:
        require_weights(opts, store)  # all of it is new work: fail before the output folder exists
    try:
        with run_lock(opts.output, wait_seconds=opts.wait_lock):
            remove_stale_temps(opts.output)
            ledger = Ledger(opts, progress, sink, weight_hashes(opts, store))
            ledger.summary.skipped_hidden, ledger.summary.skipped_not_image = skipped_hidden, skipped_not_image
            return _run_locked(opts, progress, jobs, compute, store, ledger)
    except FacerestoreError:
        if fresh:
            remove_if_untouched(opts.output)
        raise


def _run_locked(opts, progress, jobs, compute, store, ledger: Ledger) -> Summary:
    interrupted = None
    with InterruptGuard() as guard:
        todo, extras = ledger.plan(jobs)
        try:
            models = None
            if todo:
                require_weights(opts, store)
                models = load_models(opts, compute, store)
                ledger.loaded(weight_hashes(opts, store), compute, models.batch_size)
        except BaseException:
            ledger.abandon()
            raise
        try:
            progress.start(len(todo) + len(extras), compute.describe() if models else "", opts.preset.name)
            make_compare_sheets(opts, ledger, extras, guard)
            if models is not None:
                Pipeline(opts, models, ledger, guard).process(todo)
        except Interrupted as exc:
            interrupted = exc
            ledger.summary.interrupted = signal.Signals(exc.signum).name
        except StopRun as exc:
            ledger.summary.stopped_early = str(exc)
            progress.warn(f"stopping: {exc}")
        finally:
            progress.stop()
            summary = ledger.close()
    if interrupted is not None:
        interrupted.message += f": {summary.counts()}; report and state saved"
        raise interrupted
    return summary


def _plan_only(opts, progress, jobs, store, sink) -> Summary:
    """--dry-run: print what would run or be skipped and why, after every check a real run makes before its first
    photo (parameters and preset were checked by the CLI); writes nothing and loads no network."""
    ledger = Ledger(opts, progress, sink, weight_hashes(opts, store))
    todo, _extras = ledger.plan(jobs)
    if todo:
        require_weights(opts, store)
    ledger.print_plan()
    return ledger.close()


def remove_if_untouched(output: Path) -> None:
    """Remove an output folder this run made and left holding nothing but its lock file."""
    if output.is_dir() and {p.name for p in output.iterdir()} <= {LOCK_NAME}:
        (output / LOCK_NAME).unlink(missing_ok=True)
        output.rmdir()


def make_compare_sheets(opts, ledger: Ledger, jobs, guard) -> None:
    """Compare sheets for photos done by an earlier run: from the input, the output in place and the faces' recorded
    landmarks, without restoring again."""
    for job, entry in jobs:
        guard.check()
        try:
            before = read_image(job.src, max_pixels=opts.max_pixels or DEFAULT_MAX_PIXELS).rgb
            after = read_image(job.dest, max_pixels=None).rgb
            faces = (entry.get("record") or {}).get("faces") or []
            path = compare_path(opts.output, job.rel)
            save_compare_sheet(before, after, faces, path)
        except (FacerestoreError, OSError) as exc:
            ledger.progress.warn(f"warning: {job.src}: compare sheet not made: {getattr(exc, 'message', exc)}")
            continue
        ledger.extras_done(job, entry, {"compare_file": str(path)})


def check_output_folder(output: Path) -> None:
    """-o must be a folder, or a path where one can be made: a usage error before any work otherwise."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a folder", hint="-o names the folder results go into")
    parent = next((p for p in output.absolute().parents if p.exists()), None)
    if not output.exists() and parent is not None and not parent.is_dir():
        raise UsageError(f"output {output} cannot be made: {parent} is not a folder")


class Pipeline:
    """One run's photos through the loaded models: read, batch, restore, paste, write; outcomes go to the ledger."""

    def __init__(self, opts: RunOptions, models: Models, ledger: Ledger, guard: InterruptGuard):
        self.opts, self.models, self.ledger, self.guard = opts, models, ledger, guard
        self.progress = ledger.progress
        self.batch_size = models.batch_size

    def process(self, jobs) -> None:
        queue: deque[tuple[Photo, Face]] = deque()
        for job in jobs:
            self.guard.check()
            try:
                photo = self.read(job)
            except FacerestoreError as exc:
                self.progress.found(0)
                self.ledger.fail(job, exc.message)
                continue
            except OSError as exc:
                self.progress.found(0)
                self.ledger.fail(job, f"cannot read: {exc.strerror or exc}")
                continue
            self.progress.found(len(photo.faces))
            if not photo.faces:
                self._complete(photo, self.copy_through)
                continue
            photo.pending = len(photo.faces)
            queue.extend((photo, face) for face in photo.faces)
            while len(queue) >= self.batch_size:
                self._drain(queue)
        while queue:
            self._drain(queue)

    # -- read: decode, detect, align ---------------------------------------------------------------------------
    def read(self, job) -> Photo:
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
            photo.faces.append(Face(len(photo.faces), tuple(det.box), float(det.score), affine,
                                    warp_face(image, affine, size), np.asarray(det.landmarks)))
        return photo

    # -- restore: batches across photos ------------------------------------------------------------------------
    def _drain(self, queue: deque) -> None:
        batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
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
                self.ledger.fail(photo.job, f"restoration failed: {reason}", photo)
            return
        for photo, _face in batch:
            photo.pending -= 1
            if photo.pending == 0:
                self._complete(photo, self.finish)

    def restore_with_retry(self, batch: list[tuple[Photo, Face]]) -> None:
        """Out of memory: halve the batch size (for the rest of the run) and retry the same faces. Only a single
        face that still does not fit fails — its photo, never the run."""
        try:
            self.restore_batch(batch)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            empty_cache(self.models.compute)
            size = max(len(batch), self.batch_size)  # what did not fit: a short batch is padded to the size
            if size == 1:
                raise FacerestoreError("out of memory restoring a single face; try --precision bf16 or another device") from None
            self.batch_size = self.ledger.batch_size = size // 2
            self.progress.warn(f"warning: out of memory with {size} faces per batch; "
                                      f"continuing with {self.batch_size}")
            start = 0
            while start < len(batch):  # chunks of the current size: a retry below may halve it again
                chunk = batch[start: start + self.batch_size]
                self.restore_with_retry(chunk)
                start += len(chunk)

    def restore_batch(self, batch: list[tuple[Photo, Face]]) -> None:
        """Restore one batch of faces. A short batch is padded with blank faces to exactly the batch size: kernels
        pick their blocking from the batch shape, so a fixed shape is what makes a face's result bit-identical
        whatever photos share its batch and wherever it sits in it."""
        seed = self.opts.params.seed
        faces = torch.cat([resize_batch(to_tensor(face.crop), self.opts.preset.face_size) for _photo, face in batch])
        for photo, face in batch:
            face.seed = face_seed(seed, photo.job.rel, face.index)
        generators = [seeded_generator(face.seed) for _photo, face in batch]
        padding = self.batch_size - len(batch)
        if padding > 0:
            faces = torch.cat([faces, faces.new_zeros((padding, *faces.shape[1:]))])
            generators += [seeded_generator(face_seed(seed, "\0padding", i)) for i in range(padding)]
        def on_step(event: dict) -> None:
            self.guard.check()
            self.progress.step(event, len(batch))

        result = self.models.restorer.restore(faces, generators, callback=on_step)
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

    # -- finish: paste, write, record --------------------------------------------------------------------------
    def _complete(self, photo: Photo, step) -> None:
        try:
            step(photo)
        except FacerestoreError as exc:
            self.ledger.fail(photo.job, exc.message, photo)
        except OSError as exc:
            self.ledger.fail(photo.job, f"cannot write {photo.job.dest}: {exc.strerror or exc}", photo)

    def finish(self, photo: Photo) -> None:
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
        extras.update(save_extras(self.opts, photo.job.rel, picture.rgb, rgb, [face_record(f) for f in faces],
                                  [f.restored for f in faces]))
        self.ledger.done(photo, "restored", None, extras)

    def copy_through(self, photo: Photo) -> None:
        """No face: the photo goes through unchanged (byte for byte unless a format/metadata change was asked)."""
        o, job = self.opts, photo.job
        if o.fmt or o.metadata != "keep" or o.provenance or job.dest.suffix != job.src.suffix:
            extras = self.write(photo.picture, job.dest)
        else:
            job.dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(job.src, job.dest)
            extras = {"notes": list(photo.picture.notes)} if photo.picture.notes else {}
        self.ledger.done(photo, "no_face", "no face found" if not photo.skipped else "every face below --min-face", extras)

    def write(self, picture, dest: Path) -> dict:
        """Write atomically; returns the report fields for what reading or the output format changed (CMYK
        converted, alpha or 16 bits the target cannot hold, metadata stripped, ...), so no loss goes unreported."""
        provenance = None
        if self.opts.provenance:
            params = " ".join(f"{k}={v}" for k, v in self.opts.params.as_record().items())
            provenance = f"facerestore {__version__}; method={self.opts.preset.name}; {params}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = write_image(picture, dest, fmt=self.opts.fmt, quality=self.opts.quality, metadata=self.opts.metadata,
                              provenance=provenance)
        notes = list(picture.notes) + list(written)
        return {"notes": notes} if notes else {}
