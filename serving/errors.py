"""Errors a caller caused, each with the HTTP status the API answers with (the CLI prints one line, exit 2).

Milvus being down or the catalogue not built yet are :class:`pipelines.index.milvus.CatalogueUnavailable`
(503): not the caller's fault, but something an operator can fix, and the message says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.errors import UserError, one_line
from pipelines.index.errors import CatalogueUnavailable


class Unauthorized(UserError):
    status_code = 401


class Forbidden(UserError):
    status_code = 403


class RequestTimeout(UserError):
    status_code = 408


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


def validation_detail(errors: Sequence[Any]) -> str:
    """FastAPI's list of validation errors as the one-line ``detail`` string the OpenAPI schema documents."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return one_line("; ".join(parts) or "invalid request")[:2000]
