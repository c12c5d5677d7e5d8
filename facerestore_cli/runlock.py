"""One facerestore run per output folder: an exclusive ``flock`` on ``OUT/.facerestore.lock`` (the shards of a split
run hold it shared, and each its own ``OUT/.facerestore.shard-I-of-N.lock`` exclusively).

The lock is the kernel's flock, never the file's existence: the kernel drops it when the holder exits or is
killed, so there are no stale locks. The file stays in place (deleting it would let two runs lock two
different files of the same name); while held it names the holder (pid, start time, host) for messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from facerestore_cli.errors import EXIT_LOCKED, FacerestoreError

LOCK_NAME = ".facerestore.lock"
SHARD_LOCK = re.compile(r"\.facerestore\.shard-\d+-of-\d+\.lock")
POLL_SECONDS = 0.2
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


class LockHeld(FacerestoreError):
    """Another facerestore run holds the output folder."""

    exit_code = EXIT_LOCKED


def shard_lock_name(shard: tuple[int, int]) -> str:
    return f".facerestore.shard-{shard[0]}-of-{shard[1]}.lock"


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike, wait_seconds: float | None = None, *,
             shard: tuple[int, int] | None = None,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> Iterator[Path]:
    """Hold the output folder's lock for the block (creating the folder); yields the lock file's path.
    shard (I, N): the folder's lock is held shared, so the shards of a split run share the folder while no unsharded
    run (or `report merge`) does, and the shard's own lock exclusively, so each shard runs once.

    Raises LockHeld (exit code 75) when another run holds it, at once or after waiting up to wait_seconds,
    and FacerestoreError when the folder cannot be written or its filesystem has no flock.
    """
    out_dir = Path(out_dir)
    deadline = clock() + (wait_seconds or 0)
    with contextlib.ExitStack() as stack:
        if shard is not None:
            stack.enter_context(_flocked(out_dir, LOCK_NAME, fcntl.LOCK_SH, deadline, wait_seconds, clock, sleep))
        name = LOCK_NAME if shard is None else shard_lock_name(shard)
        yield stack.enter_context(_flocked(out_dir, name, fcntl.LOCK_EX, deadline, wait_seconds, clock, sleep))


@contextlib.contextmanager
def _flocked(out_dir: Path, name: str, mode: int, deadline: float, waited: float | None, clock, sleep) -> Iterator[Path]:
    """One lock file held in `mode`; an exclusive holder names itself in the file."""
    path = out_dir / name
    fd = _open_lock_file(out_dir, path)
    try:
        while not _try_flock(fd, out_dir, mode):
            remaining = deadline - clock()
            if remaining <= 0:
                raise _held_error(out_dir, fd, waited)
            sleep(min(POLL_SECONDS, remaining))
        if mode == fcntl.LOCK_SH:
            yield path
            return
        _write_holder(fd)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # still locked here, so no other run is reading or writing it
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def _open_lock_file(out_dir: Path, path: Path) -> int:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise FacerestoreError(f"cannot write to output folder {out_dir} (creating {path.name}): "
                               f"{exc.strerror or exc}", hint="choose an output folder you can write to") from None


def _try_flock(fd: int, out_dir: Path, mode: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_FLOCK:
            raise FacerestoreError(
                f"cannot lock output folder {out_dir}: its filesystem does not support file locks "
                f"({exc.strerror or exc})",
                hint="write the output to a local disk; a run lock keeps two runs from mixing one folder",
            ) from None
        raise FacerestoreError(f"cannot lock output folder {out_dir}: {exc.strerror or exc}") from None


def _write_holder(fd: int) -> None:
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    text = f"pid: {os.getpid()}\nstarted: {started}\nhost: {socket.gethostname()}\n"
    with contextlib.suppress(OSError):  # the lock holds without the note; a full disk must not stop the run
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8"), 0)


def read_holder(fd_or_path: int | str | os.PathLike) -> dict[str, str]:
    """The holder note of a lock file as {pid, started, host}; {} when empty or unreadable."""
    try:
        if isinstance(fd_or_path, int):
            raw = os.pread(fd_or_path, 4096, 0)
        else:
            raw = Path(fd_or_path).read_bytes()[:4096]
    except OSError:
        return {}
    holder = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            holder[key.strip()] = value.strip()
    return holder


def _held_error(out_dir: Path, fd: int, waited: float | None) -> LockHeld:
    holder = read_holder(fd)
    if not holder:  # held shared: the shards of a split run name themselves in their own lock files
        shards = sorted(p.name for p in out_dir.glob(".facerestore.shard-*.lock") if read_holder(p))
        who = "the shards of a split run (--shard): " + (", ".join(shards) or "starting")
        return LockHeld(f"output folder {out_dir} is in use by {who}", hint="wait for them, or pass --wait-lock SECONDS")
    details = [f"pid {holder.get('pid', 'unknown')}"]
    if holder.get("host") and holder["host"] != socket.gethostname():
        details.append(f"on {holder['host']}")
    if holder.get("started"):
        details.append(f"started {holder['started']}")
    who = f"another facerestore run ({', '.join(details)})"
    if waited:
        return LockHeld(f"output folder {out_dir} is still in use by {who} after waiting {waited:g} s",
                        hint="wait for it, or pass a longer --wait-lock SECONDS")
    return LockHeld(f"output folder {out_dir} is in use by {who}", hint="wait for it, or pass --wait-lock SECONDS")
