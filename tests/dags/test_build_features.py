"""The build_features DAG run end to end by Airflow: synthetic audio, real parallel shards, demo corpus."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.audio import AudioRejected
from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import REJECTS_SCHEMA, read_manifest, read_table
from pipelines.features.frontend import track_vector
from pipelines.features.quarantine import read_quarantine
from pipelines.features.store import part_files, read_features
from pipelines.settings import PathSettings, Settings
from tests.dags.airflow_db import asset_events, task_instances
from tests.pipelines.features.library import good_files
from tests.synth import noise, write

pytestmark = pytest.mark.integration


def _xcom(run: Any, task_id: str, map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == "return_value",
            )
        )
    return value  # plain JSON (dicts of numbers and strings), decoded by the JSON column


def _feature_events() -> list[dict]:
    from assets import FEATURES

    return asset_events(FEATURES.name)


def _run(dag: Any, shards: int = 0, **kw: Any) -> Any:
    run = dag.test(run_conf={"shards": shards}, **kw)
    assert run.state == "success", task_instances(run)
    return run


def test_dag_embeds_a_library_and_a_second_run_computes_nothing(
    dag_bag: Any, musicrec_env: Any, tmp_path: Path
) -> None:
    settings = musicrec_env(Settings(paths=PathSettings(data_root=tmp_path / "data")))
    lib = tmp_path / "lib"
    good_files(lib, per_style=2)
    write(lib / "noise" / "gap.wav", np.zeros(44100, np.float32))  # decodable, but silent
    (lib / "noise" / "readme.ogg").write_text("not audio")  # these two never reach the manifest:
    (lib / "noise" / "empty.wav").write_bytes(b"")  # the catalogue import rejects them
    import_catalogue(lib, settings)
    active = read_manifest(settings.manifest_path)
    events_before = len(_feature_events())

    dag = dag_bag.dags["build_features"]
    first = _run(dag, shards=2)
    tis = task_instances(first)
    assert [ti.state for ti in tis["compute"]] == ["success", "success"]
    assert tis["publish"][0].state == "success"
    features = read_features(settings)
    silent = active.loc[active["path"].str.endswith("gap.wav"), "track_id"].item()
    assert features.track_ids == sorted(set(active["track_id"]) - {silent})
    held = read_quarantine(settings)
    assert held[["track_id", "reason"]].values.tolist() == [[silent, "silent"]]
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    assert sorted(rejects["reason"]) == ["empty_file", "not_audio"]
    report = _xcom(first, "merge")
    assert (report["embedded"], report["quarantined"]) == (len(active) - 1, 1)
    events = _feature_events()
    assert len(events) == events_before + 1
    assert events[-1] == {"version": settings.features.version, "rows": len(active) - 1}

    parts = {p: p.stat().st_mtime_ns for p in part_files(settings, settings.features)}
    second = _run(dag)
    tis = task_instances(second)
    assert _xcom(second, "plan")["todo"] == 0
    assert [ti.state for ti in tis["compute"]] == ["skipped"]  # nothing to map over
    assert tis["merge"][0].state == "success" and tis["publish"][0].state == "skipped"
    assert {p: p.stat().st_mtime_ns for p in part_files(settings, settings.features)} == parts
    assert _xcom(second, "merge")["embedded"] == 0
    assert len(_feature_events()) == events_before + 1, "no new Asset event when nothing changed"


def test_mapped_shards_run_in_parallel_tasks(
    dag_bag: Any, musicrec_env: Any, local_executor: None, tmp_path: Path
) -> None:
    """With an executor (LocalExecutor, as in production) the mapped shard tasks overlap in time."""
    settings = musicrec_env(Settings(paths=PathSettings(data_root=tmp_path / "data")))
    lib = tmp_path / "lib"
    for i in range(6):
        write(lib / "noise" / f"n{i}.ogg", noise(12.0, seed=i, colour=0.3))
    import_catalogue(lib, settings)

    run = _run(dag_bag.dags["build_features"], shards=3, use_executor=True)
    tis = task_instances(run)["compute"]
    assert len(tis) == 3 and {ti.state for ti in tis} == {"success"}
    assert len({ti.pid for ti in tis}) == 3, "each shard ran in its own task process"
    assert max(ti.start_date for ti in tis) < min(ti.end_date for ti in tis), "all three shards overlapped"
    results = [_xcom(run, "compute", i) for i in range(3)]
    assert len({r["worker_pid"] for r in results}) == 3
    assert max(r["started"] for r in results) < min(r["finished"] for r in results)
    assert len(read_features(settings).track_ids) == 6


@pytest.mark.slow
def test_dag_on_the_demo_corpus(dag_bag: Any, musicrec_env: Any, demo_settings: Settings, tmp_path: Path) -> None:
    """Every decodable demo track gets one row; what is quarantined really gives no vector; rerun is a no-op."""
    settings = Settings(paths=PathSettings(data_root=tmp_path / "data"))
    settings.catalogue_dir.mkdir(parents=True)
    shutil.copy(demo_settings.manifest_path, settings.manifest_path)  # the demo manifest, a fresh store
    musicrec_env(settings)
    active = read_manifest(settings.manifest_path)
    dag = dag_bag.dags["build_features"]

    first = _run(dag, shards=2)
    report = _xcom(first, "merge")
    features = read_features(settings)
    held = read_quarantine(settings, settings.features.version)
    assert report["embedded"] == len(features.track_ids) == report["rows"]
    assert sorted(features.track_ids + held["track_id"].tolist()) == sorted(active["track_id"])
    assert len(set(features.sha256)) == len(features.sha256)
    assert len(held) <= 3 and set(held["reason"]) <= {"silent"}
    for path in held["path"]:
        with pytest.raises(AudioRejected):
            track_vector(path, settings.features)
    assert features.matrix.shape == (len(features.track_ids), settings.features.dim)
    assert np.isfinite(features.matrix).all()

    second = _run(dag, shards=2)
    assert _xcom(second, "plan")["todo"] == 0 and _xcom(second, "merge")["embedded"] == 0
    assert read_features(settings).track_ids == features.track_ids
