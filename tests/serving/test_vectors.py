"""The in-process copy of the served collection answers what Milvus answers, and follows the alias."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.index.metadata import CollectionMeta, now_iso
from pipelines.index.milvus import TrackIndex
from pipelines.model.embedder import l2_normalise
from pipelines.settings import IndexSettings, PathSettings, ServingSettings, Settings
from serving import vectors
from serving.api import create_app
from serving.service import Filters, Recommender
from serving.vectors import VectorCopy, load_snapshot
from tests.serving.conftest import Served

DIM = 16
STYLES = ("ambient", "rock", "jazz")


def _build(index: TrackIndex, name: str, n: int, seed: int) -> tuple[CollectionMeta, np.ndarray]:
    """A collection of ``n`` clustered random unit vectors with styles, sources and real-looking sha256s."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    label = rng.integers(0, 8, n)
    vecs = l2_normalise(centres[label] + 0.5 * rng.standard_normal((n, DIM)))
    meta = CollectionMeta(
        name=name,
        model_version="raw",
        feature_version="test",
        dim=DIM,
        index_type=index.settings.index_type,
        created_at=now_iso(),
        styles=STYLES,
        state="ready",
    )
    index.create(meta)
    rows = [
        {
            "track_id": f"{name[-1]}{i:05d}",
            "style": STYLES[label[i] % 3],
            "source": f"source{i % 7}",
            "artist": f"artist{i % 11}",
            "album": "",
            "title": f"track {i}",
            "sha256": hashlib.sha256(f"{name}{i}".encode()).hexdigest(),
            "model_version": "raw",
            "feature_version": "test",
            "vector": vecs[i].tolist(),
        }
        for i in range(n)
    ]
    for start in range(0, n, 500):
        index.insert(name, rows[start : start + 500])
    index.flush(name)
    return index.describe(name), vecs


@pytest.fixture(scope="module")
def two(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, TrackIndex, CollectionMeta, CollectionMeta]]:
    root = tmp_path_factory.mktemp("vectors")
    settings = Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "milvus.db")))
    index = TrackIndex(settings.paths.milvus_uri, IndexSettings(index_type="FLAT"))
    a, _ = _build(index, "tracks__copy_a", 1500, seed=1)
    b, _ = _build(index, "tracks__copy_b", 900, seed=2)
    index.switch_alias(a.name)
    yield settings, index, a, b
    index.close()


def _ids(answer_results: list) -> list[str]:
    return [r.track_id for r in answer_results]


def test_snapshot_holds_every_row_even_when_read_in_many_slices(two, monkeypatch: pytest.MonkeyPatch) -> None:
    _, index, a, _ = two
    monkeypatch.setattr(vectors, "ROWS_PER_QUERY", 60)  # forces the sha256 range to be cut two levels deep
    snap = load_snapshot(index, a)
    assert len(snap) == 1500 and len(set(snap.ids)) == 1500
    assert snap.stamp == (a.name, a.created_at, a.updated_at)
    stored = index.get(a.name, snap.ids[:5], ("track_id", "vector", "style"))
    for row in stored:
        i = snap.position[row["track_id"]]
        assert np.allclose(snap.matrix[i], l2_normalise(np.asarray([row["vector"]]))[0], atol=1e-6)
        assert snap.texts["style"][i] == row["style"]


def test_copy_top10_equals_milvus_exact_search_with_and_without_style(two) -> None:
    _, index, a, _ = two
    snap = load_snapshot(index, a)
    queries = l2_normalise(np.random.default_rng(7).standard_normal((25, DIM)))
    for style in (None, "rock"):
        expr = f'style == "{style}"' if style else ""
        want = index.search(a, queries, 10, expr, fresh=True)
        got = snap.search(queries, 10, style)
        for w, g in zip(want, got, strict=True):
            assert [h.track_id for h in g] == [h.track_id for h in w]
            assert np.allclose([h.distance for h in g], [h.distance for h in w], atol=1e-5)
            assert all(h.fields["style"] == style for h in g if style)
            assert g[0].fields.keys() >= {"track_id", "style", "source", "artist", "title", "sha256"}


def test_recommendations_from_the_copy_equal_those_from_milvus_with_filters(two) -> None:
    settings, index, a, _ = two
    plain = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0, serving_vector_copy=False))
    copied = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    copied.start_copy(copied.collection(fresh=True))
    assert copied.vectors is not None and copied.vectors.snapshot() is not None
    calls = copied.batcher.calls
    for track in ("a00003", "a00420", "a01499"):
        for filters in (Filters(), Filters(style="jazz"), Filters(max_per_source=1), Filters(max_per_artist=2)):
            want = plain.similar(track, 10, filters)
            got = copied.similar(track, 10, filters)
            assert _ids(got.results) == _ids(want.results), (track, filters)
            assert got.collection == a.name
    assert copied.batcher.calls > calls
    got = copied.similar("a00003", 10, Filters(max_per_source=1))
    assert len({r.source for r in got.results}) == len(got.results) == 7  # only 7 sources exist
    with pytest.raises(Exception, match="unknown track id"):
        copied.similar("nope", 10)


def test_the_copy_follows_the_alias_and_never_answers_for_the_wrong_collection(two) -> None:
    settings, index, a, b = two
    rec = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    plain = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0, serving_vector_copy=False))
    rec.start_copy(rec.collection(fresh=True))
    assert rec.vectors is not None
    try:
        index.switch_alias(b.name)
        # right after the move the old copy is not used: the answer is the new collection's, from Milvus
        first = rec.similar("b00010", 10)
        assert first.collection == b.name
        assert _ids(first.results) == _ids(plain.similar("b00010", 10).results)
        rec.vectors.wait(60)
        snap = rec.vectors.snapshot()
        assert snap is not None and snap.name == b.name and len(snap) == 900
        assert _ids(rec.similar("b00010", 10).results) == _ids(first.results)
        with pytest.raises(Exception, match="unknown track id"):
            rec.similar("a00003", 10)  # a's tracks are gone with a's copy
        # an in-place update (a refresh under the same model) changes the stamp: the copy is reloaded
        loads = rec.vectors.loads
        index.set_properties(b.name, updated_at=now_iso())
        rec.similar("b00010", 10)
        rec.vectors.wait(60)
        assert rec.vectors.loads == loads + 1
        assert rec.vectors.snapshot().stamp[2] == index.describe(b.name).updated_at
    finally:
        index.switch_alias(a.name)
        rec.vectors.close()


def test_one_shot_recommenders_never_copy_and_the_setting_turns_it_off(two) -> None:
    settings, index, _, _ = two
    rec = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    rec.similar("a00003", 10)
    assert rec.vectors is not None and rec.vectors.snapshot() is None and rec.vectors.loads == 0
    off = Recommender(index, settings, ServingSettings(serving_vector_copy=False))
    off.start_copy(off.collection(fresh=True))
    assert off.vectors is None and off.searcher is index


def test_the_api_serves_from_the_copy_it_loads_at_start(served: Served) -> None:
    rec = served.recommender
    assert isinstance(rec.vectors, VectorCopy)
    snap = rec.vectors.snapshot()
    assert snap is not None and snap.name == served.collection
    assert len(snap) == rec.index.count(served.collection)
    plain = Recommender(served.index, served.settings, ServingSettings(serving_vector_copy=False))
    for track in snap.ids[:4]:
        for params in ({"k": 5}, {"k": 5, "style": "noise"}, {"k": 6, "max_per_artist": 1}):
            res = served.client.get(f"/tracks/{track}/similar", params=params)
            assert res.status_code == 200, res.text
            filters = Filters(params.get("style"), True, None, params.get("max_per_artist"))
            want = plain.similar(track, params["k"], filters)
            assert [r["track_id"] for r in res.json()["results"]] == _ids(want.results)


def test_api_with_the_copy_off_still_answers(served: Served) -> None:
    rec = Recommender(served.index, served.settings, ServingSettings(serving_vector_copy=False))
    with TestClient(create_app(served.settings, recommender=rec)) as client:
        ids = sorted(served.index.fingerprints(served.collection))
        res = client.get(f"/tracks/{ids[0]}/similar", params={"k": 3})
        assert res.status_code == 200 and len(res.json()["results"]) == 3
