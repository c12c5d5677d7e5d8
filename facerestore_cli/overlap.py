"""The pieces that let reading and writing run beside the network loop without changing what a run does.

Every piece keeps order: results come back in the order the work was given, and outcomes are applied in the order
they were recorded, so a run with worker threads makes the same outputs, report and state as the serial run; the
queues are bounded, so a folder of 10,000 photos holds a few of them in memory at a time. With 0 workers each piece
does its work inline, at the moment the serial pipeline would.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


class Outcome:
    """A value or the exception that computing it raised, carried across threads to be handled in order."""

    __slots__ = ("value", "error")

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error

    def get(self):
        if self.error is not None:
            raise self.error
        return self.value


def capture(fn: Callable[[T], R], item: T) -> Outcome:
    try:
        return Outcome(fn(item))
    except Exception as exc:  # handed to the consumer, in order
        return Outcome(error=exc)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None,
                window: int) -> Iterator[tuple[T, Outcome]]:
    """(item, Outcome of fn(item)) in the order of items; with a pool, at most `window` computed ahead."""
    if pool is None:
        for item in items:
            yield item, capture(fn, item)
        return
    pending: deque[tuple[T, Future]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(capture, fn, item)))
            if len(pending) >= window:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()
    finally:
        for _item, future in pending:
            future.cancel()


class Prefetch:
    """Iterate a generator in a background thread, at most `depth` items ahead (depth 0: in the caller's thread).
    An exception the generator raises is raised to the consumer; close() stops the thread early."""

    def __init__(self, source: Iterator[T], depth: int, name: str = "prefetch"):
        self.source, self.depth = source, depth
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._fill, name=name, daemon=True)
            self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for item in self.source:
                if not self._put((item, None)):
                    return
            self._put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001  (re-raised in the consumer's thread)
            self._put((_DONE, exc))

    def __iter__(self) -> Iterator[T]:
        if self._thread is None:
            yield from self.source
            return
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        elif hasattr(self.source, "close"):
            self.source.close()


class Sequencer:
    """Applies outcomes in the order they were added. `submit(work, then)` runs work in the pool (inline without
    one) and later calls then(Outcome) on the caller's thread; `now(apply)` first applies everything before it, so an
    outcome that may stop the run (a failure under --fail-fast) is applied exactly where the serial run applies it.
    At most `window` works are in flight: submitting more first waits for (and applies) the oldest."""

    def __init__(self, pool: ThreadPoolExecutor | None, window: int):
        self.pool, self.window = pool, window
        self._pending: deque[tuple[Future | Outcome, Callable[[Outcome], None]]] = deque()

    def submit(self, work: Callable[[], object], then: Callable[[Outcome], None]) -> None:
        if self.pool is None:
            then(capture(lambda _none: work(), None))
            return
        self.apply_ready()
        while len(self._pending) >= self.window:
            self._apply_first()
        self._pending.append((self.pool.submit(capture, lambda _none: work(), None), then))

    def now(self, apply: Callable[[], None]) -> None:
        self.drain()
        apply()

    def apply_ready(self) -> None:
        """Apply the finished outcomes at the head of the line (never out of order)."""
        while self._pending and self._pending[0][0].done():
            self._apply_first()

    def drain(self) -> None:
        """Wait for and apply everything in flight."""
        while self._pending:
            self._apply_first()

    def _apply_first(self) -> None:
        future, then = self._pending.popleft()
        then(future.result())
