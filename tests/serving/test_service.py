"""The Python API behind HTTP and the CLI: batching of concurrent searches, the same-style share."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pipelines.index.errors import MilvusUnavailable
from pipelines.index.quality import style_agreement
from pipelines.model.embedder import l2_normalise
from serving.batching import SearchBatcher
from serving.service import Filters
from tests.pipelines.index.helpers import PARAMS_A, build_features
from tests.serving.conftest import Served


def test_concurrent_searches_share_milvus_calls_and_each_gets_its_own_answer(served: Served) -> None:
    index, meta = served.index, served.recommender.catalogue(fresh=True)
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
    meta = served.recommender.catalogue(fresh=True)
    batcher = SearchBatcher(served.index)
    wrong_dim = np.ones(3, dtype=np.float32)
    with pytest.raises(Exception) as err:
        batcher.search(meta, wrong_dim, 5)
    assert not isinstance(err.value, MilvusUnavailable)  # a bad request is not an outage
    good = batcher.search(meta, np.ones(meta.dim, dtype=np.float32), 5)  # the batcher is still usable
    assert len(good) == 5


def test_same_style_share_matches_exact_cosine(served: Served) -> None:
    rec = served.recommender
    share, n = style_agreement(rec.index, rec.catalogue(fresh=True), k=4)
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
