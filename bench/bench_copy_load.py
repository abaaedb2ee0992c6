"""How long the API's in-process copy takes to load from Milvus Lite: ``load_snapshot`` at each size.

For each size: a synthetic 128-d HNSW collection in a Milvus Lite server process (as bench_query.py builds
it; kept in the work folder with ``--keep`` so that a second run times the loader again without the
build), then ``load_snapshot`` timed: wall seconds, CPU seconds of this process and of the Lite server
process, queries sent, and the load average. The copy is checked to hold every row exactly.

Usage: nice -n 5 .venv/bin/python bench/bench_copy_load.py --sizes 100000 200000 [--keep]
Prints one JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_query import cpu_s, sha_of  # noqa: E402
from bench.bench_serving import load, synthetic  # noqa: E402
from pipelines.index.lite_server import LiteServer  # noqa: E402
from pipelines.index.milvus import TrackIndex  # noqa: E402
from serving import vectors  # noqa: E402

log = logging.getLogger("bench")


def measure(workdir: Path, n: int, keep: bool) -> dict[str, object]:
    cat = synthetic(n)
    data = workdir / f"lite-{n}.db"
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
    name = f"tracks__copyload_{n}"
    server = LiteServer(data)
    server.start()
    assert server.process is not None
    try:
        built = None
        index = TrackIndex(server.uri)
        if not index.exists(name):
            index.close()
            index, _, built = load(server.uri, cat, "HNSW", name, sha=sha_of)
        meta = index.describe(name)
        index.count(name)  # loads the collection: not part of the copy's cost
        queries = 0
        call = index.connection.call

        def counting(fn):  # type: ignore[no-untyped-def]
            nonlocal queries
            queries += 1
            return call(fn)

        index.connection.call = counting  # type: ignore[method-assign]
        load0 = os.getloadavg()
        cpu0, lite0 = cpu_s(os.getpid()), cpu_s(server.process.pid)
        start = time.perf_counter()
        snap = vectors.load_snapshot(index, meta)
        wall = time.perf_counter() - start
        cpu, lite = cpu_s(os.getpid()) - cpu0, cpu_s(server.process.pid) - lite0
        index.connection.call = call  # type: ignore[method-assign]
        position = {t: i for i, t in enumerate(cat.ids)}
        rows = np.asarray([position[t] for t in snap.ids])
        exact = len(snap) == n and len(set(snap.ids)) == n and np.allclose(snap.matrix, cat.vectors[rows], atol=1e-6)
        exact = exact and all(snap.texts["sha256"][i] == sha_of(int(r)) for i, r in enumerate(rows))
        index.close()
        return {
            "rows": n,
            "build_s": built,
            "load_s": round(wall, 1),
            "client_cpu_s": round(cpu, 1),
            "lite_cpu_s": round(lite, 1),
            "queries": queries,
            "rows_per_query": vectors.ROWS_PER_QUERY,
            "exact": bool(exact),
            "load_average_before": [round(x, 2) for x in load0],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--keep", action="store_true", help="keep the built collections for another run")
    parser.add_argument("--workdir", default="/tmp/musicrec-bench-copy-load")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        print(json.dumps(measure(workdir, n, args.keep)), flush=True)


if __name__ == "__main__":
    main()
