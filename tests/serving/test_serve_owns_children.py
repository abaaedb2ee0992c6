"""`musicrec serve` owns the Milvus Lite server it starts: restarts it, stops it fast, never orphans it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import _read_endpoint, endpoint_file, free_port
from pipelines.settings import Settings
from tests.pipelines.index.helpers import PARAMS_A, refresh
from tests.serving.test_cli_serve import _MAIN, _env

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purposes
        return fh.read().split(") ")[-1][0] != "Z"


def _until(check: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"{what} did not happen within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


def _serve(lib: Settings, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "serve", "--port", str(port)], env=_env(lib), stdout=out, stderr=subprocess.STDOUT
    )

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    _until(healthy, 90, "serve answering /health")
    return proc, port


def test_serve_restarts_a_dead_server_stops_fast_and_its_server_dies_with_it(lib: Settings, tmp_path: Path) -> None:
    refresh(lib, PARAMS_A)
    folder = Path(lib.paths.milvus_uri)
    proc, port = _serve(lib, tmp_path / "serve.log")
    track = sorted(read_manifest(lib.manifest_path)["track_id"])[0]
    statuses: Counter[int] = Counter()
    stop_load = threading.Event()

    def load() -> None:  # queries all through the outage: each answered 200 or 503, never 500
        url = f"http://127.0.0.1:{port}/tracks/{quote(track, safe='')}/similar"
        while not stop_load.is_set():
            try:
                statuses[httpx.get(url, params={"k": 3}, timeout=10).status_code] += 1
            except httpx.TransportError:
                statuses[0] += 1

    loaders = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        for t in loaders:
            t.start()
        _until(lambda: statuses[200] >= 8, 30, "queries answered before the kill")
        first = _read_endpoint(folder)
        assert first is not None and first[2] == proc.pid  # the endpoint names its owner
        os.kill(first[1], signal.SIGKILL)  # the Lite server dies under serve
        restarted = _until(
            lambda: (
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
                and (_read_endpoint(folder) or first)[1] != first[1]
            ),
            30,
            "serve restarting its milvus-lite server",
        )
        second = _read_endpoint(folder)
        assert second is not None and _alive(second[1])
        after = statuses[200]
        _until(lambda: statuses[200] >= after + 8, 30, "queries answered after the restart")
        stop_load.set()
        for t in loaders:
            t.join(15)
        assert set(statuses) <= {200, 503}, f"answers during a Milvus outage: {dict(statuses)}"

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)  # a generous bound, not a speed goal: it must stop by itself
        except subprocess.TimeoutExpired:
            code = None
        stop_s = time.monotonic() - started
    finally:
        stop_load.set()
        if proc.poll() is None:
            proc.kill()
    assert code == 0, f"serve did not stop by itself on SIGINT (exit {code}, after {stop_s:.1f} s)"
    assert not _alive(second[1]) and not endpoint_file(folder).exists()
    print(f"\nmilvus-lite restart seen by /health after {restarted:.1f} s; graceful stop {stop_s:.2f} s")
    print(f"answers during the outage and after: {dict(statuses)}")


def test_sigkilled_serve_takes_its_server_along_and_a_stale_orphan_is_replaced(lib: Settings, tmp_path: Path) -> None:
    refresh(lib, PARAMS_A)
    folder = Path(lib.paths.milvus_uri)
    proc, _ = _serve(lib, tmp_path / "serve.log")
    server = _read_endpoint(folder)
    assert server is not None
    proc.kill()
    proc.wait()
    gone = _until(lambda: not _alive(server[1]), 5, "the server dying with its owner")

    # A server left by an owner that died without taking it along (an older musicrec, another platform).
    orphan_port = free_port()
    orphan = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(folder), "--port", str(orphan_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dead_owner = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    endpoint_file(folder).write_text(f"http://127.0.0.1:{orphan_port} {orphan.pid} {dead_owner.stdout.strip()}\n")
    time.sleep(2)  # let it take the folder
    proc, _ = _serve(lib, tmp_path / "serve2.log")
    try:
        assert orphan.wait(5) is not None  # stopped by the new serve
        now = _read_endpoint(folder)
        assert now is not None and now[1] != orphan.pid and now[2] == proc.pid
        assert "left running by a `musicrec serve` that died" in (tmp_path / "serve2.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        if orphan.poll() is None:
            orphan.kill()
    print(f"\nserver gone {gone:.2f} s after its serve was SIGKILLed")
