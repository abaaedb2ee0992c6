"""The Navidrome plugin's plugin.wasm under a real Extism host (PyPI ``extism``: wasmtime) against a live musicrec.

The session fixture builds the .ndp with ``make navidrome-plugin`` (make rebuilds only when a source is newer
than the wasm). Each case loads plugin.wasm with an Extism manifest like the one Navidrome builds: the
allowed hosts, the plugin config (musicrec_url, api_key) and a call time limit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipelines.index.lite_server import free_port
from tests.serving.conftest import Served, live_server, served

extism = pytest.importorskip("extism")

__all__ = ["served"]

ROOT = Path(__file__).resolve().parents[2]
NDP = ROOT / "integrations/navidrome/dist/musicrec.ndp"
KEY = "navidrome-test-key"
pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/cargo").exists() or not Path("/usr/lib/rustlib/wasm32-unknown-unknown").exists(),
    reason="Debian's cargo and libstd-rust-dev-wasm32 are missing: run `make wasm-deps`",
)


@pytest.fixture(scope="session")
def wasm() -> bytes:
    subprocess.run(["make", "-s", "navidrome-plugin"], cwd=ROOT, check=True, timeout=600)
    with zipfile.ZipFile(NDP) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "plugin.wasm"]
        manifest = json.loads(zf.read("manifest.json"))
        assert {"name", "author", "version"} <= manifest.keys()
        assert manifest["permissions"]["http"]["requiredHosts"]
        assert set(manifest["config"]["schema"]["properties"]) == {"musicrec_url", "api_key"}
        return zf.read("plugin.wasm")


@pytest.fixture(scope="module")
def port(served: Served) -> Iterator[int]:
    yield from live_server(served, serving_api_key=SecretStr(KEY))


def plugin(wasm: bytes, url: str, key: str | None = KEY, hosts: list[str] | None = None, timeout_ms: int = 8000) -> Any:
    config = {"musicrec_url": url} | ({"api_key": key} if key else {})
    manifest = {"wasm": [{"data": wasm}], "allowed_hosts": hosts or ["127.0.0.1"], "config": config}
    return extism.Plugin(manifest | {"timeout_ms": timeout_ms}, wasi=True)


def call(p: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(p.call(name, json.dumps(body)))


def failure(p: Any, name: str, body: dict[str, Any]) -> tuple[str, float]:
    t0 = time.monotonic()
    with pytest.raises(extism.Error) as err:
        p.call(name, json.dumps(body))
    return str(err.value), time.monotonic() - t0


LOW = {"id": "nd-low", "name": "low_tones 0", "artist": "low_tones-artist-0", "album": "low_tones-album-0"}
HIGH = {"id": "nd-high", "name": "high_tones 0", "artist": "high_tones-artist-0"}


def test_exports(wasm: bytes, port: int) -> None:
    p = plugin(wasm, f"http://127.0.0.1:{port}")
    for name in ("nd_get_sonic_similar_tracks", "nd_find_sonic_path", "nd_get_similar_songs_by_track"):
        assert p.function_exists(name)


def test_similar_tracks(wasm: bytes, port: int, served: Served) -> None:
    out = call(plugin(wasm, f"http://127.0.0.1:{port}"), "nd_get_sonic_similar_tracks", {"song": LOW, "count": 4})
    titles = set(served.recommender.library()["title"])
    songs = [m["song"] for m in out["matches"]]
    assert len(songs) == 4 and all(s["name"] in titles for s in songs)
    assert all(s["name"].startswith("low_tones") for s in songs[:2])  # low tones sound like low tones
    assert all(0 <= m["similarity"] <= 1 for m in out["matches"])
    assert songs[0]["artist"].startswith("low_tones-artist") and songs[0]["durationMs"] > 0


def test_path(wasm: bytes, port: int) -> None:
    body = {"startSong": LOW, "endSong": HIGH, "count": 6}
    out = call(plugin(wasm, f"http://127.0.0.1:{port}/"), "nd_find_sonic_path", body)
    songs = [m["song"] for m in out["matches"]]
    assert 2 <= len(songs) <= 6
    assert (songs[0]["id"], songs[0]["name"]) == ("nd-low", "low_tones 0")
    assert (songs[-1]["id"], songs[-1]["name"]) == ("nd-high", "high_tones 0")


def test_instant_mix(wasm: bytes, port: int) -> None:
    p = plugin(wasm, f"http://127.0.0.1:{port}")
    req = {"id": "nd-low", "name": "low_tones 0", "artist": "low_tones-artist-0", "count": 3}
    songs = call(p, "nd_get_similar_songs_by_track", req)["songs"]
    assert len(songs) == 3 and songs[0]["name"].startswith("low_tones")
    unknown = {"id": "x", "name": "No Such Song", "artist": "Nobody", "count": 3}
    assert call(p, "nd_get_similar_songs_by_track", unknown) == {"songs": []}  # "no data", not an error


def test_unknown_song(wasm: bytes, port: int) -> None:
    p = plugin(wasm, f"http://127.0.0.1:{port}")
    msg, _ = failure(
        p, "nd_get_sonic_similar_tracks", {"song": {"name": "No Such Song", "artist": "Nobody"}, "count": 3}
    )
    assert "unknown song" in msg and "No Such Song" in msg


def test_wrong_api_key(wasm: bytes, port: int) -> None:
    msg, _ = failure(plugin(wasm, f"http://127.0.0.1:{port}", key="nope"), "nd_get_sonic_similar_tracks", {"song": LOW})
    assert "refused the API key (HTTP 403)" in msg and "api_key" in msg


def test_bad_config(wasm: bytes) -> None:
    msg, _ = failure(plugin(wasm, ""), "nd_get_sonic_similar_tracks", {"song": LOW, "count": 1})
    assert "bad config: musicrec_url is not set" in msg
    msg, _ = failure(plugin(wasm, "localhost:8000"), "nd_get_sonic_similar_tracks", {"song": LOW, "count": 1})
    assert "is not an http:// or https:// URL" in msg


def test_musicrec_down_fails_fast(wasm: bytes) -> None:
    msg, took = failure(plugin(wasm, f"http://127.0.0.1:{free_port()}"), "nd_get_sonic_similar_tracks", {"song": LOW})
    assert "no answer from musicrec" in msg and took < 2


def test_host_not_allowed(wasm: bytes, port: int) -> None:
    p = plugin(wasm, f"http://127.0.0.1:{port}", hosts=["musicrec.example"])
    msg, _ = failure(p, "nd_get_sonic_similar_tracks", {"song": LOW, "count": 2})
    assert "requiredHosts" in msg


@pytest.fixture
def slow_port() -> Iterator[int]:
    """A server that holds each request for up to 20 s (until the test ends) before answering."""
    done = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            done.wait(20)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"matches": []}')

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    done.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_slow_musicrec_times_out(wasm: bytes, slow_port: int) -> None:
    p = plugin(wasm, f"http://127.0.0.1:{slow_port}", timeout_ms=3000)
    msg, took = failure(p, "nd_get_sonic_similar_tracks", {"song": LOW, "count": 2})
    assert took < 10 and "no answer from musicrec" in msg


def test_make_wasm_deps_is_idempotent() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make")
    out = subprocess.run(["make", "-s", "wasm-deps"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert "installing" not in out.stdout  # everything is already there
