"""SIGINT/SIGTERM handling for long runs: the first signal asks the run to stop at the next safe point (the
current batch is abandoned, finished photos stay written, report and state are flushed, exit 130/143); a second
signal exits at once. Every output is written atomically, so even the second leaves nothing half-written."""

from __future__ import annotations

import os
import signal
import threading

from facerestore_cli.errors import EXIT_SIGINT, EXIT_SIGTERM, FacerestoreError

EXIT_FOR = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}


class Interrupted(FacerestoreError):
    def __init__(self, signum: int, message: str = ""):
        name = signal.Signals(signum).name
        super().__init__(message or f"interrupted by {name}",
                         hint="finished photos are kept; rerun the same command to continue where it stopped")
        self.signum = signum
        self.exit_code = EXIT_FOR.get(signum, 128 + signum)


class InterruptGuard:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            os._exit(EXIT_FOR.get(signum, 128 + signum))
        self.signum = signum

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_FOR:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc) -> None:
        if self.signum is not None:
            return  # interrupted: the process is winding down (about a second with torch loaded); a further signal
            # must still exit at once, not raise KeyboardInterrupt into the shutdown
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self) -> None:
        """Raise Interrupted if a signal arrived (called between photos and at every sampler step)."""
        if self.signum is not None:
            raise Interrupted(self.signum)
