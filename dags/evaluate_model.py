"""evaluate_model: a registered model (or a baseline) scored on a labelled catalogue, without training.

Triggered by hand, e.g. from the UI with ``version`` (a number, ``champion``, ``challenger``, ``raw``,
``meanstd`` or ``random``) and ``catalogue`` (the data root of a labelled catalogue; empty: this data
root). One task calls :func:`pipelines.evaluation.model_eval.evaluate_model`: leave-one-source-out views
beside every baseline, paired bootstrap intervals over sources, logged as an MLflow run linked to the
version (``musicrec model show`` lists it). Bad parameters fail the task at once, without retries.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from common import default_args  # the DAG folder is on sys.path when Airflow parses it


@dag(
    dag_id="evaluate_model",
    schedule=None,
    catchup=False,
    max_active_runs=2,
    dagrun_timeout=timedelta(hours=2),
    default_args=default_args(timedelta(hours=1), retries=0),
    params={
        "version": Param(
            "champion",
            type="string",
            pattern=r"^(champion|challenger|raw|meanstd|random|[1-9][0-9]{0,8})$",
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
        from pipelines.evaluation.model_eval import evaluate_model as run
        from pipelines.registry import RegistryUnavailable
        from pipelines.settings import get_settings

        params = params or {}
        catalogue = str(params.get("catalogue") or "")
        try:
            result = run(get_settings(), str(params.get("version", "champion")), Path(catalogue) if catalogue else None)
        except RegistryUnavailable:
            raise
        except UserError as exc:
            raise AirflowFailException(str(exc)) from exc
        return {"version": result.version, "run_id": result.run_id, "mode": result.mode}

    evaluate()


evaluate_model()
