"""The refresh_catalogue DAG: its shape, and a run by Airflow from a real feature store into Milvus Lite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.index.milvus import CatalogueIndex
from tests.pipelines.index.helpers import make_library

pytestmark = pytest.mark.integration


def test_refresh_catalogue_shape(dag_bag: Any) -> None:
    from assets import CATALOGUE_INDEX, CHAMPION

    dag = dag_bag.dags["refresh_catalogue"]
    assert set(dag.task_ids) == {"resolve_model", "refresh"}
    assert dag.get_task("refresh").upstream_task_ids == {"resolve_model"}
    assert dag.get_task("refresh").outlets == [CATALOGUE_INDEX]
    assert dag.get_task("refresh").retries == 2  # safe: a re-run finishes a half-built collection
    assert CHAMPION in dag.timetable.asset_condition.objects  # runs when a model is promoted
    assert dag.max_active_runs == 1


def test_refresh_catalogue_run_builds_then_leaves_an_unchanged_catalogue_alone(
    dag_bag: Any, musicrec_env: Any, tmp_path: Path
) -> None:
    from pipelines.features.build import FeatureBuild
    from pipelines.features.store import read_features

    settings = musicrec_env(make_library(tmp_path))
    FeatureBuild(settings=settings, shards=1).run()
    expected = len(read_features(settings).track_ids)
    dag = dag_bag.dags["refresh_catalogue"]

    first = dag.test(run_conf={"model_version": "raw"})
    assert first.state == "success"
    index = CatalogueIndex(settings.milvus_uri)
    live = index.live()
    assert live.name == f"tracks__raw__{settings.features.version}" and live.model_version == "raw"
    assert index.count(live.name) == expected > 0
    index.close()  # Milvus Lite: one process-wide user at a time; the next run opens the folder itself

    second = dag.test(run_conf={"model_version": "raw"})
    assert second.state == "success"
    index = CatalogueIndex(settings.milvus_uri)
    assert index.alias_target() == live.name and index.count(live.name) == expected
    index.close()
