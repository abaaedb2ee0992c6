"""Errors a caller caused, each with the HTTP status the API answers with (the CLI prints one line, exit 2).

Milvus being down, the index not built yet or MLflow unreachable are :class:`pipelines.errors.Unavailable`
(:class:`pipelines.index.errors.IndexUnavailable`, :class:`pipelines.registry.RegistryUnavailable`): 503,
not the caller's fault but something an operator can fix, and the message says how. :func:`status_of` is
the one place either family gets its HTTP status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.errors import Unavailable, UserError, one_line


class Unauthorized(UserError):
    status_code = 401


class Forbidden(UserError):
    status_code = 403


class RequestTimeout(UserError):
    status_code = 408


class NotFound(UserError):
    status_code = 404


class Conflict(UserError):
    status_code = 409


class InvalidInput(UserError):
    status_code = 422


class TooLarge(UserError):
    status_code = 413


class NotAudio(UserError):
    status_code = 415


class InsufficientStorage(UserError):
    """The server has no room for what the request needs to write (the upload spool is full)."""

    status_code = 507


SHOWN_CHARS = 80


def shown(value: object) -> str:
    """``value`` quoted for an error message, cut to :data:`SHOWN_CHARS` characters so a huge identifier
    is never echoed back in full (the length is given instead)."""
    text = str(value)
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


UNAVAILABLE_STATUS = 503
RETRY_AFTER_S = 30  # what a 503 tells clients to wait before asking again


def status_of(exc: UserError | Unavailable) -> int:
    """The HTTP status for an error: 503 for an outage, a user error's own code (422 if it has none)."""
    if isinstance(exc, Unavailable):
        return UNAVAILABLE_STATUS
    return int(getattr(exc, "status_code", 422))


def validation_detail(errors: Sequence[Any]) -> str:
    """FastAPI's list of validation errors as the one-line ``detail`` string the OpenAPI schema documents."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return one_line("; ".join(parts) or "invalid request")[:2000]
