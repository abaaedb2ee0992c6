"""Reads of the served collection on a real Milvus 2.3 server (PyPI ``milvus``, started as `musicrec stack` does).

Serving reads use Bounded consistency, which does not wait for the server's next time tick (200 ms apart),
and the blue/green refresh (Strong verification before the alias moves) guarantees that they still see
every row of a freshly switched collection.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import free_port
from pipelines.index.milvus import TrackIndex
from pipelines.settings import IndexSettings, PathSettings, Settings
from pipelines.stack import MILVUS_PORTS, _milvus_ready
from tests.pipelines.index.helpers import PARAMS_A, PARAMS_B, build_features, make_library, refresh

pytestmark = pytest.mark.integration

BINARY = Path(sys.executable).parent / "milvus-server"


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``milvus-server`` (Milvus 2.3 standalone) on free loopback ports in its own process group."""
    if not BINARY.is_file():
        pytest.skip(f"{BINARY} is not installed (PyPI `milvus`, in requirements.lock)")
    root = tmp_path_factory.mktemp("milvus-server")
    proxy = free_port()
    cmd = [str(BINARY), "--data", str(root / "data"), "--proxy-port", str(proxy)]
    cmd += [arg for name in MILVUS_PORTS for arg in (f"--{name}-port", str(free_port()))]
    with (root / "server.log").open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _milvus_ready(proxy):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"milvus-server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{proxy}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["lite", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, TrackIndex]]:
    """A synthetic library and an index on Milvus Lite (in-process) or on the Milvus server."""
    lib = make_library(tmp_path)
    uri = request.getfixturevalue("milvus_server") if request.param == "server" else lib.paths.milvus_uri
    settings = Settings(paths=PathSettings(data_root=lib.paths.data_root, milvus_uri=uri))
    index = TrackIndex(uri, IndexSettings(collections_kept=1, embed_batch_size=4, verify_sample=8))
    yield settings, index
    index.close()


def _median_ms(call: object, n: int = 15) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def test_served_reads_after_a_switch_see_every_row_and_do_not_wait_for_a_time_tick(
    backend: tuple[Settings, TrackIndex],
) -> None:
    settings, index = backend
    ids = read_manifest(settings.manifest_path)["track_id"].tolist()
    for params in (PARAMS_A, PARAMS_B):  # the first build, then a switch to a new collection
        report = refresh(settings, params, index)
        meta = index.live()
        assert meta.name == report.collection
        # straight after the alias moved: a served lookup and search see every row of the new collection
        served = {r["track_id"]: r for r in index.get(meta.name, ids, ("track_id", "sha256", "vector"))}
        assert sorted(served) == sorted(ids)
        vectors = np.asarray([served[t]["vector"] for t in ids], dtype=np.float32)
        hits = index.search(meta, vectors, limit=len(ids))
        assert all(len(h) == len(ids) for h in hits)  # every row is reachable by a served search
        fresh = index.search(meta, vectors, limit=5, fresh=True)
        assert [[h.track_id for h in row[:5]] for row in hits] == [[h.track_id for h in row] for row in fresh]

    features = build_features(settings, PARAMS_B)
    one = features.matrix[:1]
    # A Strong read waits for the server's next time tick (200 ms apart); a served read does not.
    served_ms = _median_ms(lambda: index.search(meta, one, 10))
    lookup_ms = _median_ms(lambda: index.get(meta.name, ids[:1]))
    assert served_ms < 100 and lookup_ms < 100, (served_ms, lookup_ms)


def test_the_copy_loads_every_row_exactly_in_limited_slices(
    backend: tuple[Settings, TrackIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import vectors
    from serving.vectors import load_snapshot

    settings, index = backend
    refresh(settings, PARAMS_A, index)
    meta = index.live()
    ids = read_manifest(settings.manifest_path)["track_id"].tolist()
    stored = {r["track_id"]: r for r in index.get(meta.name, ids, ("track_id", "sha256", "vector"), fresh=True)}
    # the limit each slice's query asks for is within the server's result window (16384 rows)
    limit = vectors.ROWS_PER_QUERY + 1
    index.connection.call(lambda c: c.query(meta.name, filter='sha256 >= ""', output_fields=["track_id"], limit=limit))
    monkeypatch.setattr(vectors, "ROWS_PER_QUERY", 4)  # slices of ~3 rows, some overflowing and halved
    snap = load_snapshot(index, meta)
    assert sorted(snap.ids) == sorted(ids) and len(snap) == len(ids) > 4
    for t in ids:
        i = snap.position[t]
        want = np.asarray(stored[t]["vector"], dtype=np.float32)
        assert np.allclose(snap.matrix[i], want / np.linalg.norm(want), atol=1e-6)
        assert snap.texts["sha256"][i] == stored[t]["sha256"]
