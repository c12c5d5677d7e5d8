"""What a run tells: the --report JSONL file, the records on stdout (--json / --print-outputs), the summary.

The report is written into a hidden temp file beside its final name, fsynced and renamed into place when the run
ends (also on SIGINT/SIGTERM): a crash never leaves a truncated report, and the previous report stays intact until
the new one is complete."""

from __future__ import annotations

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

FINISHED = ("restored", "no_face", "skipped")


@dataclass
class Summary:
    photos: int = 0
    restored: int = 0
    no_face: int = 0
    failed: int = 0
    skipped: int = 0
    faces: int = 0
    seconds: float = 0.0
    skipped_hidden: int = 0
    skipped_not_image: int = 0
    interrupted: str | None = None
    stopped_early: str | None = None

    def as_record(self) -> dict:
        rec = dataclasses.asdict(self)
        busy = self.seconds if self.seconds else 0
        rec["faces_per_second"] = round(self.faces / busy, 3) if busy else None
        return {"summary": rec}


def round_box(box) -> list[float]:
    return [round(float(v), 2) for v in box]


def face_record(face) -> dict:
    """A face as restored: where it was, the noise seed it drew from, the mask it was pasted back with, what the
    method used for it (ipc-guided: the identity mask) and its identity scores, each recorded where it was used."""
    rec = {"index": face.index, "box": round_box(face.box), "score": round(face.score, 4), "seed": face.seed,
           "mask": face.paste_mask, **face.method_info}
    if face.identity:
        rec["identity"] = face.identity
    return rec


def _photo_mask(photo) -> str | None:
    """The paste mask of the photo's faces (one kind, or the kinds joined with '+' when they differ)."""
    kinds = sorted({f.paste_mask for f in photo.faces if f.paste_mask}) if photo else []
    return "+".join(kinds) or None


def photo_record(job, status: str, photo, reason, extras, opts, weights, device, batch_size, why) -> dict:
    """One report line: what happened to one input, with everything needed to reproduce it."""
    rec = {
        "input": str(job.src), "output": str(job.dest) if status != "failed" else None, "status": status,
        "reason": reason,
        "faces": [face_record(f) for f in photo.faces] if photo else [],
        "skipped_faces": photo.skipped if photo else [],
        "mask": _photo_mask(photo) if status == "restored" else None,
        "seconds": round(time.monotonic() - photo.started, 3) if photo else 0.0,
        "method": opts.preset.name, "parameters": opts.params.as_record(),
        "weights": weights, "device": device, "batch_size": batch_size,
    }
    if status != "skipped":
        rec["why"] = why  # why it ran: new, input changed, parameters changed, forced, ...
    rec.update(extras or {})
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


class StdoutSink:
    """stdout carries data only: nothing (default), output paths (--print-outputs, NUL-separated with -0),
    or the per-file records as JSON lines (--json)."""

    def __init__(self, mode: str = "none", null: bool = False, stream=None):
        self.mode, self.null = mode, null
        self.stream = stream

    def _out(self):
        return self.stream or sys.stdout

    def record(self, record: dict) -> None:
        if self.mode == "json":
            self._out().write(json.dumps(record, ensure_ascii=False) + "\n")
            self._out().flush()
        elif self.mode == "paths" and record.get("status") in FINISHED and record.get("output"):
            out = self._out()
            data = os.fsencode(record["output"]) + (b"\0" if self.null else b"\n")
            out.flush()
            out.buffer.write(data)
            out.buffer.flush()

    def summary(self, summary: Summary) -> None:
        if self.mode == "json":
            self._out().write(json.dumps(summary.as_record()) + "\n")
            self._out().flush()
