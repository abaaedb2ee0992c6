"""The refresh_index DAG: its shape, and a run by Airflow from a real feature store into Milvus Lite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.index.milvus import TrackIndex
from tests.dags.webhook import Webhook
from tests.pipelines.index.helpers import make_library

pytestmark = pytest.mark.integration


def test_refresh_index_shape(dag_bag: Any) -> None:
    from assets import CHAMPION, TRACK_INDEX

    dag = dag_bag.dags["refresh_index"]
    assert set(dag.task_ids) == {"resolve_model", "refresh"}
    assert dag.get_task("refresh").upstream_task_ids == {"resolve_model"}
    assert dag.get_task("refresh").outlets == [TRACK_INDEX]
    assert dag.get_task("refresh").retries == 2  # safe: a re-run finishes a half-built collection
    assert CHAMPION in dag.timetable.asset_condition.objects  # runs when a model is promoted
    assert dag.max_active_runs == 1


def test_refresh_index_run_builds_then_leaves_an_unchanged_catalogue_alone(
    dag_bag: Any, musicrec_env: Any, tmp_path: Path
) -> None:
    from pipelines.features.build import FeatureBuild
    from pipelines.features.store import read_features

    settings = musicrec_env(make_library(tmp_path))
    FeatureBuild(settings=settings, shards=1).run()
    expected = len(read_features(settings).track_ids)
    dag = dag_bag.dags["refresh_index"]

    first = dag.test(run_conf={"model_version": "raw"})
    assert first.state == "success"
    index = TrackIndex(settings.paths.milvus_uri)
    live = index.live()
    assert live.name == f"tracks__raw__{settings.features.version}" and live.model_version == "raw"
    assert index.count(live.name) == expected > 0
    index.close()  # Milvus Lite: one process-wide user at a time; the next run opens the folder itself

    second = dag.test(run_conf={"model_version": "raw"})
    assert second.state == "success"
    index = TrackIndex(settings.paths.milvus_uri)
    assert index.alias_target() == live.name and index.count(live.name) == expected
    index.close()


def test_an_unknown_model_version_fails_at_once_and_alerts(
    dag_bag: Any, musicrec_env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from assets import FEATURES

    from tests.dags.airflow_db import task_instances

    dag = dag_bag.dags["refresh_index"]
    assert FEATURES in dag.timetable.asset_condition.objects  # new tracks reach the index without a retrain
    hook = Webhook()
    try:
        monkeypatch.setenv("MUSICREC_ALERT_WEBHOOK_URL", hook.url)
        musicrec_env(make_library(tmp_path))
        run = dag.test(run_conf={"model_version": "999"})
    finally:
        hook.close()
    assert run.state == "failed"
    tis = task_instances(run)
    assert tis["resolve_model"][0].state == "failed" and tis["resolve_model"][0].try_number == 1
    assert tis["refresh"][0].state == "upstream_failed"
    assert len(hook.received) == 1
    alert = hook.received[0]
    assert alert["source"] == "musicrec" and alert["dag_id"] == "refresh_index"
    assert alert["task_id"] == "resolve_model" and "999" in alert["error"]


def test_resolve_model_retries_an_outage_and_fails_bad_input_at_once(
    dag_bag: Any, musicrec_env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The task's two error families: MLflow down (Unavailable) is raised as is, so Airflow retries it with
    the DAG's back-off; a version the registry lacks (UserError) is AirflowFailException: no retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.index.lite_server import free_port
    from pipelines.registry import RegistryUnavailable
    from pipelines.settings import get_settings

    task = dag_bag.dags["refresh_index"].get_task("resolve_model")
    assert task.retries == 2
    settings = musicrec_env(make_library(tmp_path))
    with pytest.raises(AirflowFailException, match="no version '999'"):
        task.python_callable(params={"model_version": "999"})
    monkeypatch.setenv("MUSICREC_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    assert get_settings().paths.data_root == settings.paths.data_root
    with pytest.raises(RegistryUnavailable, match="not reachable"):
        task.python_callable(params={"model_version": "champion"})


def test_parameters_are_checked_when_a_run_is_triggered(dag_bag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    refresh = dag_bag.dags["refresh_index"].params.get_param("model_version")
    assert refresh.resolve(value="12") == "12" and refresh.resolve(value="champion") == "champion"
    for bad in ("x' or '1", "0", "12a", ""):
        with pytest.raises(ParamValidationError):
            refresh.resolve(value=bad)
    job = dag_bag.dags["train_triplet_model"].params.get_param("job")
    assert job.resolve(value={"train": {"epochs": 3}, "workers": 1}) == {"train": {"epochs": 3}, "workers": 1}
    for bad in ({"train": {"epochz": 3}}, {"train": {"epochs": 0}}, {"workers": "two"}, {"gate": {"margin": -1}}):
        with pytest.raises(ParamValidationError):
            job.resolve(value=bad)
