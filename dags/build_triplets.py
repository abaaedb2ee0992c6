"""build_triplets: only the first step of training, by hand: frozen split, training windows, triplet Parquet.

Useful to inspect a triplet dataset (``<data root>/training/triplets/``) before training on it; the
scheduled ``train_triplet_model`` runs the same step as its first task. Run parameter ``job``: overrides
of :class:`pipelines.training.config.TrainingJob`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from common import default_args

from pipelines.training.config import job_schema


@dag(
    dag_id="build_triplets",
    schedule=None,
    catchup=False,
    dagrun_timeout=timedelta(hours=3),
    default_args=default_args(timedelta(hours=2), retries=1),
    params={"job": Param({}, description="Overrides of TrainingJob (JSON).", **job_schema())},
    tags=["musicrec", "training"],
    doc_md=__doc__,
)
def build_triplets() -> None:
    @task
    def build(params: dict[str, Any] | None = None) -> dict:
        from pipelines.settings import get_settings
        from pipelines.steps import log_report
        from pipelines.training.config import scheduled_job
        from pipelines.training.steps.prepare import run

        settings = get_settings()
        job = scheduled_job(settings, (params or {}).get("job"))
        return log_report("build_triplets", run(settings, job)).as_dict()

    build()


build_triplets()
