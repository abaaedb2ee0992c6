"""What every musicrec DAG shares: retry policy, time limits and the failure callback.

Retries back off exponentially, for steps where trying again can help (a server restarting, a worker
lost); steps that only read the user's input set ``retries=0``. Every task has an ``execution_timeout``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def on_failure(context: Any) -> None:
    """Log the failed task and post it to ``MUSICREC_ALERT_WEBHOOK_URL``; end its MLflow runs as FAILED."""
    from pipelines.alerts import notify_failure
    from pipelines.settings import get_settings

    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    settings = get_settings()
    run_id = getattr(run, "run_id", None) or context.get("run_id")
    notify_failure(
        settings,
        {
            "dag_id": getattr(ti, "dag_id", None),
            "run_id": run_id,
            "task_id": getattr(ti, "task_id", None),
            "try_number": getattr(ti, "try_number", None),
            "error": str(context.get("exception") or context.get("reason") or ""),
        },
    )
    if run_id and getattr(ti, "dag_id", None) == "train_triplet_model":
        from pipelines.training.steps.train import end_abandoned_runs

        end_abandoned_runs(settings, dag_run_id=run_id)


def default_args(timeout: timedelta, retries: int = 2) -> dict[str, Any]:
    return {
        "retries": retries,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timeout,
        "on_failure_callback": on_failure,
    }
