"""evaluate_model: a registered model (or a baseline) scored on a labelled catalogue, without training.

Triggered by hand, e.g. from the UI with ``version`` (a number, ``champion``, ``challenger``, ``raw``,
``meanstd`` or ``random``) and ``catalogue`` (the data root of a labelled catalogue; empty: this data
root). One task runs the evaluate-model step (:func:`pipelines.evaluation.model_eval.run`, as ``musicrec
model evaluate`` does): leave-one-source-out views beside every baseline, paired bootstrap intervals
over sources, logged as an MLflow run linked to the version (``musicrec model show`` lists it). Bad
parameters fail the task at once, without retries.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from common import default_args  # the DAG folder is on sys.path when Airflow parses it

from pipelines.model.ref import CHAMPION, EVALUATE_NAMES, param_pattern


@dag(
    dag_id="evaluate_model",
    schedule=None,
    catchup=False,
    max_active_runs=2,
    dagrun_timeout=timedelta(hours=2),
    default_args=default_args(timedelta(hours=1), retries=0),
    params={
        "version": Param(
            CHAMPION,
            type="string",
            pattern=param_pattern(EVALUATE_NAMES),
            description="A registry version, 'champion' or 'challenger', or a baseline: raw, meanstd, random.",
        ),
        "catalogue": Param(
            "",
            type="string",
            maxLength=4096,
            description="Data root of a labelled catalogue (manifest and features); empty: this data root.",
        ),
    },
    tags=["musicrec", "evaluation"],
    doc_md=__doc__,
)
def evaluate_model() -> None:
    @task
    def evaluate(params: dict[str, Any] | None = None) -> dict:
        from pathlib import Path

        from pipelines.errors import UserError
        from pipelines.evaluation.model_eval import EvaluateModelJob, run
        from pipelines.settings import get_settings
        from pipelines.steps import log_report

        params = params or {}
        catalogue = str(params.get("catalogue") or "")
        version = str(params.get("version", CHAMPION))
        job = EvaluateModelJob(version=version, catalogue=Path(catalogue) if catalogue else None)
        try:
            report = log_report("evaluate_model", run(get_settings(), job))
        except UserError as exc:
            raise AirflowFailException(str(exc)) from exc
        return {"version": report.version, "run_id": report.run_id, "mode": report.mode}

    evaluate()


evaluate_model()
