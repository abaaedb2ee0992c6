"""Reading what a `dag.test()` run left in the Airflow database: task instances and Asset events."""

from __future__ import annotations

from typing import Any


def task_instances(run: Any) -> dict[str, list[Any]]:
    """A run's task instances by task id, mapped ones in map-index order (detached: readable afterwards)."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        session.expunge_all()
    by_task: dict[str, list[Any]] = {}
    for ti in sorted(tis, key=lambda t: t.map_index):
        by_task.setdefault(ti.task_id, []).append(ti)
    return by_task


def asset_events(asset_name: str) -> list[dict]:
    """The ``extra`` of every event of the Asset named ``asset_name``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(
            session.scalars(
                select(AssetEvent.extra)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.name == asset_name)
            ).all()
        )
