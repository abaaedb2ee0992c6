"""The Python API behind HTTP and the CLI: batching of concurrent searches, the same-style share."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pipelines.index.errors import MilvusUnavailable
from pipelines.index.milvus import TrackIndex
from pipelines.index.quality import style_agreement
from pipelines.model.embedder import l2_normalise
from pipelines.settings import IndexSettings, ServingSettings, Settings
from serving.batching import SearchBatcher
from serving.service import Filters, Recommender
from tests.pipelines.index.helpers import PARAMS_A, PARAMS_B, build_features, refresh
from tests.serving.conftest import Served


def test_concurrent_searches_share_milvus_calls_and_each_gets_its_own_answer(served: Served) -> None:
    index, meta = served.index, served.recommender.collection(fresh=True)
    rows = index.get(meta.name, build_features(served.settings, PARAMS_A).track_ids, ("track_id", "vector"))
    vectors = {r["track_id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}
    requests = [(tid, expr) for tid in vectors for expr in ("", 'style == "noise"')] * 4
    expected = {
        (tid, expr): [(h.track_id, round(h.distance, 5)) for h in index.search(meta, vectors[tid][None], 6, expr)[0]]
        for tid, expr in set(requests)
    }
    batcher = SearchBatcher(index, max_batch=64)

    def ask(req: tuple[str, str]) -> list[tuple[str, float]]:
        return [(h.track_id, round(h.distance, 5)) for h in batcher.search(meta, vectors[req[0]], 6, req[1])]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, requests))
    assert answers == [expected[r] for r in requests]
    assert batcher.requests == len(requests) and batcher.calls < len(requests)


def test_batcher_hands_a_failure_to_every_waiting_caller(served: Served) -> None:
    meta = served.recommender.collection(fresh=True)
    batcher = SearchBatcher(served.index)
    waiting = 6
    queued, first = threading.Event(), threading.Event()

    def hold_first_call(size: int) -> None:  # the first call waits until the others queue behind it
        if not first.is_set():
            first.set()
            assert queued.wait(30)

    batcher.on_batch = hold_first_call
    good = np.ones(meta.dim, dtype=np.float32)
    wrong_dim = np.ones(3, dtype=np.float32)

    def bad() -> BaseException | None:
        try:
            batcher.search(meta, wrong_dim, 5)
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(waiting + 1) as pool:
        runner = pool.submit(batcher.search, meta, good, 5)
        assert first.wait(30)
        callers = [pool.submit(bad) for _ in range(waiting)]
        while batcher.requests < waiting + 1:  # every bad request is queued behind the running call
            time.sleep(0.01)
        queued.set()
        assert len(runner.result(30)) == 5
        errors = [c.result(30) for c in callers]
    assert batcher.calls == 2  # the six waiting requests went to Milvus together, in one call
    assert all(e is errors[0] for e in errors) and errors[0] is not None  # that call's error, to each caller
    assert not isinstance(errors[0], MilvusUnavailable)  # a bad request is not an outage
    assert len(batcher.search(meta, good, 5)) == 5  # the batcher is still usable


def test_same_style_share_matches_exact_cosine(served: Served) -> None:
    rec = served.recommender
    share, n = style_agreement(rec.index, rec.collection(fresh=True), k=4)
    features = build_features(served.settings, PARAMS_A)
    vectors = l2_normalise(features.matrix)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :4]
    styles = np.array([tid.split(".")[1].rsplit("-", 1)[0].replace("-", "_") for tid in features.track_ids])
    assert n == len(features.track_ids) == 15
    assert share == pytest.approx(float(np.mean(styles[top] == styles[:, None])))


def test_filters_are_plain_values() -> None:
    assert Filters() == Filters(None, True, None, None)


def test_a_collection_dropped_under_a_cached_alias_is_looked_up_again(lib: Settings) -> None:
    """Serving caches which collection the alias names; when a refresh drops that one meanwhile, Milvus's
    COLLECTION_NOT_FOUND (CollectionGone, by type) makes it re-read the alias once and answer from the new one."""
    index = TrackIndex(lib.paths.milvus_uri, IndexSettings(collections_kept=1))
    try:
        a = refresh(lib, PARAMS_A, index).collection
        rec = Recommender(index, lib, ServingSettings(serving_alias_ttl_s=3600))
        track = build_features(lib, PARAMS_A).track_ids[0]
        assert rec.similar(track, 3).collection == a  # the alias is cached from here on
        b = refresh(lib, PARAMS_B, index).collection
        if index.exists(a):
            index.drop(a)
        answer = rec.similar(track, 3)
        assert answer.collection == b and len(answer.results) == 3
    finally:
        index.close()
