"""Progress of long stages as log lines: done/total, percent, tracks per second, at most every few seconds.

A tqdm bar shows nothing in an Airflow task log or a redirected terminal; a log line at INFO does, and
the throughput in it is what tells whether a stage's cost per track stays flat as a library grows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

LOG_EVERY_S = 10.0


class ProgressLog:
    """Counts work done and logs ``<what>: done/total (pct), rate/s, eta`` every ``every_s`` seconds.

    Thread-safe: shard threads of one build share one instance. ``finish`` logs the final line once.
    """

    def __init__(
        self,
        what: str,
        total: int,
        logger: logging.Logger,
        unit: str = "tracks",
        every_s: float = LOG_EVERY_S,
    ) -> None:
        self.what, self.total, self.log, self.unit, self.every_s = what, total, logger, unit, every_s
        self.done = 0
        self.started = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._finished = False

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last >= self.every_s:
                self._last = now
                self._emit(now)

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting each one as done when the caller asks for the next; then finish."""
        for item in items:
            yield item
            self.add()
        self.finish()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
        left = self.total - self.done
        eta = f", {left / rate:.0f} s left" if rate > 0 and left > 0 else ""
        return f"{self.what}: {self.done}/{self.total} {self.unit}{pct}, {rate:.1f} {self.unit}/s, {elapsed:.0f} s{eta}"

    def _emit(self, now: float) -> None:
        self.log.info("%s", self.line(now))

    def finish(self) -> None:
        with self._lock:
            if not self._finished:
                self._finished = True
                self._emit(time.monotonic())


class Sized:
    """A lazy iterable that knows its length, so a progress bar need not materialise it first."""

    def __init__(self, items: Iterable[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)
