"""On a platform with nothing in it yet, the scheduled DAGs skip with the reason and alert nobody.

Each DAG is run by Airflow (``dag.test()``) against an empty data root, then with a catalogue but no
features, with the alert webhook pointed at a local endpoint; a malformed recipe must still fail and alert.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.settings import PathSettings, Settings
from tests.dags.airflow_db import task_instances
from tests.dags.webhook import Webhook
from tests.pipelines.index.helpers import make_library

pytestmark = pytest.mark.integration

TRAINING_TASKS = {"check_inputs", "build_triplets", "train", "evaluate", "gate", "announce_champion"}


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv("MUSICREC_ALERT_WEBHOOK_URL", hook.url)
    yield hook
    hook.close()


def _empty(tmp_path: Path) -> Settings:
    return Settings(paths=PathSettings(data_root=tmp_path / "data", milvus_uri=str(tmp_path / "milvus.db")))


def _states(run: Any) -> dict[str, str]:
    return {task: tis[0].state for task, tis in task_instances(run).items()}


def _skip_reasons(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The reasons of the skips the task log recorded since the last call."""
    out = capsys.readouterr()
    return [line.split("reason=", 1)[1] for line in (out.out + out.err).splitlines() if "Skipping task." in line]


def test_training_skips_on_an_empty_platform_and_with_no_features_yet(
    dag_bag: Any, musicrec_env: Any, webhook: Webhook, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dag = dag_bag.dags["train_triplet_model"]
    settings = musicrec_env(_empty(tmp_path))
    run = dag.test()
    assert run.state == "success"
    assert _states(run) == dict.fromkeys(TRAINING_TASKS, "skipped")
    (reason,) = _skip_reasons(capsys)
    assert "nothing to train on yet: no catalogue manifest at" in reason and str(settings.manifest_path) in reason

    musicrec_env(make_library(tmp_path / "lib"))  # a catalogue, never embedded
    run = dag.test()
    assert run.state == "success" and _states(run)["check_inputs"] == "skipped"
    (reason,) = _skip_reasons(capsys)
    assert f"nothing to train on yet: no features under version {settings.features.version} yet" in reason
    assert webhook.received == []


def test_training_skips_when_no_track_with_features_has_a_style(
    dag_bag: Any, musicrec_env: Any, webhook: Webhook, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.catalogue.manifest import MANIFEST_SCHEMA, UNLABELLED, read_manifest, write_table
    from pipelines.features.build import FeatureBuild
    from pipelines.inputs import training_inputs_missing

    settings = musicrec_env(make_library(tmp_path, per_style=2))
    FeatureBuild(settings=settings, shards=1).run()
    assert training_inputs_missing(settings) is None
    manifest = read_manifest(settings.manifest_path, active_only=False)
    write_table(manifest.assign(style=UNLABELLED), MANIFEST_SCHEMA, settings.manifest_path)

    run = dag_bag.dags["train_triplet_model"].test()
    assert run.state == "success" and _states(run)["check_inputs"] == "skipped"
    (reason,) = _skip_reasons(capsys)
    assert "none of the 6 tracks with features" in reason and "has a style label" in reason
    assert webhook.received == []


def test_a_malformed_recipe_fails_and_alerts_even_with_nothing_to_train_on(
    dag_bag: Any, musicrec_env: Any, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MUSICREC_TRAINING_JOB", '{"train": {"epochz": 3}}')
    musicrec_env(_empty(tmp_path))
    run = dag_bag.dags["train_triplet_model"].test()
    assert run.state == "failed"
    states = _states(run)
    assert states["check_inputs"] == "failed" and states["build_triplets"] == "upstream_failed"
    (alert,) = webhook.received
    assert (alert["dag_id"], alert["task_id"]) == ("train_triplet_model", "check_inputs")
    assert "epochz" in alert["error"]


def test_build_features_skips_before_any_manifest(
    dag_bag: Any, musicrec_env: Any, webhook: Webhook, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    musicrec_env(_empty(tmp_path))
    run = dag_bag.dags["build_features"].test(run_conf={"shards": 1})
    assert run.state == "success"
    states = _states(run)
    assert states == dict.fromkeys(["read_manifest", "plan", "shard_files", "compute", "merge", "publish"], "skipped")
    (reason,) = _skip_reasons(capsys)
    assert "nothing to embed yet: no catalogue manifest at" in reason
    assert webhook.received == []


def test_refresh_skips_before_any_champion_and_without_features(
    dag_bag: Any, musicrec_env: Any, webhook: Webhook, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dag = dag_bag.dags["refresh_index"]
    settings = musicrec_env(_empty(tmp_path))
    run = dag.test()  # model_version: champion, as the Asset-triggered runs ask
    assert run.state == "success"
    assert _states(run) == {"resolve_model": "skipped", "refresh": "skipped"}
    (reason,) = _skip_reasons(capsys)
    assert "nothing to refresh yet: musicrec-triplet has no 'champion' yet" in reason

    run = dag.test(run_conf={"model_version": "raw"})  # a model, but no catalogue
    assert run.state == "success"
    assert _states(run) == {"resolve_model": "success", "refresh": "skipped"}
    (reason,) = _skip_reasons(capsys)
    assert "nothing to refresh yet: no catalogue manifest at" in reason

    library = make_library(tmp_path / "lib")  # a catalogue and a champion, no features yet
    settings = musicrec_env(library)
    _register_champion(settings)
    run = dag.test()
    assert run.state == "success"
    assert _states(run) == {"resolve_model": "success", "refresh": "skipped"}
    (reason,) = _skip_reasons(capsys)
    assert f"nothing to refresh yet: no features under version {settings.features.version} yet" in reason
    assert webhook.received == []


def _register_champion(settings: Settings) -> str:
    """A small untrained branch for this settings' vectors, registered and made champion."""
    import torch

    from pipelines.model.encoder import Encoder, EncoderConfig
    from pipelines.registry import Registry

    params = settings.features
    config = EncoderConfig(n_frames=params.n_frames, n_mfcc=params.n_mfcc, dim=4, frame_layers=(8,), head_layers=(8,))
    torch.manual_seed(0)
    registry = Registry(settings)
    run_id = registry.start_run({}, {"feature_version": params.version}, name="empty-platform")
    example = np.random.default_rng(0).standard_normal((2, config.input_dim)).astype(np.float32)
    uri = registry.log_model(run_id, Encoder(config).eval(), params.version, example)
    tags = {"feature_version": params.version, "dim": str(config.out_dim), "encoder": config.model_dump_json()}
    version = registry.register(run_id, uri, tags)
    registry.end_run(run_id)
    registry.set_champion(version, by="test", reason="a champion before any features")
    return version
