"""Slow or idle clients cannot hold the server: a body-read deadline (408) and a keep-alive limit, over uvicorn."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serving.conftest import Served, live_server

pytestmark = pytest.mark.integration


@pytest.fixture
def live(served: Served) -> Iterator[int]:
    """The API on a real uvicorn with 1 s body and header deadlines and a 1 s keep-alive; yields the port."""
    yield from live_server(served, serving_upload_timeout_s=1.0, serving_keep_alive_s=1, serving_header_timeout_s=1.0)


def _trickle(port: int) -> tuple[float, bytes]:
    """An upload that announces 100 kB and sends one byte every 0.2 s; how long it was held, and the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /similar HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\nR")
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - started < 10:
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
                if b"\r\n\r\n" in answer and b"}" in answer:
                    break
            except TimeoutError:
                try:
                    sock.sendall(b"I")
                except OSError:
                    break
    return time.monotonic() - started, answer


def test_trickling_uploads_get_408_at_the_deadline_and_others_are_served(live: int) -> None:
    with ThreadPoolExecutor(20) as pool:
        slow = [pool.submit(_trickle, live) for _ in range(20)]
        time.sleep(0.3)
        fast = httpx.get(f"http://127.0.0.1:{live}/health", timeout=5)
        results = [f.result() for f in slow]
    assert fast.status_code == 200
    held = [s for s, _ in results]
    assert all(answer.startswith(b"HTTP/1.1 408") for _, answer in results), results[0][1][:200]
    assert all(b"did not arrive within 1 s" in answer for _, answer in results)
    assert max(held) < 3.0, held  # unbounded before: 50 such connections were held for 90 s
    print(f"\n20 trickling uploads: answered 408 after {min(held):.2f}..{max(held):.2f} s")


def test_idle_keep_alive_connections_are_closed(live: int) -> None:
    with socket.create_connection(("127.0.0.1", live), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(1) == b""  # the server closes the idle connection
        assert time.monotonic() - started < 3


def _slow_head(port: int) -> float:
    """A request head sent one byte every 0.2 s, never finished; how long until the server closes it."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        while time.monotonic() - started < 15:
            try:
                if sock.recv(4096) == b"":
                    break
            except TimeoutError:
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
            except OSError:
                break
    return time.monotonic() - started


def test_slow_request_headers_are_cut_at_the_deadline_and_others_are_served(live: int) -> None:
    with ThreadPoolExecutor(50) as pool:
        slow = [pool.submit(_slow_head, live) for _ in range(50)]
        time.sleep(0.3)
        fast = httpx.get(f"http://127.0.0.1:{live}/health", timeout=5)
        held = [f.result() for f in slow]
    assert fast.status_code == 200
    assert max(held) < 3.0, held  # unbounded before: 500 such connections were all open after 60 s
    print(f"\n50 slow-header connections closed after {min(held):.2f}..{max(held):.2f} s")
