"""--engine ray: the run as a Ray Data pipeline over a Ray cluster (`--ray-address`) or a local Ray.

The inputs to do become a dataset; decoding, detection and alignment run as CPU actors; restoration runs in
`map_batches` actors, one per GPU (one on the CPU without GPUs), each restoring the faces of its photos in the run's
padded batches, so every face comes out bit for bit as in a single process; paste-back, encoding and writing run as
CPU actors. Each photo's outcome comes back to the driver, which keeps the lock, the state and the report exactly as
a local run does. A photo whose stage fails becomes a failed record; a block lost to a crashed worker is tolerated
(`max_errored_blocks`) and its photos are recorded as failed, to be redone by the next run.
"""

from __future__ import annotations

import dataclasses
import pickle

from facerestore_cli.errors import FacerestoreError, UsageError
from facerestore_cli.photos import read_failure, restore_failure, write_failure
from facerestore_cli.workers import strip_pixels


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray Data, which is not installed",
                         hint="pip install 'facerestore[ray]' (or: pip install 'ray[data]')") from None
    return ray


def _quiet_ray() -> None:
    """Ray's own talk (its INFO lines, the dataset plan, its C++ core worker's log) off stderr; -v leaves it on.
    Errors a run must report come back as photo records either way."""
    import logging
    import os

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_ray() -> None:
    """Fail before any work when Ray Data is missing."""
    _ray()


def restore_with_ray(opts, ledger, guard, jobs, weights_after_load) -> None:
    """Restore `jobs` on the Ray cluster; outcomes go to `ledger` as they come back. GPUs are used when the cluster
    has them, unless --device cpu."""
    import torch

    ray = _ray()
    if not ray.is_initialized():
        if not ledger.progress.verbose:
            _quiet_ray()
        ray.init(address=opts.ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = len(jobs)  # one bad block never stops the others
    context.enable_progress_bars = False
    gpus = int(ray.cluster_resources().get("GPU", 0)) if opts.device != "cpu" else 0
    from facerestore_cli.weights.store import home

    # the actors' weights cache is the driver's (FACERESTORE_HOME must name the same files on every node)
    settings = {"opts": opts, "threads": torch.get_num_threads(),
                "device": "cuda" if gpus else "cpu", "home": str(home())}
    by_rel = {job.rel: job for job in jobs}
    rows = ray.data.from_items([{"job": pickle.dumps(job)} for job in jobs], override_num_blocks=max(1, len(jobs)))
    pool = ray.data.ActorPoolStrategy
    rows = rows.map(_Read, fn_constructor_kwargs=settings, compute=pool(size=1), num_cpus=0.5)
    rows = rows.map_batches(_Restore, fn_constructor_kwargs=settings, batch_size=opts.batch_size or 1,
                            compute=pool(size=max(1, gpus)), num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
    rows = rows.map(_Write, fn_constructor_kwargs=settings, compute=pool(size=1), num_cpus=0.5)
    loaded = False
    for row in rows.iter_rows():
        guard.check()
        kind, job, payload = pickle.loads(row["outcome"])
        if not loaded:
            device, precision = payload["compute"]
            ledger.loaded(weights_after_load(), f"ray: {device}", precision, payload["batch_size"])
            loaded = True
        by_rel.pop(job.rel, None)
        photo = payload.get("photo")
        ledger.progress.found(len(photo.faces) if photo else 0)
        if kind == "done":
            ledger.progress.faces(len(photo.faces))
            ledger.done(photo, payload["status"], payload["reason"], payload["extras"])
        else:
            ledger.fail(job, payload["reason"], photo)
    for job in by_rel.values():  # in a block Ray gave up on (max_errored_blocks): redo next run
        ledger.fail(job, "lost with its Ray Data block (its worker died or its task failed: see the Ray logs); "
                          "the next run redoes it", retry=True)


def _models(settings: dict):
    """The run's models on this actor's device (its GPU, or the CPU), threads as in the driver."""
    import torch

    from facerestore_cli.device import resolve
    from facerestore_cli.models import load_models
    from facerestore_cli.weights.store import WeightStore

    torch.set_num_threads(settings["threads"])  # CPU kernels' results depend on the thread count
    opts = dataclasses.replace(settings["opts"], device=settings["device"])
    compute = resolve(opts.device, opts.precision, opts.compile, opts.channels_last)
    return opts, load_models(opts, compute, WeightStore(settings["home"], offline=opts.offline))


class _Quiet:
    """Progress, interrupts and ledger.Outcomes of a stage inside Ray: the driver shows progress, handles signals and
    keeps the ledger; a restoring actor's outcomes travel back in its rows, never through done/fail."""

    def __init__(self, batch_size: int | None = None):
        self.progress, self.batch_size = self, batch_size

    def found(self, *_a): pass
    def step(self, *_a): pass
    def faces(self, *_a): pass
    def warn(self, *_a): pass
    def check(self): pass

    def done(self, *_a, **_k):
        raise RuntimeError("a Ray actor's outcomes go back in its rows, not to a ledger")

    fail = done


def _outcome(kind: str, job, **payload) -> dict:
    return {"outcome": pickle.dumps((kind, job, payload))}


def _light(photo):
    return None if photo is None else strip_pixels(photo)


def _detector(settings: dict):
    """The run's face detector on the CPU, threads as in the driver; None with --aligned (nothing to detect)."""
    import torch

    from facerestore_cli.device import resolve
    from facerestore_cli.models import load_detector
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.weights.store import WeightStore

    torch.set_num_threads(settings["threads"])
    opts = settings["opts"]
    if opts.aligned:
        return None
    networks = NetworkLoader(WeightStore(settings["home"], offline=opts.offline), resolve("cpu", "fp32"))
    return load_detector(opts, networks)


class _Read:
    """Decode, detect and align one photo (CPU)."""

    def __init__(self, **settings):
        from facerestore_cli.photos import PhotoReader
        from facerestore_cli.timings import StageTimer

        self.reader = PhotoReader(settings["opts"], _detector(settings), StageTimer())

    def __call__(self, row: dict) -> dict:
        job = pickle.loads(row["job"])
        ((_job, outcome),) = list(self.reader.photos([job], None, 1))
        try:
            return {"job": row["job"], "photo": pickle.dumps(outcome.get()), "error": ""}
        except (FacerestoreError, OSError) as exc:
            return {"job": row["job"], "photo": b"", "error": read_failure(exc)}


class _Restore:
    """Restore the faces of a batch of photos on this actor's device, in the run's padded batches; with --upscale,
    enlarge the photos here too (Real-ESRGAN is a network)."""

    def __init__(self, **settings):
        from facerestore_cli.photos import PhotoWriter
        from facerestore_cli.pipeline import Pipeline
        from facerestore_cli.timings import StageTimer

        self.opts, models = _models(settings)
        quiet = _Quiet(models.batch_size)
        self.pipeline = Pipeline(self.opts, models, quiet, quiet)
        self.writer = PhotoWriter(self.opts, StageTimer(), background=models.background)
        self.compute = (models.compute.describe(), models.compute.precision)

    def __call__(self, batch: dict) -> dict:
        photos = {i: pickle.loads(p) for i, (p, e) in enumerate(zip(batch["photo"], batch["error"])) if not e}
        errors = {i: str(e) for i, e in enumerate(batch["error"]) if e}
        items = [(i, face, k) for i, photo in photos.items() for face in photo.faces
                 for k in range(self.opts.samples)]
        size = self.pipeline.batch_size
        for start in range(0, len(items), size):
            chunk = [(i, f, k) for i, f, k in items[start:start + size] if i not in errors]
            try:
                self.pipeline.restore_with_retry([(photos[i], face, k) for i, face, k in chunk])
            except (FacerestoreError, RuntimeError) as exc:
                errors.update({i: restore_failure(exc) for i, _f, _k in chunk})
        for i, photo in photos.items():
            if i not in errors and self.opts.faces.upscale > 1 and not self.opts.aligned:
                photo.enlarged = self.writer.enlarged(photo.picture)
        count = len(batch["job"])
        return {"job": batch["job"], "photo": [b"" if i in errors else pickle.dumps(photos[i]) for i in range(count)],
                "error": [errors.get(i, "") for i in range(count)], "batch_size": [size] * count,
                "device": [self.compute[0]] * count, "precision": [self.compute[1]] * count}


class _Write:
    """Paste back, encode and write one photo (CPU); its outcome for the driver."""

    def __init__(self, **settings):
        from facerestore_cli.photos import PhotoWriter
        from facerestore_cli.timings import StageTimer

        self.writer = PhotoWriter(settings["opts"], StageTimer())

    def __call__(self, row: dict) -> dict:
        job = pickle.loads(row["job"])
        run = {"batch_size": int(row["batch_size"]), "compute": (row["device"], row["precision"])}
        photo = pickle.loads(row["photo"]) if row["photo"] else None
        if row["error"]:
            return _outcome("failed", job, reason=row["error"], photo=_light(photo), **run)
        try:
            finish = self.writer.finish if photo.faces else self.writer.copy_through
            status, reason, extras = finish(photo)
        except (FacerestoreError, OSError) as exc:
            return _outcome("failed", job, reason=write_failure(exc, job.dest), photo=_light(photo), **run)
        return _outcome("done", job, status=status, reason=reason, extras=extras, photo=_light(photo), **run)

