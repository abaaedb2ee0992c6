"""The index writer lock: across processes, with a deadline, freed when its holder dies; writers serialise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.index.lock import IndexBusy, writer_lock
from pipelines.index.milvus import TrackIndex
from pipelines.index.refresh import rollback
from pipelines.settings import IndexSettings, Settings
from tests.pipelines.index.helpers import PARAMS_A, PARAMS_B, PARAMS_C, refresh
from tests.serving.test_cli_serve import _musicrec, _one_line_error

_HOLD = """
import sys, time
from pathlib import Path
from pipelines.index.lock import writer_lock
with writer_lock(Path(sys.argv[1]), 5):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_reentrant_in_a_process_and_exclusive_between_threads(tmp_path: Path) -> None:
    lock = tmp_path / "w.lock"
    with writer_lock(lock, 1), writer_lock(lock, 1):  # a refresh that prunes takes it twice
        got: list[str] = []

        def other() -> None:
            try:
                with writer_lock(lock, 0.3):
                    got.append("entered")
            except IndexBusy as exc:
                got.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert got and got[0].startswith("cannot write the index: another writer (pid ")
    with writer_lock(lock, 0.1):  # released by the outer exit
        pass


@pytest.mark.integration
def test_a_second_writer_waits_then_fails_and_a_killed_holder_frees_the_lock(lib: Settings) -> None:
    index = TrackIndex(lib.paths.milvus_uri, IndexSettings(index_lock_timeout_s=0.5, embed_batch_size=4))
    holder = _holder(index.lock_path)
    try:
        started = time.monotonic()
        with pytest.raises(IndexBusy, match=rf"another writer \(pid {holder.pid} since .*\) holds"):
            refresh(lib, PARAMS_A, index)
        # it waited for the lock's timeout, then gave up instead of hanging (loose bound: a loaded machine)
        assert 0.5 <= time.monotonic() - started < 30
        assert not index.exists(f"tracks__raw__{PARAMS_A.version}")  # nothing was written meanwhile
        # the CLI: one line, exit code 2
        out = _musicrec(["index", "rollback"], lib, MUSICREC_INDEX_LOCK_TIMEOUT_S="0.3")
        _one_line_error(out, f"cannot roll back the index at {lib.paths.milvus_uri}: another writer (pid {holder.pid}")
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crashed writer: the kernel drops its lock
        holder.wait()
    assert index.lock_path.exists()  # the stale file is still there; it does not matter
    assert refresh(lib, PARAMS_A, index).mode == "built"
    index.close()


@pytest.mark.integration
def test_concurrent_refreshes_serialise_and_keep_one_chain(lib: Settings) -> None:
    settings = IndexSettings(collections_kept=1, embed_batch_size=4, verify_sample=8)
    first = refresh(lib, PARAMS_A)
    results: dict[str, object] = {}

    def run(params: object, key: str) -> None:
        index = TrackIndex(lib.paths.milvus_uri, settings)
        try:
            results[key] = refresh(lib, params, index)  # type: ignore[arg-type]
        except Exception as exc:  # recorded: the test fails on it below
            results[key] = exc
        finally:
            index.close()

    threads = [threading.Thread(target=run, args=(p, k)) for p, k in ((PARAMS_B, "b"), (PARAMS_C, "c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in results.values() if isinstance(r, Exception)], results
    index = TrackIndex(lib.paths.milvus_uri, settings)
    live = index.live()
    second = index.describe(live.previous)
    assert {live.name, second.name} == {results["b"].collection, results["c"].collection}  # type: ignore[attr-defined]
    assert second.previous == first.collection  # a chain, not two collections pointing at each other
    assert {m.name for m in index.managed()} == {live.name, second.name}
    index.close()


@pytest.mark.integration
def test_the_collection_a_rollback_left_survives_until_a_refresh_moves_on(lib: Settings) -> None:
    index = TrackIndex(lib.paths.milvus_uri, IndexSettings(collections_kept=1, embed_batch_size=4, verify_sample=8))
    a = refresh(lib, PARAMS_A, index).collection
    b = refresh(lib, PARAMS_B, index).collection
    assert rollback(index) == (b, a)
    assert refresh(lib, PARAMS_A, index).mode == "unchanged"  # an update in place of the live collection
    assert index.exists(b) and index.describe(a).rolled_back_from == b  # still there to roll forward to
    c = refresh(lib, PARAMS_C, index)
    assert c.previous == a and c.dropped == [b]
    assert rollback(index) == (c.collection, a) and index.exists(c.collection)
    index.close()
