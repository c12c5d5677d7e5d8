"""Progress on stderr: a Rich bar on a terminal, plain lines otherwise (cron, pipes), nothing with -q. stdout is
never written here (it is reserved for data).

Work is counted in faces, and within a batch in sampler steps, so a single photo with 29 faces still moves the bar
and the ETA. The ETA is the faces left (those detected, plus the photos not read yet at the faces per photo seen so
far) at the rate faces were restored so far. Plain mode prints a heartbeat line whenever 10 s passed without a line,
also in the middle of a photo (a thread), so a log never goes quiet for long; -v adds a line per photo naming it.
Plain lines are never wrapped: one event, one line."""

from __future__ import annotations

import sys
import threading
import time
from facerestore_cli.wording import counted

HEARTBEAT_SECONDS = 10.0


def duration(seconds: float | None) -> str:
    """4s, 3m05s, 2h07m; – when unknown."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, console, mode: str, verbose: bool = False, interval: float = HEARTBEAT_SECONDS):
        self.console, self.mode, self.verbose, self.interval = console, mode, verbose, interval
        self.photos_total = self.photos_read = self.photos_done = 0
        self.faces_found = self.faces_done = 0
        self.batch_faces, self.batch_fraction = 0, 0.0  # the batch being restored, and how far its sampler got
        self.started = self._last_line = time.monotonic()
        self.method = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._rich = self._task = None

    @staticmethod
    def choose_mode(quiet: bool, stream=None) -> str:
        if quiet:
            return "quiet"
        return "rich" if (stream or sys.stderr).isatty() else "plain"

    # -- events from the pipeline --------------------------------------------------------------------------------
    def start(self, photos_total: int, device: str, method: str, done: int = 0, engine: str = "local") -> None:
        """photos_total: the photos this run works on; done: those an earlier run finished (skipped)."""
        self.photos_total, self.method = photos_total, method
        self.started = self._last_line = time.monotonic()
        if self.mode == "quiet":
            return
        self._print(f"facerestore: {counted(photos_total, 'photo')} to do" + (f", {done} already done" if done else "")
                    + f", method {method}" + (f", device {device}" if device else "")
                    + (", engine ray" if engine == "ray" else ""))
        if self.mode == "rich":
            self._start_rich()
        else:
            self._heartbeat = threading.Thread(target=self._beat, name="facerestore-heartbeat", daemon=True)
            self._heartbeat.start()

    def found(self, faces: int) -> None:
        """A photo was read: its faces join the work."""
        with self._lock:
            self.photos_read += 1
            self.faces_found += faces
        self._refresh()

    def step(self, step: int, total: int, batch_faces: int) -> None:
        """Network evaluation `step` (from 0) of `total` for the batch in flight (a sampler's StepEvent)."""
        with self._lock:
            self.batch_faces, self.batch_fraction = batch_faces, (step + 1) / max(1, total)
        self._refresh()

    def faces(self, n: int) -> None:
        """n faces restored (their batch finished)."""
        with self._lock:
            self.faces_done += n
            self.batch_faces, self.batch_fraction = 0, 0.0
        self._refresh()

    def photo(self, record: dict) -> None:
        with self._lock:
            self.photos_done += 1
        if self.mode == "plain" and self.verbose:
            self._print(f"[{self.photos_done}/{self.photos_total} photos] {record['input']}: {_outcome(record)}"
                        + "".join(f"; {note}" for note in record.get("notes") or []))
        elif self.mode == "plain" and self.photos_done == self.photos_total:
            self._print(self.status_line())
        self._refresh()

    def warn(self, text: str) -> None:
        """Errors and warnings: printed whatever the mode (-q silences progress, never problems)."""
        if text:
            self._print(text)

    def stop(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    # -- what is shown -------------------------------------------------------------------------------------------
    def estimate(self) -> tuple[float, float, float, float | None]:
        """(faces done incl. the batch in flight, faces expected in all, faces/s, seconds left or None)."""
        with self._lock:
            done = self.faces_done + self.batch_faces * self.batch_fraction
            per_photo = self.faces_found / self.photos_read if self.photos_read else 1.0
            expected = self.faces_found + (self.photos_total - self.photos_read) * per_photo
            elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (expected - done) / rate if rate > 0 else None
        return done, expected, rate, left

    def status_line(self) -> str:
        done, expected, rate, left = self.estimate()
        return (f"[{self.photos_done}/{self.photos_total} photos, {int(done)}/{round(expected)} faces] "
                f"{rate:.2f} faces/s, ETA {duration(left)}")

    def _print(self, text: str) -> None:
        self._last_line = time.monotonic()
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            if time.monotonic() - self._last_line >= self.interval:
                self._print(self.status_line())

    def _start_rich(self) -> None:
        from rich.progress import BarColumn, Progress as RichProgress, TextColumn

        self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(bar_width=None),
                                  TextColumn("{task.fields[status]}"), console=self.console, transient=False,
                                  expand=True)
        self._rich.start()
        self._task = self._rich.add_task(self.method[:16], total=None, status="")

    def _refresh(self) -> None:
        if self._rich is None:
            return
        done, expected, rate, left = self.estimate()
        status = (f"{self.photos_done}/{self.photos_total} photos · {int(done)}/{round(expected)} faces · "
                  f"{rate:.2f}/s · ETA {duration(left)}")
        self._rich.update(self._task, completed=done, total=max(expected, done, 1e-9), status=status)


def _outcome(record: dict) -> str:
    status, faces = record["status"], len(record.get("faces") or [])
    if status == "restored":
        return (f"restored {faces} face{'s' * (faces != 1)}: network {record.get('restore_seconds', 0):.1f}s, "
                f"wall {record.get('seconds', 0):.1f}s (read to written, queues included)")
    if status == "no_face":
        return f"no face restored ({record.get('reason')}), copied through"
    return f"{status}: {record.get('reason')}"
