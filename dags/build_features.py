"""build_features: the catalogue manifest in, the feature store out (step one of the method).

Reads the manifest, plans shards of the tracks not yet embedded under the current feature parameters,
embeds each shard in its own mapped task (a file that fails is quarantined, the run goes on), then
validates and publishes all shards at once and announces the feature store Asset, on which training is
scheduled. Parameters come from the musicrec settings (environment variables ``MUSICREC_*``); the run
parameter ``shards`` sets the number of shards (0: one per core), e.g.
``airflow dags trigger build_features -c '{"shards": 8}'``. A run with nothing new to embed skips
``publish``, so the Asset (and training) only moves when the store does; a run before any manifest
exists skips at ``read_manifest``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from assets import FEATURES, MANIFEST  # the DAG folder is on sys.path when Airflow parses it
from common import default_args


@dag(
    dag_id="build_features",
    schedule=[MANIFEST],
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    default_args=default_args(timedelta(hours=2)),
    params={"shards": Param(0, type="integer", minimum=0, description="Shards to split the work in; 0: one per core.")},
    tags=["musicrec", "features"],
    doc_md=__doc__,
)
def build_features() -> None:
    @task(retries=0)  # a broken manifest stays so on a retry
    def read_manifest() -> dict:
        from pipelines.features.build import check_manifest
        from pipelines.inputs import manifest_missing
        from pipelines.settings import get_settings

        settings = get_settings()
        if reason := manifest_missing(settings):
            raise AirflowSkipException(f"nothing to embed yet: {reason}")
        return check_manifest(settings)

    @task
    def plan(manifest: dict, params: dict[str, Any] | None = None) -> dict:
        from dataclasses import asdict

        from pipelines.features.build import plan_shards
        from pipelines.settings import get_settings

        return asdict(plan_shards(get_settings(), shards=int((params or {}).get("shards", 0))))

    @task
    def shard_files(plan: dict) -> list[str]:
        return plan["shards"]

    # A failing file never fails its shard (it is quarantined); a shard fails when its worker cannot start,
    # which a retry may get past.
    @task(max_active_tis_per_dagrun=16, execution_timeout=timedelta(hours=6))
    def compute(shard: str) -> dict:
        from dataclasses import asdict

        from pipelines.features.build import compute_shard
        from pipelines.settings import get_settings

        return asdict(compute_shard(shard, get_settings()))

    # Runs when no shard was mapped (nothing new), skips with the rest when read_manifest skipped.
    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def merge(plan: dict, shards: list[dict]) -> dict:
        from dataclasses import asdict

        from pipelines.features.build import merge_shards
        from pipelines.settings import get_settings

        return asdict(merge_shards(plan["run_dir"], get_settings()))

    @task(outlets=[FEATURES])
    def publish(report: dict, outlet_events: Any = None) -> None:
        # A run that embedded nothing new leaves the Asset alone, so training is not re-run for nothing.
        if not report["embedded"]:
            raise AirflowSkipException(f"nothing new under feature version {report['version']}")
        outlet_events[FEATURES].extra = {"version": report["version"], "rows": report["rows"]}

    planned = plan(read_manifest())
    shards = compute.expand(shard=shard_files(planned))
    publish(merge(planned, shards))


build_features()
