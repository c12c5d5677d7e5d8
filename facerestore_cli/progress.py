"""Progress on stderr: a Rich live bar on a terminal, plain periodic lines otherwise, nothing with -q.
stdout is never written here (it is reserved for data). Plain lines are never wrapped (soft_wrap): one event, one
line, whatever the width of a log file."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, console, mode: str, interval: float = 10.0):
        self.console, self.mode, self.interval = console, mode, interval
        self.photos_total = self.photos_done = self.faces_done = 0
        self.started = self._last_line = time.monotonic()
        self._rich = None
        self._task = None
        self.device = ""

    @staticmethod
    def choose_mode(quiet: bool, stream=None) -> str:
        stream = stream or sys.stderr
        if quiet:
            return "quiet"
        return "rich" if stream.isatty() else "plain"

    def start(self, photos_total: int, device: str, method: str) -> None:
        self.photos_total, self.device = photos_total, device
        self.started = self._last_line = time.monotonic()
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("photos · {task.fields[faces]} faces · {task.fields[rate]}"), TimeRemainingColumn(),
                TextColumn("· {task.fields[device]}"), console=self.console, transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(method, total=photos_total, faces=0, rate="– faces/s", device=device)
        elif self.mode == "plain":
            self.console.print(f"facerestore: {photos_total} photo(s), method {method}, device {device}", highlight=False,
                               markup=False, soft_wrap=True)

    def _rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.faces_done / elapsed if elapsed > 0 else 0.0

    def faces(self, n: int) -> None:
        self.faces_done += n
        if self._rich is not None:
            self._rich.update(self._task, faces=self.faces_done, rate=f"{self._rate():.2f} faces/s")

    def photo(self, record: dict) -> None:
        self.photos_done += 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1)
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last_line >= self.interval or self.photos_done == self.photos_total:
                self._last_line = now
                elapsed = now - self.started
                left = self.photos_total - self.photos_done
                eta = elapsed / self.photos_done * left if self.photos_done else 0.0
                self.console.print(
                    f"[{self.photos_done}/{self.photos_total} photos] {self.faces_done} faces, "
                    f"{self._rate():.2f} faces/s, ETA {eta:.0f}s, {self.device}", highlight=False, markup=False,
                    soft_wrap=True)

    def warn(self, text: str) -> None:
        if self.mode != "quiet" or text:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
