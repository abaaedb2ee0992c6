"""uvicorn's HTTP protocol with a deadline on request headers, so slow-header clients cannot hold sockets.

uvicorn bounds idle keep-alive connections but not a request whose head trickles in a byte at a time
(slowloris): such connections stay open for as long as the client likes. Here a timer starts when a
connection opens or a new request begins, and closes the connection if the request's headers are not
complete within ``MUSICREC_SERVING_HEADER_TIMEOUT_S``. Bodies have their own deadline (serving.limits).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_timeout_s: float | None = None  # set by serving.cli_serve.server_options; worker processes read settings


def set_header_timeout(seconds: float) -> None:
    global _timeout_s
    _timeout_s = seconds


def header_timeout() -> float:
    if _timeout_s is None:
        from pipelines.settings import ServingSettings

        set_header_timeout(ServingSettings().serving_header_timeout_s)
    assert _timeout_s is not None
    return _timeout_s


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol, closing connections whose request headers do not arrive in time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self.head_timeouts = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(header_timeout(), self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.debug("closing %s: request headers not complete within %g s", self.client, header_timeout())
            self.transport.close()
