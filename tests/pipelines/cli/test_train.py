"""`musicrec train` and `musicrec model show|promote|rollback`, run as a user would: subprocesses, exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.registry import CHALLENGER, CHAMPION, Registry
from pipelines.settings import Settings
from tests.pipelines.training.synth_catalogue import MECHANICS_GATE, SYNTH_FEATURES, build_synthetic_catalogue

pytestmark = pytest.mark.integration

_MAIN = "from pipelines.cli.app import run; run()"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_synthetic_catalogue(tmp_path_factory.mktemp("cli-train"))


def _musicrec(args: list[str], settings: Settings, tracking: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.paths.data_root),
        "MUSICREC_FEATURES__N_FRAMES": str(SYNTH_FEATURES.n_frames),
        "MUSICREC_MLFLOW_TRACKING_URI": tracking,
        "MUSICREC_TRAINING_JOB": json.dumps({"gate": MECHANICS_GATE.model_dump(mode="json")}),
    }
    cmd = [sys.executable, "-c", _MAIN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=300)


def _error(out: subprocess.CompletedProcess[str], text: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr[-2000:])
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: "), out.stderr[-2000:]
    assert text in out.stderr, out.stderr


def test_train_show_promote_rollback(catalogue: Settings, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "no versions yet" in _musicrec(["model", "show"], catalogue, uri).stdout
    _error(_musicrec(["model", "rollback"], catalogue, uri), "no champion to roll back")
    _error(_musicrec(["train", "--group-by", "genre"], catalogue, uri), "--group-by must be")

    args = ["train", "--folds", "3", "--no-secondary", "--epochs", "4", "--seeds", "2"]
    first = _musicrec(args, catalogue, uri)
    assert first.returncode == 0, first.stderr[-3000:]
    for row in ("| model |", "| raw |", "| meanstd |", "| random |", "Leave-one-source-out"):
        assert row in first.stdout
    assert "version 1: PROMOTED to champion" in first.stdout and "beats raw" in first.stdout
    assert (
        "Seed spread: `model` is the ensemble of 2 seeds" in first.stdout and "of 2 beat the baselines" in first.stdout
    )
    registry = Registry(
        catalogue.model_copy(update={"paths": catalogue.paths.model_copy(update={"mlflow_tracking_uri": uri})})
    )
    assert registry.alias(CHAMPION) == "1" and registry.version("1").tags["gate.decision"] == "promoted"

    second = _musicrec(args, catalogue, uri)  # same seed, same data: same numbers, so not promoted
    assert second.returncode == 0, second.stderr[-3000:]
    assert "version 2: kept as challenger" in second.stdout and "| champion |" in second.stdout
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == ("1", "2")
    assert registry.version("2").tags["gate.decision"] == "rejected"

    _error(_musicrec(["model", "promote", "1"], catalogue, uri), "already the champion")
    _error(_musicrec(["model", "promote", "7"], catalogue, uri), "no version '7'")
    assert "champion: v1 -> v2" in _musicrec(["model", "promote", "2"], catalogue, uri).stdout
    assert registry.alias(CHAMPION) == "2" and registry.version("2").tags["promoted_by"].startswith("manual:")
    show = _musicrec(["model", "show"], catalogue, uri).stdout
    assert "champion v2, challenger v2" in show and "promoted" in show and "rejected" in show
    assert "(seeds alone " in show
    assert "champion: v2 -> v1 (rolled back)" in _musicrec(["model", "rollback"], catalogue, uri).stdout
    assert registry.alias(CHAMPION) == "1"
    assert "champion v1, challenger v2" in _musicrec(["model", "show"], catalogue, uri).stdout


def test_train_with_mlflow_down_is_one_clear_line(catalogue: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _error(_musicrec(["train"], catalogue, f"http://127.0.0.1:{port}"), "is not reachable")
