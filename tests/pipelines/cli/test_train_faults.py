"""A `musicrec train` killed mid-training: its MLflow run ends FAILED (SIGTERM at once, SIGKILL by the next
`musicrec train`), and nothing it trained is registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.registry import Registry
from pipelines.settings import Settings
from tests.pipelines.training.synth_catalogue import SYNTH_FEATURES, build_synthetic_catalogue

pytestmark = pytest.mark.integration

_MAIN = "from pipelines.cli.app import run; run()"
_LONG = ["train", "--folds", "3", "--no-secondary", "--epochs", "40"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_synthetic_catalogue(tmp_path_factory.mktemp("train-faults"))


def _env(settings: Settings, uri: str) -> dict[str, str]:
    return {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.data_root),
        "MUSICREC_FEATURES__N_FRAMES": str(SYNTH_FEATURES.n_frames),
        "MUSICREC_MLFLOW_TRACKING_URI": uri,
    }


def _registry(settings: Settings, uri: str) -> Registry:
    """The test's view of the MLflow store; its tables are made here, before any `musicrec train` starts."""
    registry = Registry(settings.model_copy(update={"mlflow_tracking_uri": uri}))
    registry.experiment_id()
    return registry


def _start_and_wait_for_run(
    settings: Settings, registry: Registry, known: frozenset[str] = frozenset()
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a long `musicrec train` and return once its own MLflow run (not one of ``known``) is RUNNING."""
    cmd = [sys.executable, "-c", _MAIN, *_LONG]
    env = _env(settings, registry.uri)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        mine = [r.info.run_id for r in registry.running_runs() if r.info.run_id not in known]
        if mine:
            return proc, mine[0]
        time.sleep(0.25)
    proc.kill()
    raise AssertionError("no MLflow run appeared")


def _registered_from(registry: Registry, run_id: str) -> list[str]:
    return [v.version for v in registry.versions() if v.run_id == run_id]


def test_killed_training_ends_failed_and_registers_nothing(catalogue: Settings, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = _registry(catalogue, uri)

    proc, killed = _start_and_wait_for_run(catalogue, registry)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert registry.client.get_run(killed).info.status == "RUNNING", "a SIGKILL cannot be caught"

    # the next `musicrec train` ends the SIGKILLed run before it starts its own
    proc, termed = _start_and_wait_for_run(catalogue, registry, frozenset({killed}))
    run = registry.client.get_run(killed)
    assert run.info.status == "FAILED" and "killed" in run.data.tags["failure"]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    took = time.monotonic() - started
    assert registry.client.get_run(termed).info.status == "FAILED", "SIGTERM ends the run FAILED at once"

    assert registry.running_runs() == []
    assert _registered_from(registry, killed) == [] and _registered_from(registry, termed) == []
    assert registry.versions() == [] and took < 60
