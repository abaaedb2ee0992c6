"""import_catalogue: a folder or CSV of style-labelled music in, the catalogue manifest (and its Asset) out.

The start of the Asset chain from the UI: trigger it with ``path`` (a folder with one sub-folder per
style, or a CSV with path and style columns) readable by the workers. ``musicrec catalogue import`` does
the same from a shell and announces the Asset through the API. With ``sync`` on, the path must have been
imported before and the run is ``musicrec catalogue sync``: moved files keep their ids, only new and
changed files are hashed. A run that changes nothing in the manifest announces nothing, so features,
training and the index refresh are not re-run for nothing; the Asset chain then embeds only new content
and updates the index in place.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from assets import MANIFEST  # the DAG folder is on sys.path when Airflow parses it
from common import default_args


@dag(
    dag_id="import_catalogue",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    default_args=default_args(timedelta(hours=3), retries=0),  # a bad path stays bad on a retry
    params={
        "path": Param(type="string", minLength=1, description="Folder (one sub-folder per style) or CSV."),
        "sync": Param(False, type="boolean", description="Sync a path imported before (moves keep their ids)."),
    },
    tags=["musicrec", "catalogue"],
    doc_md=__doc__,
)
def import_catalogue() -> None:
    @task(outlets=[MANIFEST])
    def import_files(params: dict[str, Any] | None = None, outlet_events: Any = None) -> dict:
        from dataclasses import asdict
        from pathlib import Path

        from pipelines.catalogue.import_step import ImportJob, run
        from pipelines.errors import UserError
        from pipelines.settings import get_settings
        from pipelines.steps import log_report

        params = params or {}
        job = ImportJob(path=Path(str(params["path"])), sync=bool(params.get("sync")))
        try:
            report = log_report("import", run(get_settings(), job))
        except UserError as exc:
            raise AirflowFailException(str(exc)) from exc
        if not (report.added or report.updated or report.moved or report.removed):
            raise AirflowSkipException(f"manifest unchanged: {report.line()}")
        outlet_events[MANIFEST].extra = {
            "origin": report.origin,
            "added": report.added,
            "updated": report.updated,
            "moved": report.moved,
            "removed": report.removed,
        }
        return asdict(report)

    import_files()


import_catalogue()
