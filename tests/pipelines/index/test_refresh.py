"""Blue/green refresh on a real Milvus Lite: build, verify, switch, incremental update, crash, rollback, prune."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from pipelines.catalogue.manifest import read_manifest
from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.index.errors import IndexNotBuilt, RefreshFailed
from pipelines.index.lite_server import LiteServer
from pipelines.index.milvus import TrackIndex
from pipelines.index.refresh import refresh_collection, rollback
from pipelines.model.embedder import RawEmbedder
from pipelines.settings import IndexSettings, ServingSettings, Settings
from serving.service import Recommender
from tests import synth
from tests.pipelines.index.helpers import (
    PARAMS_A,
    PARAMS_B,
    PARAMS_C,
    add_track,
    build_features,
    refresh,
    remove_track,
)


class Crash(Exception):
    """Stands for the process dying at a given point."""


def test_first_refresh_builds_a_verified_collection_and_points_the_alias(lib: Settings, index: TrackIndex) -> None:
    report = refresh(lib, PARAMS_A, index)
    features = build_features(lib, PARAMS_A)
    assert report.mode == "built" and report.embedded == report.total == len(features.track_ids) == 15
    assert index.count(report.collection) == 15
    assert index.alias_target() == report.collection
    meta = index.live()
    assert (meta.model_version, meta.feature_version, meta.dim) == ("raw", PARAMS_A.version, PARAMS_A.dim)
    assert FeatureParams(**meta.feature_params) == PARAMS_A
    assert meta.state == "ready" and meta.index_type == "HNSW"
    assert set(meta.styles) == {"low_tones", "high_tones", "noise"}

    manifest = read_manifest(lib.manifest_path).set_index("track_id")
    fields = ("track_id", "style", "artist", "album", "title", "source", "sha256", "model_version", "vector")
    rows = {r["track_id"]: r for r in index.get(meta.name, features.track_ids, fields)}
    for tid in features.track_ids:
        row, want = rows[tid], manifest.loc[tid]
        assert (row["style"], row["artist"], row["title"], row["sha256"]) == (
            want["style"],
            want["artist"],
            want["title"],
            want["sha256"],
        )
        assert row["model_version"] == "raw"
    vectors = np.asarray([rows[t]["vector"] for t in features.track_ids])
    nearest = [hits[0].track_id for hits in index.search(meta, vectors, 1)]
    assert nearest == features.track_ids


class FlushCount(TrackIndex):
    """The real index, counting its flushes."""

    flushes = 0

    def flush(self, name: str) -> None:
        self.flushes += 1
        super().flush(name)


def test_refresh_flushes_every_few_mb_of_vectors_and_the_collection_is_whole(lib: Settings) -> None:
    # 4 tracks per batch of 312-value vectors = 4.9 kB: a flush after every second batch, and one at the end
    settings = IndexSettings(collections_kept=1, embed_batch_size=4, flush_every_mb=0.009)
    index = FlushCount(lib.paths.milvus_uri, settings)
    try:
        report = refresh(lib, PARAMS_A, index)
        assert PARAMS_A.dim == 312 and report.total == 15
        assert index.flushes == 1 + 1  # batches of 4, 4 | 4, 3 (flush at 8 tracks), then the final flush
        assert index.count(report.collection) == 15
        features = build_features(lib, PARAMS_A)
        meta = index.live()
        nearest = [hits[0].track_id for hits in index.search(meta, features.matrix, 1)]
        assert nearest == features.track_ids
    finally:
        index.close()


def test_rerun_under_the_same_model_embeds_only_new_and_changed_tracks(lib: Settings, index: TrackIndex) -> None:
    first = refresh(lib, PARAMS_A, index)
    music = lib.paths.data_root.parent / "music"
    synth.write(music / "low_tones" / "low_tones_0.wav", synth.tone(140, 3.0, harmonics=2))  # changed content
    add_track(lib, "extra.wav", synth.tone(300, 3.0, harmonics=3))
    remove_track(lib, "noise/noise_4.wav")
    manifest = read_manifest(lib.manifest_path)

    again = refresh(lib, PARAMS_A, index)
    assert again.collection == first.collection and again.mode == "updated"
    assert (again.embedded, again.removed, again.total) == (2, 1, 15)
    stored = index.fingerprints(again.collection)
    assert stored == dict(zip(manifest["track_id"], manifest["sha256"], strict=True))
    assert index.alias_target() == first.collection

    unchanged = refresh(lib, PARAMS_A, index)
    assert (unchanged.mode, unchanged.embedded, unchanged.removed) == ("unchanged", 0, 0)


def test_a_track_whose_tags_or_place_changed_is_rewritten_without_new_audio(lib: Settings, index: TrackIndex) -> None:
    """A moved or re-tagged file keeps its id and audio; its artist and source must follow in the index."""
    from pipelines.catalogue.manifest import MANIFEST_SCHEMA, write_table

    first = refresh(lib, PARAMS_A, index)
    manifest = read_manifest(lib.manifest_path, active_only=False)
    track = str(manifest["track_id"].iloc[0])
    manifest.loc[manifest["track_id"] == track, ["artist", "source"]] = ["Someone Else", "another-album"]
    write_table(manifest, MANIFEST_SCHEMA, lib.manifest_path)

    again = refresh(lib, PARAMS_A, index)
    assert again.collection == first.collection and (again.mode, again.embedded, again.removed) == ("updated", 1, 0)
    row = index.stored(again.collection, ("artist", "source", "sha256"))[track]
    assert (row["artist"], row["source"]) == ("Someone Else", "another-album")
    assert refresh(lib, PARAMS_A, index).mode == "unchanged"


def _crash_after_first_batch(batches: Iterable[Any]) -> Iterator[Any]:
    for n, batch in enumerate(batches):
        if n == 1:
            raise Crash("mid-insert")
        yield batch


@pytest.mark.parametrize("step", ["created", "mid-insert", "inserted", "verified"])
def test_crash_at_any_step_leaves_serving_on_the_old_collection_and_a_rerun_finishes(
    lib: Settings, index: TrackIndex, step: str
) -> None:
    old = refresh(lib, PARAMS_A, index)
    recommender = Recommender(index, lib, ServingSettings(serving_alias_ttl_s=0))
    query = build_features(lib, PARAMS_A).track_ids[0]
    before = recommender.similar(query, 5)

    def on_step(name: str) -> None:
        if name == step:
            raise Crash(name)

    kw: dict[str, Any] = {"progress": _crash_after_first_batch} if step == "mid-insert" else {"on_step": on_step}
    with pytest.raises(Crash):
        refresh(lib, PARAMS_B, index, **kw)

    assert index.alias_target() == old.collection
    assert recommender.collection(fresh=True).name == old.collection
    assert recommender.similar(query, 5) == before

    done = refresh(lib, PARAMS_B, index)
    assert done.mode == "resumed" and done.previous == old.collection
    assert index.alias_target() == done.collection and index.count(done.collection) == 15
    expected = {"created": 15, "mid-insert": 11, "inserted": 0, "verified": 0}[step]
    assert done.embedded == expected
    assert recommender.similar(query, 5).collection == done.collection


_KILLED_REFRESH = """
import os, signal, sys
from pipelines.settings import IndexSettings
from pipelines.index.milvus import TrackIndex
from pipelines.settings import PathSettings, Settings
from tests.pipelines.index.helpers import PARAMS_B, refresh
settings = Settings(paths=PathSettings(data_root=sys.argv[1], milvus_uri=sys.argv[2]))
def die(step):
    if step == "inserted":
        os.kill(os.getpid(), signal.SIGKILL)
refresh(settings, PARAMS_B, TrackIndex(sys.argv[2], IndexSettings(embed_batch_size=4)), on_step=die)
"""


@pytest.mark.integration
def test_refresh_process_killed_mid_way_leaves_serving_untouched(lib: Settings, lite_server: LiteServer) -> None:
    """A real crash: the refresh runs in its own process against the shared server and is SIGKILLed."""
    index = TrackIndex(lite_server.uri, IndexSettings(collections_kept=1, verify_sample=8))
    old = refresh(lib, PARAMS_A, index)
    recommender = Recommender(index, lib, ServingSettings(serving_alias_ttl_s=0))
    query = build_features(lib, PARAMS_A).track_ids[3]
    before = recommender.similar(query, 5)

    cmd = [sys.executable, "-c", _KILLED_REFRESH, str(lib.paths.data_root), lite_server.uri]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]

    assert index.alias_target() == old.collection
    assert recommender.similar(query, 5) == before
    done = refresh(lib, PARAMS_B, index)
    assert (done.mode, done.embedded, done.total) == ("resumed", 0, 15)
    assert index.alias_target() == done.collection
    index.close()


class Collapsed:
    """A model that lost all information (a failed training run): every track maps to the same vector."""

    version = "collapsed-1"
    feature_version = PARAMS_B.version
    dim = 8

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        out = np.zeros((len(vectors), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def test_verification_refuses_a_collapsed_model_and_keeps_the_alias(lib: Settings, index: TrackIndex) -> None:
    old = refresh(lib, PARAMS_A, index)
    manifest = read_manifest(lib.manifest_path)
    with pytest.raises(RefreshFailed, match="collapsed"):
        refresh_collection(index, Collapsed(), build_features(lib, PARAMS_B), manifest)
    assert index.alias_target() == old.collection


def test_refresh_refuses_features_the_model_was_not_made_for(lib: Settings, index: TrackIndex) -> None:
    manifest = read_manifest(lib.manifest_path)
    wrong = RawEmbedder(feature_version=PARAMS_B.version, dim=PARAMS_B.dim)
    with pytest.raises(UserError, match="expects feature version"):
        refresh_collection(index, wrong, build_features(lib, PARAMS_A), manifest)
    with pytest.raises(UserError, match="no active tracks"):
        refresh_collection(index, wrong, build_features(lib, PARAMS_B), manifest.iloc[0:0])
    assert index.alias_target() is None


def test_rollback_returns_to_the_previous_collection(lib: Settings, index: TrackIndex) -> None:
    with pytest.raises(IndexNotBuilt):
        rollback(index)
    a = refresh(lib, PARAMS_A, index)
    with pytest.raises(UserError, match="no earlier collection"):
        rollback(index)
    b = refresh(lib, PARAMS_B, index)
    assert b.previous == a.collection

    assert rollback(index) == (b.collection, a.collection)
    assert index.alias_target() == a.collection
    recommender = Recommender(index, lib, ServingSettings(serving_alias_ttl_s=0))
    audio = (lib.paths.data_root.parent / "music" / "noise" / "noise_1.wav").read_bytes()
    answer = recommender.similar_audio(audio, 3)  # embedded with A's front-end parameters, not B's
    assert answer.collection == a.collection and answer.results[0].style == "noise"

    again = refresh(lib, PARAMS_B, index)  # rolling forward again reuses the kept collection
    assert (again.mode, again.embedded) == ("resumed", 0)
    assert index.alias_target() == b.collection


def test_older_collections_beyond_the_setting_are_dropped(lib: Settings, index: TrackIndex) -> None:
    a = refresh(lib, PARAMS_A, index)
    b = refresh(lib, PARAMS_B, index)
    assert b.dropped == []
    c = refresh(lib, PARAMS_C, index)
    assert c.dropped == [a.collection]
    assert [m.name for m in index.managed()] == [b.collection, c.collection]

    keep_two = TrackIndex(lib.paths.milvus_uri, IndexSettings(collections_kept=2))
    d = refresh(lib, PARAMS_A, keep_two)
    assert d.dropped == [] and {m.name for m in keep_two.managed()} == {b.collection, c.collection, d.collection}
    keep_two.close()
