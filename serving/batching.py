"""Coalescing concurrent searches into one Milvus call.

Milvus Lite's cost per search call grows with the collection (it scans its row bookkeeping once per
call), while extra query vectors in the same call are nearly free. So while one call is in flight, the
requests that arrive wait and then go together in the next call: no added delay for a lone request,
and under load one scan serves many. The measurements are in bench/results/serving.md.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipelines.index.metadata import RESULT_FIELDS, CollectionMeta, Hit


class Searcher(Protocol):
    """What the batcher searches: :class:`~pipelines.index.milvus.TrackIndex` or the in-process copy."""

    def search(
        self, meta: CollectionMeta, vectors: np.ndarray, limit: int, filter: str = ..., fields: Sequence[str] = ...
    ) -> list[list[Hit]]: ...


@dataclass
class _Request:
    meta: CollectionMeta
    vector: np.ndarray
    limit: int
    filter: str
    result: list[Hit] | None = None
    error: BaseException | None = None
    done: bool = False
    key: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.meta.name, self.filter)


class SearchBatcher:
    """Thread-safe front of :meth:`TrackIndex.search` that batches concurrent single-vector searches.

    ``max_inflight`` calls run at once (1 suits Milvus Lite, which searches one call at a time; a Milvus
    server can take a few); each takes up to ``max_batch`` waiting requests.
    """

    def __init__(self, index: Searcher, max_batch: int = 64, max_inflight: int = 1) -> None:
        self.index = index
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._inflight = 0
        self.calls = 0  # Milvus calls made, for tests and the benchmark
        self.requests = 0
        self.on_batch: Callable[[int], None] | None = None  # told each call's batch size (for metrics)

    def search(self, meta: CollectionMeta, vector: np.ndarray, limit: int, filter: str = "") -> list[Hit]:
        req = _Request(meta, np.asarray(vector, dtype=np.float32).reshape(-1), limit, filter)
        with self._cond:
            self._pending.append(req)
            self.requests += 1
            while not req.done:
                if self._inflight < self.max_inflight and self._pending:
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                    self._inflight += 1
                    self.calls += 1
                    self._cond.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cond.acquire()
                        self._inflight -= 1
                        self._cond.notify_all()
                else:
                    self._cond.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _run(self, batch: list[_Request]) -> None:
        groups: dict[tuple[str, str], list[_Request]] = defaultdict(list)
        for req in batch:
            groups[req.key].append(req)
        for reqs in groups.values():
            try:
                limit = max(r.limit for r in reqs)
                if self.on_batch is not None:
                    self.on_batch(len(reqs))
                hits: Any = self.index.search(
                    reqs[0].meta, np.stack([r.vector for r in reqs]), limit, reqs[0].filter, RESULT_FIELDS
                )
                for req, found in zip(reqs, hits, strict=True):
                    req.result = found[: req.limit]
            except BaseException as exc:  # handed to every waiting caller, raised in its own thread
                for req in reqs:
                    req.error = exc
            finally:
                for req in reqs:
                    req.done = True
