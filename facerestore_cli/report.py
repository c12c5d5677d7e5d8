"""What a run tells: the --report JSONL file, the records on stdout (--json / --print-outputs), the summary.

The report is written into a hidden temp file beside its final name, fsynced and renamed into place when the run
ends (also on SIGINT/SIGTERM): a crash never leaves a truncated report, and the previous report stays intact until
the new one is complete."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerestore_cli.files import atomic_open
from facerestore_cli.errors import FacerestoreError
from facerestore_cli.wording import counted

FINISHED = ("restored", "no_face", "skipped")


@dataclass
class Summary:
    """One run's counts. photos: every input of this run, which is each one of restored, no_face (copied through),
    failed, skipped (done by an earlier run) or unfinished (not reached before a signal or --fail-fast)."""

    photos: int = 0
    restored: int = 0
    no_face: int = 0
    failed: int = 0
    skipped: int = 0
    unfinished: int = 0
    faces: int = 0
    gated: int = 0  # restored faces not pasted as restored (--min-identity): the original or the estimate instead
    seconds: float = 0.0
    skipped_hidden: int = 0
    skipped_not_image: int = 0
    interrupted: str | None = None
    stopped_early: str | None = None

    def finish(self, seconds: float) -> None:
        self.seconds = round(seconds, 3)
        self.unfinished = self.photos - (self.restored + self.no_face + self.failed + self.skipped)

    def as_record(self) -> dict:
        rec = dataclasses.asdict(self)
        rec["faces_per_second"] = round(self.faces / self.seconds, 3) if self.seconds else None
        return {"summary": rec}

    def counts(self) -> str:
        """The counts as stderr tells them (the same numbers the report's summary holds)."""
        text = (f"{self.restored} restored, {self.no_face} without faces (copied), {self.failed} failed, "
                f"{counted(self.faces, 'face')} in {self.seconds:.1f}s")
        if self.gated:
            text += f"; {self.gated} below --min-identity (not pasted as restored)"
        if self.skipped:
            text += f"; {self.skipped} already done, skipped"
        if self.unfinished:
            text += f"; {self.unfinished} not reached"
        return text


def round_box(box) -> list[float]:
    return [round(float(v), 2) for v in box]


def face_record(face) -> dict:
    """A face as restored: where it was (box, 5 landmarks), the noise seed it drew from, the mask it was pasted back
    with, what the method used for it (ipc-guided: the identity mask and which configuration ran) and its identity
    scores, each recorded where it was used; every field present (None when it does not apply)."""
    landmarks = None if face.landmarks is None else [[round(float(v), 2) for v in point] for point in face.landmarks]
    return {"index": face.index, "box": round_box(face.box), "score": round(face.score, 4), "landmarks": landmarks,
            "seed": face.seed, "mask": face.paste_mask, "id_mask": None, "configuration": None,
            "identity": face.identity, "samples": face.samples, "kept": face.kept, "gate": face.gate,
            **face.method_info}


def _photo_mask(photo) -> str | None:
    """The paste mask of the photo's faces (one kind, or the kinds joined with '+' when they differ)."""
    kinds = sorted({f.paste_mask for f in photo.faces if f.paste_mask}) if photo else []
    return "+".join(kinds) or None


def photo_record(job, status: str, photo, reason, extras, run: dict, why) -> dict:
    """One report line: what happened to one input, with everything needed to reproduce it; every field present.
    run: method, parameters, weights, device and batch size of this run (from the ledger)."""
    rec = {
        "input": str(job.src), "output": str(job.dest) if status != "failed" else None, "status": status,
        "reason": reason, "previous_status": None, "why": why,
        "faces": [face_record(f) for f in photo.faces] if photo else [],
        "skipped_faces": photo.skipped if photo else [],
        "mask": _photo_mask(photo) if status == "restored" else None,
        "seconds": round(time.monotonic() - photo.started, 3) if photo else 0.0,
        "restore_seconds": round(photo.restore_seconds, 3) if photo else 0.0,
        **run, "notes": [], "face_files": None, "compare_file": None,
    }
    rec.update(extras or {})
    return rec


def skipped_record(job, entry: dict, reason: str) -> dict:
    """A photo a rerun skips: its last run's record (from the state manifest), marked skipped."""
    last = entry.get("record") or {}
    previous = last.get("status") or {"done": "restored"}.get(entry["status"], entry["status"])
    rec = {**last, "input": str(job.src), "output": None if entry["status"] == "failed" else str(job.dest),
           "status": "skipped", "reason": reason, "previous_status": previous, "why": None, "seconds": 0.0,
           "restore_seconds": 0.0}
    for key, empty in (("faces", []), ("skipped_faces", []), ("notes", [])):
        rec.setdefault(key, empty)
    for key in ("mask", "method", "parameters", "weights", "device", "batch_size", "face_files", "compare_file"):
        rec.setdefault(key, None)
    return rec


class ReportWriter:
    """The --report file, written through `atomic_open`: records go to its hidden temp file, which replaces the
    report when the run ends. A failed write drops the temp file and says so; the previous report stays."""

    def __init__(self, path: Path | None):
        self.path = path
        self._writing = self._fh = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._writing = atomic_open(path, "w")
                self._fh = self._writing.__enter__()
            except OSError as exc:
                raise self._error(exc) from None

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
        except OSError as exc:
            self.abandon()
            raise self._error(exc) from None

    def close(self) -> None:
        """fsync the complete report and rename it into place."""
        writing, self._writing, self._fh = self._writing, None, None
        if writing is not None:
            try:
                writing.__exit__(None, None, None)
            except OSError as exc:
                raise self._error(exc) from None

    def abandon(self) -> None:
        """Drop the unfinished report (its temp file goes, the previous report stays)."""
        writing, self._writing, self._fh = self._writing, None, None
        if writing is not None:
            failure = OSError("report abandoned")
            writing.__exit__(OSError, failure, None)

    def _error(self, exc: OSError) -> FacerestoreError:
        return FacerestoreError(f"cannot write the report {self.path}: {exc.strerror or exc}",
                                hint="check free space and permissions where --report points")


class StdoutClosed(Exception):
    """The reader of stdout went away (`facerestore run --json | head -n1`)."""


class StdoutSink:
    """stdout carries data only: nothing (default), output paths (--print-outputs, NUL-separated with -0),
    or the per-file records as JSON lines (--json). When the reader closes the pipe, `closed` is set, stdout is
    pointed at /dev/null (no error at exit) and StdoutClosed raised: the run stops as on SIGPIPE."""

    def __init__(self, mode: str = "none", null: bool = False, stream=None):
        self.mode, self.null = mode, null
        self.stream = stream
        self.closed = False

    def _out(self):
        return self.stream or sys.stdout

    def record(self, record: dict) -> None:
        if self.mode == "json":
            self._write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        elif self.mode == "paths" and record.get("status") in FINISHED and record.get("output"):
            self._write(os.fsencode(record["output"]) + (b"\0" if self.null else b"\n"))

    def summary(self, summary: Summary) -> None:
        if self.mode == "json" and not self.closed:
            with contextlib.suppress(StdoutClosed):  # the run is over: nothing left to stop
                self._write(json.dumps(summary.as_record()).encode() + b"\n")

    def _write(self, data: bytes) -> None:
        out = self._out()
        try:
            out.flush()
            out.buffer.write(data)
            out.buffer.flush()
        except BrokenPipeError:
            self.closed = True
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            raise StdoutClosed from None
