"""refresh_catalogue: a new champion model in, a verified Milvus collection behind the alias ``tracks`` out.

Runs whenever the champion Asset changes (a model was promoted), or by hand with the run parameter
``model_version`` (``champion``, ``raw`` for the untrained baseline, or a registry version). The version
is resolved once, in its own task, so a retry of the refresh embeds with the same model even if the
champion moves meanwhile. The refresh embeds the feature store, verifies the new collection and only
then moves ``tracks``; it is safe to retry: a re-run finds its half-built collection and finishes it.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task
from assets import CATALOGUE_INDEX, CHAMPION  # the DAG folder is on sys.path when Airflow parses it


@dag(
    dag_id="refresh_catalogue",
    schedule=[CHAMPION],
    catchup=False,
    max_active_runs=1,
    params={
        "model_version": Param(
            "champion", type="string", description="'champion' (registry alias), 'raw' or a model version."
        )
    },
    tags=["musicrec", "index"],
    doc_md=__doc__,
)
def refresh_catalogue() -> None:
    @task
    def resolve_model(params: dict[str, Any] | None = None) -> str:
        from pipelines.index.models import resolve_model_version
        from pipelines.settings import get_settings

        return resolve_model_version(get_settings(), str((params or {}).get("model_version", "champion")))

    @task(outlets=[CATALOGUE_INDEX], retries=2)
    def refresh(model_version: str, outlet_events: Any = None) -> dict:
        from pipelines.index.refresh import RefreshCatalogue
        from pipelines.settings import get_settings

        report = RefreshCatalogue(settings=get_settings(), model_version=model_version).run()
        outlet_events[CATALOGUE_INDEX].extra = {
            "collection": report.collection,
            "model_version": report.model_version,
            "tracks": report.total,
        }
        return report.as_dict()

    refresh(resolve_model())


refresh_catalogue()
