"""The synthetic catalogue built once per session, and per-test registries on top of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.settings import Settings
from tests.pipelines.training.synth_catalogue import build_synthetic_catalogue


@pytest.fixture(scope="session")
def synth_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_synthetic_catalogue(tmp_path_factory.mktemp("synth-catalogue"))


@pytest.fixture
def synth_settings(synth_catalogue: Settings, tmp_path: Path) -> Settings:
    """The shared synthetic features with a registry (MLflow database) of this test's own."""
    return synth_catalogue.model_copy(
        update={
            "paths": synth_catalogue.paths.model_copy(
                update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
            )
        }
    )
