"""The restoration pipeline of one process, top to bottom: for each photo: read → detect/align → batch restore →
paste → write → tell the outcome (runner.py runs it, or a device worker, or a Ray actor restores with it).

Faces from many photos share batches; a photo is pasted and written as soon as its last face is restored, so
memory stays bounded by the batch size, not by the number of photos. Reading runs ahead and writing behind in
worker threads (--io-workers), in bounded queues, and outcomes are recorded in the serial loop's order. Every output
is written atomically and recorded in the run state only once it is in place, so a crash at any moment costs at most
a redo."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from facerestore_cli.device import empty_cache, is_out_of_memory
from facerestore_cli.diffusion.noise import face_seed, sample_seed, seeded_generator
from facerestore_cli.diffusion.samplers import StepEvent
from facerestore_cli.errors import FacerestoreError
from facerestore_cli.faces.masks import run_parsenet
from facerestore_cli.interrupts import InterruptGuard, Interrupted
from facerestore_cli.keeping import Sample, keep
from facerestore_cli.ledger import Outcomes
from facerestore_cli.models import Models
from facerestore_cli.options import RunOptions, io_workers
from facerestore_cli.overlap import Prefetch, Sequencer
from facerestore_cli.photos import Face, Photo, PhotoReader, PhotoWriter, read_failure, restore_failure, write_failure
from facerestore_cli.pixels import resize_batch, to_tensor
from facerestore_cli.timings import StageTimer

DETECT_BATCH_CUDA = 4  # same-size photos detected together on a GPU


@dataclass(frozen=True)
class Schedule:
    """How the pipeline orders its work: the tool's own by default; bench's reference pass (benchmark.py) is the
    official scripts' configuration of the same parts.

    detect_batch: photos detected together on a GPU; io_workers: reader and writer threads (None: the run's
    --io-workers or its default); photo_batches: each photo's faces as one unpadded batch, instead of fixed-size
    padded batches across photos; writer: what pastes and writes a photo."""

    detect_batch: int = DETECT_BATCH_CUDA
    io_workers: int | None = None
    photo_batches: bool = False
    writer: type[PhotoWriter] = PhotoWriter


class Pipeline:
    """One run's photos through the loaded models: read, batch, restore, finish; outcomes go to the ledger in the
    order the serial loop makes them. With io_workers > 0, photos are decoded and detected ahead in worker threads
    and finished (pasted, encoded, written) behind, while this thread keeps the network busy."""

    def __init__(self, opts: RunOptions, models: Models, ledger: Outcomes, guard: InterruptGuard,
                 timings: StageTimer | None = None, schedule: Schedule = Schedule()):
        self.opts, self.models, self.ledger, self.guard, self.schedule = opts, models, ledger, guard, schedule
        self.progress = ledger.progress
        self.batch_size = models.batch_size
        self.timings = timings or StageTimer()
        cuda = models.compute.device.type == "cuda"
        self.reader = PhotoReader(opts, models.detector, self.timings, schedule.detect_batch if cuda else 1)
        self.writer = schedule.writer(opts, self.timings, background=models.background)
        self.synchronize = torch.cuda.synchronize if cuda else None

    def process(self, jobs) -> None:
        workers = self.schedule.io_workers
        if workers is None:
            workers = io_workers(self.opts, self.models.compute)
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
            except (FacerestoreError, OSError) as exc:
                self._failed_to_read(job, read_failure(exc))
                continue
            samples = self.opts.samples
            self.progress.found(len(photo.faces) * samples)
            if not photo.faces:
                self._complete(photo, self.writer.copy_through)
                continue
            photo.pending = len(photo.faces) * samples
            queue.extend((photo, face, k) for face in photo.faces for k in range(samples))
            per_photo = self.schedule.photo_batches
            while queue and (per_photo or len(queue) >= self.batch_size):
                self._drain(queue, len(queue) if per_photo else self.batch_size)
            self.sequencer.apply_ready()
        while queue:
            self._drain(queue, self.batch_size)

    def _failed_to_read(self, job, reason: str) -> None:
        self.progress.found(0)
        self.sequencer.now(lambda: self.ledger.fail(job, reason))

    # -- restore: batches across photos ------------------------------------------------------------------------
    def _drain(self, queue: deque, size: int) -> None:
        """Restore the next `size` items of the queue: (photo, face, sample number)."""
        batch = [queue.popleft() for _ in range(min(size, len(queue)))]
        try:
            self.restore_with_retry(batch)
        except Interrupted:
            raise  # not a failure: the batch's photos are left unrecorded, so the next run does them
        except (FacerestoreError, RuntimeError) as exc:
            reason = restore_failure(exc)
            failed = {id(item[0]): item[0] for item in batch}
            kept = [item for item in queue if id(item[0]) not in failed]
            queue.clear()
            queue.extend(kept)
            for photo in failed.values():
                self.sequencer.now(lambda photo=photo: self.ledger.fail(photo.job, reason, photo))
            return
        for photo, _face, _k in batch:
            photo.pending -= 1
            if photo.pending == 0:
                self._complete(photo, self.writer.finish)

    def restore_with_retry(self, batch: list[tuple[Photo, Face, int]]) -> None:
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

    def restore_batch(self, batch: list[tuple[Photo, Face, int]]) -> None:
        """Restore one batch of (photo, face, sample number k). A short batch is padded with blank faces to exactly
        the batch size: kernels pick their blocking from the batch shape, so a face's result is bit-identical
        whatever photos share its batch and wherever it sits in it. (A schedule of photo batches restores each
        photo's faces as one unpadded batch, as the official scripts do.) A face whose K samples are all restored
        keeps one (keeping.py)."""
        seed = self.opts.params.seed
        faces = torch.cat([resize_batch(to_tensor(face.crop), self.opts.preset.face_size) for _p, face, _k in batch])
        seeds = [sample_seed(seed, photo.job.rel, face.index, k) for photo, face, k in batch]
        generators = [seeded_generator(s) for s in seeds]
        padding = 0 if self.schedule.photo_batches else self.batch_size - len(batch)
        if padding > 0:
            faces = torch.cat([faces, faces.new_zeros((padding, *faces.shape[1:]))])
            generators += [seeded_generator(face_seed(seed, "\0padding", i)) for i in range(padding)]
        def on_step(event: StepEvent) -> None:
            self.guard.check()
            self.progress.step(event.step, event.total, len(batch))

        started = time.perf_counter()
        with self.timings.measure("network", self.synchronize):
            result = self.models.restorer.restore(faces, generators, callback=on_step)
            scores = self.identity_scores(faces, result)
            restored = result.images[: len(batch)].permute(0, 2, 3, 1).float().cpu().numpy()
            estimates = [None] * len(batch) if result.estimate is None else \
                result.estimate[: len(batch)].permute(0, 2, 3, 1).float().cpu().numpy()
            labels = [None] * len(batch)
            if self.models.parsenet is not None:  # the paste mask's network runs with the others
                labels = run_parsenet(self.models.parsenet, torch.from_numpy(restored).permute(0, 3, 1, 2))
        share = (time.perf_counter() - started) / len(batch)
        o = self.opts
        for i, (photo, face, k) in enumerate(batch):
            photo.restore_seconds += share
            face.pending_samples[k] = Sample(k, seeds[i], restored[i], estimates[i],
                                             None if labels[i] is None else labels[i].astype(np.uint8),
                                             result.info(i), {name: values[i] for name, values in scores.items()} or None)
            if len(face.pending_samples) == o.samples:
                keep(face, [face.pending_samples[n] for n in range(o.samples)], o.select, o.min_identity, o.fallback)
                face.pending_samples = {}
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
            except (FacerestoreError, OSError) as exc:
                self.ledger.fail(photo.job, write_failure(exc, photo.job.dest), photo)
            else:
                self.ledger.done(photo, status, reason, extras)

        self.sequencer.submit(lambda: finish(photo), record)
