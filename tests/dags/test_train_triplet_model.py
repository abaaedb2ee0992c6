"""train_triplet_model run by Airflow (dag.test) on synthetic audio whose styles are separable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import CHALLENGER, CHAMPION, Registry
from tests.dags.airflow_db import asset_events, task_instances
from tests.pipelines.training.synth_catalogue import SMALL_JOB, SYNTH_FEATURES, build_synthetic_catalogue

pytestmark = pytest.mark.integration


def _states(run: Any) -> dict[str, str]:
    return {task: tis[0].state for task, tis in task_instances(run).items()}  # no mapped tasks here


def _champion_events() -> list[dict]:
    from assets import CHAMPION as CHAMPION_ASSET

    return asset_events(CHAMPION_ASSET.name)


def test_dag_trains_a_model_that_beats_raw_and_announces_the_champion(
    dag_bag: Any, musicrec_env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dag = dag_bag.dags["train_triplet_model"]
    # weekly, or whenever the feature store changes
    assert dag.timetable.timetable.expression == "0 3 * * 1"
    assert "musicrec_features" in repr(dag.timetable.asset_condition)
    monkeypatch.setenv("MUSICREC_FEATURES__N_FRAMES", str(SYNTH_FEATURES.n_frames))
    settings = musicrec_env(build_synthetic_catalogue(tmp_path))
    assert settings.features == SYNTH_FEATURES
    events_before = len(_champion_events())

    run = dag.test(run_conf={"job": SMALL_JOB.model_dump(mode="json")})
    states = _states(run)
    assert run.state == "success", states
    assert set(states.values()) == {"success"}, states

    registry = Registry(settings)
    assert registry.alias(CHAMPION) == registry.alias(CHALLENGER) == "1"
    version = registry.version("1")
    metrics = registry.run_metrics(version.run_id)
    # leave-one-album-out, the trained model beats the untrained method (raw concatenated MFCCs + cosine)
    assert metrics["model/catalogue/p_at_10"] > metrics["raw/catalogue/p_at_10"] + 0.05
    assert metrics["model/cross_source/map_at_10"] > metrics["raw/cross_source/map_at_10"] + 0.1
    assert version.tags["gate.decision"] == "promoted"
    events = _champion_events()
    assert len(events) == events_before + 1 and events[-1] == {"version": "1"}

    # The same recipe again is no better than the champion: registered as challenger, not announced.
    again = dag.test(run_conf={"job": SMALL_JOB.model_copy(update={"secondary": False}).model_dump(mode="json")})
    states = _states(again)
    assert again.state == "success", states
    assert states["gate"] == "success" and states["announce_champion"] == "skipped"
    assert registry.alias(CHAMPION) == "1" and registry.alias(CHALLENGER) == "2"
    assert registry.version("2").tags["gate.decision"] == "rejected"
    assert len(_champion_events()) == events_before + 1
