"""Serving keeps answering while a refresh (another process) and a rollback change the live collection."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import LiteServer, free_port
from pipelines.index.milvus import CatalogueIndex
from pipelines.index.refresh import rollback
from pipelines.settings import ServingSettings, Settings
from serving.api import create_app
from tests.pipelines.index.helpers import PARAMS_A, refresh

_REFRESH_B = """
import sys
from pipelines.settings import IndexSettings
from pipelines.index.milvus import CatalogueIndex
from pipelines.settings import Settings
from tests.pipelines.index.helpers import PARAMS_B, refresh
settings = Settings(data_root=sys.argv[1], milvus_uri=sys.argv[2])
print(refresh(settings, PARAMS_B, CatalogueIndex(sys.argv[2], IndexSettings(embed_batch_size=2))).collection)
"""


@contextmanager
def running_api(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in a thread; yields its base URL."""
    port = free_port()
    app = create_app(settings, ServingSettings(serving_alias_ttl_s=0.2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.integration
def test_queries_never_fail_or_come_back_empty_across_refresh_and_rollback(
    lib: Settings, lite_server: LiteServer
) -> None:
    settings = Settings(data_root=lib.data_root, milvus_uri=lite_server.uri)
    index = CatalogueIndex(lite_server.uri)
    a = refresh(settings, PARAMS_A, index).collection
    manifest = read_manifest(settings.manifest_path)
    ids = list(manifest["track_id"])
    upload = (lib.data_root.parent / "music" / "noise" / "noise_2.wav").read_bytes()

    seen: list[tuple[str, str]] = []  # (kind, collection) of every answer, in order
    problems: list[str] = []
    stop = threading.Event()

    def client(base: str, worker: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            n = worker
            while not stop.is_set():
                n += 1
                try:
                    if n % 3:
                        res = http.get(f"/tracks/{ids[n % len(ids)]}/similar", params={"k": 5})
                        want, kind = 5, "track"
                    else:
                        res = http.post("/similar", params={"k": 3}, content=upload)
                        want, kind = 3, "upload"
                    body = res.json()
                    if res.status_code != 200 or len(body["results"]) != want:
                        problems.append(f"{kind}: {res.status_code} {body}")
                        continue
                    if kind == "upload" and body["results"][0]["style"] != "noise":
                        problems.append(f"upload answered {body['results'][0]} in {body['collection']}")
                    seen.append((kind, body["collection"]))
                except Exception as exc:
                    problems.append(f"{kind}: {type(exc).__name__}: {exc}")

    def wait_for(collection: str) -> None:
        deadline = time.monotonic() + 20
        start = len(seen)
        while not any(c == collection for _, c in seen[start:]):
            assert time.monotonic() < deadline, f"never served {collection}"
            time.sleep(0.1)

    with running_api(settings) as base:
        workers = [threading.Thread(target=client, args=(base, w)) for w in range(3)]
        for w in workers:
            w.start()
        try:
            wait_for(a)
            cmd = [sys.executable, "-c", _REFRESH_B, str(settings.data_root), lite_server.uri]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
            assert proc.returncode == 0, proc.stderr[-3000:]
            b = proc.stdout.strip().splitlines()[-1]
            wait_for(b)
            assert rollback(index) == (b, a)
            wait_for(a)
        finally:
            stop.set()
            for w in workers:
                w.join(30)
    index.close()

    assert problems == []
    kinds = {kind for kind, _ in seen}
    assert kinds == {"track", "upload"} and len(seen) > 30
    order = [c for i, (_, c) in enumerate(seen) if i == 0 or c != seen[i - 1][1]]
    assert order[0] == a and b in order and order[-1] == a
