"""One run from its checked options to its summary: check what it needs → lock the output folder → plan (skip what is
done) → load → restore on the chosen engine (this process's Pipeline, one worker process per device, or Ray) →
record. The engines tell the ledger each photo's outcome (ledger.Outcomes); a run that fails before any work leaves
no output folder and no report behind."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

from facerestore_cli.device import resolve
from facerestore_cli.errors import FacerestoreError
from facerestore_cli.files import check_output_folder, remove_stale_temps
from facerestore_cli.imageio import DEFAULT_MAX_PIXELS, read_image
from facerestore_cli.interrupts import InterruptGuard, Interrupted
from facerestore_cli.ledger import Ledger, StopRun
from facerestore_cli.models import load_models, require_weights, weight_hashes
from facerestore_cli.options import RunOptions
from facerestore_cli.pipeline import Pipeline, Schedule
from facerestore_cli.ray_engine import check_ray, restore_with_ray
from facerestore_cli.report import StdoutSink, Summary
from facerestore_cli.runlock import LOCK_NAME, SHARD_LOCK, run_lock
from facerestore_cli.shards import in_shard
from facerestore_cli.sheets import boxes_path, compare_path, save_boxes, save_compare_sheet
from facerestore_cli.state import all_exist
from facerestore_cli.timings import StageTimer
from facerestore_cli.weights.store import WeightStore
from facerestore_cli.workers import device_list, restore_on_devices


def run(opts: RunOptions, progress, jobs, skipped_hidden: int = 0, skipped_not_image: int = 0,
        sink: StdoutSink | None = None, timings: StageTimer | None = None, models=None,
        schedule: Schedule = Schedule()) -> Summary:
    """Check what a real run needs, lock the output folder (not for a dry run), plan, load, restore, record. A run
    that fails before any work leaves no output folder and no report behind. timings: where the stage times go;
    models: already loaded (the benchmark's second pass), else loaded here when there is work; schedule: how this
    process's pipeline orders its work (the benchmark's reference pass gives its own)."""
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
            return _run_locked(opts, progress, jobs, compute, store, ledger, timings, models, schedule)
    except FacerestoreError:
        if fresh:
            remove_if_untouched(opts.output)
        raise


def _run_locked(opts, progress, jobs, compute, store, ledger: Ledger, timings, loaded, schedule) -> Summary:
    interrupted = None
    with InterruptGuard() as guard:
        todo, extras = ledger.plan(jobs)
        try:
            models = None
            if todo:
                require_weights(opts, store)
            if todo and not compute.workers and opts.engine == "local":
                models = loaded or load_models(opts, compute, store)
                ledger.loaded(weight_hashes(opts, store), models.compute.describe(), models.compute.precision,
                              models.batch_size)
        except BaseException:
            ledger.abandon()
            raise
        try:
            progress.start(len(todo) + len(extras), compute.describe() if todo else "", opts.preset.name,
                           done=len(jobs) - len(todo) - len(extras), engine=opts.engine)
            make_extras(opts, ledger, extras, guard)
            if models is not None:
                Pipeline(opts, models, ledger, guard, timings, schedule).process(todo)
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
                save_compare_sheet(before, after, faces, record.get("skipped_faces") or [], path)
                extras["compare_file"] = str(path)
            if opts.faces.draw_boxes and not all_exist(opts.output, made.get("boxes_file")):
                path = boxes_path(opts.output, job.rel)
                save_boxes(after, faces, record.get("skipped_faces") or [], opts.faces.upscale, path)
                extras["boxes_file"] = str(path)
        except (FacerestoreError, OSError) as exc:
            ledger.progress.warn(f"warning: {job.src}: extra files not made: {getattr(exc, 'message', exc)}")
            continue
        ledger.extras_done(job, entry, extras)
