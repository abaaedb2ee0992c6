"""The feature build end to end without Airflow: store, quarantine, incremental runs, versions, safety."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.audio import RejectReason, sha256_file
from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, read_table, write_table
from pipelines.errors import UserError
from pipelines.features.build import (
    FeatureBuild,
    FeatureStoreInvalid,
    compute_shard,
    merge_shards,
    plan_shards,
)
from pipelines.features.frontend import track_vector
from pipelines.features.params import FeatureParams
from pipelines.features.quarantine import read_quarantine
from pipelines.features.store import part_files, read_features, version_dir
from pipelines.settings import PathSettings, Settings
from tests.pipelines.features.library import bad_files, good_files, write_manifest
from tests.synth import hanging_open, noise, tone, write

# Short vectors keep these tests fast; the defaults are exercised by the front-end and DAG tests.
PARAMS = FeatureParams(n_frames=64)


def _settings(root: Path, **kw: object) -> Settings:
    return Settings(paths=PathSettings(data_root=root / "data"), features=PARAMS, **kw)


def _fingerprint(paths: list[Path]) -> dict[Path, tuple[str, int, int]]:
    return {p: (sha256_file(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


@pytest.fixture
def library(tmp_path: Path) -> tuple[Settings, dict[Path, str], dict[Path, RejectReason]]:
    """Good tracks and every kind of bad file in one manifest, as a tool that does not probe would list them."""
    settings = _settings(tmp_path)
    good = {p: style for style, paths in good_files(tmp_path / "lib").items() for p in paths}
    bad = bad_files(tmp_path / "lib" / "bad")
    write_manifest(settings, {**good, **{p: "bad" for p in bad}})
    return settings, good, bad


def test_bad_files_are_quarantined_with_reasons_and_the_rest_embedded(library) -> None:
    settings, good, bad = library
    before = _fingerprint([*good, *bad])
    report = FeatureBuild(settings=settings, shards=2).run()

    assert (report.embedded, report.quarantined, report.skipped) == (len(good), len(bad), 0)
    features = read_features(settings)
    manifest = read_table(settings.manifest_path, MANIFEST_SCHEMA).set_index("path")
    assert features.track_ids == sorted(manifest.loc[[str(p) for p in good], "track_id"])
    assert features.matrix.shape == (len(good), PARAMS.dim) and features.matrix.dtype == np.float32
    assert features.frames_real.dtype == np.int32 and (features.frames_real == PARAMS.n_frames).all()
    assert features.version == PARAMS.version and np.isfinite(features.matrix).all()

    held = read_quarantine(settings, PARAMS.version).set_index("path")
    assert {Path(p): RejectReason(r) for p, r in held["reason"].items()} == bad
    assert held["error_type"].notna().all() and held["detail"].str.len().gt(0).all()
    assert _fingerprint([*good, *bad]) == before, "input files must never change"


def test_stored_vectors_equal_the_front_end_and_read_back_with_plain_pandas(library) -> None:
    settings, good, _ = library
    FeatureBuild(settings=settings).run()
    df = pd.read_parquet(version_dir(settings, PARAMS))
    assert list(df.columns) == [
        "track_id",
        "style",
        "source",
        "sha256",
        "frames_real",
        "vector",
        "params",
        "computed_at",
    ]
    assert len(df) == len(good) and df["sha256"].is_unique
    assert (
        str(pq.read_schema(part_files(settings, PARAMS)[0]).field("vector").type)
        == f"fixed_size_list<element: float>[{PARAMS.dim}]"
    )
    assert FeatureParams.model_validate_json(df["params"].iloc[0]) == PARAMS
    by_path = {str(p): p for p in good}
    manifest = read_table(settings.manifest_path, MANIFEST_SCHEMA).set_index("track_id")
    for row in df.itertuples():
        expected = track_vector(by_path[manifest.loc[row.track_id, "path"]], PARAMS).vector
        # The worker runs BLAS on one thread, this process maybe on several: summation order may differ.
        np.testing.assert_allclose(np.asarray(row.vector, dtype=np.float32), expected, rtol=1e-5, atol=1e-4)


def test_second_run_computes_nothing_and_adds_no_rows(library) -> None:
    settings, good, bad = library
    FeatureBuild(settings=settings, shards=2).run()
    parts = {p: p.stat().st_mtime_ns for p in part_files(settings, PARAMS)}
    held = read_quarantine(settings)

    again = FeatureBuild(settings=settings, shards=2).run()
    assert (again.embedded, again.quarantined) == (0, 0)
    assert again.skipped == len(good) and again.still_quarantined == len(bad)
    assert {p: p.stat().st_mtime_ns for p in part_files(settings, PARAMS)} == parts
    assert again.rows == len(good) == len(read_features(settings).track_ids)
    pd.testing.assert_frame_equal(read_quarantine(settings), held)
    assert not (settings.features_dir / "_staging").exists(), "runs clean up after themselves"


def test_changing_a_parameter_builds_a_new_version_beside_the_old(library) -> None:
    settings, good, _ = library
    FeatureBuild(settings=settings).run()
    other = FeatureParams(n_frames=64, n_mfcc=13)
    report = FeatureBuild(settings=settings, params=other).run()
    assert report.version == other.version != PARAMS.version and report.embedded == len(good)
    old, new = read_features(settings, PARAMS), read_features(settings, other)
    assert old.matrix.shape == (len(good), 64 * 20) and new.matrix.shape == (len(good), 64 * 13)
    assert old.track_ids == new.track_ids
    assert sorted(d.name for d in settings.features_dir.glob("version=*")) == sorted(
        [f"version={PARAMS.version}", f"version={other.version}"]
    )
    assert len(read_quarantine(settings)) == 2 * len(read_quarantine(settings, PARAMS.version))


def test_a_quarantined_file_is_retried_once_fixed(tmp_path: Path) -> None:
    """The real path: import a folder, build, repair the silent file, re-import (new sha256), build."""
    settings = _settings(tmp_path)
    lib = tmp_path / "lib"
    good_files(lib, per_style=2)
    silent = write(lib / "noise" / "gap.wav", np.zeros(44100, np.float32))
    import_catalogue(lib, settings)
    first = FeatureBuild(settings=settings).run()
    assert first.quarantined == 1 and first.reasons == {"silent": 1}

    assert FeatureBuild(settings=settings).run().still_quarantined == 1  # unchanged: not decoded again

    write(silent, noise(3.0, seed=11))
    changed = FeatureBuild(settings=settings).run()  # fixed on disk, manifest not re-imported yet
    assert changed.embedded == 0 and changed.reasons == {"unreadable": 1}
    assert read_quarantine(settings)["error_type"].tolist() == ["ChangedSinceImport"]

    import_catalogue(lib, settings)
    fixed = FeatureBuild(settings=settings).run()
    assert (fixed.embedded, fixed.quarantined, fixed.still_quarantined) == (1, 0, 0)
    assert read_quarantine(settings).empty
    assert any(tid.endswith("gap") for tid in read_features(settings).track_ids)


def test_a_hanging_decoder_is_killed_quarantined_and_the_shard_goes_on(tmp_path: Path) -> None:
    """A file whose ``open()`` blocks in the kernel (a write lease held by the test), like a stuck decoder."""
    settings = _settings(tmp_path, decode_timeout_s=3.0)
    good = {write(tmp_path / "lib" / f"t{i}.wav", tone(200 + 50 * i, 3.0)): "tones" for i in range(3)}
    stuck = write(tmp_path / "lib" / "stuck.wav", tone(900, 3.0))
    fifo = tmp_path / "lib" / "pipe.wav"
    os.mkfifo(fifo)
    manifest = write_manifest(settings, {**good, stuck: "tones"})
    manifest.loc[manifest["path"] == str(stuck), "track_id"] = "test.stuck"
    pipe = {**manifest.iloc[0].to_dict(), "track_id": "test.pipe", "path": str(fifo), "sha256": "f" * 64}
    pipe.update(size=os.stat(fifo).st_size, mtime_ns=os.stat(fifo).st_mtime_ns)
    write_table(pd.concat([pd.DataFrame([pipe]), manifest]), MANIFEST_SCHEMA, settings.manifest_path)

    plan = plan_shards(settings, shards=1)
    with hanging_open(stuck):
        result = compute_shard(plan.shards[0], settings)
    assert (result.embedded, result.quarantined, result.worker_restarts) == (3, 2, 1)
    report = merge_shards(plan.run_dir, settings)
    held = read_quarantine(settings).set_index("track_id")
    assert held.loc["test.stuck", "reason"] == RejectReason.TIMEOUT and report.embedded == 3
    assert held.loc["test.pipe", "reason"] == RejectReason.NOT_REGULAR_FILE  # a FIFO is never opened
    assert FeatureBuild(settings=settings).run().still_quarantined == 2  # a hang is not retried


def test_size_limit_quarantines_large_files(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_audio_bytes=50_000)
    small = write(tmp_path / "lib" / "small.flac", tone(300, 1.0))
    large = write(tmp_path / "lib" / "large.wav", noise(5.0))
    write_manifest(settings, {small: "a", large: "a"})
    report = FeatureBuild(settings=settings).run()
    assert (report.embedded, report.reasons) == (1, {"too_large": 1})


def test_reader_follows_the_manifest(library) -> None:
    settings, good, _ = library
    FeatureBuild(settings=settings).run()
    manifest = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    gone = read_features(settings).track_ids[0]
    manifest.loc[manifest["track_id"] == gone, "status"] = "removed"
    write_table(manifest, MANIFEST_SCHEMA, settings.manifest_path)
    active = read_features(settings)
    assert gone not in active.track_ids and len(active.track_ids) == len(good) - 1
    assert gone in read_features(settings, active_only=False).track_ids
    sha = dict(zip(manifest["track_id"], manifest["sha256"], strict=True))
    assert active.sha256 == [sha[t] for t in active.track_ids]
    with pytest.raises(UserError, match="run `musicrec features build`"):
        read_features(settings, FeatureParams(n_frames=7))


def test_missing_manifest_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no catalogue manifest"):
        FeatureBuild(settings=_settings(tmp_path)).run()


def test_invalid_shard_output_is_refused_and_the_store_keeps_its_state(library) -> None:
    settings, good, _ = library
    first = [p for p in good][:2]
    write_manifest(settings, dict.fromkeys(first, "x"))
    FeatureBuild(settings=settings).run()
    before = read_features(settings)
    write_manifest(settings, good)

    plan = plan_shards(settings, shards=2)
    for shard in plan.shards:
        compute_shard(shard, settings)
    out = Path(plan.shards[0].replace(".todo.json", ".features.parquet"))
    table = pq.read_table(out)
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().copy()
    vectors[5] = np.nan
    import pyarrow as pa

    poisoned = table.set_column(
        table.schema.get_field_index("vector"),
        "vector",
        pa.FixedSizeListArray.from_arrays(pa.array(vectors), PARAMS.dim),
    )
    pq.write_table(poisoned, out)
    with pytest.raises(FeatureStoreInvalid, match="NaN"):
        merge_shards(plan.run_dir, settings)
    after = read_features(settings, active_only=False)
    assert after.track_ids == before.track_ids and np.array_equal(after.matrix, before.matrix)

    Path(plan.shards[1].replace(".todo.json", ".done.json")).unlink()
    with pytest.raises(FeatureStoreInvalid, match="shards without output"):
        merge_shards(plan.run_dir, settings)


def test_two_overlapping_runs_store_each_vector_once(tmp_path: Path) -> None:
    """A CLI build and a DAG run planned at the same time: the second to publish drops what the first stored."""
    settings = _settings(tmp_path)
    files = {write(tmp_path / "lib" / f"t{i}.wav", tone(150 * (i + 1), 2.0, harmonics=2)): "tones" for i in range(4)}
    write_manifest(settings, files)
    first, second = plan_shards(settings, shards=1), plan_shards(settings, shards=1)
    compute_shard(first.shards[0], settings)
    compute_shard(second.shards[0], settings)
    assert merge_shards(first.run_dir, settings).embedded == 4
    late = merge_shards(second.run_dir, settings)
    assert (late.embedded, late.rows, late.part) == (0, 4, None)
    assert len(pd.read_parquet(version_dir(settings, PARAMS))) == 4
