"""Bodies are bounded before the app reads them: the API key first, then size (413) and time (408).

Over a real uvicorn and raw sockets, since what matters is what the server does before the body is sent.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from pipelines.settings import ServingSettings
from serving.api import create_app
from serving.service import Recommender
from tests.serving.conftest import Served, live_server

pytestmark = pytest.mark.integration

KEY = "k3y-for-tests"


@pytest.fixture
def keyed(served: Served) -> Iterator[int]:
    yield from live_server(served, serving_api_key=SecretStr(KEY))


@pytest.fixture
def open_server(served: Served) -> Iterator[int]:
    yield from live_server(served, serving_max_body_bytes=64 * 1024)


def _answer_to_headers(port: int, head: bytes, wait_s: float = 5.0) -> tuple[int, bytes, float]:
    """Send only a request head (no body), and read what the server answers; (status, raw, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head)
        raw = b""
        try:
            while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
        except TimeoutError:
            pass
    took = time.monotonic() - started
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
    return status, raw, took


def test_the_key_is_checked_before_the_body_is_read(keyed: int) -> None:
    head = b"POST /playlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300000000\r\n\r\n"
    status, raw, took = _answer_to_headers(keyed, head)
    assert status == 401 and b"X-API-Key" in raw and took < 3, (raw[:300], took)
    wrong = head.replace(b"Content-Type", b"X-API-Key: nope\r\nContent-Type")
    assert _answer_to_headers(keyed, wrong)[0] == 403


def test_a_declared_body_over_the_limit_is_refused_at_once(open_server: int) -> None:
    head = b"POST /playlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300000000\r\n\r\n"
    status, raw, took = _answer_to_headers(open_server, head)
    assert status == 413 and b"limit" in raw and took < 3, (raw[:300], took)


def test_a_chunked_body_is_counted_as_it_arrives(open_server: int) -> None:
    chunk = b'{"seeds": [' + b'"x",' * 40000  # 160 kB of JSON, past the 64 kB limit, with no length declared
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
    got = httpx.post(
        f"http://127.0.0.1:{open_server}/playlist",
        content=iter([body[:70000], body[70000:]]),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        timeout=10,
    )
    assert got.status_code == 413 and "limit" in got.json()["detail"]


def test_a_body_that_never_arrives_gets_408(open_server: int) -> None:
    head = b"POST /playlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    head += b'{"seeds":'  # 9 bytes of the 60,000 announced
    status, raw, took = _answer_to_headers(open_server, head)
    assert status == 408 and took < 4, (raw[:300], took)


def test_small_bodies_and_bodiless_requests_still_work(open_server: int, served: Served) -> None:
    base = f"http://127.0.0.1:{open_server}"
    track = sorted(served.recommender.library().index)[0]
    got = httpx.post(f"{base}/playlist", json={"seeds": [track], "length": 3}, timeout=30)
    assert got.status_code == 200 and len(got.json()["tracks"]) >= 3
    assert httpx.get(f"{base}/tracks/{quote(track, safe='')}/similar", params={"k": 2}, timeout=30).status_code == 200


def test_an_unknown_id_is_not_echoed_in_full(open_server: int) -> None:
    huge = "z" * 60_000
    got = httpx.get(f"http://127.0.0.1:{open_server}/tracks/{huge}/similar", timeout=30)
    assert got.status_code == 404
    assert len(got.content) < 500 and "60000 characters" in got.json()["detail"], got.content[:300]


def test_the_openapi_document_states_the_limits_the_server_enforces(served: Served) -> None:
    from fastapi.testclient import TestClient

    serving = ServingSettings(serving_alias_ttl_s=0, serving_max_k=37, serving_max_playlist=55)
    app = create_app(served.settings, recommender=Recommender(served.index, served.settings, serving))
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
        similar = {p["name"]: p for p in doc["paths"]["/tracks/{track_id}/similar"]["get"]["parameters"]}
        search = {p["name"]: p for p in doc["paths"]["/library/search"]["get"]["parameters"]}
        assert similar["k"]["schema"]["maximum"] == 37 and search["limit"]["schema"]["maximum"] == 37
        assert doc["components"]["schemas"]["PlaylistRequest"]["properties"]["length"]["maximum"] == 55
        track = sorted(served.recommender.library().index)[0]
        assert client.get(f"/tracks/{quote(track, safe='')}/similar", params={"k": 37}).status_code == 200
        assert client.get(f"/tracks/{quote(track, safe='')}/similar", params={"k": 38}).status_code == 422
