"""Load across a refresh and a rollback: latency and failures of the HTTP API while the live collection moves.

A synthetic library is indexed (collection A) on a ``milvus-lite server``; the API runs under uvicorn in its
own process on loopback; ``--clients`` threads send ``GET /tracks/{id}/similar?k=5`` back to back. Phases:
before (``--phase-s``), during a refresh to collection B (another process), after it, during a rollback
to A, after it. Bounded by ``--max-requests`` and the phases' time. Any non-200, empty answer or
exception is a failed request.

Usage: ``.venv/bin/python bench/bench_refresh_load.py [--clients 4] [--phase-s 5]``; writes
bench/results/refresh_load.md (or ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from pipelines.catalogue.manifest import read_manifest  # noqa: E402
from pipelines.index.lite_server import LiteServer, free_port  # noqa: E402
from pipelines.index.milvus import TrackIndex  # noqa: E402
from pipelines.index.refresh import rollback  # noqa: E402
from pipelines.settings import PathSettings, Settings  # noqa: E402
from pipelines.synthetic import PARAMS_A, make_library, refresh  # noqa: E402

log = logging.getLogger("bench_refresh_load")
_SETTLE_S = 1.0

_REFRESH_B = """
import sys
from pipelines.settings import IndexSettings
from pipelines.index.milvus import TrackIndex
from pipelines.settings import PathSettings, Settings
from pipelines.synthetic import PARAMS_B, refresh
settings = Settings(paths=PathSettings(data_root=sys.argv[1], milvus_uri=sys.argv[2]))
print(refresh(settings, PARAMS_B, TrackIndex(sys.argv[2], IndexSettings(embed_batch_size=2))).collection)
"""

_SERVE = """
import sys, uvicorn
from pipelines.settings import PathSettings, Settings
from serving.api import create_app
from pipelines.settings import ServingSettings
settings = Settings(paths=PathSettings(data_root=sys.argv[1], milvus_uri=sys.argv[2]))
app = create_app(settings, ServingSettings(serving_alias_ttl_s=0.2))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


@dataclass
class Load:
    """Requests sent by the client threads: (start time, seconds, ok, collection)."""

    ids: list[str]
    base: str
    max_requests: int
    records: list[tuple[float, float, bool, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, worker: int) -> None:
        n = worker * 7919
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self.stop.is_set() and len(self.records) < self.max_requests:
                n += 1
                started = time.monotonic()
                ok, collection = False, ""
                try:
                    res = http.get(f"/tracks/{self.ids[n % len(self.ids)]}/similar", params={"k": 5})
                    body = res.json()
                    ok = res.status_code == 200 and len(body["results"]) == 5
                    collection = body.get("collection", "")
                    if not ok:
                        self.errors.append(f"{res.status_code} {str(body)[:200]}")
                except Exception as exc:  # a failed request is a result here, not a crash
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                with self.lock:
                    self.records.append((started, time.monotonic() - started, ok, collection))


def _phase_rows(load: Load, marks: list[tuple[str, float, float]]) -> list[dict]:
    rows = []
    for name, start, end in marks:
        mine = [r for r in load.records if start <= r[0] < end]
        lat = np.array([r[1] for r in mine]) * 1000.0
        rows.append(
            {
                "phase": name,
                "seconds": end - start,
                "requests": len(mine),
                "failed": sum(1 for r in mine if not r[2]),
                "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
                "collections": sorted({r[3] for r in mine if r[3]}),
            }
        )
    return rows


def run(clients: int, phase_s: float, max_requests: int, work: Path) -> tuple[list[dict], dict]:
    settings = make_library(work)
    server = LiteServer(work / "served.db")
    server.start()
    api: subprocess.Popen[bytes] | None = None
    try:
        settings = Settings(paths=PathSettings(data_root=settings.paths.data_root, milvus_uri=server.uri))
        index = TrackIndex(server.uri)
        a = refresh(settings, PARAMS_A, index).collection
        ids = list(read_manifest(settings.manifest_path)["track_id"])
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-c", _SERVE, str(settings.paths.data_root), server.uri, str(port)]
        api = subprocess.Popen(cmd, env=env, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)

        load = Load(ids, base, max_requests)
        threads = [threading.Thread(target=load.client, args=(w,)) for w in range(clients)]
        for t in threads:
            t.start()
        marks: list[tuple[str, float, float]] = []

        def phase(name: str, action: object = None) -> object:
            """A quiet phase lasts ``phase_s``; an action's phase lasts while it runs plus the alias cache's TTL
            (0.2 s) and a margin, 1 s in all, so the switch itself falls inside it."""
            start = time.monotonic()
            out = action() if callable(action) else time.sleep(phase_s)
            if callable(action):
                time.sleep(_SETTLE_S)
            marks.append((name, start, time.monotonic()))
            return out

        phase("before")
        refresh_cmd = [sys.executable, "-c", _REFRESH_B, str(settings.paths.data_root), server.uri]
        done = phase(
            "during refresh",
            lambda: subprocess.run(refresh_cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True),
        )
        b = done.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        phase("after refresh")
        phase("during rollback", lambda: rollback(index))
        phase("after rollback")
        load.stop.set()
        for t in threads:
            t.join(60)
        index.close()
        info = {"a": a, "b": b, "tracks": len(ids), "errors": load.errors[:5], "total": len(load.records)}
        return _phase_rows(load, marks), info
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        server.stop()


def markdown(rows: list[dict], info: dict, clients: int, phase_s: float) -> str:
    lines = [
        "# Load across a refresh and a rollback",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu_model()}, {os.cpu_count()} cores (shared with other "
        "work), Python " + sys.version.split()[0] + ".",
        f"`bench/bench_refresh_load.py --clients {clients} --phase-s {phase_s:g}`: {info['tracks']} tracks, "
        f"`milvus-lite server`, the API under uvicorn in its own process, {clients} client threads sending "
        "`GET /tracks/{id}/similar?k=5` back to back over loopback. Refresh: collection "
        f"`{info['a']}` -> `{info['b']}` (another process); rollback back to `{info['a']}`. A during phase is the "
        f"action plus {_SETTLE_S:g} s (the API caches the alias for 0.2 s), so the switch falls inside it.",
        "",
        "| phase | seconds | requests | failed | p50 ms | p99 ms | collections answering |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['seconds']:.1f} | {r['requests']} | {r['failed']} | {r['p50']:.1f} | "
            f"{r['p99']:.1f} | {', '.join(r['collections'])} |"
        )
    failed = sum(r["failed"] for r in rows)
    lines += ["", f"Total: {info['total']} requests, {failed} failed."]
    if info["errors"]:
        lines += ["", "First errors: " + "; ".join(info["errors"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "refresh_load.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="refresh-load-") as tmp:
        rows, info = run(args.clients, args.phase_s, args.max_requests, Path(tmp))
    text = markdown(rows, info, args.clients, args.phase_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log.info("wrote %s\n%s", args.out, text)
    if any(r["failed"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
