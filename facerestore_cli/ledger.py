"""The run ledger: what a run decides and tells. It plans (which inputs run, which are done already, from the state
manifest), records every outcome (state manifest, --report, stdout, progress) in the order the archival rules
need (an outcome is recorded only once its output is in place), and closes with the summary."""

from __future__ import annotations

import time
from typing import Any, Protocol

from facerestore_cli import __version__
from facerestore_cli.settings import OUTPUT, RESTORATION
from facerestore_cli.report import ReportWriter, StdoutClosed, Summary, photo_record, skipped_record
from facerestore_cli.state import RunState, run_signature


class Outcomes(Protocol):
    """What a pipeline tells whoever keeps the run's ledger: each photo's outcome, its progress, and the batch size
    it settled on (halved on out-of-memory). Implemented by the Ledger (a run in this process), a device worker's
    forwarder (workers.py) and a Ray actor's stand-in (ray_engine.py), whose driver keeps the Ledger."""

    progress: Any
    batch_size: int | None

    def done(self, photo, status: str, reason: str | None, extras: dict | None = None) -> None: ...

    def fail(self, job, reason: str, photo=None, retry: bool = False) -> None: ...


class StopRun(Exception):
    """--fail-fast / --max-failures reached."""


class Ledger:
    def __init__(self, opts, progress, sink, weights: dict[str, str | None]):
        self.opts, self.progress, self.sink = opts, progress, sink
        self.summary = Summary()
        self.started = time.monotonic()
        self.state = RunState.load(opts.output, shard=opts.shard)
        if self.state.warning:
            progress.warn(f"warning: {self.state.warning}")
        self.report = ReportWriter(None if opts.dry_run else opts.report)
        self.weights = weights
        self.signature = self._signature()
        self.device: str | None = None
        self.precision: str = opts.precision  # what --precision asked for, then what the device runs
        self.batch_size: int | None = None
        self.why: dict[str, str] = {}  # job.rel → why it runs
        self.planned: list[tuple] = []  # a dry run's (job, action, reason), printed once the run's checks pass

    def _signature(self) -> str:
        """Everything that shapes an output: a rerun redoes a photo whose signature changed."""
        o = self.opts
        return run_signature({
            "tool": __version__, "preset": o.preset.name, "method": o.preset.method, "parameters": o.params.as_record(),
            "weights": self.weights, "faces": o.faces.as_record(o.aligned), "face_size": o.preset.face_size,
            **o.shaping(RESTORATION), **o.shaping(OUTPUT),
        })

    def loaded(self, weights: dict[str, str | None], device: str, precision: str, batch_size: int) -> None:
        """The models are loaded (on `device`, described for records, at `precision`): weight hashes just
        recorded (first use of a file) enter the signature."""
        self.weights, self.device, self.precision = weights, device, precision
        self.batch_size = batch_size
        self.signature = self._signature()

    def run_fields(self) -> dict:
        """What every record of this run shares: method, parameters (the method's, then the run settings that
        shape outputs), weight hashes, device and batch size."""
        o = self.opts
        restoration = o.shaping(RESTORATION)  # records list the face settings after the detector
        settings = {"detector": restoration.pop("detector"), **o.faces.as_record(o.aligned), **restoration,
                    "precision": self.precision, "tool_version": __version__}
        return {"method": o.preset.name, "parameters": {**o.params.as_record(), **settings}, "weights": self.weights,
                "device": self.device, "batch_size": self.batch_size}

    # -- the plan ----------------------------------------------------------------------------------------------
    def plan(self, jobs) -> tuple[list, list]:
        """(jobs to restore, jobs whose output is in place but whose compare sheet or boxes copy is missing), each
        with why;
        the rest are recorded as skipped, with their last run's record (a dry run keeps all for `print_plan`)."""
        wanted = tuple(name for name, asked in (("face_files", self.opts.save_faces),
                                                ("compare_file", self.opts.save_compare),
                                                ("boxes_file", self.opts.faces.draw_boxes and not self.opts.aligned))
                       if asked)
        todo, extras = [], []
        self.summary.photos = len(jobs)
        for job in jobs:
            decision = self.state.decide(job.rel, job.src, job.dest, self.signature, force=self.opts.force,
                                         redo_failed=self.opts.redo_failed, extras=wanted)
            if self.opts.dry_run:
                self.planned.append((job, decision.action, decision.reason))
            if decision.action == "run":
                todo.append(job)
                self.why[job.rel] = decision.reason
            elif decision.action == "extras":
                extras.append((job, self.state.entries[job.rel]))
            elif not self.opts.dry_run:
                self.summary.skipped += 1
                self.emit(skipped_record(job, self.state.entries[job.rel], decision.reason), progress=False)
        return todo, extras

    def print_plan(self) -> None:
        """A dry run's answer on stdout: per input `run|skip`, input, output and why (or JSON lines with --json)."""
        for job, action, reason in self.planned:
            if self.sink.mode == "json":
                self.sink.record({"input": str(job.src), "output": str(job.dest), "action": action, "reason": reason})
            else:
                print(f"{action}\t{job.src}\t{job.dest}\t{reason}", flush=True)

    # -- outcomes ----------------------------------------------------------------------------------------------
    def done(self, photo, status: str, reason: str | None, extras: dict | None = None) -> None:
        """A photo whose output is in place: restored or copied through (no_face)."""
        job = photo.job
        if status == "restored":
            self.summary.restored += 1
            self.summary.faces += len(photo.faces)
            self.summary.gated += sum(bool(f.gate) and f.gate["action"] != "pasted" for f in photo.faces)
        else:
            self.summary.no_face += 1
        rec = self.record(job, status, photo, reason, extras)
        self.state.record(job.rel, job.src, job.dest, "done" if status == "restored" else status, reason,
                          self.signature, report=rec)
        self.emit(rec)
        self.state.maybe_flush()

    def extras_done(self, job, entry: dict, extras: dict) -> None:
        """Extra files made for a photo that is otherwise done: reported as skipped, with the new files."""
        self.summary.skipped += 1
        made = " and ".join(what for key, what in (("compare_file", "compare sheet"), ("boxes_file", "boxes copy"))
                            if key in extras)
        rec = {**skipped_record(job, entry, f"unchanged since last run; {made} made"), **extras}
        self.state.add_extras(job.rel, {**(entry.get("record") or {}), **extras})
        self.emit(rec)
        self.state.maybe_flush()

    def fail(self, job, reason: str, photo=None, retry: bool = False) -> None:
        """retry: not the photo's fault (its worker died): the next run redoes it without --redo-failed."""
        self.summary.failed += 1
        self.progress.warn(f"error: {job.src}: {reason}")
        rec = self.record(job, "failed", photo, reason)
        self.state.record(job.rel, job.src, None, "failed", reason, self.signature, report=rec, retry=retry)
        self.emit(rec)
        self.state.maybe_flush()
        o = self.opts
        if o.fail_fast or (o.max_failures is not None and self.summary.failed >= o.max_failures):
            raise StopRun("--fail-fast" if o.fail_fast else f"--max-failures {o.max_failures} reached")

    def record(self, job, status: str, photo=None, reason: str | None = None, extras=None) -> dict:
        return photo_record(job, status, photo, reason, extras, self.run_fields(), self.why.get(job.rel))

    def emit(self, rec: dict, progress: bool = True) -> None:
        self.report.write(rec)
        try:
            self.sink.record(rec)
        except StdoutClosed:
            raise StopRun("stdout was closed (its reader went away); finished photos are saved") from None
        if progress:
            self.progress.photo(rec)

    def close(self) -> Summary:
        """Summary into the report and on stdout, report renamed into place, state flushed (also after a signal)."""
        self.summary.finish(time.monotonic() - self.started)
        self.report.write(self.summary.as_record())
        self.report.close()
        self.sink.summary(self.summary)
        if not self.opts.dry_run:
            self.state.flush()
        return self.summary

    def abandon(self) -> None:
        """A run that failed before any work: no report is left (the previous one stays); the state is unchanged."""
        self.report.abandon()
