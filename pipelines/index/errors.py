"""The index's errors: what serving turns into HTTP 503, and a refresh that failed verification."""

from __future__ import annotations

from pipelines.errors import Unavailable


class IndexUnavailable(Unavailable):
    """Serving cannot answer right now (HTTP 503); the message says what to do."""


class MilvusUnavailable(IndexUnavailable):
    """Milvus does not answer, or its Lite data folder is held by another process."""


class IndexNotBuilt(IndexUnavailable):
    """No collection behind the alias yet."""


class CollectionGone(IndexUnavailable):
    """Milvus says the collection asked for does not exist: a refresh or prune dropped it meanwhile.

    Raised by :class:`pipelines.index.connection.MilvusConnection` from pymilvus's own classification
    (``CollectionNotExistException`` or error code ``COLLECTION_NOT_FOUND``), so callers can look the alias up
    again instead of matching the message text.
    """

    def __init__(self, message: str, collection: str | None = None) -> None:
        super().__init__(message)
        self.collection = collection


class RefreshFailed(RuntimeError):
    """A new collection failed verification; the alias was not moved."""
