"""refresh_index: the champion model and the feature store in, a verified Milvus collection behind ``tracks`` out.

Runs when a model is promoted (champion Asset) and when the feature store changes (features Asset), so
newly imported tracks reach the index under an unchanged champion without a retrain; or by hand with the
run parameter ``model_version`` (``champion``, ``raw`` for the untrained baseline, or a registry version).
The version is resolved once, in its own task that fails at once for a version the registry does not
have, so a retry of the refresh embeds with the same model even if the champion moves meanwhile. Before
any champion (a refresh of ``champion``), or with no features yet, the run skips with the reason. The
refresh embeds what is missing, verifies the collection and only then moves ``tracks``; a re-run finds
its half-built collection and finishes it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from assets import CHAMPION, FEATURES, TRACK_INDEX  # the DAG folder is on sys.path when Airflow parses it
from common import default_args

from pipelines.model.ref import CHAMPION as CHAMPION_ALIAS
from pipelines.model.ref import REFRESH_NAMES, param_pattern


@dag(
    dag_id="refresh_index",
    schedule=CHAMPION | FEATURES,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    default_args=default_args(timedelta(hours=3)),
    params={
        "model_version": Param(
            CHAMPION_ALIAS,
            type="string",
            pattern=param_pattern(REFRESH_NAMES),
            description="'champion' or 'challenger' (registry aliases), 'raw' or 'meanstd' (baselines), 'best' "
            "(the champion if it beats the baselines, else the strongest baseline) or a version number.",
        )
    },
    tags=["musicrec", "index"],
    doc_md=__doc__,
)
def refresh_index() -> None:
    # An unknown version stays unknown: AirflowFailException fails it at once. MLflow down (Unavailable) is
    # raised as is, so the task retries with the DAG's back-off.
    @task
    def resolve_model(params: dict[str, Any] | None = None) -> str:
        from pipelines.errors import UserError
        from pipelines.inputs import champion_missing
        from pipelines.model.ref import ModelRef
        from pipelines.settings import get_settings

        settings = get_settings()
        requested = str((params or {}).get("model_version", CHAMPION_ALIAS))
        if requested == CHAMPION_ALIAS and (reason := champion_missing(settings)):
            raise AirflowSkipException(f"nothing to refresh yet: {reason}")  # features before any model
        try:
            version = ModelRef.parse(requested, REFRESH_NAMES).check(settings).text
        except UserError as exc:
            raise AirflowFailException(str(exc)) from exc
        return version

    @task(outlets=[TRACK_INDEX])
    def refresh(model_version: str, outlet_events: Any = None) -> dict:
        from pipelines.index.refresh import RefreshJob, run
        from pipelines.inputs import features_missing
        from pipelines.settings import get_settings
        from pipelines.steps import log_report

        settings = get_settings()
        if reason := features_missing(settings):
            raise AirflowSkipException(f"nothing to refresh yet: {reason}")
        report = log_report("refresh", run(settings, RefreshJob(model_version=model_version)))
        outlet_events[TRACK_INDEX].extra = {
            "collection": report.collection,
            "model_version": report.model_version,
            "tracks": report.total,
        }
        return report.as_dict()

    refresh(resolve_model())


refresh_index()
