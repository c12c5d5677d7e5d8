"""What a run tells: the --report JSONL file, the records on stdout (--json / --print-outputs), the summary.

The report is written into a hidden temp file beside its final name, each record flushed and fsynced, and renamed
into place when the run ends (also on SIGINT/SIGTERM): a crash never leaves a truncated report, and the previous
report stays intact until the new one is complete."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def photo_record(job, status: str, photo, reason, extras, opts, models, weights, why) -> dict:
    """One report line: what happened to one input, with everything needed to reproduce it."""
    rec = {
        "input": str(job.src), "output": str(job.dest) if status != "failed" else None, "status": status,
        "reason": reason,
        "faces": [{"index": f.index, "box": round_box(f.box), "score": round(f.score, 4),
                   **({"identity": f.identity} if f.identity else {})} for f in photo.faces] if photo else [],
        "skipped_faces": photo.skipped if photo else [],
        "mask": models.mask_kind if status == "restored" and not opts.aligned else None,
        "seconds": round(time.monotonic() - photo.started, 3) if photo else 0.0,
        "method": opts.preset.name, "parameters": opts.params,
        "weights": models.weights if models else weights, "device": models.compute.describe() if models else None,
        "batch_size": models.batch_size if models else None,
    }
    if status != "skipped":
        rec["why"] = why  # why it ran: new, input changed, parameters changed, forced, ...
    rec.update(extras or {})
    return rec


class ReportWriter:
    def __init__(self, path: Path | None):
        self.path = path
        self._fh = None
        self._tmp = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            self._fh = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Rename the complete report into place."""
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
