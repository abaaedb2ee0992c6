"""The feature store at library scale: vectors are written and read a row group at a time, never all at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.features import build as build_module
from pipelines.features import store
from pipelines.features.build import FeatureBuild
from pipelines.features.params import FeatureParams
from pipelines.features.store import (
    PartWriter,
    checksum_path,
    feature_schema,
    part_files,
    read_features,
    stored_features,
)
from pipelines.settings import PathSettings, Settings
from tests.pipelines.features.library import good_files, write_manifest

PARAMS = FeatureParams(n_frames=64)


def _table(n: int, start: int = 0) -> pa.Table:
    rows = [
        {"track_id": f"t{i}", "style": "s", "source": "x", "sha256": f"{i:064x}", "frames_real": 64}
        for i in range(start, start + n)
    ]
    vectors = np.arange(start * PARAMS.dim, (start + n) * PARAMS.dim, dtype=np.float32).reshape(n, PARAMS.dim)
    return store.build_table(rows, vectors, PARAMS)


def test_part_writer_writes_bounded_row_groups_and_appears_only_when_closed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store, "ROW_GROUP_ROWS", 4)
    path = tmp_path / "part-x.parquet"
    with PartWriter(path, feature_schema(PARAMS.dim)) as writer:
        for start in range(0, 10, 3):
            writer.write(_table(min(3, 10 - start), start))
            assert not path.exists(), "the file must not be visible while it is written"
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_rows == 10 and pf.num_row_groups == 3
    assert max(pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)) <= 6
    back = pq.read_table(path)
    assert back.column("track_id").to_pylist() == [f"t{i}" for i in range(10)]
    assert sorted(tmp_path.iterdir()) == [checksum_path(path), path], "the part and its checksum; no temporary file"


def test_part_writer_leaves_nothing_when_the_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "part-y.parquet"
    with pytest.raises(RuntimeError), PartWriter(path, feature_schema(PARAMS.dim)) as writer:
        writer.write(_table(3))
        raise RuntimeError("a worker died")
    assert list(tmp_path.iterdir()) == []


def test_build_streams_vectors_into_row_groups_and_the_refresh_reader_matches_the_matrix(
    tmp_path: Path, monkeypatch
) -> None:
    # Row groups of 2 rows stand in for 512: the build then has to stream a small library the way it streams
    # a large one (shard output and the published part both written a row group at a time).
    monkeypatch.setattr(store, "ROW_GROUP_ROWS", 2)
    monkeypatch.setattr(build_module, "ROW_GROUP_ROWS", 2)
    settings = Settings(paths=PathSettings(data_root=tmp_path / "data"), features=PARAMS)
    good = {p: style for style, paths in good_files(tmp_path / "lib", per_style=2).items() for p in paths}
    write_manifest(settings, good)

    report = FeatureBuild(settings=settings, shards=2).run()

    assert report.embedded == len(good)
    (part,) = part_files(settings, PARAMS)
    pf = pq.ParquetFile(part)
    assert pf.metadata.num_rows == len(good) and pf.num_row_groups >= len(good) // 2
    assert all(pf.metadata.row_group(i).num_rows <= 2 for i in range(pf.num_row_groups))

    matrix = read_features(settings)
    lazy = stored_features(settings)
    assert lazy.track_ids == matrix.track_ids and lazy.sha256 == matrix.sha256
    wanted = matrix.track_ids[::-1][: len(good) - 1]  # any subset, in any order
    seen: dict[str, np.ndarray] = {}
    for ids, vectors in lazy.iter_batches(wanted, 3):
        assert len(ids) == len(vectors) <= 3 and vectors.dtype == np.float32
        seen.update(zip(ids, vectors, strict=True))
    assert sorted(seen) == sorted(wanted)
    row = {t: i for i, t in enumerate(matrix.track_ids)}
    for tid, vec in seen.items():
        np.testing.assert_array_equal(vec, matrix.matrix[row[tid]])
    again = {t: v for ids, vs in matrix.iter_batches(wanted, 4) for t, v in zip(ids, vs, strict=True)}
    assert sorted(again) == sorted(wanted) and all(np.array_equal(again[t], seen[t]) for t in wanted)


def test_more_shards_than_cores_run_a_core_at_a_time(tmp_path: Path) -> None:
    """Shards are capped in size, so a big library has many; only ``shards`` of them (and workers) run at once."""
    import threading

    settings = Settings(paths=PathSettings(data_root=tmp_path / "data"), features=PARAMS)
    good = {p: style for style, paths in good_files(tmp_path / "lib", per_style=2).items() for p in paths}
    write_manifest(settings, good)
    threads: set[str] = set()

    def progress(event: str, n: int) -> None:
        if event == "embedded":
            threads.add(threading.current_thread().name)

    report = FeatureBuild(settings=settings, shards=2, max_shard_tracks=2).run(progress)

    assert report.embedded == len(good) > 4  # so there are more than two shards of at most two files
    assert len(threads) == 2, threads
