"""Progress of long steps: the callbacks library steps accept, and progress as log lines.

Callbacks (each with a no-op default) let the CLI draw bars while the DAGs stay silent: an item wrapper, a
counter of named events, and one call per trained branch. ``Sized`` gives a lazy iterable a length so a bar
need not materialise it first.

``ProgressLog`` writes done/total, percent, tracks per second, at most every few seconds. A bar shows nothing
in an Airflow task log or a redirected terminal; a log line at INFO does, and the throughput in it is what
tells whether a step's cost per track stays flat as a library grows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

ItemProgress = Callable[[Iterable[Any]], Iterable[Any]]  # wraps the items of a loop, yields them unchanged
CountProgress = Callable[[str, int], None]  # (event, how many): "todo", "embedded", "skipped", ...
BranchProgress = Callable[[str, int, int], None]  # (holdout just trained, done, total)

LOG_EVERY_S = 10.0


def no_items(items: Iterable[Any]) -> Iterable[Any]:
    return items


def no_counts(event: str, n: int) -> None:
    return None


class Sized:
    """A lazy iterable that knows its length, so a progress bar can advance as results arrive."""

    def __init__(self, items: Iterable[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


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
