"""Resumable, hash-checked HTTP(S) download: stream into `<dest>.part`, verify, then rename onto `<dest>`.

Only the standard library is used (urllib). A `.part` left by a failed or interrupted run is resumed with an
HTTP Range request; servers that ignore Range (200 instead of 206) restart the file from byte 0.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from rich.console import Console
from rich.progress import (
BarColumn,
DownloadColumn,
Progress,
TextColumn,
TimeRemainingColumn,
TransferSpeedColumn,
)

from facerestore_cli import __version__
from facerestore_cli.errors import WeightsError
from facerestore_cli.files import fsync_dir, sha256_file

ProgressCallback = Callable[[int, int | None], None]

CHUNK_SIZE = 1 << 20
RETRY_BACKOFF_S = 1.0  # first pause between attempts; doubles each time (tests set it to 0)
MAX_BACKOFF_S = 30.0
USER_AGENT = f"facerestore/{__version__}"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$")


class _Retryable(Exception):
    """A transient failure: worth another attempt, and the `.part` file stays for resuming."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/200` → (100, 200); `bytes */200` → (None, 200); unparsable → (None, None)."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _attempt(
    url: str, part: Path, expected_size: int | None, progress: ProgressCallback | None, timeout: float
) -> tuple[str, int, bool]:
    """One HTTP request; returns (sha256, size, resumed). Raises _Retryable for transient failures."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0

    request = Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                _, total = _parse_content_range(exc.headers.get("Content-Range"))
                if total == offset or (total is None and expected_size == offset):
                    if progress:
                        progress(offset, offset)
                    return sha256_file(part).hexdigest(), offset, True
                part.unlink()
                raise _Retryable("server refused to resume the partial file; starting over") from None
            if exc.code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
            raise WeightsError(
                f"download of {url} failed: HTTP {exc.code} {exc.reason}",
                hint="check the URL in the weights registry, or import the file by hand",
            ) from None
    except (URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"cannot connect: {getattr(exc, 'reason', exc)}") from exc

    with response:
        length = _int_header(response.headers.get("Content-Length"))
        if offset and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Retryable(f"server answered the resume request with another range ({start}); starting over")
            hasher, mode = sha256_file(part), "ab"
        else:
            offset, total = 0, None
            hasher, mode = hashlib.sha256(), "wb"
        if total is None and length is not None:
            total = offset + length
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise WeightsError(
                f"download of {url} failed: size mismatch: expected {expected_size} bytes, server has {total}",
                hint="the file on the server differs from the registry entry; report it or import the file by hand",
            )

        done = offset
        shown_total = total if total is not None else expected_size
        if progress:
            progress(done, shown_total)
        with open(part, mode) as fh:
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retryable(f"connection lost after {done} bytes: {exc or type(exc).__name__}") from exc
                if not chunk:
                    break
                fh.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, shown_total)
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and done < total:
        raise _Retryable(f"connection closed after {done} of {total} bytes")
    return hasher.hexdigest(), done, offset > 0


def download(
    url: str,
    dest: Path,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30,
    retries: int = 3,
) -> str:
    """Download `url` to `dest` atomically and return the file's sha256.

    Transient failures are retried `retries` times with exponential backoff, each retry resuming the `.part`
    file. A size or sha256 mismatch deletes the `.part` file and raises WeightsError; a `.part` that was
    resumed gets one fresh restart first, because it may hold bytes of an older version of the file.
    """
    dest = Path(dest)
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failed_attempts = 0
    restarted_fresh = False
    while True:
        try:
            digest, size, resumed = _attempt(url, part, expected_size, progress, timeout)
        except _Retryable as exc:
            failed_attempts += 1
            if failed_attempts > retries:
                kept = f"the partial file {part} is kept; " if part.exists() else ""
                raise WeightsError(
                    f"download of {url} failed after {failed_attempts} attempts: {exc}",
                    hint=f"{kept}check the connection and run the same command again to resume",
                ) from exc
            time.sleep(min(RETRY_BACKOFF_S * 2 ** (failed_attempts - 1), MAX_BACKOFF_S))
            continue

        problem = None
        if expected_size is not None and size != expected_size:
            problem = f"size mismatch: expected {expected_size} bytes, got {size}"
        elif expected_sha256 is not None and digest != expected_sha256.lower():
            problem = f"sha256 mismatch: expected {expected_sha256.lower()}, got {digest}"
        if problem is None:
            os.replace(part, dest)
            fsync_dir(dest.parent)
            return digest
        part.unlink(missing_ok=True)
        if resumed and not restarted_fresh:
            restarted_fresh = True
            continue
        raise WeightsError(
            f"download of {url} failed: {problem}",
            hint="the partial file was deleted; if this repeats, the file on the server differs from the registry",
        )


@contextmanager
def rich_progress(description: str = "downloading", console=None) -> Iterator[ProgressCallback]:
    """Yield a `(bytes_done, bytes_total)` callback drawing a Rich bar on stderr (silent when not a TTY)."""

    console = console or Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
