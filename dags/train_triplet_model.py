"""train_triplet_model: the feature store in, a registered challenger (and maybe a new champion) out.

Step two of the method: build the triplet dataset, train the feed-forward branch (once per held-out
source, once on every track for serving), evaluate it leave-one-source-out beside the raw-MFCC, mean+std
and random baselines and the champion's recipe, and let the gate decide on promotion. Runs weekly and
whenever the feature store changes. A promotion announces the champion Asset, on which the catalogue
refresh is scheduled; a run that does not promote announces nothing.

The run parameter ``job`` overrides fields of :class:`pipelines.training.pipeline.TrainingJob`, e.g.
``airflow dags trigger train_triplet_model -c '{"job": {"secondary": false, "train": {"epochs": 10}}}'``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from assets import CHAMPION, FEATURES  # the DAG folder is on sys.path when Airflow parses it


def _job(params: dict[str, Any] | None) -> Any:
    from pipelines.training.pipeline import TrainingJob

    return TrainingJob.model_validate((params or {}).get("job") or {})


@dag(
    dag_id="train_triplet_model",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=[FEATURES]),
    catchup=False,
    max_active_runs=1,
    params={"job": Param({}, type="object", description="Overrides of TrainingJob (JSON).")},
    tags=["musicrec", "training"],
    doc_md=__doc__,
)
def train_triplet_model() -> None:
    @task
    def build_triplets(params: dict[str, Any] | None = None) -> dict:
        from pipelines.settings import get_settings
        from pipelines.training.pipeline import prepare

        return prepare(get_settings(), _job(params))

    @task
    def train(prepared: dict, params: dict[str, Any] | None = None) -> str:
        from pipelines.settings import get_settings
        from pipelines.training.pipeline import train as run_training

        return run_training(get_settings(), _job(params), prepared)

    @task
    def evaluate(mlflow_run_id: str, params: dict[str, Any] | None = None) -> dict:
        from pipelines.settings import get_settings
        from pipelines.training.pipeline import evaluate as run_evaluation

        return run_evaluation(get_settings(), _job(params), mlflow_run_id)

    @task
    def gate(evaluated: dict, params: dict[str, Any] | None = None) -> dict:
        from dataclasses import asdict

        from pipelines.settings import get_settings
        from pipelines.training.pipeline import gate as run_gate

        return asdict(run_gate(get_settings(), _job(params), evaluated))

    @task(outlets=[CHAMPION])
    def announce_champion(decision: dict, outlet_events: Any = None) -> str:
        if not decision["promoted"]:
            raise AirflowSkipException(f"version {decision['version']} was not promoted")
        outlet_events[CHAMPION].extra = {"version": decision["version"]}
        return decision["version"]

    announce_champion(gate(evaluate(train(build_triplets()))))


train_triplet_model()
