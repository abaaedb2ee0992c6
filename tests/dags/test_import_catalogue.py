"""The import_catalogue DAG's ``sync`` param: a run by Airflow that follows a moved file and keeps its id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import read_manifest
from pipelines.settings import PathSettings, Settings
from tests import tagged

pytestmark = pytest.mark.integration


def test_sync_run_keeps_the_id_of_a_moved_file_and_refuses_a_path_never_imported(
    dag_bag: Any, musicrec_env: Any, tmp_path: Path
) -> None:
    music = (tmp_path / "Music").resolve()
    tagged.tagged_library(music, seconds=1.0)
    settings = musicrec_env(Settings(paths=PathSettings(data_root=tmp_path / "data", cache_dir=tmp_path / "cache")))
    import_catalogue(music, settings)
    old, new = music / "Bee Sharp/High Notes/01 High 0.ogg", music / "Bee Sharp/Moved/01 High 0.ogg"
    before = read_manifest(settings.manifest_path).set_index("path").at[str(old), "track_id"]
    new.parent.mkdir()
    os.rename(old, new)
    dag = dag_bag.dags["import_catalogue"]
    assert dag.params["sync"] is False

    run = dag.test(run_conf={"path": str(music), "sync": True})
    assert run.state == "success"
    after = read_manifest(settings.manifest_path).set_index("path")
    assert after.at[str(new), "track_id"] == before and str(old) not in after.index

    elsewhere = tmp_path / "Other"
    elsewhere.mkdir()
    assert dag.test(run_conf={"path": str(elsewhere), "sync": True}).state == "failed"
