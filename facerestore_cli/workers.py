"""Every device of a node (`--device cuda:0,cuda:1`, `--device all`): one worker process per device, each pulling
photos from one shared queue as it gets free (a slow device takes fewer, not an equal share), restoring them with
the ordinary pipeline and writing their outputs; the parent keeps the one ledger (state, report, progress).

A worker that dies (a GPU that falls off the bus, a driver crash) fails the photos it had taken, recorded with the
reason and marked so that the next run redoes them; the other workers go on with the rest of the queue. Each worker
reports on a queue of its own: a process killed while its queue's feeder thread writes leaves that queue's lock held,
which on a shared queue would block every other worker's reports for good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import queue
import signal
import time

from facerestore_cli.errors import DeviceError, FacerestoreError
from facerestore_cli.interrupts import Interrupted
from facerestore_cli.ledger import StopRun

POLL_SECONDS = 0.2


def device_list(spec: str) -> list[str]:
    """--device as the devices to run on: `all` is every CUDA device; a comma list names them (`cpu,cpu` runs two
    CPU workers)."""
    if spec == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceError("--device all: no CUDA device is available", hint="use --device cpu")
        return [f"cuda:{i}" for i in range(count)]
    devices = [part.strip() for part in spec.split(",")]
    if any(not d for d in devices):
        raise DeviceError(f"--device {spec}: an empty device name", hint="e.g. --device cuda:0,cuda:1")
    return devices


def restore_on_devices(opts, compute, ledger, guard, jobs, weights_after_load) -> None:
    """Restore `jobs` with one worker per device of compute.workers; outcomes go to `ledger` as the workers report
    them. weights_after_load: the run's weight hashes, called once the first worker has loaded (and hashed) them."""
    import torch

    devices = list(compute.workers)
    context = multiprocessing.get_context("spawn")
    todo, results = context.Queue(), [context.Queue() for _ in devices]
    for job in jobs:
        todo.put(job)
    for _ in devices:
        todo.put(None)
    workers = [context.Process(target=_worker, name=f"facerestore-{device}", daemon=True,
                               args=(k, device, opts, todo, results[k], torch.get_num_threads()))
               for k, device in enumerate(devices)]
    for worker in workers:
        worker.start()
    parent = _Parent(compute, ledger, weights_after_load)
    try:
        while parent.running:
            guard.check()
            if parent.poll(results):
                continue
            for k in list(parent.running):
                if not workers[k].is_alive() and not parent.poll(results, [k]):
                    parent.lost(k, f"the worker on {devices[k]} died (exit code {workers[k].exitcode})")
        if parent.errors and len(parent.errors) == len(devices):
            raise parent.errors[0]
    except (Interrupted, StopRun):
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: each stops at its next sampler step
        for worker in workers:
            worker.join(timeout=30)
        parent.drain(results)  # photos written before the stop are recorded, as a single process records them
        raise
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()


class _Parent:
    """The parent's side: every worker message into the ledger and the progress display."""

    def __init__(self, compute, ledger, weights_after_load):
        self.compute, self.devices = compute, list(compute.workers)
        self.ledger, self.weights_after_load = ledger, weights_after_load
        self.running = set(range(len(self.devices)))
        self.taken: dict[int, dict[str, object]] = {k: {} for k in self.running}
        self.errors: list[FacerestoreError] = []
        self.loaded = False

    def handle(self, kind: str, k: int, payload) -> None:
        progress = self.ledger.progress
        if kind == "loaded" and not self.loaded:
            self.ledger.loaded(self.weights_after_load(), self.compute.describe(), self.compute.precision, payload)
            self.loaded = True
        elif kind == "took":
            self.taken[k][payload.rel] = payload
        elif kind == "found":
            progress.found(payload)
        elif kind == "step":
            progress.step(*payload)
        elif kind == "faces":
            progress.faces(payload)
        elif kind == "warn":
            progress.warn(payload)
        elif kind == "done":
            photo, status, reason, extras = payload
            self.taken[k].pop(photo.job.rel, None)
            self.ledger.done(photo, status, reason, extras)
        elif kind == "failed":
            job, reason, photo, retry = payload
            self.taken[k].pop(job.rel, None)
            self.ledger.fail(job, reason, photo, retry)
        elif kind == "error":
            message, hint, exit_code = payload
            progress.warn(f"error: {self.devices[k]}: {message}")
            error = FacerestoreError(f"{self.devices[k]}: {message}", hint=hint)
            error.exit_code = exit_code
            self.errors.append(error)
            self.running.discard(k)
        elif kind == "exit":
            self.running.discard(k)

    def poll(self, results, workers=None) -> bool:
        """Handle what the running workers (or those given) have reported, waiting up to POLL_SECONDS when none has;
        whether any message came."""
        heard = False
        listening = [k for k in (self.running if workers is None else workers) if k in self.running]
        for k in listening:
            while True:
                try:
                    message = results[k].get_nowait()
                except queue.Empty:
                    break
                self.handle(*message)
                heard = True
        if not heard:
            time.sleep(POLL_SECONDS)
            for k in listening:  # nothing handled yet: still the running ones
                with contextlib.suppress(queue.Empty):
                    self.handle(*results[k].get_nowait())
                    heard = True
        return heard

    def lost(self, k: int, reason: str) -> None:
        """Worker k is gone without saying so: its photos fail, to be redone by the next run."""
        self.running.discard(k)
        self.ledger.progress.warn(f"error: {reason}; the other workers go on")
        for job in list(self.taken[k].values()):
            self.ledger.fail(job, reason, retry=True)
        self.taken[k].clear()

    def drain(self, results) -> None:
        for reports in results:
            while True:
                try:
                    kind, k, payload = reports.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    break
                if kind in ("done", "failed", "warn"):
                    self.handle(kind, k, payload)


class _Forward:
    """A worker's ledger.Outcomes and progress: what the pipeline tells them goes to the parent."""

    def __init__(self, put, batch_size: int):
        self.put, self.batch_size, self.progress = put, batch_size, self

    def done(self, photo, status, reason, extras=None) -> None:
        self.put("done", (strip_pixels(photo), status, reason, extras))

    def fail(self, job, reason, photo=None, retry: bool = False) -> None:
        self.put("failed", (job, reason, None if photo is None else strip_pixels(photo), retry))

    def found(self, faces: int) -> None:
        self.put("found", faces)

    def step(self, step: int, total: int, batch_faces: int) -> None:
        self.put("step", (step, total, batch_faces))

    def faces(self, n: int) -> None:
        self.put("faces", n)

    def warn(self, text: str) -> None:
        self.put("warn", text)


def strip_pixels(photo):
    """The photo as its report record needs it: no pixels."""
    faces = [dataclasses.replace(f, crop=None, restored=None, parse_labels=None, estimate=None, sample_images=None)
             for f in photo.faces]
    return dataclasses.replace(photo, picture=None, faces=faces)


def _worker(k: int, device: str, opts, todo, results, threads: int) -> None:
    """One device's process: load the models, then restore photos from the queue until its end marker."""
    import torch

    from facerestore_cli.device import resolve
    from facerestore_cli.interrupts import InterruptGuard
    from facerestore_cli.models import load_models
    from facerestore_cli.pipeline import Pipeline
    from facerestore_cli.weights.store import WeightStore

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    torch.set_num_threads(threads)  # CPU kernels' results depend on the thread count: the same as one process

    def put(kind, payload=None):
        results.put((kind, k, payload))

    opts = dataclasses.replace(opts, device=device)
    try:
        compute = resolve(device, opts.precision, opts.compile, opts.channels_last)
        models = load_models(opts, compute, WeightStore(offline=opts.offline))
    except FacerestoreError as exc:
        put("error", (exc.message, exc.hint, exc.exit_code))
        return
    put("loaded", models.batch_size)

    def taken():
        while (job := todo.get()) is not None:
            put("took", job)
            yield job

    with InterruptGuard() as guard:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            Pipeline(opts, models, _Forward(put, models.batch_size), guard).process(taken())
        except Interrupted:
            return
    put("exit")
