"""The in-process copy of the served collection answers what Milvus answers, and follows the alias."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

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


def _sha(name: str) -> Callable[[int], str]:
    return lambda i: hashlib.sha256(f"{name}{i}".encode()).hexdigest()


def _vectors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clustered random unit vectors and their cluster numbers."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    label = rng.integers(0, 8, n)
    return l2_normalise(centres[label] + 0.5 * rng.standard_normal((n, DIM))), label


def _build(
    index: TrackIndex, name: str, n: int, seed: int, sha: Callable[[int], str] | None = None
) -> tuple[CollectionMeta, np.ndarray]:
    """A collection of ``n`` clustered random unit vectors with styles, sources and real-looking sha256s."""
    sha = sha or _sha(name)
    vecs, label = _vectors(n, seed)
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
            "sha256": sha(i),
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
    monkeypatch.setattr(vectors, "ROWS_PER_QUERY", 60)  # 34 slices of ~45 rows
    snap = load_snapshot(index, a)
    assert len(snap) == 1500 and len(set(snap.ids)) == 1500
    assert snap.stamp == (a.name, a.created_at, a.updated_at)
    stored = index.get(a.name, snap.ids[:5], ("track_id", "vector", "style"))
    for row in stored:
        i = snap.position[row["track_id"]]
        assert np.allclose(snap.matrix[i], l2_normalise(np.asarray([row["vector"]]))[0], atol=1e-6)
        assert snap.texts["style"][i] == row["style"]


def _assert_exact(snap: vectors.Snapshot, vecs: np.ndarray, sha: Callable[[int], str]) -> None:
    """``snap`` holds each of the ``len(vecs)`` rows ``_build`` wrote once, with its vector and fields."""
    assert len(snap) == len(vecs) and len(set(snap.ids)) == len(vecs)
    rows = np.asarray([int(t[1:]) for t in snap.ids])
    assert sorted(rows.tolist()) == list(range(len(vecs)))
    assert np.allclose(snap.matrix, vecs[rows], atol=1e-6)
    assert snap.texts["sha256"] == [sha(int(r)) for r in rows]
    assert snap.texts["title"] == [f"track {r}" for r in rows]
    assert snap.texts["source"] == [f"source{r % 7}" for r in rows]


def test_a_collection_many_times_rows_per_query_loads_completely_and_exactly(
    two, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, index, a, _ = two
    monkeypatch.setattr(vectors, "ROWS_PER_QUERY", 100)
    sent: list[int] = []
    query = index.connection.call

    def counting(fn):  # type: ignore[no-untyped-def]
        answer = query(fn)
        if isinstance(answer, list):  # a slice's rows (the row count at the start is an int)
            sent.append(len(answer))
            assert len(answer) <= 101  # never more than the limit asked, one over ROWS_PER_QUERY
        return answer

    monkeypatch.setattr(index.connection, "call", counting)
    snap = load_snapshot(index, a)
    vecs, _ = _vectors(1500, seed=1)
    _assert_exact(snap, vecs, _sha(a.name))
    # one query per planned slice (1500 rows / 75 per slice), plus a few halves where a slice overflowed;
    # no count queries
    assert 20 <= len(sent) <= 30, sent


def test_bunched_and_equal_sha256s_load_exactly(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices that overflow are halved until they fit; rows sharing one sha256 are still read, all of them."""

    def sha(i: int) -> str:
        if i < 120:
            return "0" * 64  # equal content: no cut can split these
        if i < 300:
            return f"00000{i:03d}"  # bunched in the first planned slice
        if i < 400:
            return f"zz{i}"  # not hex: above every cut
        return hashlib.sha256(f"bunched{i}".encode()).hexdigest()

    index = TrackIndex(str(tmp_path / "milvus.db"), IndexSettings(index_type="FLAT"))
    try:
        meta, vecs = _build(index, "tracks__copy_c", 700, seed=3, sha=sha)
        monkeypatch.setattr(vectors, "ROWS_PER_QUERY", 50)
        _assert_exact(load_snapshot(index, meta), vecs, sha)
    finally:
        index.close()


def test_planned_slices_and_halves_cover_every_string_once() -> None:
    rng = np.random.default_rng(0)
    strings = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)]
    strings += ["", "0", "f", "fff", "zz", "g1", "0" * 64, "f" * 64, "00000a", "5555556"]
    strings += ["".join(rng.choice(list("0123456789abcdefxyz"), rng.integers(1, 9))) for _ in range(300)]
    for total in (0, 1, 11_999, 12_001, 1_000_000):
        slices = vectors._plan(total)
        assert len(slices) == max(1, -(-total // 12_000))
        for _ in range(3):  # halve a few of them, again and again
            slices = [h for lo, hi in slices for h in (vectors._halves(lo, hi) or [(lo, hi)])]
        for s in strings:
            assert sum((not lo or s >= lo) and (not hi or s < hi) for lo, hi in slices) == 1, s
    assert vectors._halves("f" * 16, "") == []


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
