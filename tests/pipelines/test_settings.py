"""Where each effective setting comes from: defaults, the environment, or a .env file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.settings import AirflowSettings, PathSettings, Settings, TrainingSettings, effective_values


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No MUSICREC_* variables and an empty working folder (for .env)."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("MUSICREC_")]:
        monkeypatch.delenv(name)
    return tmp_path


def test_each_value_names_its_source(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("MUSICREC_SEARCH_EF=64\nMUSICREC_STACK__REDIS=6390\nMUSICREC_CACHE_DIR=cache\n")
    monkeypatch.setenv("MUSICREC_SERVING_MAX_K", "50")
    monkeypatch.setenv("MUSICREC_FEATURES__N_MFCC", "13")
    values = {name: (value, source) for name, value, source in effective_values(Settings())}
    assert values["index.search_ef"] == (64, ".env")
    assert values["stack.redis"] == (6390, ".env")
    assert values["paths.cache_dir"] == ((clean_env / "cache").resolve(), ".env")
    assert values["serving.serving_max_k"] == (50, "environment")
    assert values["features.n_mfcc"] == (13, "environment")
    assert values["index.hnsw_m"] == (16, "default")
    assert values["paths.data_root"] == ((clean_env / "data").resolve(), "default")
    # every field of every section is listed once
    sections = {"paths", "features", "training", "airflow", "stack", "index", "serving"}
    assert sections <= set(Settings.model_fields)
    expected = {n for n in Settings.model_fields if n not in sections}
    for section in sections:
        expected |= {f"{section}.{f}" for f in type(getattr(Settings(), section)).model_fields}
    assert set(values) == expected


def test_the_environment_names_are_unchanged(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MUSICREC_DATA_ROOT": str(clean_env / "d"),
        "MUSICREC_CACHE_DIR": str(clean_env / "c"),
        "MUSICREC_MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MUSICREC_MILVUS_URI": "http://milvus:19530",
        "MUSICREC_GENRE_MAP": str(clean_env / "genres.csv"),
        "MUSICREC_TRAINING_JOB": '{"train": {"epochs": 12}}',
        "MUSICREC_AIRFLOW_API_URL": "http://airflow:8080",
        "MUSICREC_AIRFLOW_USERNAME": "admin",
        "MUSICREC_AIRFLOW_PASSWORD": "s3cret",
        "MUSICREC_AIRFLOW_RETRAIN_CRON": "30 2 * * *",
        "MUSICREC_ALERT_WEBHOOK_URL": "http://hooks/alert",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.paths == PathSettings(
        data_root=clean_env / "d",
        cache_dir=clean_env / "c",
        mlflow_tracking_uri="http://mlflow:5000",
        milvus_uri="http://milvus:19530",
        genre_map=clean_env / "genres.csv",
    )
    assert s.training.job == {"train": {"epochs": 12}}
    assert (s.airflow.api_url, s.airflow.username) == ("http://airflow:8080", "admin")
    assert s.airflow.password.get_secret_value() == "s3cret"
    assert s.airflow.alert_webhook_url == "http://hooks/alert"
    sources = {name: source for name, _, source in effective_values(s)}
    moved = ["paths." + f for f in PathSettings.model_fields] + ["training.job"]
    moved += ["airflow." + f for f in AirflowSettings.model_fields]
    assert {sources[n] for n in moved} == {"environment"}


def test_sections_are_built_from_the_data_root_alone(clean_env: Path) -> None:
    paths = PathSettings(data_root=clean_env / "x")
    assert paths.mlflow_tracking_uri == f"sqlite:///{(clean_env / 'x').resolve() / 'mlflow.db'}"
    assert paths.milvus_uri == str((clean_env / "x").resolve() / "milvus.db")
    settings = Settings(paths=paths)
    assert settings.manifest_path == (clean_env / "x").resolve() / "catalogue" / "manifest.parquet"
    assert Settings().training == TrainingSettings(job={})
    assert AirflowSettings(alert_webhook_url="http://a").alert_webhook_url == "http://a"  # by name, too


def test_config_masks_the_airflow_password(clean_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    env |= {"MUSICREC_DATA_ROOT": str(clean_env / "data"), "MUSICREC_AIRFLOW_PASSWORD": "s3cret"}
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", "config"]
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=120).stdout
    json_out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, check=True, timeout=120)
    assert "s3cret" not in text and "s3cret" not in json_out.stdout
    assert "airflow.password = ********** (environment)" in text.replace("  (", " (")
    values = json.loads(json_out.stdout)
    assert values["airflow.password"] == {"value": "**********", "source": "environment"}
    assert values["training.job"] == {"value": {}, "source": "default"}
