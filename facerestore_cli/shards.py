"""Splitting one run over independent processes (`--shard I/N`: Slurm array tasks, Kubernetes Indexed Job pods) and
folding their manifests back together (`facerestore report merge OUT`).

A shard takes the inputs whose relative path hashes to it (sha256, so every process computes the same split from
the same tree), holds the output folder's lock shared and its own lock exclusively, and writes its own manifest;
every run reads all manifests, so work any shard finished counts as done for all of them and for a later run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from facerestore_cli.errors import UsageError
from facerestore_cli.files import remove_stale_temps
from facerestore_cli.report import ReportWriter, Summary
from facerestore_cli.runlock import LOCK_NAME, SHARD_LOCK, run_lock
from facerestore_cli.state import STATE_NAME, merge_shards, shard_state_files


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """--shard "I/N" → (I, N), 0 ≤ I < N."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (shard I of N, counted from 0), not '{text}'",
                         hint="e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: I must be 0 … N-1 and N at least 1")
    return index, count


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """Whether the input at relative path `rel` belongs to shard (I, N): sha256(rel) mod N == I."""
    if shard is None:
        return True
    index, count = shard
    return int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") % count == index


def merge(out_dir: Path, report: Path, wait_seconds: float | None = None) -> Summary:
    """One manifest and one report from the shards' manifests: every input's latest record (the report line its
    shard wrote), then the summary of them all. Holds the output folder's lock exclusively (no shard may run)."""
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not an output folder")
    marks = [out_dir / STATE_NAME, out_dir / LOCK_NAME, *shard_state_files(out_dir)]
    if not any(p.is_file() for p in marks) and not any(SHARD_LOCK.fullmatch(p.name) for p in out_dir.iterdir()):
        raise UsageError(f"{out_dir} holds no run state: it is not the output folder of a run",
                         hint="give the folder the shards wrote into (their -o)")
    with run_lock(out_dir, wait_seconds=wait_seconds):
        remove_stale_temps(out_dir)  # what killed shards left: no run holds the folder now
        shards = shard_state_files(out_dir)
        state = merge_shards(out_dir)
    summary = Summary(photos=len(state.entries))
    writer = ReportWriter(report)
    for rel in sorted(state.entries):
        entry = state.entries[rel]
        record = entry.get("record") or {"input": rel, "status": entry["status"], "reason": entry["reason"]}
        writer.write(record)
        if entry["status"] == "done":
            summary.restored += 1
            faces = record.get("faces") or []
            summary.faces += len(faces)
            summary.gated += sum(bool(f.get("gate")) and f["gate"]["action"] != "pasted" for f in faces)
        elif entry["status"] == "no_face":
            summary.no_face += 1
        else:
            summary.failed += 1
    writer.write({**summary.as_record(), "merged_shards": [p.name for p in shards]})
    writer.close()
    return summary
