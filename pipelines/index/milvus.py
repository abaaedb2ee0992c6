"""The track index on Milvus: its collections, the alias ``tracks`` that names the live one, searches.

One collection per (model version, feature version) holds every track's embedding. The same code talks to
Milvus Lite and to a Milvus server; where they differ (search hits name the key ``id`` or ``track_id``;
a server's default consistency hides fresh rows) the difference is handled here and nowhere else.

Consistency of reads is chosen here too (:data:`FRESH`, :data:`SERVED`). Milvus Lite sees every write at
once whatever is asked; a server's Strong read waits for its next time tick (200 ms apart by default),
which made every served answer take 200-400 ms.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.index.connection import MilvusConnection
from pipelines.index.errors import IndexNotBuilt
from pipelines.index.lock import lock_path_for, writer_lock
from pipelines.index.metadata import (
    FIELD_BYTES,
    KEYS_PER_QUERY,
    PROP,
    RESULT_FIELDS,
    CollectionMeta,
    Hit,
    key_filter,
)
from pipelines.settings import IndexSettings, Settings

log = logging.getLogger(__name__)

# Reads that must see every write acknowledged before them: row counts, the refresh's scan of what a
# collection already holds, its verification before the alias moves, and the in-process copy's loader (a
# copy lives as long as its collection is served, so a row it missed would stay missing until the next
# refresh; it loads in the background, where the wait costs little).
FRESH = "Strong"
# Serving reads (searches, lookups by track id) of the collection behind the alias. A refresh writes a new
# collection, flushes it and verifies it with FRESH reads before the alias moves, so by the time a reader
# can reach it the server has applied all of its rows, and a Bounded read (which waits only for the state
# of a few seconds ago) sees every one of them without waiting for a tick. Not Session: that guarantees
# read-your-own-writes to the client that wrote, and the API writes nothing, so it would promise nothing
# across processes; Bounded bounds staleness for any reader. During an update in place of the live
# collection (same model version) readers see the old or the new row of a changed track, as they did with
# Strong while the refresh was inserting.
SERVED = "Bounded"


class TrackIndex:
    """The catalogue's collections on one Milvus (``uri``); connects lazily and reconnects after failures."""

    def __init__(self, uri: str, settings: IndexSettings | None = None, lock_path: Path | None = None) -> None:
        self.uri = uri
        self.settings = settings or IndexSettings()
        self.lock_path = lock_path or lock_path_for(uri)
        self.connection = MilvusConnection(uri, self.settings.milvus_timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, index: IndexSettings | None = None) -> TrackIndex:
        return cls(settings.paths.milvus_uri, index, lock_path_for(settings.paths.milvus_uri, settings.paths.data_root))

    def writer(self, what: str = "write the index") -> contextlib.AbstractContextManager[None]:
        """The cross-process writer lock: every change to collections or the alias happens inside it."""
        return writer_lock(self.lock_path, self.settings.index_lock_timeout_s, what)

    @property
    def alias(self) -> str:
        return self.settings.milvus_alias

    def close(self) -> None:
        """Disconnect; the last user of an in-process Milvus Lite folder also releases its lock."""
        self.connection.close()

    def alias_target(self) -> str | None:
        """The collection the alias points to, or None before the first refresh."""

        def target(c: Any) -> str | None:
            if self.alias not in c.list_aliases().get("aliases", []):
                return None
            return str(c.describe_collection(self.alias)["collection_name"])

        return self.connection.call(target)

    def exists(self, name: str) -> bool:
        return bool(self.connection.call(lambda c: c.has_collection(name)))

    def describe(self, name: str) -> CollectionMeta:
        desc = self.connection.call(lambda c: c.describe_collection(name))
        return CollectionMeta.from_properties(str(desc["collection_name"]), desc.get("properties") or {})

    def live(self) -> CollectionMeta:
        """The collection serving reads; raises :class:`IndexNotBuilt` before the first refresh."""

        def describe(c: Any) -> Any:
            # Asking first keeps pymilvus from logging a traceback for the expected "no alias yet".
            if self.alias not in c.list_aliases().get("aliases", []):
                raise IndexNotBuilt(
                    f"the index is not built yet (no Milvus collection behind the alias '{self.alias}' "
                    f"at {self.uri}); run `musicrec index refresh`"
                )
            return c.describe_collection(self.alias)

        desc = self.connection.call(describe)
        return CollectionMeta.from_properties(str(desc["collection_name"]), desc.get("properties") or {})

    def managed(self) -> list[CollectionMeta]:
        """Every collection this alias's refreshes made, oldest first."""
        names = [n for n in self.connection.call(lambda c: c.list_collections()) if n.startswith(self.alias + "__")]
        return sorted((self.describe(n) for n in names), key=lambda m: m.created_at)

    def index_params(self) -> Any:
        s = self.settings
        params: dict[str, Any] = {}
        if s.index_type == "HNSW":
            params = {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
        elif s.index_type == "IVF_FLAT":
            params = {"nlist": s.ivf_nlist}
        with self.connection.guard() as c:
            index_params = c.prepare_index_params()
        index_params.add_index("vector", index_type=s.index_type, metric_type="COSINE", params=params)
        return index_params

    def create(self, meta: CollectionMeta) -> None:
        """Create an empty collection with the catalogue schema, its COSINE index, and ``meta`` as properties."""
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("track_id", DataType.VARCHAR, is_primary=True, max_length=FIELD_BYTES["track_id"])
        for name in FIELD_BYTES:
            if name != "track_id":
                schema.add_field(name, DataType.VARCHAR, max_length=FIELD_BYTES[name])
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=meta.dim)
        index_params = self.index_params()
        with self.connection.guard() as c:
            c.create_collection(meta.name, schema=schema, index_params=index_params, properties=meta.properties())
        log.info("created collection %s (dim %d, %s)", meta.name, meta.dim, meta.index_type)

    def set_properties(self, name: str, **values: str) -> None:
        self.connection.call(lambda c: c.alter_collection_properties(name, {PROP + k: v for k, v in values.items()}))

    def switch_alias(self, name: str) -> str | None:
        """Point the alias at ``name`` in one step (readers see the old or the new); returns the old target."""
        old = self.alias_target()
        with self.connection.guard() as c:
            if old is None:
                c.create_alias(name, self.alias)
            elif old != name:
                c.alter_alias(name, self.alias)
        log.info("alias %s: %s -> %s", self.alias, old, name)
        return old

    def drop(self, name: str) -> None:
        if name == self.alias_target():
            raise ValueError(f"refusing to drop {name}: the alias {self.alias} points to it")
        with self.connection.guard() as c:
            c.drop_collection(name)
        log.info("dropped collection %s", name)

    def insert(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        self.connection.call(lambda c: c.upsert(name, list(rows)))  # upsert: a retried batch replaces itself

    def delete(self, name: str, track_ids: Sequence[str]) -> None:
        keys = list(dict.fromkeys(track_ids))
        for start in range(0, len(keys), KEYS_PER_QUERY):
            expr = key_filter("track_id", keys[start : start + KEYS_PER_QUERY])
            self.connection.call(functools.partial(_delete, name=name, expr=expr))

    def flush(self, name: str) -> None:
        self.connection.call(lambda c: c.flush(name))

    def count(self, name: str) -> int:
        """Row count as of now (Strong consistency: a server's default would hide fresh rows)."""

        def count(c: Any) -> int:
            self.connection.ensure_loaded(c, name)
            res = c.query(name, filter="", output_fields=["count(*)"], consistency_level=FRESH)
            return int(res[0]["count(*)"])

        return self.connection.call(count)

    def fingerprints(self, name: str) -> dict[str, str]:
        """``track_id -> sha256`` of every row: what a refresh compares with the feature store."""
        return {t: str(row["sha256"]) for t, row in self.stored(name, ("sha256",)).items()}

    def stored(self, name: str, fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``track_id -> {field: value}`` of every row, for ``fields`` (scalar fields, not the vector).

        Read in 16 slices by the sha256's first hex digit (the slices cover every string) rather than with
        pymilvus's query iterator, whose paging cursor splices the last primary key into an expression
        unescaped.
        """
        bounds = ["", *"123456789abcdef", ""]
        slices = [
            " and ".join(([f'sha256 >= "{lo}"'] if lo else []) + ([f'sha256 < "{hi}"'] if hi else []))
            for lo, hi in itertools.pairwise(bounds)
        ]
        wanted = list(dict.fromkeys(["track_id", *fields]))

        def scan(c: Any) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            self.connection.ensure_loaded(c, name)
            for expr in slices:
                rows = c.query(name, filter=expr, output_fields=wanted, consistency_level=FRESH)
                out.update((r["track_id"], {f: r[f] for f in fields}) for r in rows)
            return out

        return self.connection.call(scan)

    def get(
        self, name: str, track_ids: Sequence[str], fields: Sequence[str] = RESULT_FIELDS, fresh: bool = False
    ) -> list[dict]:
        """Rows by primary key, in no particular order; unknown ids are simply absent.

        ``fresh``: see every acknowledged write (:data:`FRESH`, for verification); else a serving read.
        """
        if not track_ids:
            return []
        level = FRESH if fresh else SERVED

        keys = list(dict.fromkeys(track_ids))
        out: list[dict] = []
        for start in range(0, len(keys), KEYS_PER_QUERY):
            expr = key_filter("track_id", keys[start : start + KEYS_PER_QUERY])

            def get(c: Any, expr: str = expr) -> list[dict]:
                # Not ``client.get``: pymilvus splices string keys into its expression unescaped.
                self.connection.ensure_loaded(c, name)
                rows = c.query(name, filter=expr, output_fields=list(fields), consistency_level=level)
                return [dict(r) for r in rows]

            out += self.connection.call(get)
        return out

    def search(
        self,
        meta: CollectionMeta,
        vectors: np.ndarray,
        limit: int,
        filter: str = "",
        fields: Sequence[str] = RESULT_FIELDS,
        fresh: bool = False,
    ) -> list[list[Hit]]:
        """Nearest neighbours of each row of ``vectors`` in ``meta``'s collection, nearest first.

        ``fresh``: see every acknowledged write (:data:`FRESH`, for verification); else a serving read.
        """
        params: dict[str, Any] = {}
        if meta.index_type == "HNSW":
            params = {"ef": max(self.settings.search_ef, limit)}
        elif meta.index_type == "IVF_FLAT":
            params = {"nprobe": self.settings.ivf_nprobe}
        wanted = list(dict.fromkeys(["track_id", *fields]))
        data = np.asarray(vectors, dtype=np.float32).tolist()

        def search(c: Any) -> Any:
            self.connection.ensure_loaded(c, meta.name)
            return c.search(
                meta.name,
                data=data,
                limit=limit,
                filter=filter,
                output_fields=wanted,
                search_params={"metric_type": "COSINE", "params": params},
                consistency_level=FRESH if fresh else SERVED,
            )

        res = self.connection.call(search)
        return [
            [
                Hit(
                    track_id=str(h["entity"]["track_id"]),
                    distance=max(0.0, 1.0 - float(h["distance"])),
                    fields=dict(h["entity"]),
                )
                for h in hits
            ]
            for hits in res
        ]


def _delete(client: Any, name: str, expr: str) -> Any:
    return client.delete(name, filter=expr)
