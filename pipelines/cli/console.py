"""Terminal helpers shared by the commands: progress bars for the library's progress callbacks, quiet clients.

Bars go to stderr and switch themselves off when stderr is not a terminal, so piped output stays clean.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any


def bar(desc: str, unit: str = "file") -> Any:
    """A progress-bar wrapper for library calls that accept ``progress=`` (an iterable in, the same out)."""
    from tqdm import tqdm

    def wrap(items: Iterable[Any]) -> Iterable[Any]:
        sized: Any = items if hasattr(items, "__len__") else list(items)  # a generator: the bar needs its length
        return tqdm(sized, total=len(sized), desc=desc, unit=unit, disable=None, file=sys.stderr)

    return wrap


class BranchBar:
    """A progress callback for training: one step per trained branch (holdouts train side by side)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="training", unit="branch", disable=None, file=sys.stderr)

    def __call__(self, name: str, done: int, total: int) -> None:
        self.bar.set_postfix_str(name[:40])
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class CountBar:
    """A bar over the files to compute, with running counts; fed from the feature build's shard threads."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.lock = threading.Lock()
        self.counts = {"embedded": 0, "skipped": 0, "quarantined": 0}
        self.bar = tqdm(total=0, desc="features", unit="file", disable=None, file=sys.stderr)

    def __call__(self, event: str, n: int) -> None:
        with self.lock:
            if event == "todo":
                self.bar.reset(total=n)
            elif event in self.counts:
                self.counts[event] += n
                if event != "skipped":
                    self.bar.update(n)
            self.bar.set_postfix(self.counts, refresh=False)

    def close(self) -> None:
        self.bar.close()


def quiet_clients() -> None:
    """pymilvus and Milvus Lite log every failed call with a traceback; the CLI says it in one line instead.

    Their logs stay on with ``musicrec -v``.
    """
    import pymilvus  # noqa: F401 - configures its loggers on import; levels must be set after that

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
