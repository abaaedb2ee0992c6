"""The evaluate_model DAG: its shape and parameters, and a run by Airflow that logs an evaluation run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import Registry
from tests.dags.airflow_db import task_instances
from tests.pipelines.index.helpers import make_library

pytestmark = pytest.mark.integration


def test_evaluate_model_shape_and_parameters(dag_bag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dag_bag.dags["evaluate_model"]
    assert set(dag.task_ids) == {"evaluate"}
    assert dag.get_task("evaluate").retries == 0  # bad input stays bad: no retries
    assert type(dag.timetable).__name__ == "NullTimetable"  # by hand only
    version = dag.params.get_param("version")
    for good in ("champion", "challenger", "12", "meanstd", "raw", "random"):
        assert version.resolve(value=good) == good
    for bad in ("best", "0", "12a", "", "x' or '1"):
        with pytest.raises(ParamValidationError):
            version.resolve(value=bad)


def test_evaluate_model_run_logs_an_evaluation_and_refuses_a_missing_catalogue(
    dag_bag: Any, musicrec_env: Any, tmp_path: Path
) -> None:
    from pipelines.evaluation.model_eval import evaluation_runs
    from pipelines.features.build import FeatureBuild

    settings = musicrec_env(make_library(tmp_path))
    FeatureBuild(settings=settings, shards=1).run()
    dag = dag_bag.dags["evaluate_model"]

    run = dag.test(run_conf={"version": "meanstd", "catalogue": str(settings.data_root)})
    assert run.state == "success"
    (found,) = evaluation_runs(settings, "meanstd")
    assert found.data.params["catalogue"] == str(settings.data_root)
    metrics = Registry(settings).run_metrics(found.info.run_id)
    assert "paired/model-raw/catalogue/p_at_10/lo" in metrics and metrics["model/catalogue/p_at_10"] > 0

    failed = dag.test(run_conf={"version": "raw", "catalogue": str(tmp_path / "nowhere")})
    assert failed.state == "failed"
    ti = task_instances(failed)["evaluate"][0]
    assert ti.state == "failed" and ti.try_number == 1
    assert evaluation_runs(settings, "raw") == []
