"""Where a run's time goes: seconds per pipeline stage, summed over threads, and the wall-clock span of the network's
work (for the share of the run it was busy). `facerestore bench` prints them; a run keeps them for the same reason."""

from __future__ import annotations

import contextlib
import threading
import time

STAGES = ("decode", "detect", "align", "network", "upscale", "paste", "encode", "write")


class StageTimer:
    def __init__(self):
        self._lock = threading.Lock()
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = dict.fromkeys(STAGES, 0)

    @contextlib.contextmanager
    def measure(self, stage: str, synchronize=None):
        """Time the block as `stage` (thread-safe). synchronize: called before each clock read (CUDA's, so queued
        kernels count where they run)."""
        if synchronize is not None:
            synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if synchronize is not None:
                synchronize()
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds
            self.calls[stage] += 1

    def as_record(self) -> dict[str, float]:
        with self._lock:
            return {stage: round(value, 4) for stage, value in self.seconds.items()}
