"""Serving benchmark: Milvus Lite (server mode) vs a real Milvus server, through the musicrec HTTP API.

For each backend and catalogue (synthetic 128-d vectors at 10k and 100k tracks, and the real demo
catalogue's raw-MFCC vectors), it measures:
  - index build time and recall@10 of the served index against exact brute-force cosine;
  - one search call straight to Milvus (one vector; and 64 vectors in one call, per vector);
  - over loopback HTTP, GET /tracks/{id}/similar?k=10: p50/p99 of one request at a time, then
    throughput and p50/p99 with concurrent clients, with the API's search batching on and off;
  - at 100k tracks on each backend, HNSW vs IVF_FLAT vs FLAT (recall, one-search latency, build time).

Synthetic vectors are a mixture of 64 Gaussian clusters (embeddings of music cluster by style), so the
index faces a realistic neighbourhood structure rather than uniform noise, which is unrealistically hard.

Usage (the real Milvus server is the PyPI package ``milvus`` 2.3.5, kept out of the project venv):
    python3.11 -m venv /tmp/milvus-venv && /tmp/milvus-venv/bin/pip install milvus==2.3.5
    .venv/bin/python bench/bench_serving.py --milvus-server /tmp/milvus-venv/bin/milvus-server
Writes bench/results/serving.md and serving.json. Takes ~15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.features.params import FeatureParams  # noqa: E402
from pipelines.index.lite_server import LiteServer, free_port  # noqa: E402
from pipelines.index.metadata import CollectionMeta, now_iso  # noqa: E402
from pipelines.index.milvus import TrackIndex  # noqa: E402
from pipelines.model.embedder import l2_normalise  # noqa: E402
from pipelines.settings import IndexSettings  # noqa: E402

log = logging.getLogger("bench")
K = 10
NOTES = "<!-- notes: kept when the benchmark rewrites this file -->"


# ---- data -------------------------------------------------------------------------------------------


@dataclass
class Catalogue:
    name: str
    ids: list[str]
    vectors: np.ndarray  # L2-normalised
    styles: list[str]
    params: FeatureParams  # front-end params whose dim equals the vectors' (raw baseline: vector = features)
    queries: np.ndarray  # held-out query vectors for recall


def synthetic(n: int, dim: int = 128, clusters: int = 64, seed: int = 0) -> Catalogue:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    label = rng.integers(0, clusters, n + 200)
    vectors = centres[label] + 0.6 * rng.standard_normal((n + 200, dim)).astype(np.float32)
    vectors = l2_normalise(vectors)
    return Catalogue(
        name=f"synthetic {n // 1000}k",
        ids=[f"t{i:06d}" for i in range(n)],
        vectors=vectors[:n],
        styles=[f"style{c % 6}" for c in label[:n]],
        params=FeatureParams(n_frames=dim // 16, n_mfcc=16),
        queries=vectors[n:],
    )


def demo(workdir: Path) -> Catalogue | None:
    """The real demo corpus through the real front end (cached in the work folder)."""
    from pipelines.audio import AudioRejected
    from pipelines.catalogue.demo import fetch_demo
    from pipelines.catalogue.manifest import read_manifest
    from pipelines.features.frontend import track_vector
    from pipelines.settings import PathSettings, Settings

    params = FeatureParams()
    cache = workdir / f"demo-{params.version}.npz"
    if not cache.exists():
        if shutil.which("apt-get") is None:
            return None
        settings = Settings(paths=PathSettings(data_root=workdir / "demo-data"))
        fetch_demo(settings)
        m = read_manifest(settings.manifest_path)
        log.info("embedding %d demo tracks with the front end", len(m))
        kept, vecs = [], []
        for i, path in enumerate(m["path"]):
            try:
                vecs.append(track_vector(Path(path), params).vector)
                kept.append(i)
            except AudioRejected as exc:  # the feature store quarantines these too
                log.info("left out %s: %s", path, exc)
        m = m.iloc[kept]
        np.savez(cache, ids=m["track_id"].to_numpy(str), styles=m["style"].to_numpy(str), vectors=np.stack(vecs))
    data = np.load(cache)
    vectors = l2_normalise(data["vectors"])
    return Catalogue(
        name=f"demo ({len(vectors)} tracks, raw MFCC {vectors.shape[1]}-d)",
        ids=[str(x) for x in data["ids"]],
        vectors=vectors,
        styles=[str(x) for x in data["styles"]],
        params=params,
        queries=vectors,  # queries are the tracks themselves
    )


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ base.T
    return np.argsort(-sims, axis=1)[:, :k]


# ---- backends ---------------------------------------------------------------------------------------

# The Milvus process (the root of its process tree) behind each URI a backend below yields, for memory readings.
BACKEND_PIDS: dict[str, int] = {}


@contextmanager
def lite_backend(workdir: Path) -> Iterator[str]:
    shutil.rmtree(workdir / "lite.db", ignore_errors=True)
    server = LiteServer(workdir / "lite.db")
    server.start()
    assert server.process is not None
    BACKEND_PIDS[server.uri] = server.process.pid
    try:
        yield server.uri
    finally:
        server.stop()


@contextmanager
def milvus_backend(binary: str, workdir: Path) -> Iterator[str]:
    from pymilvus import MilvusClient

    data = workdir / "milvus-server"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    # every port on a free one, so that another Milvus on this machine (other work, other tests) never clashes
    names = ["proxy", "etcd", "root-coord", "proxy-internal", "query-coord", "query-node", "index-coord"]
    names += ["index-node", "data-coord", "data-node"]
    ports = {name: free_port() for name in names}
    proxy = ports["proxy"]
    cmd = [binary, "--data", str(data)] + [arg for n, p in ports.items() for arg in (f"--{n}-port", str(p))]
    with (workdir / "milvus-server.log").open("ab") as out:
        # its own session: milvus-server starts `milvus run standalone` as a child, stopped with the group
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{proxy}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"milvus-server did not start; see {workdir / 'milvus-server.log'}")
            try:
                MilvusClient(uri, timeout=2).list_collections()
                break
            except Exception:
                time.sleep(1)
        BACKEND_PIDS[uri] = proc.pid
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the standalone child may take a while to shut down
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(1)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---- measurements -----------------------------------------------------------------------------------


def hex_sha(j: int) -> str:
    return f"{j:064x}"


def load(
    uri: str, cat: Catalogue, index_type: str, name: str, sha: Callable[[int], str] = hex_sha
) -> tuple[TrackIndex, CollectionMeta, float]:
    index = TrackIndex(uri, IndexSettings(index_type=index_type, ivf_nlist=1024, ivf_nprobe=32))
    meta = CollectionMeta(
        name=name,
        model_version="raw",
        feature_version=cat.params.version,
        dim=cat.vectors.shape[1],
        index_type=index_type,
        created_at=now_iso(),
        feature_params=cat.params.model_dump(),
        styles=tuple(sorted(set(cat.styles))),
        state="ready",
    )
    start = time.perf_counter()
    index.create(meta)
    batch = max(1, 4_000_000 // (cat.vectors.shape[1] * 4))
    for i in range(0, len(cat.ids), batch):
        rows = [
            {
                "track_id": cat.ids[j],
                "style": cat.styles[j],
                "source": f"source{j % 50}",
                "artist": f"artist{j % 500}",
                "album": "",
                "title": f"track {j}",
                "sha256": sha(j),
                "model_version": "raw",
                "feature_version": cat.params.version,
                "vector": cat.vectors[j].tolist(),
            }
            for j in range(i, min(len(cat.ids), i + batch))
        ]
        with index.connection.guard() as c:  # plain insert: a new collection has nothing to replace
            c.insert(name, rows)
    index.flush(name)
    wait_indexed(index, name, len(cat.ids))
    built = time.perf_counter() - start
    return index, index.describe(name), built


def wait_indexed(index: TrackIndex, name: str, n: int, timeout: float = 900) -> None:
    """A server builds indexes in the background; searching before that measures brute force."""
    deadline = time.monotonic() + timeout
    with index.connection.guard() as c:
        while time.monotonic() < deadline:
            info = c.describe_index(name, "vector") or {}
            if int(info.get("indexed_rows", n)) >= n and info.get("pending_index_rows", 0) == 0:
                break
            time.sleep(1)
        c.release_collection(name)
        c.load_collection(name)
    assert index.count(name) == n


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]


def direct(index: TrackIndex, meta: CollectionMeta, cat: Catalogue) -> dict[str, float]:
    queries = cat.queries[:200]
    index.search(meta, queries[:1], K)
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(meta, q[None, :], K, fields=("track_id",))
        times.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    found = []
    for i in range(0, len(queries), 64):
        found += index.search(meta, queries[i : i + 64], K + 1, fields=("track_id",))
    batch_ms = (time.perf_counter() - t) * 1000 / len(queries)
    truth = exact_top(cat.vectors, queries, K + 1)
    position = {t: i for i, t in enumerate(cat.ids)}
    same_as_base = cat.queries is cat.vectors
    recall = []
    for qi, hits in enumerate(found):
        got = [position[h.track_id] for h in hits]
        want = list(truth[qi])
        if same_as_base:  # a catalogue track's own entry is not a recommendation
            got = [g for g in got if g != qi][:K]
            want = [w for w in want if w != qi][:K]
        else:
            got, want = got[:K], want[:K]
        recall.append(len(set(got) & set(want)) / K)
    p50, p99 = percentiles(times)
    return {
        "search_p50_ms": p50,
        "search_p99_ms": p99,
        "batch64_ms_per_query": batch_ms,
        "recall@10": float(np.mean(recall)),
    }


@dataclass
class Api:
    """A running musicrec API: where it listens, and its process (for memory and CPU readings)."""

    host: str
    port: int
    proc: subprocess.Popen

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def api(
    uri: str, workdir: Path, batching: bool, settings: dict[str, str] | None = None, start_timeout: float = 120
) -> Iterator[Api]:
    """The musicrec API in its own process on ``uri``; ``settings`` (MUSICREC_*) override the defaults here."""
    port = free_port()
    env = {
        **os.environ,
        "MUSICREC_MILVUS_URI": uri,
        "MUSICREC_DATA_ROOT": str(workdir / "api-data"),
        "MUSICREC_SERVING_BATCH_SEARCHES": str(batching).lower(),
        "MUSICREC_SERVING_MAX_K": "100",
        **(settings or {}),
    }
    code = (
        "import uvicorn; from serving.api import create_app; "
        f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )
    with (workdir / "api.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    server = Api("127.0.0.1", port, proc)
    try:
        import httpx

        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if httpx.get(server.base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API did not start; see {workdir / 'api.log'}")
            time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        proc.wait(30)


def http(base: str, ids: list[str], concurrency: list[int], seconds: float) -> dict[str, Any]:
    import httpx

    rng = np.random.default_rng(1)
    out: dict[str, Any] = {}

    def one(client: httpx.Client, i: int) -> float:
        t = time.perf_counter()
        res = client.get(f"/tracks/{ids[i % len(ids)]}/similar", params={"k": K})
        ms = (time.perf_counter() - t) * 1000
        if res.status_code != 200 or len(res.json()["results"]) != K:
            raise RuntimeError(f"bad answer {res.status_code}: {res.text[:200]}")
        return ms

    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(20):
            one(client, i)
        seq = [one(client, int(rng.integers(len(ids)))) for _ in range(300)]
    out["seq_p50_ms"], out["seq_p99_ms"] = percentiles(seq)
    for c in concurrency:
        samples: list[float] = []
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def worker(w: int, samples: list[float] = samples, stop: float = stop, lock: threading.Lock = lock) -> None:
            local = []
            with httpx.Client(base_url=base, timeout=60) as cl:
                n = w * 7919
                while time.monotonic() < stop:
                    n += 1
                    local.append(one(cl, n * 31))
            with lock:
                samples.extend(local)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(c)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        p50, p99 = percentiles(samples)
        out[f"c{c}"] = {"rps": len(samples) / (time.perf_counter() - t), "p50_ms": p50, "p99_ms": p99}
    return out


# ---- report -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    catalogues = [synthetic(n) for n in args.sizes]
    if not args.no_demo and (d := demo(workdir)) is not None:
        catalogues.append(d)
    backends: list[tuple[str, Callable[[], Any]]] = [("Milvus Lite server", lambda: lite_backend(workdir))]
    if args.milvus_server:
        backends.append(("Milvus 2.3.5 server", lambda: milvus_backend(args.milvus_server, workdir)))
    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    for backend, start in backends:
        log.info("== %s", backend)
        with start() as uri:
            for cat in catalogues:
                key = f"{backend} | {cat.name}"
                index, meta, built = load(uri, cat, "HNSW", f"tracks__bench_{len(cat.ids)}_{cat.vectors.shape[1]}")
                row: dict[str, Any] = {"build_s": built, **direct(index, meta, cat)}
                index.switch_alias(meta.name)
                for batching in (False, True):
                    with api(uri, workdir, batching) as server:
                        row[f"http_batching_{batching}"] = http(server.base, cat.ids, args.concurrency, args.seconds)
                results[key] = row
                log.info("%s: %s", key, json.dumps(row))
                index.close()
            if args.index_types and 100_000 in args.sizes:
                cat = next(c for c in catalogues if len(c.ids) == 100_000)
                for it in ("IVF_FLAT", "FLAT"):
                    index, meta, built = load(uri, cat, it, f"tracks__bench_{it.lower()}")
                    key = f"{backend} | {cat.name}, {it}"
                    results[key] = {"build_s": built, **direct(index, meta, cat)}
                    log.info("%s: %s", key, results[key])
                    index.drop(meta.name)
                    index.close()
    return results


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"`.venv/bin/python bench/bench_serving.py` on {results['machine']} (shared with other work: "
        "numbers are indicative). k=10, HNSW (M=16, efConstruction=200, ef=128) unless stated.",
        f"HTTP: GET /tracks/{{id}}/similar?k=10 over loopback, one uvicorn process; concurrent clients ran "
        f"{args.seconds:.0f} s each. Synthetic: 64-cluster Gaussian mixture, 128-d, 200 held-out queries.",
        "",
        "## Index and direct search",
        "",
        "| backend | catalogue | build s | recall@10 | 1 search p50 ms | p99 ms | 64 in one call, ms/query |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in results.items():
        if key == "machine":
            continue
        backend, cat = key.split(" | ")
        lines.append(
            f"| {backend} | {cat} | {r['build_s']:.1f} | {r['recall@10']:.3f} | {r['search_p50_ms']:.2f} | "
            f"{r['search_p99_ms']:.2f} | {r['batch64_ms_per_query']:.2f} |"
        )
    lines += [
        "",
        "## Through HTTP",
        "",
        "| backend | catalogue | batching | 1 client p50 ms | p99 ms | "
        + " | ".join(f"{c} clients req/s (p50/p99 ms)" for c in args.concurrency)
        + " |",
        "| --- | --- | --- | ---: | ---: | " + " | ".join("---:" for _ in args.concurrency) + " |",
    ]
    for key, r in results.items():
        if key == "machine" or "http_batching_True" not in r:
            continue
        backend, cat = key.split(" | ")
        for batching in (False, True):
            h = r[f"http_batching_{batching}"]
            conc = " | ".join(
                f"{h[f'c{c}']['rps']:.0f} ({h[f'c{c}']['p50_ms']:.1f}/{h[f'c{c}']['p99_ms']:.1f})"
                for c in args.concurrency
            )
            lines.append(
                f"| {backend} | {cat} | {'on' if batching else 'off'} | {h['seq_p50_ms']:.1f} | "
                f"{h['seq_p99_ms']:.1f} | {conc} |"
            )
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict[str, Any], md: str) -> str:
    """``out``.json and ``out``.md; hand-written notes (the decision drawn from the numbers) below the
    marker in the old .md survive a re-run. Returns the .md as written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    old = out.with_suffix(".md")
    if old.exists() and NOTES in (text := old.read_text()):
        md += "\n" + NOTES + text.split(NOTES, 1)[1]
    old.write_text(md)
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--milvus-server", default=shutil.which("milvus-server"), help="milvus-server binary")
    parser.add_argument("--workdir", default="/tmp/musicrec-bench-serving")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-index-types", dest="index_types", action="store_false")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc", "httpx"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    results = run(args)
    md = markdown(results, args)
    write_results(Path(args.out), results, md)
    print(md)


if __name__ == "__main__":
    main()
