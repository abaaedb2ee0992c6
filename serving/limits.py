"""Request bodies are bounded before the app sees them: size, arrival time, and the API key first.

A pure ASGI middleware in front of the routes. A request with a body to a key-protected server is refused
(401/403) before a byte of its body is read; a declared length over the route's limit is refused (413)
at once; a body is counted as it arrives (413 past the limit) and must arrive within the body deadline
(408). The upload route's limit is the upload limit; every other body (JSON) has the smaller JSON limit.
The Subsonic face (``/rest``) and the admin routes check their own credentials, but their bodies are
bounded the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from starlette.datastructures import Headers

from pipelines.errors import UserError
from pipelines.settings import ServingSettings
from serving.errors import status_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATHS = frozenset({"/similar"})
MULTIPART_ROOM = 64 * 1024  # multipart headers around an upload's bytes
OWN_AUTH = ("/rest/", "/admin/")  # faces that check their own credentials


def body_limit(path: str, serving: ServingSettings) -> int:
    """The most body bytes a request to ``path`` may send."""
    if path in UPLOAD_PATHS:
        return serving.serving_max_upload_bytes + MULTIPART_ROOM
    return serving.serving_max_body_bytes


class BodyGuard:
    """Bound every request body (see the module docstring); settings come from the app's recommender."""

    def __init__(self, app: ASGIApp, check_key: Callable[[ServingSettings, str | None], None]) -> None:
        self.app, self.check_key = app, check_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        recommender = getattr(getattr(scope.get("app"), "state", None), "recommender", None)
        if scope["type"] != "http" or recommender is None:
            await self.app(scope, receive, send)
            return
        serving: ServingSettings = recommender.serving
        headers = Headers(scope=scope)
        path: str = scope["path"]
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is not None and not declared.strip().isdigit():
            await _refuse(send, 400, "the Content-Length header is not a whole number of bytes")
            return
        if not chunked and (declared is None or int(declared) == 0):
            await self.app(scope, receive, send)
            return
        if not path.startswith(OWN_AUTH):
            try:
                self.check_key(serving, headers.get("x-api-key"))
            except UserError as exc:
                await _refuse(send, status_of(exc), str(exc))
                return
        limit = body_limit(path, serving)
        if declared is not None and int(declared) > limit:
            if path in UPLOAD_PATHS:
                detail = f"the upload has {int(declared)} bytes; the limit is {serving.serving_max_upload_bytes}"
            else:
                detail = f"the request body has {int(declared)} bytes; the limit here is {limit}"
            await _refuse(send, 413, detail)
            return
        await self.app(scope, _bounded(receive, limit, serving.serving_upload_timeout_s), send)


def _bounded(receive: Receive, limit: int, timeout_s: float) -> Receive:
    """``receive`` that counts body bytes (413 past ``limit``) and gives up at the body deadline (408)."""
    state = {"seen": 0, "deadline": 0.0}

    async def wrapped() -> Message:
        if not state["deadline"]:
            state["deadline"] = time.monotonic() + timeout_s
        remaining = state["deadline"] - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                message = await receive()
        except TimeoutError:
            detail = f"the request body did not arrive within {timeout_s:g} s ({state['seen']} bytes came)"
            raise HTTPException(408, detail) from None
        if message["type"] == "http.request":
            state["seen"] += len(message.get("body", b""))
            if state["seen"] > limit:
                raise HTTPException(413, f"the request body exceeds the limit of {limit} bytes here")
        return message

    return wrapped


async def _refuse(send: Send, status: int, detail: str) -> None:
    """Answer without reading the body, and close the connection (its unread body cannot be skipped)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
