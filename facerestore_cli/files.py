"""Files on disk: atomic writing (a hidden temp file beside the target, fsync, rename: nothing half-written is ever
left), the folder fsync that makes a rename durable, removal of the temps a killed run left, content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_copy", "fsync_dir", "remove_stale_temps", "sha256_file",
           "check_output_folder", "check_output_file"]


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a hidden temp file beside path; on success fsync and rename it onto path.

    If the body raises (or the fsync/rename fails) the temp file is removed and path is left as it was."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open supports 'w', 'wt' and 'wb', not {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(AttributeError, OSError):
            os.fchmod(fd, _NEW_FILE_MODE)
        binary = "b" in mode
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _rename_into_place(tmp, path)


def atomic_symlink(target: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make path a symbolic link to target, replacing what was there in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()[:8]}.tmp")
    os.symlink(target, tmp)
    _rename_into_place(tmp, path)


def _rename_into_place(tmp: str | os.PathLike, path: Path) -> None:
    """Rename tmp onto path (removing tmp when that fails), then make the rename durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Byte-identical copy of src onto dest, replacing dest atomically."""
    with open(src, "rb") as source, atomic_open(dest, "wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened or fsynced)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


STALE_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # the names atomic_open gives its temp files


def remove_stale_temps(output: Path) -> int:
    """Delete atomic-write temp files a killed run left in the output tree (we hold the run lock)."""
    removed = 0
    for dirpath, _dirs, files in os.walk(output):
        for name in files:
            if STALE_TEMP.match(name):
                Path(dirpath, name).unlink(missing_ok=True)
                removed += 1
    return removed


def sha256_file(path: str | os.PathLike, hasher: "hashlib._Hash | None" = None) -> "hashlib._Hash":
    """The sha256 of a file's bytes, read in 1 MiB chunks (`hasher`: continue one, as a resumed download does)."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher


def check_output_folder(path: Path, flag: str = "-o") -> None:
    """A folder to write into must be one, or a path where one can be made: a usage error before any work otherwise."""
    from facerestore_cli.errors import UsageError

    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} exists and is not a folder", hint=f"{flag} names the folder results go into")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and parent is not None and not parent.is_dir():
        raise UsageError(f"{flag} {path} cannot be made: {parent} is not a folder")


def check_output_file(path: Path, flag: str, example: str) -> None:
    """A file to write (replaced by a rename in its folder) must not be a folder, and its nearest existing folder must
    be a writable folder: a usage error before any work otherwise. example: a file name for the hint."""
    from facerestore_cli.errors import UsageError

    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder", hint=f"name the file, e.g. {flag} {example}")
    folder = next(p for p in [path.absolute().parent, *path.absolute().parents] if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path} cannot be written: {folder} is not a writable folder")
