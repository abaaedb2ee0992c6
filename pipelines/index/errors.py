"""The index's errors: what serving turns into HTTP 503, and a refresh that failed verification."""

from __future__ import annotations

from pipelines.errors import UserError


class CatalogueUnavailable(UserError):
    """Serving cannot answer right now (HTTP 503); the message says what to do."""


class MilvusUnavailable(CatalogueUnavailable):
    """Milvus does not answer, or its Lite data folder is held by another process."""


class CatalogueNotBuilt(CatalogueUnavailable):
    """No collection behind the alias yet."""


class RefreshFailed(RuntimeError):
    """A new collection failed verification; the alias was not moved."""
