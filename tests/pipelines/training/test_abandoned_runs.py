"""A training run whose process was killed does not stay RUNNING in MLflow."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from pipelines.registry import Registry
from pipelines.settings import Settings
from pipelines.training.steps.train import end_abandoned_runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(registry: Registry, **tags: str) -> str:
    return registry.start_run({}, {"job": "test", **tags}, name="train")


def test_runs_of_killed_processes_end_failed_and_live_ones_are_left_alone(settings: Settings) -> None:
    registry = Registry(settings)
    registry.check()
    host = socket.gethostname()
    killed_cli = _run(registry, launcher="cli", **{"launcher.host": host, "launcher.pid": str(_dead_pid())})
    live_cli = _run(registry, launcher="cli", **{"launcher.host": host, "launcher.pid": str(os.getpid())})
    other_host = _run(registry, launcher="cli", **{"launcher.host": host + "-x", "launcher.pid": str(_dead_pid())})
    dag_run = _run(registry, launcher="airflow", **{"airflow.dag_run_id": "manual__1", "launcher.pid": "1"})
    other_dag_run = _run(registry, launcher="airflow", **{"airflow.dag_run_id": "manual__2", "launcher.pid": "1"})

    def status(run_id: str) -> str:
        return registry.client.get_run(run_id).info.status

    assert end_abandoned_runs(settings) == [killed_cli]
    assert status(killed_cli) == "FAILED"
    assert registry.client.get_run(killed_cli).data.tags["failure"].startswith("abandoned")
    # a DAG run's tasks run in turn in processes that come and go: only its failure callback ends it
    assert {status(r) for r in (live_cli, other_host, dag_run, other_dag_run)} == {"RUNNING"}

    assert end_abandoned_runs(settings, dag_run_id="manual__1") == [dag_run]
    assert status(dag_run) == "FAILED" and status(other_dag_run) == "RUNNING"
    assert end_abandoned_runs(settings) == []  # idempotent
