"""Query benchmark at library scale: Lite as it was, the embedded default with its in-process copy, the
Milvus server, and an exact numpy scan of the same vectors, side by side in one run.

For each catalogue size (synthetic 128-d, 64-cluster Gaussian mixture, as in bench_serving.py):
  - exact numpy: one query's scan of the whole matrix (p50/p99), and 16 threads scanning at once;
  - each backend: build the collection, recall@10 of its direct search against the exact scan (200 held-out
    queries), then the musicrec API (its own uvicorn process) over loopback HTTP:
    GET /tracks/{id}/similar?k=10 one request at a time (p50/p99), then 16 clients at once (requests/s),
    plain and with filters (style; max_per_source=2); with the copy on and off;
  - memory: the API process's resident set after warm-up, and the copy's own estimate.

At sizes where loading Milvus would take too long (``--milvus-max``), only numpy and the copy's search
(built from the same arrays, no HTTP) are measured; the report says so.

Usage: nice -n 5 .venv/bin/python bench/bench_query.py [--sizes 10000 100000 1000000]
Writes bench/results/query.md and query.json.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_serving import (  # noqa: E402
    BACKEND_PIDS,
    Catalogue,
    api,
    lite_backend,
    load,
    milvus_backend,
    percentiles,
    synthetic,
    write_results,
)
from bench.machine import cpu_model  # noqa: E402
from pipelines.index.metadata import CollectionMeta  # noqa: E402
from pipelines.index.milvus import TrackIndex  # noqa: E402
from serving.vectors import Snapshot, single_threaded_blas  # noqa: E402

log = logging.getLogger("bench")
K = 10
CLIENTS = 16
VARIANTS = ("plain", "style", "source cap")


def sha_of(i: int) -> str:
    return hashlib.sha256(f"track{i}".encode()).hexdigest()


# ---- exact numpy ------------------------------------------------------------------------------------


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = []
    for i in range(0, len(queries), 64):
        sims = queries[i : i + 64] @ base.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(top, order, 1))
    return np.concatenate(out)


def scan_one(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    sims = base @ q
    top = np.argpartition(-sims, K)[:K]
    return top[np.argsort(-sims[top])]


def threads_qps(search: Callable[[int], object], n: int, seconds: float) -> float:
    """``CLIENTS`` threads calling ``search`` on query numbers ``0..n`` in turn for ``seconds``: calls per second."""
    done = [0] * CLIENTS
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        j = w
        while time.monotonic() < stop:
            search(j % n)
            j += CLIENTS
            done[w] += 1

    t = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(done) / (time.perf_counter() - t)


def numpy_row(cat: Catalogue, seconds: float) -> dict[str, Any]:
    base, qs = cat.vectors, cat.queries
    for q in qs[:5]:
        scan_one(base, q)
    times = []
    for q in qs:
        t = time.perf_counter()
        scan_one(base, q)
        times.append((time.perf_counter() - t) * 1000)
    p50, p99 = percentiles(times)
    qps = threads_qps(lambda i: scan_one(base, qs[i]), len(qs), seconds)
    return {"p50_ms": p50, "p99_ms": p99, "recall": 1.0, "qps16": qps, "memory_mb": base.nbytes / 1e6}


def copy_direct_row(cat: Catalogue, truth: np.ndarray, seconds: float) -> dict[str, Any]:
    """The copy's search alone (no Milvus, no HTTP), built from the same arrays."""
    n = len(cat.ids)
    texts = {
        "style": cat.styles,
        "source": [f"source{j % 50}" for j in range(n)],
        "artist": [f"artist{j % 500}" for j in range(n)],
        "album": [""] * n,
        "title": [f"track {j}" for j in range(n)],
        "sha256": [sha_of(j) for j in range(n)],
    }
    snap = Snapshot(("bench", "", ""), list(cat.ids), np.array(cat.vectors, dtype=np.float32), texts)
    times = []
    found = []
    for q in cat.queries:
        t = time.perf_counter()
        found.append(snap.search(q[None, :], K)[0])
        times.append((time.perf_counter() - t) * 1000)
    p50, p99 = percentiles(times)
    position = snap.position
    recall = np.mean(
        [len({position[h.track_id] for h in hits} & set(truth[i].tolist())) / K for i, hits in enumerate(found)]
    )
    qps = threads_qps(lambda i: snap.search(cat.queries[i][None, :], K), len(cat.queries), seconds)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "recall": float(recall),
        "qps16": qps,
        "memory_mb": snap.nbytes() / 1e6,
    }


# ---- Milvus -----------------------------------------------------------------------------------------


def build(uri: str, cat: Catalogue, name: str) -> tuple[TrackIndex, CollectionMeta, float]:
    """An HNSW collection of ``cat`` (sha256 as ``copy_direct_row`` gives it), indexed, loaded and served."""
    index, _, built = load(uri, cat, "HNSW", name, sha=sha_of)
    start = time.perf_counter()
    index.switch_alias(name)
    return index, index.describe(name), built + time.perf_counter() - start


def direct_recall(index: TrackIndex, meta: CollectionMeta, cat: Catalogue, truth: np.ndarray) -> dict[str, float]:
    position = {t: i for i, t in enumerate(cat.ids)}
    times, recall = [], []
    index.search(meta, cat.queries[:1], K, fields=("track_id",))  # the serving read (the count was FRESH)
    for i, q in enumerate(cat.queries):
        t = time.perf_counter()
        hits = index.search(meta, q[None, :], K, fields=("track_id",))[0]
        times.append((time.perf_counter() - t) * 1000)
        recall.append(len({position[h.track_id] for h in hits} & set(truth[i].tolist())) / K)
    p50, p99 = percentiles(times)
    return {"direct_p50_ms": p50, "direct_p99_ms": p99, "recall": float(np.mean(recall))}


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MB."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            continue
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """The resident memory of a process tree, sampled every 0.5 s in a thread: the peak and the latest reading."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = self.last = rss_mb(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.5):
            self.last = rss_mb(self.pid)
            self.peak = max(self.peak, self.last)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def load_http(host: str, port: int, paths: list[str], seconds: float, pid: int, requests: int = 400) -> dict[str, Any]:
    """One client at a time (p50/p99), then 16 clients with keep-alive connections (requests/s).

    Also the API process's CPU time per request under the 16 clients: on a machine shared with other work
    that, not the wall clock, says what the API itself costs (2 idle cores serve about 2000 / it per second
    at best, less where the GIL serialises the Python part).
    """

    def one(conn: http.client.HTTPConnection, path: str) -> float:
        t = time.perf_counter()
        conn.request("GET", path)
        res = conn.getresponse()
        body = res.read()
        ms = (time.perf_counter() - t) * 1000
        if res.status != 200:
            raise RuntimeError(f"bad answer {res.status}: {body[:200]!r}")
        return ms

    conn = http.client.HTTPConnection(host, port, timeout=60)
    for p in paths[:30]:
        one(conn, p)
    seq = [one(conn, paths[(i * 7919) % len(paths)]) for i in range(requests)]
    conn.close()
    p50, p99 = percentiles(seq)
    samples: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        local = []
        c = http.client.HTTPConnection(host, port, timeout=60)
        n = w * 104729
        while time.monotonic() < stop:
            n += 1
            local.append(one(c, paths[(n * 31) % len(paths)]))
        c.close()
        with lock:
            samples.extend(local)

    t = time.perf_counter()
    cpu0 = cpu_s(pid)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cpu = cpu_s(pid) - cpu0
    c50, c99 = percentiles(samples)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_ms_per_request": 1000 * cpu / max(1, len(samples)),
        "qps16": len(samples) / (time.perf_counter() - t),
        "c16_p50_ms": c50,
        "c16_p99_ms": c99,
    }


def api_rows(uri: str, workdir: Path, cat: Catalogue, args: argparse.Namespace, copy: bool) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    ids = [cat.ids[i] for i in rng.integers(0, len(cat.ids), 2000)]
    variants = {
        "plain": [f"/tracks/{t}/similar?k={K}" for t in ids],
        "style": [f"/tracks/{t}/similar?k={K}&style={cat.styles[0]}" for t in ids],
        "source cap": [f"/tracks/{t}/similar?k={K}&max_per_source=2" for t in ids],
    }
    variants = {v: paths for v, paths in variants.items() if v in args.variants}
    out: dict[str, Any] = {}
    start = time.perf_counter()
    # search batching as the API's default (on)
    settings = {"MUSICREC_SERVING_VECTOR_COPY": str(copy).lower(), "MUSICREC_SERVING_ALIAS_TTL_S": "1"}
    with api(uri, workdir, True, settings, start_timeout=600) as server:
        out["start_s"] = time.perf_counter() - start
        for name, paths in variants.items():
            out[name] = load_http(server.host, server.port, paths, args.seconds, server.proc.pid, args.requests)
            log.info("  %s: %s", name, out[name])
        out["api_rss_mb"] = rss_mb(server.proc.pid)
        out["milvus_rss_mb"] = rss_mb(BACKEND_PIDS[uri]) if uri in BACKEND_PIDS else None
    return out


# ---- the run ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    single_threaded_blas()  # as the API does: see serving/vectors.py
    results: dict[str, Any] = {
        "load_average": os.getloadavg(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": {},
    }
    old = Path(args.out).with_suffix(".json")
    if args.merge and old.exists():  # earlier sizes and backends stay; what this run measures replaces them
        previous = json.loads(old.read_text())
        results["sizes"] = previous["sizes"]
        for row in results["sizes"].values():
            row.setdefault("date", previous["date"])
            row.setdefault("load_average", previous["load_average"])
    for n in args.sizes:
        cat = synthetic(n)
        cat.queries = cat.queries[:200]
        truth = exact_top(cat.vectors, cat.queries, K)
        row: dict[str, Any] = results["sizes"].get(str(n), {}) if args.merge else {}
        row.update(date=results["date"], load_average=os.getloadavg())
        row.update(numpy=numpy_row(cat, args.seconds), copy_direct=copy_direct_row(cat, truth, 3))
        log.info("%d numpy %s copy %s", n, row["numpy"], row["copy_direct"])
        if n <= args.milvus_max:
            backends = [("lite", lambda: lite_backend(workdir))] if "lite" in args.backends else []
            if args.milvus_server and "server" in args.backends:
                backends.append(("server", lambda: milvus_backend(args.milvus_server, workdir)))
            for backend, start in backends:
                with start() as uri:
                    milvus = PeakRss(BACKEND_PIDS[uri])
                    index, meta, built = build(uri, cat, f"tracks__bench_{n}")
                    entry: dict[str, Any] = row.get(backend, {}) if args.merge else {}
                    entry.update(build_s=built, milvus_rss_built_mb=milvus.last, milvus_rss_build_peak_mb=milvus.peak)
                    entry.update(direct_recall(index, meta, cat, truth))
                    for copy in args.copy:
                        log.info("%d %s copy=%s", n, backend, copy)
                        entry[f"api_copy_{copy}"] = api_rows(uri, workdir, cat, args, copy)
                    index.close()
                    milvus.stop()
                    entry["milvus_rss_peak_mb"] = milvus.peak
                    row[backend] = entry
                    log.info("%d %s: %s", n, backend, json.dumps(entry))
                results["sizes"][str(n)] = row
                (workdir / "partial.json").write_text(json.dumps(results, indent=1))
        results["sizes"][str(n)] = row
        (workdir / "partial.json").write_text(json.dumps(results, indent=1))
    return results


def _f(x: float | None, digits: int = 1) -> str:
    return "n/m" if x is None else f"{x:.{digits}f}"


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Query benchmark: Lite, the in-process copy, the Milvus server, exact numpy",
        "",
        f"`nice -n 5 .venv/bin/python bench/bench_query.py` on {results['machine']}, {results['date']} "
        "(the 2 cores are shared with other work: figures are indicative). Synthetic 128-d vectors (64-cluster "
        "Gaussian mixture), k=10, HNSW (M=16, efConstruction=200, ef=128) in Milvus. HTTP: "
        f"GET /tracks/{{id}}/similar?k=10 over loopback to one uvicorn process; {CLIENTS} clients with "
        f"keep-alive connections for {args.seconds:.0f} s. Load average at the start (other work on the machine): "
        f"{', '.join(f'{x:.1f}' for x in results['load_average'])} (each size's own run: see below). recall@10: "
        "direct searches of 200 held-out queries against the exact scan. **API MB**: the API process's resident "
        "set after its measurements (its in-process copy included when on); for the copy-only row, the copy's "
        "own estimate; for numpy, the matrix. **Milvus MB**: the resident set of Milvus's own process tree (Lite: "
        "the `milvus_lite` server process; server: `milvus-server` and its `milvus run standalone` child) at the "
        "same moment, holding the loaded collection and its HNSW index.",
        "",
        "| tracks | what | p50 ms | p99 ms | recall@10 | req/s, 16 clients | API MB | Milvus MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, row in results["sizes"].items():
        np_row, cp = row["numpy"], row["copy_direct"]
        for label, backend, copy in (
            ("Milvus Lite as it was (no copy), HTTP", "lite", False),
            ("embedded default: Lite + in-process copy, HTTP", "lite", True),
            ("Milvus 2.3.5 server (no copy), HTTP", "server", False),
            ("Milvus 2.3.5 server + in-process copy, HTTP", "server", True),
        ):
            h = row.get(backend, {}).get(f"api_copy_{copy}")
            if h is None or "plain" not in h:
                lines.append(f"| {int(n):,} | {label} | not measured | | | | | |")
                continue
            recall = 1.0 if copy else row[backend]["recall"]
            milvus = h.get("milvus_rss_mb")
            lines.append(
                f"| {int(n):,} | {label} | {_f(h['plain']['p50_ms'])} | {_f(h['plain']['p99_ms'])} | "
                f"{recall:.3f} | {h['plain']['qps16']:.0f} | {h['api_rss_mb']:.0f} | {_f(milvus, 0)} |"
            )
        lines.append(
            f"| {int(n):,} | in-process copy, search call only (no HTTP) | {_f(cp['p50_ms'], 2)} | "
            f"{_f(cp['p99_ms'], 2)} | {cp['recall']:.3f} | {cp['qps16']:.0f} | {cp['memory_mb']:.0f} | - |"
        )
        lines.append(
            f"| {int(n):,} | exact numpy scan (one query, no HTTP) | {_f(np_row['p50_ms'], 2)} | "
            f"{_f(np_row['p99_ms'], 2)} | 1.000 | {np_row['qps16']:.0f} | {np_row['memory_mb']:.0f} | - |"
        )
    lines += [
        "",
        "## Direct Milvus search (no HTTP) and ratio to the exact numpy scan",
        "",
        "| tracks | backend | build s | search p50 ms | p99 ms | recall@10 | vs numpy | Milvus MB built (peak) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, row in results["sizes"].items():
        base = row["numpy"]["p50_ms"]
        for backend, label in (("lite", "Milvus Lite (server mode)"), ("server", "Milvus 2.3.5 server")):
            if backend in row:
                b = row[backend]
                lines.append(
                    f"| {int(n):,} | {label} | {b['build_s']:.0f} | {b['direct_p50_ms']:.2f} | "
                    f"{b['direct_p99_ms']:.2f} | {b['recall']:.3f} | {b['direct_p50_ms'] / base:.1f}x | "
                    f"{_f(b.get('milvus_rss_built_mb'), 0)} ({_f(b.get('milvus_rss_build_peak_mb'), 0)}) |"
                )
        cp = row["copy_direct"]
        lines.append(
            f"| {int(n):,} | in-process copy | - | {cp['p50_ms']:.2f} | {cp['p99_ms']:.2f} | {cp['recall']:.3f} | "
            f"{cp['p50_ms'] / base:.1f}x | - |"
        )
    lines += [
        "",
        "## Filters through HTTP (p50 / p99 ms, req/s with 16 clients)",
        "",
        "| tracks | backend | copy | plain | style | max_per_source=2 | API CPU ms/request (plain) | API start s |",
        "| ---: | --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for n, row in results["sizes"].items():
        for backend in ("lite", "server"):
            if backend not in row:
                continue
            for copy in (False, True):
                h = row[backend].get(f"api_copy_{copy}")
                if h is None or "plain" not in h:
                    continue
                cells = " | ".join(
                    f"{h[v]['p50_ms']:.1f} / {h[v]['p99_ms']:.1f}, {h[v]['qps16']:.0f}/s" if v in h else "not measured"
                    for v in VARIANTS
                )
                cpu = h["plain"]["cpu_ms_per_request"]
                lines.append(
                    f"| {int(n):,} | {backend} | {'on' if copy else 'off'} | {cells} | {cpu:.2f} | {h['start_s']:.1f} |"
                )
    lines += [
        "",
        "Each size's run: "
        + "; ".join(
            f"{int(n):,}: {row.get('date', results['date'])}, load average "
            f"{', '.join(f'{x:.1f}' for x in row.get('load_average', results['load_average']))}"
            for n, row in results["sizes"].items()
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--milvus-max", type=int, default=100_000, help="largest size loaded into Milvus")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--requests", type=int, default=400, help="one-at-a-time requests per variant")
    parser.add_argument("--backends", nargs="+", choices=("lite", "server"), default=["lite", "server"])
    parser.add_argument(
        "--copy", nargs="+", type=lambda v: v == "on", default=[False, True], help="copy off, on, or both"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--merge", action="store_true", help="keep the other sizes and backends of query.json")
    parser.add_argument(
        "--milvus-server", default=shutil.which("milvus-server") or str(ROOT / ".venv/bin/milvus-server")
    )
    parser.add_argument("--workdir", default="/tmp/musicrec-bench-query")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "query"))
    args = parser.parse_args()
    if args.milvus_server and not Path(args.milvus_server).is_file():
        args.milvus_server = None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    results = run(args)
    print(write_results(Path(args.out), results, markdown(results, args)))


if __name__ == "__main__":
    main()
