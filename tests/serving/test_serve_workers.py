"""`musicrec serve --workers 2` as a user runs it: one Milvus Lite server, two workers, metrics summed over both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import endpoint_file, free_port
from pipelines.settings import Settings
from tests.pipelines.index.helpers import PARAMS_A, refresh

SIMILAR = "/tracks/{track_id}/similar"


def _get(url: str, **kw: object) -> httpx.Response:
    """One request on its own connection, so that the kernel may hand it to either worker."""
    with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
        return client.get(url, **kw)  # type: ignore[arg-type]


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> dict[int, int]:
    """Poll /readyz until 200; returns how many answers of each status it got (they are counted too)."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            status = _get(f"{base}/readyz").status_code
        except httpx.TransportError:
            time.sleep(0.3)
            continue
        seen[status] = seen.get(status, 0) + 1
        if status == 200:
            return seen
        time.sleep(0.3)


def _requests(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "musicrec_http_requests_total"
    }


@pytest.mark.integration
def test_two_workers_share_one_milvus_and_report_summed_metrics(lib: Settings, tmp_path: Path) -> None:
    refresh(lib, PARAMS_A)
    tracks = list(read_manifest(lib.manifest_path)["track_id"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(lib.data_root), "MUSICREC_MILVUS_URI": lib.milvus_uri}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `serve` makes its own folder for the workers' metrics ...
    env["TMPDIR"] = str(tmp_path / "tmp")  # ... here, and removes it when it stops
    (tmp_path / "tmp").mkdir()
    cmd = [sys.executable, "-c", "from serving.cli_serve import main; main()", "serve", "--workers", "2"]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        readyz = _wait_ready(proc, base, log)
        children = psutil.Process(proc.pid).children(recursive=True)
        files = list((tmp_path / "tmp").glob("musicrec-metrics-*/*.db"))  # one set per worker process
        assert len({f.stem.rpartition("_")[2] for f in files}) == 2

        pids: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(pids) < 2 or sum(pids.values()) < 10:  # until both workers have answered
            assert time.monotonic() < deadline, f"one worker answered every request: {pids}"
            pid = _get(f"{base}/livez").json()["pid"]
            pids[pid] = pids.get(pid, 0) + 1
        assert set(pids) <= {c.pid for c in children}

        for track in tracks[:6]:
            res = _get(f"{base}/tracks/{track}/similar", params={"k": 3})
            assert res.status_code == 200 and len(res.json()["results"]) == 3
        missing = _get(f"{base}/tracks/no.such/similar", headers={"X-Request-ID": "two-workers-404"})
        assert missing.status_code == 404 and missing.headers["x-request-id"] == "two-workers-404"

        # whichever worker answers the scrape, the counts are the sums over both workers
        for _ in range(4):
            counts = _requests(_get(f"{base}/metrics").text)
            assert counts[("/livez", "GET", "200")] == sum(pids.values())
            assert counts[(SIMILAR, "GET", "200")] == 6 and counts[(SIMILAR, "GET", "404")] == 1
            assert {s: counts[("/readyz", "GET", str(s))] for s in readyz} == readyz
        metrics = _get(f"{base}/metrics").text
        assert f'musicrec_index_tracks{{alias="tracks",collection="tracks__raw__{PARAMS_A.version}"}} 15.0' in metrics
        assert 'model_version="raw"' in metrics
        assert _get(f"{base}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)  # what a service manager sends
        proc.wait(60)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left behind: {alive}"
    assert len(children) >= 3  # two workers and the milvus-lite server, at least
    assert not endpoint_file(Path(lib.milvus_uri)).exists()
    assert not list((tmp_path / "tmp").glob("musicrec-metrics-*"))

    text = log.read_text()
    assert "with 2 workers" in text
    access = [line for line in text.splitlines() if "request_id=two-workers-404" in line]
    assert len(access) == 1 and f"musicrec.access: GET {SIMILAR} 404 " in access[0], text


def test_workers_must_be_at_least_one(lib: Settings) -> None:
    cmd = [sys.executable, "-c", "from serving.cli_serve import main; main()", "serve", "--workers", "0"]
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(lib.data_root), "MUSICREC_MILVUS_URI": lib.milvus_uri}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "--workers" in out.stderr and not endpoint_file(Path(lib.milvus_uri)).exists()
