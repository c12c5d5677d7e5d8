"""The rerun manifest ``OUT/.facerestore-state.json``: what each input became last time, so reruns skip it.

An input is skipped when its entry says done/no_face, the run signature (method, parameters, weights, tool
version, output options) is the same, the output file still exists and the input is unchanged. Extras asked for
and missing are made up: missing face crops redo the photo, a missing compare sheet or boxes copy is made from the
input, the output in place and the recorded faces ("extras"). Each entry keeps its last report record, so a skipped photo reports it again. Unchanged
means same size and mtime_ns (no hashing: a no-op rerun over 10,000 files takes well under a second), or,
when those differ, the same sha256. As with rsync, an edit that keeps both size and mtime_ns goes unnoticed.
Failed inputs are skipped unless redo_failed, or unless the input or the signature changed since.

Crash semantics: ``record`` only updates memory and ``maybe_flush`` writes at most every ``flush_interval``
seconds, atomically (temp file, fsync, rename). A crash therefore loses at most the last few seconds of
records, and those photos are simply redone next time (their outputs were written atomically too). Call
``record`` only after the output was renamed into place, so a "done" entry never stands for unfinished work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from facerestore_cli.errors import FacerestoreError
from facerestore_cli.files import atomic_open, sha256_file

STATE_NAME = ".facerestore-state.json"
SHARD_STATE = re.compile(r"\.facerestore-state\.shard-(\d+)-of-(\d+)\.json")
STATE_VERSION = 1
STATUSES = ("done", "failed", "no_face")
DEFAULT_FLUSH_INTERVAL = 5.0


EXTRAS = ("face_files", "compare_file", "boxes_file")  # of --save-faces / --save-compare / --draw-boxes, per entry


@dataclass(frozen=True)
class Decision:
    action: str  # "skip" | "run" | "extras" (output in place, only a compare sheet to make)
    reason: str


def state_name(shard: tuple[int, int] | None) -> str:
    """The manifest a run writes: OUT/.facerestore-state.json, or one per shard (--shard I/N)."""
    return STATE_NAME if shard is None else f".facerestore-state.shard-{shard[0]}-of-{shard[1]}.json"


def shard_state_files(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if SHARD_STATE.fullmatch(p.name))


def run_signature(settings: dict) -> str:
    """sha256 of the canonical JSON of everything that shapes an output (TypeError/ValueError if not plain JSON)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fingerprint_of(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """{size, mtime_ns, sha256} of a file; pass sha256 when the caller already hashed the content."""
    st = os.stat(path)
    digest = sha256 or sha256_file(path).hexdigest()
    if sha256 is None and _stat_key(os.stat(path)) != _stat_key(st):
        digest = None  # written to while hashing: record no hash, so the next run redoes it
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}


def _stat_key(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


def _stat_fingerprint(path) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None}


class RunState:
    def __init__(self, out_dir: str | os.PathLike, entries: dict | None = None, warning: str | None = None,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 shard: tuple[int, int] | None = None, own: set[str] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / state_name(shard)
        # every manifest's entries, the newest of each input's (decisions see all shards' work); `own`: the inputs
        # this manifest holds and writes
        self.entries: dict[str, dict] = entries if entries is not None else {}
        self.own: set[str] = set(self.entries) if own is None else own
        self.warning = warning  # set by load when a bad manifest was moved aside; the caller prints it
        self.flush_interval = flush_interval
        self._clock = clock
        self._last_flush = clock()
        self._flush_seconds = 0.0
        self._dirty = False
        self._seen: dict[str, dict] = {}  # job_rel -> input fingerprint when decide said "run"

    @classmethod
    def load(cls, out_dir: str | os.PathLike, flush_interval: float = DEFAULT_FLUSH_INTERVAL,
             clock: Callable[[], float] = time.monotonic, shard: tuple[int, int] | None = None) -> "RunState":
        """Read this run's manifest (OUT/.facerestore-state.json, or the shard's); missing → empty; corrupt or
        unknown version → moved aside, empty. The other manifests in OUT (every shard's, and the unsharded one) are
        read too, so decisions see all the work done there; of an input in several, the newest entry counts (the
        unsharded manifest's on a tie)."""
        out_dir = Path(out_dir)
        path = out_dir / state_name(shard)
        own, warnings = {}, []
        try:
            own = _parse(path.read_bytes())
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FacerestoreError(f"cannot read the run state {path}: {exc.strerror or exc}",
                                   hint="check the output folder's permissions") from None
        except ValueError as exc:
            aside = _move_aside(path)
            warnings.append(f"the run state {path} is unusable ({exc}); moved it to {aside.name} "
                            f"and starting afresh, so every photo will be processed again")
        others = [p for p in [out_dir / STATE_NAME, *shard_state_files(out_dir)] if p != path and p.is_file()]
        merged = _newest([*((p, _read_other(p, warnings)) for p in others), (path, own)])
        return cls(out_dir, merged, "; ".join(warnings) or None, flush_interval, clock, shard, set(own))

    def decide(self, job_rel: str, src_path: str | os.PathLike, dest_path: str | os.PathLike, signature: str,
               force: bool = False, redo_failed: bool = False, extras: tuple[str, ...] = ()) -> Decision:
        """extras: the EXTRAS this run writes; when asked for and missing they are made up (see the docstring)."""
        seen = _stat_fingerprint(src_path)
        entry = self.entries.get(job_rel)
        if force or entry is None or entry["signature"] != signature:
            reason = "forced" if force else "new" if entry is None else "method or parameters changed"
            return self._run(job_rel, seen, reason)
        if not self._same_content(entry, src_path, seen):
            return self._run(job_rel, seen, "input changed")
        if entry["status"] == "failed":
            if entry.get("retry"):
                return self._run(job_rel, seen, "its worker died in the previous run")
            if redo_failed:
                return self._run(job_rel, seen, "previous run failed")
            return Decision("skip", "failed last run (use --redo-failed)")
        if not os.path.exists(dest_path):
            return self._run(job_rel, seen, "output missing")
        made = entry.get("extras") or {}
        if entry["status"] == "done" and "face_files" in extras and not all_exist(self.out_dir, made.get("face_files")):
            return self._run(job_rel, seen, "face crops missing")
        missing = [what for key, what, statuses in (("compare_file", "compare sheet", ("done",)),
                                                     ("boxes_file", "boxes copy", ("done", "no_face")))
                   if key in extras and entry["status"] in statuses and not all_exist(self.out_dir, made.get(key))]
        if missing:
            return Decision("extras", " and ".join(missing) + " missing")
        return Decision("skip", "unchanged since last run")

    def _run(self, job_rel: str, seen: dict | None, reason: str) -> Decision:
        if seen is not None:
            self._seen[job_rel] = seen  # record() compares against it to catch edits made while processing
        return Decision("run", reason)

    def _same_content(self, entry: dict, src_path, seen: dict | None) -> bool:
        """Fills seen["sha256"]; hashes only when size matches but mtime_ns does not."""
        recorded = entry["fingerprint"]
        if seen is None or not recorded["sha256"]:
            return False  # vanished or unreadable (the run reports it), or no trustworthy hash recorded
        if (seen["size"], seen["mtime_ns"]) == (recorded["size"], recorded["mtime_ns"]):
            seen["sha256"] = recorded["sha256"]
            return True
        if seen["size"] != recorded["size"]:
            return False
        try:
            seen["sha256"] = sha256_file(src_path).hexdigest()
        except OSError:
            return False
        if seen["sha256"] != recorded["sha256"]:
            return False
        entry["fingerprint"] = dict(seen)  # touched, same bytes: the next run takes the fast path again
        self._dirty = True
        return True

    def record(self, job_rel: str, src_path: str | os.PathLike, dest_path: str | os.PathLike | None,
               status: str, reason: str | None, signature: str, fingerprint: dict | None = None,
               report: dict | None = None, retry: bool = False) -> None:
        """Remember the outcome of one input (in memory; see maybe_flush / flush). dest_path None: no output.
        report: its report record, reported again when a rerun skips it; its extras are remembered. retry: a
        failure that was not the input's (its worker died), redone by the next run."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        seen = self._seen.pop(job_rel, None)
        if fingerprint is None:
            try:
                fingerprint = self._fingerprint_after_run(src_path, seen)
            except OSError:
                self.entries.pop(job_rel, None)  # input gone: no entry, so it counts as new if it comes back
                self.own.discard(job_rel)
                self._dirty = True
                return
        self.own.add(job_rel)
        self.entries[job_rel] = {
            "fingerprint": fingerprint,
            "output": None if dest_path is None else self._output_rel(dest_path),
            "status": status,
            "reason": reason,
            "signature": signature,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "record": report,
            "extras": {key: self._extra_rel(report[key]) for key in EXTRAS if report and report.get(key)},
        }
        if retry:
            self.entries[job_rel]["retry"] = True
        self._dirty = True

    def add_extras(self, job_rel: str, report: dict) -> None:
        """Extra files made for an entry that is otherwise unchanged."""
        entry = self.entries[job_rel]
        self.own.add(job_rel)
        entry["extras"] = {**(entry.get("extras") or {}),
                           **{key: self._extra_rel(report[key]) for key in EXTRAS if report.get(key)}}
        entry["record"] = report
        self._dirty = True

    @staticmethod
    def _fingerprint_after_run(src_path, seen: dict | None) -> dict:
        current = os.stat(src_path)
        if seen is not None and seen["sha256"] and _stat_key(current) == (seen["size"], seen["mtime_ns"]):
            return seen
        fingerprint = fingerprint_of(src_path)
        if seen is not None and (fingerprint["size"], fingerprint["mtime_ns"]) != (seen["size"], seen["mtime_ns"]):
            fingerprint["sha256"] = None  # edited while being processed: the output may be of the old bytes
        return fingerprint

    def _extra_rel(self, value):
        return [self._output_rel(v) for v in value] if isinstance(value, list) else self._output_rel(value)

    def _output_rel(self, dest_path) -> str:
        dest = Path(os.path.abspath(dest_path))
        try:
            return dest.relative_to(os.path.abspath(self.out_dir)).as_posix()
        except ValueError:
            return str(dest)

    def maybe_flush(self) -> bool:
        """Flush when flush_interval seconds passed since the last flush, or 20 times what the last flush took once
        a large archive's manifest makes that longer (writing stays under 5 % of the run); call after every photo."""
        wait = max(self.flush_interval, 20 * self._flush_seconds)
        if self._dirty and self._clock() - self._last_flush >= wait:
            return self.flush()
        return False

    def flush(self) -> bool:
        """Write the manifest atomically if anything changed; call at the end of a run and on signals."""
        if not self._dirty:
            return False

        entries = {rel: self.entries[rel] for rel in sorted(self.own) if rel in self.entries}
        document = {"version": STATE_VERSION, "tool": "facerestore", "entries": entries}
        started = time.perf_counter()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.path, "w") as handle:
                json.dump(document, handle, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        except OSError as exc:
            raise FacerestoreError(f"cannot write the run state {self.path}: {exc.strerror or exc}",
                                   hint="check free space and permissions of the output folder") from None
        self._dirty = False
        self._last_flush = self._clock()
        self._flush_seconds = time.perf_counter() - started
        return True


def all_exist(out_dir: Path, rel) -> bool:
    """Whether the extra file(s) an entry remembers are all there (None: never made)."""
    if not rel:
        return False
    return all((out_dir / r).is_file() for r in (rel if isinstance(rel, list) else [rel]))


def _parse(raw: bytes) -> dict[str, dict]:
    """The entries of a manifest; ValueError saying what is wrong otherwise."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("tool") != "facerestore":
        raise ValueError("not a facerestore state file")
    if document.get("version") != STATE_VERSION:
        raise ValueError(f"unknown version {document.get('version')!r}, this facerestore reads {STATE_VERSION}")
    entries = document.get("entries")
    if not isinstance(entries, dict) or not all(_valid_entry(e) for e in entries.values()):
        raise ValueError("malformed entries")
    return entries


def _valid_entry(entry) -> bool:
    fp = entry.get("fingerprint") if isinstance(entry, dict) else None
    return (isinstance(fp, dict)
            and all(type(fp.get(key)) is int for key in ("size", "mtime_ns"))
            and (fp.get("sha256") is None or isinstance(fp["sha256"], str))
            and entry.get("status") in STATUSES
            and isinstance(entry.get("signature"), str))


def read_entries(out_dir: Path) -> tuple[dict[str, dict], list[str]]:
    """Every manifest's entries in OUT, the newest of each input's, read only (a bad manifest is skipped with a
    warning, never moved aside): what `review` shows, also while a run is under way."""
    warnings: list[str] = []
    paths = [p for p in [out_dir / STATE_NAME, *shard_state_files(out_dir)] if p.is_file()]
    return _newest([(p, _read_other(p, warnings)) for p in paths]), warnings


def _newest(sources: list[tuple[Path, dict[str, dict]]]) -> dict[str, dict]:
    """Of an input in several manifests, the entry finished last (the unsharded manifest's on a tie; later
    sources win remaining ties)."""
    merged: dict[str, dict] = {}
    rank: dict[str, tuple] = {}
    for source, entries in sources:
        for rel, entry in entries.items():
            key = (entry.get("finished_at") or "", source.name == STATE_NAME)
            if rel not in rank or key >= rank[rel]:
                merged[rel], rank[rel] = entry, key
    return merged


def _read_other(path: Path, warnings: list[str]) -> dict[str, dict]:
    """Another run's manifest (a shard's): its entries, or none with a warning (it is that run's to move aside)."""
    try:
        return _parse(path.read_bytes())
    except (OSError, ValueError) as exc:
        warnings.append(f"ignoring the run state {path}: {getattr(exc, 'strerror', None) or exc}")
        return {}


def merge_shards(out_dir: Path) -> RunState:
    """Fold every shard's manifest into OUT/.facerestore-state.json (the newest entry of each input) and remove
    them; the caller holds the output folder's lock exclusively."""
    state = RunState.load(out_dir)
    state.own = set(state.entries)
    state._dirty = True
    state.flush()
    for path in shard_state_files(out_dir):
        path.unlink()
    return state


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise FacerestoreError(f"the run state {path} is unusable and cannot be moved aside: {exc.strerror or exc}",
                               hint="move or delete it by hand, then run again") from None
    return aside
