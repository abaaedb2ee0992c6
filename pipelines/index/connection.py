"""One connection to Milvus (a server, or Milvus Lite in this process): lazy, shared, retried once.

Milvus Lite keeps an in-process server per data folder that holds the folder's lock; this module counts
the users of each folder so the last one releases it, and turns lost connections into one-line errors.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pipelines.index.errors import CollectionGone, MilvusUnavailable
from pipelines.index.lite_server import folder_locked, is_remote, resolve_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

# pymilvus pings an idle connection every 10 s; gRPC servers with default settings (Milvus Lite) answer
# that with GOAWAY "too many pings" after a few minutes of idling. Ping only while calls are running.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 60_000, "grpc.keepalive_permit_without_calls": False}


class _DropUnimplemented(logging.Filter):
    """Milvus Lite answers pymilvus's AllocTimestamp with UNIMPLEMENTED (harmless: pymilvus falls back to
    client time), and grpc logs that as an ERROR with a traceback on every write. Only that is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


# Milvus Lite folders opened in this process, with how many TrackIndex objects use each: pymilvus keeps
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
    from pymilvus.exceptions import ConnectionConfigException, ConnectionNotExistException, MilvusException

    # "should create connection first": pymilvus lost its connection object while a call was under way
    if isinstance(exc, ConnectionConfigException | ConnectionNotExistException):
        return True
    if isinstance(exc, MilvusException):
        return exc.code == 2 or "unavailable" in str(exc).lower()  # 2: connection failed
    import grpc

    return isinstance(exc, grpc.RpcError)


def _is_collection_gone(exc: BaseException) -> bool:
    """Whether pymilvus reports that the collection asked for does not exist: by its exception class or
    the server's error code (Milvus Lite and a server both answer ``COLLECTION_NOT_FOUND``), never by text."""
    from pymilvus.exceptions import CollectionNotExistException, ErrorCode, MilvusException

    if isinstance(exc, CollectionNotExistException):
        return True
    return isinstance(exc, MilvusException) and exc.code == ErrorCode.COLLECTION_NOT_FOUND


def _reason(exc: BaseException) -> str:
    """One short line saying why a connection failed (gRPC and pymilvus errors are multi-line)."""
    cause = exc.__cause__ or exc
    details = getattr(cause, "details", None)
    text = details() if callable(details) else getattr(cause, "message", None) or str(cause)
    return " ".join(str(text).split())[:200]


class MilvusConnection:
    """A pymilvus client for ``uri``, created on first use and recreated after a lost connection."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        self.uri = uri
        self.timeout_s = timeout_s
        self._client: Any = None
        self._local = ""  # the Milvus Lite folder this connection opened in-process, if any
        self._loaded: set[str] = set()  # collections known to be loaded on the current connection
        self._lock = threading.Lock()

    def advice(self) -> str:
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
                        self._client = MilvusClient(target, timeout=self.timeout_s, grpc_options=GRPC_OPTIONS)
                    else:
                        self._client = _open_local(target, self.timeout_s)
                        self._local = target
                except MilvusUnavailable:
                    raise
                except Exception as exc:
                    if _is_connection_error(exc):
                        raise MilvusUnavailable(
                            f"Milvus is not reachable at {target} ({_reason(exc)}); {self.advice()}"
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
    def guard(self) -> Iterator[Any]:
        """Run client calls; a lost connection becomes :class:`MilvusUnavailable` and the next call reconnects,
        a collection Milvus does not have (dropped meanwhile) :class:`CollectionGone`."""
        client = self.client
        try:
            yield client
        except Exception as exc:
            if _is_collection_gone(exc):
                self._loaded.clear()  # whichever collection went, its "loaded" mark is stale
                raise CollectionGone(
                    f"a Milvus collection at {self.uri} does not exist ({_reason(exc)}); it was dropped meanwhile "
                    "or was never made",
                ) from exc
            if _is_connection_error(exc):
                self.close()
                raise MilvusUnavailable(
                    f"Milvus at {self.uri} stopped answering ({_reason(exc)}); {self.advice()}"
                ) from exc
            raise

    def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(client)`` with one retry on a fresh connection if the first attempt lost its connection.

        Idempotent calls only. A server may drop an idle connection (Milvus Lite's answers pymilvus's
        keepalive pings with GOAWAY after a few idle minutes); one reconnect hides that from callers,
        and a Milvus that is really down still fails fast.
        """
        try:
            with self.guard() as c:
                return fn(c)
        except MilvusUnavailable as exc:
            log.info("retrying once on a new connection: %s", exc)
        with self.guard() as c:
            return fn(c)

    def ensure_loaded(self, c: Any, name: str) -> None:
        """Load ``name`` for search/query if needed: Milvus Lite reopens collections released."""
        if name in self._loaded:
            return
        from pymilvus.client.types import LoadState

        if c.get_load_state(name).get("state") != LoadState.Loaded:
            log.info("loading collection %s", name)
            c.load_collection(name)
        self._loaded.add(name)
