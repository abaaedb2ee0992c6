"""An in-process copy of the served collection: exact cosine search in numpy, no Milvus round trip.

Milvus stays the store and the source of truth. The copy holds the L2-normalised vectors of the
collection behind the alias plus the few fields answers and filters read, loaded from that collection
and keyed by its name and ``updated_at`` stamp. A query only uses a copy whose key matches the
collection it was asked against, so an answer never mixes two versions: when the alias moves (or a
refresh updates the live collection in place), queries go to Milvus until the new copy is loaded in the
background, then to the new copy. Design and memory figures: docs/query-speed.md.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.index.metadata import RESULT_FIELDS, CollectionMeta, Hit, literal
from pipelines.index.milvus import FRESH, TrackIndex

log = logging.getLogger(__name__)

# Rows per query while loading, at most: a Milvus server refuses a query whose limit exceeds its result
# window (16384 rows by default), and the loader asks for one row more than this to see a slice overflow.
ROWS_PER_QUERY = 16_000
# Slices are planned to hold this share of ROWS_PER_QUERY: sha256s are uniform, so at 1M rows a slice of
# 12,000 expected rows (standard deviation ~110) never reaches 16,000; one that does is cut in two.
_FILL = 0.75
_CUT_DIGITS = 6  # hex digits of the planned cuts: up to 16M slices
_MAX_DIGITS = 16  # a slice this narrow holding too many rows (equal sha256s) is read whole
_TEXT_FIELDS = tuple(f for f in RESULT_FIELDS if f != "track_id")


def stamp_of(meta: CollectionMeta) -> tuple[str, str, str]:
    """What identifies a collection's contents: its name, when it was made, when it was last updated."""
    return (meta.name, meta.created_at, meta.updated_at)


@dataclass
class Snapshot:
    """One collection's vectors and answer fields, immutable once built."""

    stamp: tuple[str, str, str]
    ids: list[str]
    matrix: np.ndarray  # (n, dim) float32, rows L2-normalised
    texts: dict[str, list[str]]  # RESULT_FIELDS other than track_id, row-aligned
    position: dict[str, int] = field(init=False)
    by_style: dict[str, np.ndarray] = field(init=False)  # row numbers of each style
    filters: dict[str, str] = field(init=False)  # Milvus filter expression -> style it selects

    def __post_init__(self) -> None:
        self.position = {t: i for i, t in enumerate(self.ids)}
        styles = np.asarray(self.texts["style"], dtype=object)
        self.by_style = {str(s): np.flatnonzero(styles == s) for s in dict.fromkeys(self.texts["style"])}
        self.filters = {f"style == {literal(s)}": s for s in self.by_style}

    @property
    def name(self) -> str:
        return self.stamp[0]

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        """Approximate memory held: the matrix plus the Python strings and index structures."""
        strings = sum(len(t) + 49 for t in self.ids) + sum(len(s) + 49 for v in self.texts.values() for s in v)
        pointers = 8 * len(self.ids) * (len(self.texts) + 1) + 100 * len(self.ids)  # lists + the position dict
        return int(self.matrix.nbytes) + strings + pointers

    def _hit(self, row: int, sim: float) -> Hit:
        fields = {"track_id": self.ids[row], **{f: self.texts[f][row] for f in _TEXT_FIELDS}}
        return Hit(track_id=self.ids[row], distance=max(0.0, 1.0 - sim), fields=fields)

    def search(self, queries: np.ndarray, limit: int, style: str | None = None) -> list[list[Hit]]:
        """Exact top ``limit`` by cosine for each query row (nearest first; ties by row order)."""
        q = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        rows = None if style is None else self.by_style.get(style, np.empty(0, dtype=np.intp))
        if rows is not None and len(rows) == 0:
            return [[] for _ in range(len(q))]
        sims = q @ self.matrix.T
        out = []
        for i in range(len(q)):
            s = sims[i] if rows is None else sims[i, rows]
            k = min(limit, len(s))
            top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            top = top[np.lexsort((top, -s[top]))]
            picked = top if rows is None else rows[top]
            out.append([self._hit(int(r), float(v)) for r, v in zip(picked, s[top], strict=True)])
        return out

    def rows(self, track_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``track_id -> {track_id, sha256, vector}`` for the ids held; unknown ids are absent."""
        out = {}
        for t in track_ids:
            i = self.position.get(t)
            if i is not None:
                out[t] = {"track_id": t, "sha256": self.texts["sha256"][i], "vector": self.matrix[i]}
        return out


def _plan(total: int) -> list[tuple[str, str]]:
    """Slices of the sha256 range, each expected to hold ``_FILL * ROWS_PER_QUERY`` rows of ``total``.

    Together they cover every string: the first starts at "" (no lower bound), the last has no upper bound,
    and each cut is a ``_CUT_DIGITS``-digit hex string, evenly spaced over the hex digests.
    """
    n = min(16**_CUT_DIGITS, max(1, -(-total // max(1, int(ROWS_PER_QUERY * _FILL)))))
    cuts = ["", *(f"{i * 16**_CUT_DIGITS // n:0{_CUT_DIGITS}x}" for i in range(1, n)), ""]
    return list(itertools.pairwise(cuts))


def _halves(lo: str, hi: str) -> list[tuple[str, str]]:
    """``[lo, hi)`` cut at a hex string between them (by value, as digests spread); none if too narrow.

    ``lo`` and ``hi`` are hex strings or "" (no bound). Read as numbers of one length ``digits`` (padded
    with zeros; "" as the top for ``hi``), any ``mid`` strictly between them, written with ``digits``
    digits, sorts strictly between ``lo`` and ``hi`` as a string, so the two pieces cover ``[lo, hi)``.
    """
    digits = max(len(lo), len(hi), 1)
    while digits <= _MAX_DIGITS:
        low = int(lo.ljust(digits, "0"), 16) if lo else 0
        high = int(hi.ljust(digits, "0"), 16) if hi else 16**digits
        if high - low >= 2:
            mid = f"{(low + high) // 2:0{digits}x}"
            return [(lo, mid), (mid, hi)]
        digits += 1
    return []


def _range_expr(lo: str, hi: str) -> str:
    parts = ([f"sha256 >= {literal(lo)}"] if lo else []) + ([f"sha256 < {literal(hi)}"] if hi else [])
    return " and ".join(parts) or 'sha256 >= ""'  # the whole range: every string is >= ""


def load_snapshot(index: TrackIndex, meta: CollectionMeta) -> Snapshot:
    """Read every row of ``meta``'s collection (vectors included) in slices of the sha256 range.

    The slices are planned from the row count so that each holds about ``_FILL * ROWS_PER_QUERY`` rows,
    and each is read with one query limited to ``ROWS_PER_QUERY + 1`` rows: no count per slice, so the
    load costs one query per slice. On Milvus Lite every filtered query scans the whole collection, so
    the number of queries is what counts (at 1M rows, counting each slice first took ~530 scans). A slice
    that comes back over ``ROWS_PER_QUERY`` rows (the collection grew, or sha256s bunch) is dropped and
    read again in two halves, so no query returns more than a server allows whatever the data.
    """
    total = index.count(meta.name)  # also loads the collection for querying
    wanted = ["track_id", "vector", *_TEXT_FIELDS]
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    texts: dict[str, list[str]] = {f: [] for f in _TEXT_FIELDS}

    def query(expr: str, limit: int | None) -> list[dict]:
        # through the connection's retry: a server may drop an idle connection between two slices
        extra = {} if limit is None else {"limit": limit}
        return index.connection.call(
            lambda c: c.query(meta.name, filter=expr, output_fields=wanted, consistency_level=FRESH, **extra)
        )

    todo = _plan(total)
    todo.reverse()  # popped from the end: read in sha256 order
    while todo:
        lo, hi = todo.pop()
        halves = _halves(lo, hi)
        # a slice too narrow to cut holds rows of (nearly) one sha256: read whole, as it cannot be split
        rows = query(_range_expr(lo, hi), ROWS_PER_QUERY + 1 if halves else None)
        if len(rows) > ROWS_PER_QUERY and halves:
            del rows
            todo += reversed(halves)
            continue
        # one slice's vectors become float32 at once: pymilvus hands them over as Python floats (~8x the size)
        vectors.append(np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), meta.dim))
        for r in rows:
            ids.append(str(r["track_id"]))
            for f in _TEXT_FIELDS:
                texts[f].append(str(r.get(f) or ""))
        del rows
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, meta.dim), np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    if len(ids) != total:
        log.warning("collection %s changed while it was copied (%d rows, %d read)", meta.name, total, len(ids))
    return Snapshot(stamp_of(meta), ids, matrix, texts)


def single_threaded_blas() -> None:
    """One BLAS thread per search: concurrent requests already keep the cores busy, and a BLAS thread team
    on a shared 2-core machine waits for its slowest member (a 100k scan took 3x longer with two threads)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # an optional speed-up; searches are right either way
        return
    ThreadpoolController().limit(limits=1, user_api="blas")


class VectorCopy:
    """The current snapshot of the live collection, and its loading in the background when that changes.

    :meth:`current` never blocks on a load: it answers the snapshot matching ``meta`` or None (the caller
    then asks Milvus), and starts loading the matching one if none is under way. Nothing is loaded until
    :meth:`start` (the API's start-up): one-shot commands never pay for a copy they would use once.
    """

    def __init__(self, index: TrackIndex) -> None:
        self.index = index
        self._snap: Snapshot | None = None
        self._lock = threading.Lock()
        self._loading: tuple[str, str, str] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.active = False
        self.loads = 0  # snapshots installed, for tests and metrics

    def current(self, meta: CollectionMeta) -> Snapshot | None:
        snap = self._snap
        if snap is not None and snap.stamp == stamp_of(meta):
            return snap
        if self.active:
            self._start(meta)
        return None

    def snapshot(self) -> Snapshot | None:
        """The installed snapshot, whatever collection it is of."""
        return self._snap

    def start(self, meta: CollectionMeta | None) -> None:
        """Keep a copy from now on; load ``meta``'s now, so the first queries are already fast."""
        self.active = True
        single_threaded_blas()
        if meta is not None:
            try:
                self.load(meta)
            except Exception as exc:  # serve from Milvus; the next query tries again in the background
                log.warning("could not copy collection %s into memory: %s", meta.name, exc)

    def load(self, meta: CollectionMeta) -> Snapshot:
        """Load and install the snapshot of ``meta`` now."""
        snap = load_snapshot(self.index, meta)
        self._install(snap)
        return snap

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background load under way (tests; shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        self._closed = True
        self.wait(30)

    def _install(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap
            self.loads += 1
        log.info("in-process copy of %s: %d vectors, about %.0f MB", snap.name, len(snap), snap.nbytes() / 1e6)

    def _start(self, meta: CollectionMeta) -> None:
        stamp = stamp_of(meta)
        with self._lock:
            if self._closed or self._loading is not None:
                return
            self._loading = stamp
            self._thread = threading.Thread(target=self._run, args=(meta,), name="vector-copy", daemon=True)
            self._thread.start()

    def _run(self, meta: CollectionMeta) -> None:
        try:
            self._install(load_snapshot(self.index, meta))
        except Exception as exc:  # Milvus answers meanwhile; the next query tries again
            log.warning("could not copy collection %s into memory: %s", meta.name, exc)
        finally:
            with self._lock:
                self._loading = None


class CopySearch:
    """:meth:`TrackIndex.search`'s shape over the copy, so the search batcher can front either.

    Answers from Milvus whenever the copy does not hold ``meta``'s contents or the filter is not one the
    copy knows (only "no filter" and "one style" are).
    """

    def __init__(self, copy: VectorCopy, index: TrackIndex) -> None:
        self.copy = copy
        self.index = index

    def search(
        self,
        meta: CollectionMeta,
        vectors: np.ndarray,
        limit: int,
        filter: str = "",
        fields: Sequence[str] = RESULT_FIELDS,
    ) -> list[list[Hit]]:
        snap = self.copy.current(meta)
        if snap is not None and (not filter or filter in snap.filters):
            return snap.search(vectors, limit, snap.filters.get(filter))
        return self.index.search(meta, vectors, limit, filter, fields)
