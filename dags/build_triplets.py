"""build_triplets: only the first step of training, by hand: frozen split, training windows, triplet Parquet.

Useful to inspect a triplet dataset (``<data root>/training/triplets/``) before training on it; the
scheduled ``train_triplet_model`` runs the same step as its first task. Run parameter ``job``: overrides
of :class:`pipelines.training.pipeline.TrainingJob`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task


@dag(
    dag_id="build_triplets",
    schedule=None,
    catchup=False,
    params={"job": Param({}, type="object", description="Overrides of TrainingJob (JSON).")},
    tags=["musicrec", "training"],
    doc_md=__doc__,
)
def build_triplets() -> None:
    @task
    def build(params: dict[str, Any] | None = None) -> dict:
        from pipelines.settings import get_settings
        from pipelines.training.pipeline import TrainingJob, prepare

        return prepare(get_settings(), TrainingJob.model_validate((params or {}).get("job") or {}))

    build()


build_triplets()
