"""train_triplet_model: the feature store in, a registered challenger (and maybe a new champion) out.

Step two of the method as a scheduled DAG: triplets, training, leave-one-source-out evaluation and the gate,
on the clock of ``MUSICREC_AIRFLOW_RETRAIN_CRON`` (default Mondays 03:00 UTC) and whenever the feature store
changes; a promotion announces the champion Asset that the index refresh is scheduled on. A run with nothing
to train on yet (no catalogue, no features, no labelled track) or nothing new skips, it does not fail. The
recipe is ``MUSICREC_TRAINING_JOB``; a run's ``job`` parameter overrides it.
Design: docs/training.md#orchestration
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from assets import CHAMPION, FEATURES  # the DAG folder is on sys.path when Airflow parses it
from common import default_args

from pipelines.settings import AirflowSettings
from pipelines.training.config import job_schema


def _job(params: dict[str, Any] | None) -> Any:
    from pipelines.errors import UserError
    from pipelines.settings import get_settings
    from pipelines.training.config import scheduled_job

    try:
        return scheduled_job(get_settings(), (params or {}).get("job"))
    except UserError as exc:
        raise AirflowFailException(str(exc)) from exc


def retrain_timetable(cron: str) -> CronTriggerTimetable:
    """The retraining clock. With ``catchup=False`` only the latest slot that has passed ever runs: at once
    when the DAG is first scheduled (``run_immediately=True``, on any day and hour), and once after the
    scheduler was down over a slot; older missed slots never run."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=True)


@dag(
    dag_id="train_triplet_model",
    schedule=AssetOrTimeSchedule(timetable=retrain_timetable(AirflowSettings().retrain_cron), assets=[FEATURES]),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    default_args=default_args(timedelta(hours=2), retries=1),
    params={"job": Param({}, description="Overrides of TrainingJob (JSON).", **job_schema())},
    tags=["musicrec", "training"],
    doc_md=__doc__,
)
def train_triplet_model() -> None:
    @task(retries=0)
    def check_inputs(params: dict[str, Any] | None = None) -> None:
        from pipelines.inputs import training_inputs_missing
        from pipelines.settings import get_settings
        from pipelines.training.labelled import trained_version

        settings, job = get_settings(), _job(params)  # a malformed job fails here, inputs or not
        if reason := training_inputs_missing(settings):
            raise AirflowSkipException(f"nothing to train on yet: {reason}")
        if version := trained_version(settings, job):
            raise AirflowSkipException(f"model version {version} was trained on these inputs: not retraining")

    @task
    def build_triplets(params: dict[str, Any] | None = None) -> dict:
        from pipelines.settings import get_settings
        from pipelines.steps import log_report
        from pipelines.training.steps.prepare import run

        return log_report("build_triplets", run(get_settings(), _job(params))).as_dict()

    @task(execution_timeout=timedelta(hours=8))
    def train(prepared: dict, params: dict[str, Any] | None = None) -> str:
        from pipelines.settings import get_settings
        from pipelines.steps import log_report
        from pipelines.training.steps.prepare import Prepared
        from pipelines.training.steps.train import run

        return log_report("train", run(get_settings(), _job(params), Prepared(**prepared))).run_id

    @task
    def evaluate(mlflow_run_id: str, params: dict[str, Any] | None = None) -> dict:
        from pipelines.settings import get_settings
        from pipelines.steps import log_report
        from pipelines.training.steps.evaluate import run
        from pipelines.training.steps.train import Trained

        settings = get_settings()
        trained = Trained(mlflow_run_id, settings.paths.mlflow_tracking_uri)
        return log_report("evaluate", run(settings, _job(params), trained)).as_dict()

    @task
    def gate(evaluated: dict, params: dict[str, Any] | None = None) -> dict:
        from dataclasses import asdict

        from pipelines.settings import get_settings
        from pipelines.steps import log_report
        from pipelines.training.steps.evaluate import Evaluated
        from pipelines.training.steps.gate import run

        return asdict(log_report("gate", run(get_settings(), _job(params), Evaluated(**evaluated))))

    @task(outlets=[CHAMPION])
    def announce_champion(decision: dict, outlet_events: Any = None) -> str:
        if not decision["promoted"]:
            raise AirflowSkipException(f"version {decision['version']} was not promoted")
        outlet_events[CHAMPION].extra = {"version": decision["version"]}
        return decision["version"]

    triplets = build_triplets()
    check_inputs() >> triplets
    announce_champion(gate(evaluate(train(triplets))))


train_triplet_model()
