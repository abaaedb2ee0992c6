"""A small service over pymilvus's ``MilvusClient``: the catalogue's collections, their alias, searches.

One collection per (model version, feature version) holds every track's embedding; the alias ``tracks``
names the one serving reads. Everything a reader must know to query a collection correctly (which
model made the vectors, with which front-end parameters, which index) is stored in the collection's
properties, so a query can never be embedded with a different model than the catalogue it searches.

The same code talks to Milvus Lite (a data folder, or ``milvus-lite server``) and to a Milvus server;
where they differ (search hits name the key ``id`` or ``track_id``; a server's default consistency hides
fresh rows) the difference is handled here and nowhere else.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.catalogue.limits import STYLE_MAX_BYTES, TRACK_ID_MAX_BYTES
from pipelines.errors import UserError
from pipelines.index.lite_server import folder_locked, is_remote, resolve_uri
from pipelines.index.lock import lock_path_for, writer_lock
from pipelines.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

PROP = "musicrec."  # prefix of the collection properties musicrec writes
# VARCHAR limits, in bytes (Milvus counts UTF-8 bytes); longer metadata is cut, never rejected.
FIELD_BYTES = {
    "track_id": TRACK_ID_MAX_BYTES,
    "style": STYLE_MAX_BYTES,
    "source": 256,
    "artist": 1024,
    "album": 1024,
    "title": 1024,
    "sha256": 64,
    "model_version": 128,
    "feature_version": 64,
}
# pymilvus pings an idle connection every 10 s; gRPC servers with default settings (Milvus Lite) answer
# that with GOAWAY "too many pings" after a few minutes of idling. Ping only while calls are running.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 60_000, "grpc.keepalive_permit_without_calls": False}
RESULT_FIELDS = ("track_id", "style", "source", "artist", "album", "title", "sha256")
# Primary keys per query: keeps each filter expression small (a few hundred kB at most).
KEYS_PER_QUERY = 512
# Escapes understood by both Milvus's and Milvus Lite's string literals; other characters stand for themselves.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def literal(value: str) -> str:
    """``value`` as a Milvus string literal: identifiers are data, so they are always quoted and escaped.

    Milvus Lite does not accept expression templates (``filter_params``), so every filter musicrec sends
    is built from literals made here and nowhere else.
    """
    return '"' + str(value).translate(_ESCAPES) + '"'


def key_filter(field_name: str, values: Sequence[str]) -> str:
    """``field in ["a", "b"]`` with every value escaped."""
    return f"{field_name} in [{', '.join(literal(v) for v in values)}]"


class IndexSettings(BaseSettings):
    """Index and refresh knobs (env ``MUSICREC_<FIELD>``); paths and URIs stay in ``Settings``."""

    model_config = SettingsConfigDict(env_prefix="MUSICREC_", env_file=".env", extra="ignore", frozen=True)

    milvus_alias: str = Field(default="tracks", pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    index_type: Literal["HNSW", "IVF_FLAT", "FLAT"] = Field(
        default="HNSW", description="HNSW: see bench/results/serving.md for the measurement behind it."
    )
    hnsw_m: int = Field(default=16, ge=4, le=64)
    hnsw_ef_construction: int = Field(default=200, ge=8)
    search_ef: int = Field(default=128, ge=8, description="HNSW search breadth; raised to k when k is larger.")
    ivf_nlist: int = Field(default=1024, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    collections_kept: int = Field(
        default=1, ge=1, description="Earlier collections kept for rollback besides the live one."
    )
    embed_batch_size: int = Field(default=256, ge=1, description="Tracks embedded and inserted per batch.")
    verify_sample: int = Field(default=32, ge=1, description="Tracks whose nearest neighbour must be themselves.")
    milvus_timeout_s: float = Field(default=10.0, gt=0)
    index_lock_timeout_s: float = Field(
        default=120.0, ge=0, description="How long a refresh or rollback waits for another writer to finish."
    )


class CatalogueUnavailable(UserError):
    """Serving cannot answer right now (HTTP 503); the message says what to do."""


class MilvusUnavailable(CatalogueUnavailable):
    """Milvus does not answer, or its Lite data folder is held by another process."""


class CatalogueNotBuilt(CatalogueUnavailable):
    """No collection behind the alias yet."""


class RefreshFailed(RuntimeError):
    """A new collection failed verification; the alias was not moved."""


def collection_name(alias: str, model_version: str, feature_version: str) -> str:
    """``tracks__<model>__<features>``: readable, and one name per pair, so a re-run finds its own work."""
    clean = [re.sub(r"[^A-Za-z0-9_]", "_", part) for part in (model_version, feature_version)]
    return f"{alias}__{clean[0]}__{clean[1]}"


def clip(text: object, name: str) -> str:
    """Metadata as stored: missing becomes ``""``, too long is cut at a UTF-8 character boundary."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    raw = str(text).encode()[: FIELD_BYTES[name]]
    return raw.decode(errors="ignore")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection's properties say about it."""

    name: str
    model_version: str
    feature_version: str
    dim: int
    index_type: str
    created_at: str
    feature_params: dict[str, Any] = field(default_factory=dict)
    previous: str = ""
    styles: tuple[str, ...] = ()
    state: str = "building"  # "ready" once verified; a crashed refresh leaves "building"
    rolled_back_from: str = ""  # set by a rollback: kept (to roll forward) until a later refresh succeeds
    updated_at: str = ""  # set by a refresh that changed the collection in place (read-only here)

    def properties(self) -> dict[str, str]:
        return {
            PROP + "model_version": self.model_version,
            PROP + "feature_version": self.feature_version,
            PROP + "dim": str(self.dim),
            PROP + "index_type": self.index_type,
            PROP + "created_at": self.created_at,
            PROP + "feature_params": json.dumps(self.feature_params, sort_keys=True),
            PROP + "previous": self.previous,
            PROP + "styles": json.dumps(sorted(self.styles)),
            PROP + "state": self.state,
            PROP + "rolled_back_from": self.rolled_back_from,
        }

    @classmethod
    def from_properties(cls, name: str, props: dict[str, str]) -> CollectionMeta:
        get = {k.removeprefix(PROP): v for k, v in props.items() if k.startswith(PROP)}
        return cls(
            name=name,
            model_version=get.get("model_version", ""),
            feature_version=get.get("feature_version", ""),
            dim=int(get.get("dim", "0")),
            index_type=get.get("index_type", ""),
            created_at=get.get("created_at", ""),
            feature_params=json.loads(get.get("feature_params") or "{}"),
            previous=get.get("previous", ""),
            styles=tuple(json.loads(get.get("styles") or "[]")),
            state=get.get("state", "building"),
            rolled_back_from=get.get("rolled_back_from", ""),
            updated_at=get.get("updated_at", ""),
        )


@dataclass(frozen=True)
class Hit:
    """One search result: cosine distance (1 - cosine similarity, 0 = same direction) and stored fields."""

    track_id: str
    distance: float
    fields: dict[str, Any]


class _DropUnimplemented(logging.Filter):
    """Milvus Lite answers pymilvus's AllocTimestamp with UNIMPLEMENTED (harmless: pymilvus falls back to
    client time), and grpc logs that as an ERROR with a traceback on every write. Only that is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


# Milvus Lite folders opened in this process, with how many CatalogueIndex objects use each: pymilvus keeps
# an in-process server (holding the folder's lock) per folder until exit, so the last user releases it.
_LOCAL_USERS: dict[str, int] = {}
_LOCAL_LOCK = threading.Lock()


def _open_local(path: str, timeout: float) -> Any:
    from pymilvus import MilvusClient

    key = str(Path(path).expanduser().resolve())
    with _LOCAL_LOCK:
        if not _LOCAL_USERS.get(key) and folder_locked(Path(key)):
            raise MilvusUnavailable(
                f"the Milvus Lite folder {key} is open in another process; stop that process, or run "
                "`musicrec serve` (it shares the folder with other commands), or set MUSICREC_MILVUS_URI "
                "to a Milvus server"
            )
        grpc_log = logging.getLogger("grpc._server")
        if not any(isinstance(f, _DropUnimplemented) for f in grpc_log.filters):
            grpc_log.addFilter(_DropUnimplemented())
        client = MilvusClient(key, timeout=timeout, grpc_options=GRPC_OPTIONS)
        _LOCAL_USERS[key] = _LOCAL_USERS.get(key, 0) + 1
    return client


def _close_local(path: str) -> None:
    key = str(Path(path).expanduser().resolve())
    with _LOCAL_LOCK:
        _LOCAL_USERS[key] = _LOCAL_USERS.get(key, 1) - 1
        if _LOCAL_USERS[key] <= 0:
            del _LOCAL_USERS[key]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(key)


def _is_connection_error(exc: BaseException) -> bool:
    from pymilvus.exceptions import ConnectionConfigException, MilvusException

    if isinstance(exc, ConnectionConfigException):
        return True
    if isinstance(exc, MilvusException):
        return exc.code == 2 or "unavailable" in str(exc).lower()  # 2: connection failed
    import grpc

    return isinstance(exc, grpc.RpcError)


def _reason(exc: BaseException) -> str:
    """One short line saying why a connection failed (gRPC and pymilvus errors are multi-line)."""
    cause = exc.__cause__ or exc
    details = getattr(cause, "details", None)
    text = details() if callable(details) else getattr(cause, "message", None) or str(cause)
    return " ".join(str(text).split())[:200]


class CatalogueIndex:
    """The catalogue's collections on one Milvus (``uri``); connects lazily and reconnects after failures."""

    def __init__(self, uri: str, settings: IndexSettings | None = None, lock_path: Path | None = None) -> None:
        self.uri = uri
        self.settings = settings or IndexSettings()
        self.lock_path = lock_path or lock_path_for(uri)
        self._client: Any = None
        self._local = ""  # the Milvus Lite folder this index opened in-process, if any
        self._loaded: set[str] = set()  # collections known to be loaded on the current connection
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, index: IndexSettings | None = None) -> CatalogueIndex:
        return cls(settings.milvus_uri, index, lock_path_for(settings.milvus_uri, settings.data_root))

    def writer(self, what: str = "write the index") -> contextlib.AbstractContextManager[None]:
        """The cross-process writer lock: every change to collections or the alias happens inside it."""
        return writer_lock(self.lock_path, self.settings.index_lock_timeout_s, what)

    @property
    def alias(self) -> str:
        return self.settings.milvus_alias

    def _advice(self) -> str:
        if is_remote(self.uri):
            return f"start the Milvus server at {self.uri} (or set MUSICREC_MILVUS_URI) and retry"
        return (
            f"the Milvus Lite folder {self.uri} may be open in another process: stop it, or run "
            "`musicrec serve`, which shares the folder with other commands"
        )

    @property
    def client(self) -> Any:
        """The pymilvus client; created on first use so nothing connects at import or construction."""
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                target = resolve_uri(self.uri)
                try:
                    if is_remote(target):
                        self._client = MilvusClient(
                            target, timeout=self.settings.milvus_timeout_s, grpc_options=GRPC_OPTIONS
                        )
                    else:
                        self._client = _open_local(target, self.settings.milvus_timeout_s)
                        self._local = target
                except MilvusUnavailable:
                    raise
                except Exception as exc:
                    if _is_connection_error(exc):
                        raise MilvusUnavailable(
                            f"Milvus is not reachable at {target} ({_reason(exc)}); {self._advice()}"
                        ) from exc
                    raise
            return self._client

    def close(self) -> None:
        """Disconnect; the last user of an in-process Milvus Lite folder also releases its lock."""
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None
            if self._local:
                _close_local(self._local)
                self._local = ""
            self._loaded.clear()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[Any]:
        """Run client calls; a lost connection becomes :class:`MilvusUnavailable` and the next call reconnects."""
        client = self.client
        try:
            yield client
        except Exception as exc:
            if _is_connection_error(exc):
                self.close()
                raise MilvusUnavailable(
                    f"Milvus at {self.uri} stopped answering ({_reason(exc)}); {self._advice()}"
                ) from exc
            raise

    def _call(self, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` with one retry on a fresh connection if the first attempt lost its connection.

        Idempotent calls only. A server may drop an idle connection (Milvus Lite's answers pymilvus's
        keepalive pings with GOAWAY after a few idle minutes); one reconnect hides that from callers,
        and a Milvus that is really down still fails fast.
        """
        try:
            with self._guard() as c:
                return fn(c)
        except MilvusUnavailable as exc:
            log.info("retrying once on a new connection: %s", exc)
        with self._guard() as c:
            return fn(c)

    def _load(self, c: Any, name: str) -> None:
        """Load ``name`` for search/query if needed: Milvus Lite reopens collections released."""
        if name in self._loaded:
            return
        from pymilvus.client.types import LoadState

        if c.get_load_state(name).get("state") != LoadState.Loaded:
            log.info("loading collection %s", name)
            c.load_collection(name)
        self._loaded.add(name)

    # ---- collections and the alias -------------------------------------------------------------------

    def alias_target(self) -> str | None:
        """The collection the alias points to, or None before the first refresh."""

        def target(c: Any) -> str | None:
            if self.alias not in c.list_aliases().get("aliases", []):
                return None
            return str(c.describe_collection(self.alias)["collection_name"])

        return self._call(target)

    def exists(self, name: str) -> bool:
        return bool(self._call(lambda c: c.has_collection(name)))

    def describe(self, name: str) -> CollectionMeta:
        desc = self._call(lambda c: c.describe_collection(name))
        return CollectionMeta.from_properties(str(desc["collection_name"]), desc.get("properties") or {})

    def live(self) -> CollectionMeta:
        """The collection serving reads; raises :class:`CatalogueNotBuilt` before the first refresh."""

        def describe(c: Any) -> Any:
            # Asking first keeps pymilvus from logging a traceback for the expected "no alias yet".
            if self.alias not in c.list_aliases().get("aliases", []):
                raise CatalogueNotBuilt(
                    f"the catalogue is not built yet (no Milvus collection behind the alias '{self.alias}' "
                    f"at {self.uri}); run `musicrec catalogue refresh`"
                )
            return c.describe_collection(self.alias)

        desc = self._call(describe)
        return CollectionMeta.from_properties(str(desc["collection_name"]), desc.get("properties") or {})

    def managed(self) -> list[CollectionMeta]:
        """Every collection this alias's refreshes made, oldest first."""
        names = [n for n in self._call(lambda c: c.list_collections()) if n.startswith(self.alias + "__")]
        return sorted((self.describe(n) for n in names), key=lambda m: m.created_at)

    def index_params(self) -> Any:
        s = self.settings
        params: dict[str, Any] = {}
        if s.index_type == "HNSW":
            params = {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
        elif s.index_type == "IVF_FLAT":
            params = {"nlist": s.ivf_nlist}
        with self._guard() as c:
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
        with self._guard() as c:
            c.create_collection(meta.name, schema=schema, index_params=index_params, properties=meta.properties())
        log.info("created collection %s (dim %d, %s)", meta.name, meta.dim, meta.index_type)

    def set_properties(self, name: str, **values: str) -> None:
        self._call(lambda c: c.alter_collection_properties(name, {PROP + k: v for k, v in values.items()}))

    def switch_alias(self, name: str) -> str | None:
        """Point the alias at ``name`` in one step (readers see the old or the new); returns the old target."""
        old = self.alias_target()
        with self._guard() as c:
            if old is None:
                c.create_alias(name, self.alias)
            elif old != name:
                c.alter_alias(name, self.alias)
        log.info("alias %s: %s -> %s", self.alias, old, name)
        return old

    def drop(self, name: str) -> None:
        if name == self.alias_target():
            raise ValueError(f"refusing to drop {name}: the alias {self.alias} points to it")
        with self._guard() as c:
            c.drop_collection(name)
        log.info("dropped collection %s", name)

    # ---- rows -----------------------------------------------------------------------------------------

    def insert(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        self._call(lambda c: c.upsert(name, list(rows)))  # upsert: a retried batch replaces itself

    def delete(self, name: str, track_ids: Sequence[str]) -> None:
        keys = list(dict.fromkeys(track_ids))
        for start in range(0, len(keys), KEYS_PER_QUERY):
            expr = key_filter("track_id", keys[start : start + KEYS_PER_QUERY])
            self._call(lambda c, expr=expr: c.delete(name, filter=expr))

    def flush(self, name: str) -> None:
        self._call(lambda c: c.flush(name))

    def count(self, name: str) -> int:
        """Row count as of now (Strong consistency: a server's default would hide fresh rows)."""

        def count(c: Any) -> int:
            self._load(c, name)
            res = c.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
            return int(res[0]["count(*)"])

        return self._call(count)

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
            self._load(c, name)
            for expr in slices:
                rows = c.query(name, filter=expr, output_fields=wanted, consistency_level="Strong")
                out.update((r["track_id"], {f: r[f] for f in fields}) for r in rows)
            return out

        return self._call(scan)

    def get(self, name: str, track_ids: Sequence[str], fields: Sequence[str] = RESULT_FIELDS) -> list[dict]:
        """Rows by primary key, in no particular order; unknown ids are simply absent."""
        if not track_ids:
            return []

        keys = list(dict.fromkeys(track_ids))
        out: list[dict] = []
        for start in range(0, len(keys), KEYS_PER_QUERY):
            expr = key_filter("track_id", keys[start : start + KEYS_PER_QUERY])

            def get(c: Any, expr: str = expr) -> list[dict]:
                # Not ``client.get``: pymilvus splices string keys into its expression unescaped.
                self._load(c, name)
                rows = c.query(name, filter=expr, output_fields=list(fields), consistency_level="Strong")
                return [dict(r) for r in rows]

            out += self._call(get)
        return out

    def search(
        self,
        meta: CollectionMeta,
        vectors: np.ndarray,
        limit: int,
        filter: str = "",
        fields: Sequence[str] = RESULT_FIELDS,
        consistency: str | None = None,
    ) -> list[list[Hit]]:
        """Nearest neighbours of each row of ``vectors`` in ``meta``'s collection, nearest first."""
        params: dict[str, Any] = {}
        if meta.index_type == "HNSW":
            params = {"ef": max(self.settings.search_ef, limit)}
        elif meta.index_type == "IVF_FLAT":
            params = {"nprobe": self.settings.ivf_nprobe}
        extra = {"consistency_level": consistency} if consistency else {}
        wanted = list(dict.fromkeys(["track_id", *fields]))
        data = np.asarray(vectors, dtype=np.float32).tolist()

        def search(c: Any) -> Any:
            self._load(c, meta.name)
            return c.search(
                meta.name,
                data=data,
                limit=limit,
                filter=filter,
                output_fields=wanted,
                search_params={"metric_type": "COSINE", "params": params},
                **extra,
            )

        res = self._call(search)
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

    def verify(self, meta: CollectionMeta, expected: int, sample: Sequence[str]) -> None:
        """Raise :class:`RefreshFailed` unless the row count is ``expected`` and each sampled track finds itself.

        "Finds itself" allows exact ties (two tracks with identical vectors), but never a nearer stranger; and
        if most sampled tracks tie with another, the vectors have collapsed and the collection is refused.
        """
        got = self.count(meta.name)
        if got != expected:
            raise RefreshFailed(f"{meta.name} holds {got} rows, the feature store {expected}")
        rows = {r["track_id"]: r["vector"] for r in self.get(meta.name, sample, ["track_id", "vector"])}
        missing = [t for t in sample if t not in rows]
        if missing:
            raise RefreshFailed(f"{meta.name} lacks sampled tracks {missing[:5]}")
        ids = list(rows)
        results = self.search(
            meta, np.asarray([rows[t] for t in ids]), limit=5, fields=("track_id",), consistency="Strong"
        )
        tied = 0
        for track_id, hits in zip(ids, results, strict=True):
            best = hits[0].distance if hits else 1.0
            if best > 1e-3 or not any(h.track_id == track_id and h.distance <= best + 1e-4 for h in hits):
                found = [(h.track_id, round(h.distance, 5)) for h in hits[:3]]
                raise RefreshFailed(f"{meta.name}: nearest neighbours of {track_id} are {found}, not itself")
            tied += any(h.track_id != track_id and h.distance <= 1e-6 for h in hits)
        if len(ids) > 1 and tied > len(ids) // 2:
            raise RefreshFailed(
                f"{meta.name}: {tied} of {len(ids)} sampled tracks have a different track at distance 0; "
                "the model maps different tracks to the same vector (collapsed?)"
            )
        log.info("verified %s: %d rows, %d sampled tracks find themselves", meta.name, got, len(ids))
