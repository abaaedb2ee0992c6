"""`musicrec model evaluate`, run as a user would: the evaluate-model step's report and its MLflow run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.evaluation.model_eval import evaluation_runs
from pipelines.settings import Settings
from tests.pipelines.training.synth_catalogue import SYNTH_FEATURES, build_synthetic_catalogue

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_synthetic_catalogue(tmp_path_factory.mktemp("cli-evaluate"), per_style=4, sources=3)


def test_model_evaluate_prints_the_report_and_the_run_it_logged(catalogue: Settings, tmp_path: Path) -> None:
    settings = catalogue.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    env = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.data_root),
        "MUSICREC_FEATURES__N_FRAMES": str(SYNTH_FEATURES.n_frames),
        "MUSICREC_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", "model", "evaluate", "meanstd"]
    out = subprocess.run([*cmd, "--draws", "200"], capture_output=True, text=True, env=env, check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (found,) = evaluation_runs(settings, "meanstd")
    assert "## Mean over sources" in out.stdout and "| meanstd |" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("model meanstd: catalogue p@10 ") and f"(MLflow run {found.info.run_id})" in last
    assert found.data.params["draws"] == "200"

    bad = subprocess.run([*cmd, "--draws", "10"], capture_output=True, text=True, env=env, check=False, timeout=300)
    assert bad.returncode == 2 and bad.stderr == "error: --draws must be at least 100, not 10\n"
