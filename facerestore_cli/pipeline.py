"""The restoration pipeline, top to bottom: lock the output folder → plan (skip what is done) → load → for each
photo: read → detect/align → batch restore → paste → write → record.

Faces from many photos share batches; a photo is pasted and written as soon as its last face is restored, so
memory stays bounded by the batch size, not by the number of photos. Reading runs ahead and writing behind in
worker threads (--io-workers), in bounded queues, and outcomes are recorded in the serial loop's order. Every output
is written atomically and recorded in the run state only once it is in place, so a crash at any moment costs at most
a redo."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facerestore_cli.device import empty_cache, is_out_of_memory, resolve
from facerestore_cli.diffusion.noise import face_seed, seeded_generator
from facerestore_cli.errors import FacerestoreError, UsageError
from facerestore_cli.faces.frontend import FaceSettings
from facerestore_cli.faces.masks import run_parsenet
from facerestore_cli.files import remove_stale_temps
from facerestore_cli.imageio import DEFAULT_MAX_PIXELS, read_image
from facerestore_cli.interrupts import InterruptGuard, Interrupted
from facerestore_cli.ledger import Ledger, StopRun
from facerestore_cli.methods import Method
from facerestore_cli.methods.params import MethodParams
from facerestore_cli.models import Models, load_models, require_weights, weight_hashes
from facerestore_cli.overlap import Prefetch, Sequencer
from facerestore_cli.photos import Face, Photo, PhotoReader, PhotoWriter
from facerestore_cli.pixels import resize_batch, to_tensor
from facerestore_cli.presets import Preset
from facerestore_cli.report import StdoutSink, Summary
from facerestore_cli.runlock import LOCK_NAME, SHARD_LOCK, run_lock
from facerestore_cli.ray_engine import check_ray, restore_with_ray
from facerestore_cli.shards import in_shard
from facerestore_cli.workers import device_list, restore_on_devices
from facerestore_cli.state import all_exist
from facerestore_cli.sheets import boxes_path, compare_path, save_boxes, save_compare_sheet
from facerestore_cli.timings import StageTimer
from facerestore_cli.weights.store import WeightStore


DETECT_MAX_SIDE = 2048  # detection runs on a copy of larger photos shrunk to this long side
IO_WORKERS = 2  # reader and writer threads beside a GPU's network loop
DETECT_BATCH_CUDA = 4  # same-size photos detected together on a GPU


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
    faces: FaceSettings = field(default_factory=FaceSettings)
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
    detect_max_side: int | None = DETECT_MAX_SIDE
    io_workers: int | None = None  # None: IO_WORKERS on a GPU, 0 on a CPU
    compile: bool = False
    channels_last: bool = False
    reference: bool = False  # the official scripts' schedule (benchmark only): see Pipeline
    shard: tuple[int, int] | None = None  # --shard I/N: this process's part of the inputs (shards.py)
    engine: str = "local"  # local | ray (ray_engine.py)
    ray_address: str | None = None


def io_workers(opts: RunOptions, compute) -> int:
    """--io-workers, or by default IO_WORKERS on a GPU and 0 on a CPU (where the network keeps every core busy and
    threads beside it only compete for them)."""
    if opts.io_workers is not None:
        return opts.io_workers
    return IO_WORKERS if compute.device.type == "cuda" else 0


def run(opts: RunOptions, progress, jobs, skipped_hidden: int = 0, skipped_not_image: int = 0,
        sink: StdoutSink | None = None, timings: StageTimer | None = None, models: Models | None = None) -> Summary:
    """Check what a real run needs, lock the output folder (not for a dry run), plan, load, restore, record. A run
    that fails before any work leaves no output folder and no report behind. timings: where the stage times go;
    models: already loaded (the benchmark's second pass), else loaded here when there is work."""
    check_output_folder(opts.output)
    if opts.shard is not None:
        jobs = [job for job in jobs if in_shard(job.rel, opts.shard)]
    devices = device_list(opts.device)
    computes = [resolve(device, opts.precision, opts.compile, opts.channels_last) for device in devices]  # all checked
    compute = computes[0]
    if len(devices) > 1:
        compute = dataclasses.replace(compute, workers=tuple(devices))
    if opts.engine == "ray":
        check_ray()
    store = WeightStore(offline=opts.offline)
    sink = sink or StdoutSink()
    if opts.dry_run:
        return _plan_only(opts, progress, jobs, store, sink)
    fresh = not opts.output.exists()
    if fresh:
        require_weights(opts, store)  # all of it is new work: fail before the output folder exists
    try:
        with run_lock(opts.output, wait_seconds=opts.wait_lock, shard=opts.shard):
            if opts.shard is None:  # a shard cannot tell another's temp files from a killed run's
                remove_stale_temps(opts.output)
            ledger = Ledger(opts, progress, sink, weight_hashes(opts, store))
            ledger.summary.skipped_hidden, ledger.summary.skipped_not_image = skipped_hidden, skipped_not_image
            return _run_locked(opts, progress, jobs, compute, store, ledger, timings, models)
    except FacerestoreError:
        if fresh:
            remove_if_untouched(opts.output)
        raise


def _run_locked(opts, progress, jobs, compute, store, ledger: Ledger, timings, loaded) -> Summary:
    interrupted = None
    with InterruptGuard() as guard:
        todo, extras = ledger.plan(jobs)
        try:
            models = None
            if todo:
                require_weights(opts, store)
            if todo and not compute.workers and opts.engine == "local":
                models = loaded or load_models(opts, compute, store)
                ledger.loaded(weight_hashes(opts, store), models.compute, models.batch_size)
        except BaseException:
            ledger.abandon()
            raise
        try:
            progress.start(len(todo) + len(extras), compute.describe() if todo else "", opts.preset.name)
            make_extras(opts, ledger, extras, guard)
            if models is not None:
                Pipeline(opts, models, ledger, guard, timings).process(todo)
            elif todo and opts.engine == "ray":
                restore_with_ray(opts, ledger, guard, todo, lambda: weight_hashes(opts, store))
            elif todo:
                restore_on_devices(opts, compute, ledger, guard, todo, lambda: weight_hashes(opts, store))
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
    """Remove an output folder this run made and left holding nothing but its lock files."""
    if not output.is_dir():
        return
    left = list(output.iterdir())
    if all(p.name == LOCK_NAME or SHARD_LOCK.fullmatch(p.name) for p in left):
        for path in left:
            path.unlink(missing_ok=True)
        output.rmdir()


def make_extras(opts, ledger: Ledger, jobs, guard) -> None:
    """Compare sheets and boxes copies missing for photos done by an earlier run: from the input, the output in place
    and the faces recorded, without restoring again."""
    for job, entry in jobs:
        guard.check()
        made = entry.get("extras") or {}
        record = entry.get("record") or {}
        extras = {}
        try:
            after = read_image(job.dest, max_pixels=None).rgb
            faces = record.get("faces") or []
            if opts.save_compare and entry["status"] == "done" and not all_exist(opts.output, made.get("compare_file")):
                before = read_image(job.src, max_pixels=opts.max_pixels or DEFAULT_MAX_PIXELS).rgb
                path = compare_path(opts.output, job.rel)
                save_compare_sheet(before, after, faces, path)
                extras["compare_file"] = str(path)
            if opts.faces.draw_boxes and not all_exist(opts.output, made.get("boxes_file")):
                path = boxes_path(opts.output, job.rel)
                save_boxes(after, faces, record.get("skipped_faces") or [], opts.faces.upscale, path)
                extras["boxes_file"] = str(path)
        except (FacerestoreError, OSError) as exc:
            ledger.progress.warn(f"warning: {job.src}: extra files not made: {getattr(exc, 'message', exc)}")
            continue
        ledger.extras_done(job, entry, extras)


def check_output_folder(output: Path) -> None:
    """-o must be a folder, or a path where one can be made: a usage error before any work otherwise."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a folder", hint="-o names the folder results go into")
    parent = next((p for p in output.absolute().parents if p.exists()), None)
    if not output.exists() and parent is not None and not parent.is_dir():
        raise UsageError(f"output {output} cannot be made: {parent} is not a folder")


class Pipeline:
    """One run's photos through the loaded models: read, batch, restore, finish; outcomes go to the ledger in the
    order the serial loop makes them. With io_workers > 0, photos are decoded and detected ahead in worker threads
    and finished (pasted, encoded, written) behind, while this thread keeps the network busy."""

    def __init__(self, opts: RunOptions, models: Models, ledger: Ledger, guard: InterruptGuard,
                 timings: StageTimer | None = None):
        self.opts, self.models, self.ledger, self.guard = opts, models, ledger, guard
        self.progress = ledger.progress
        self.batch_size = models.batch_size
        self.timings = timings or StageTimer()
        self.reference = opts.reference
        cuda = models.compute.device.type == "cuda"
        detect_batch = DETECT_BATCH_CUDA if cuda and not self.reference else 1
        self.reader = PhotoReader(opts, models.detector, self.timings, detect_batch)
        self.writer = PhotoWriter(opts, self.timings, whole_image=self.reference, background=models.background)
        self.synchronize = torch.cuda.synchronize if cuda else None

    def process(self, jobs) -> None:
        workers = 0 if self.reference else io_workers(self.opts, self.models.compute)
        stops_on_failure = self.opts.fail_fast or self.opts.max_failures is not None
        with contextlib.ExitStack() as stack:
            readers = writers = None
            # Worker threads run torch with as many threads as this one: CPU kernels' results depend on the count.
            if workers:
                readers = stack.enter_context(ThreadPoolExecutor(workers, "read"))
                writers = stack.enter_context(ThreadPoolExecutor(workers, "write"))
            self.sequencer = Sequencer(writers, 1 if stops_on_failure else 2 * workers)
            photos = Prefetch(self.reader.photos(jobs, readers, workers + 1), 2 if workers else 0, "detect")
            try:
                self._restore_all(photos)
            finally:
                photos.close()
                self.sequencer.drain()  # photos written before a stop are recorded, as the serial loop records them

    def _restore_all(self, photos) -> None:
        queue: deque[tuple[Photo, Face]] = deque()
        for job, outcome in photos:
            self.guard.check()
            try:
                photo = outcome.get()
            except FacerestoreError as exc:
                self._failed_to_read(job, exc.message)
                continue
            except OSError as exc:
                self._failed_to_read(job, f"cannot read: {exc.strerror or exc}")
                continue
            self.progress.found(len(photo.faces))
            if not photo.faces:
                self._complete(photo, self.writer.copy_through)
                continue
            photo.pending = len(photo.faces)
            queue.extend((photo, face) for face in photo.faces)
            while queue and (self.reference or len(queue) >= self.batch_size):
                self._drain(queue, len(queue) if self.reference else self.batch_size)
            self.sequencer.apply_ready()
        while queue:
            self._drain(queue, self.batch_size)

    def _failed_to_read(self, job, reason: str) -> None:
        self.progress.found(0)
        self.sequencer.now(lambda: self.ledger.fail(job, reason))

    # -- restore: batches across photos ------------------------------------------------------------------------
    def _drain(self, queue: deque, size: int) -> None:
        batch = [queue.popleft() for _ in range(min(size, len(queue)))]
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
                self.sequencer.now(lambda photo=photo: self.ledger.fail(photo.job, f"restoration failed: {reason}", photo))
            return
        for photo, _face in batch:
            photo.pending -= 1
            if photo.pending == 0:
                self._complete(photo, self.writer.finish)

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
        whatever photos share its batch and wherever it sits in it. (The reference schedule restores each photo's
        faces as one unpadded batch, as the official scripts do.)"""
        seed = self.opts.params.seed
        faces = torch.cat([resize_batch(to_tensor(face.crop), self.opts.preset.face_size) for _photo, face in batch])
        for photo, face in batch:
            face.seed = face_seed(seed, photo.job.rel, face.index)
        generators = [seeded_generator(face.seed) for _photo, face in batch]
        padding = 0 if self.reference else self.batch_size - len(batch)
        if padding > 0:
            faces = torch.cat([faces, faces.new_zeros((padding, *faces.shape[1:]))])
            generators += [seeded_generator(face_seed(seed, "\0padding", i)) for i in range(padding)]
        def on_step(event: dict) -> None:
            self.guard.check()
            self.progress.step(event, len(batch))

        with self.timings.measure("network", self.synchronize):
            result = self.models.restorer.restore(faces, generators, callback=on_step)
            scores = self.identity_scores(faces, result)
            restored = result.images[: len(batch)].permute(0, 2, 3, 1).float().cpu().numpy()
            labels = [None] * len(batch)
            if self.models.parsenet is not None:  # the paste mask's network runs with the others
                labels = run_parsenet(self.models.parsenet, torch.from_numpy(restored).permute(0, 3, 1, 2))
        for k, ((_photo, face), image) in enumerate(zip(batch, restored)):
            face.restored = image
            face.parse_labels = None if labels[k] is None else labels[k].astype(np.uint8)
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

    # -- finish: paste, write (in a writer thread), record (here, in order) ------------------------------------
    def _complete(self, photo: Photo, finish) -> None:
        def record(outcome) -> None:
            try:
                status, reason, extras = outcome.get()
            except FacerestoreError as exc:
                self.ledger.fail(photo.job, exc.message, photo)
            except OSError as exc:
                self.ledger.fail(photo.job, f"cannot write {photo.job.dest}: {exc.strerror or exc}", photo)
            else:
                self.ledger.done(photo, status, reason, extras)

        self.sequencer.submit(lambda: finish(photo), record)
