"""Errors a caller caused, each with the HTTP status the API answers with (the CLI prints one line, exit 2).

Milvus being down or the catalogue not built yet are :class:`pipelines.index.milvus.CatalogueUnavailable`
(503): not the caller's fault, but something an operator can fix, and the message says how.
"""

from __future__ import annotations

from pipelines.errors import UserError
from pipelines.index.milvus import CatalogueUnavailable


class Unauthorized(UserError):
    status_code = 401


class Forbidden(UserError):
    status_code = 403


class NotFound(UserError):
    status_code = 404


class InvalidInput(UserError):
    status_code = 422


class TooLarge(UserError):
    status_code = 413


class NotAudio(UserError):
    status_code = 415


def status_of(exc: UserError) -> int:
    """The HTTP status for a user error: 503 for an unavailable catalogue, the class's own code otherwise."""
    if isinstance(exc, CatalogueUnavailable):
        return 503
    return int(getattr(exc, "status_code", 422))
