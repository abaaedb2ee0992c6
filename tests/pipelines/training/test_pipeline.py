"""The whole training pipeline against a real (SQLite) MLflow: register, gate, promote, roll back, faults."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.features.store import read_features
from pipelines.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    Registry,
    RegistryUnavailable,
    load_embedder,
    resolve_alias,
)
from pipelines.settings import PathSettings, Settings
from pipelines.training.config import TrainingJob
from pipelines.training.labelled import run_dir, trained_version, training_dir
from pipelines.training.plan import plan_from_json
from pipelines.training.steps.evaluate import evaluate, evaluation_text, load_branches
from pipelines.training.steps.gate import Decision, gate
from pipelines.training.steps.prepare import prepare
from pipelines.training.steps.train import train
from pipelines.training.train import TrainingFailed, embed
from tests.pipelines.training.synth_catalogue import SMALL_JOB
from tests.pipelines.training.synth_styles import track
from tests.synth import write

pytestmark = pytest.mark.integration


def _run(settings: Settings, job: TrainingJob) -> tuple[dict, Decision]:
    prepared = prepare(settings, job)
    run_id = train(settings, job, prepared)
    evaluated = evaluate(settings, job, run_id)
    return evaluated, gate(settings, job, evaluated)


def _model_metrics(registry: Registry, run_id: str) -> dict[str, float]:
    return {k: v for k, v in registry.run_metrics(run_id).items() if k.startswith(("model/", "track/model/"))}


def test_train_register_gate_promote_rollback(synth_settings: Settings) -> None:
    settings = synth_settings
    registry = Registry(settings)
    assert trained_version(settings, SMALL_JOB) is None
    first, d1 = _run(settings, SMALL_JOB)
    # A repeated run can tell that these inputs already made version 1; another recipe cannot.
    assert trained_version(settings, SMALL_JOB) == "1"
    other = SMALL_JOB.model_copy(update={"split_seed": SMALL_JOB.split_seed + 1})
    assert trained_version(settings, other) is None

    # The first model ever is promoted because, leave-one-source-out, it beats the raw baseline.
    assert d1.promoted and first["version"] == "1", d1.reasons
    assert resolve_alias(settings, CHAMPION) == "1" == resolve_alias(settings, CHALLENGER)
    v1 = registry.version("1")
    assert v1.tags["gate.decision"] == "promoted" and "beats raw" in v1.tags["gate.reasons"]
    assert v1.tags["feature_version"] == read_features(settings).version
    metrics = registry.run_metrics(first["run_id"])
    for key in ("catalogue/p_at_10", "cross_source/map_at_10"):
        assert metrics[f"model/{key}"] > metrics[f"raw/{key}"]
        assert f"model/{key}_sd" in metrics and f"meanstd/{key}" in metrics and f"random/{key}" in metrics
        assert f"track/model/{key}" in metrics  # the secondary, track-disjoint view is logged beside it
    run = registry.client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    # Six albums (two per style): a branch per album left out, the track-disjoint fold, and the served one,
    # each trained with two seeds.
    assert run.data.params["split_file"] == "split-source-loo-s0.parquet" and run.data.params["branches"] == "16"
    # Each seed alone is scored too (the spread), with its own intervals; the gate says how many would pass.
    for seed in ("seed0", "seed1"):
        assert f"{seed}/catalogue/p_at_10" in metrics and f"paired/{seed}-raw/cross_source/map_at_10/lo" in metrics
    assert metrics["seed0/catalogue/p_at_10"] != metrics["seed1/catalogue/p_at_10"]
    assert "Seed spread: `model` is the ensemble of 2 seeds" in evaluation_text(settings, first["run_id"])
    assert "each seed alone:" in d1.line() and registry.version("1").tags["gate.seeds_passing"].endswith("/2")
    assert "loss" in metrics and len(registry.client.get_metric_history(first["run_id"], "loss")) >= 3
    review = {f.path for f in registry.client.list_artifacts(first["run_id"], "review")}
    assert {
        "review/loss_curves.png",
        "review/per_style.csv",
        "review/confusion_catalogue.png",
        "review/confusion_cross_source.png",
        "review/per_source.csv",
        "review/projection.png",
        "review/example_queries.md",
        "review/evaluation.md",
        "review/summary.md",
    } <= review

    per_source = (run_dir(settings, first["run_id"]) / "artifacts" / "per_source.csv").read_text()
    assert "source:plucks-album0" in per_source and "source:hits-album1" in per_source

    # The registered model is the branch trained on every track, embedding from the raw front-end vector.
    fm = read_features(settings)
    embedder = load_embedder(settings, "1")
    out = embedder.embed(fm.matrix)
    # 16 learned values of each of the two seeds and the 2 x 20 mean+std statistics appended after training.
    assert out.shape == (len(fm.track_ids), 2 * 16 + 40) == (len(fm.track_ids), embedder.dim)
    assert embedder.feature_version == fm.version
    prepared = prepare(settings, SMALL_JOB)
    plan = plan_from_json(json.loads(Path(prepared["plan"]).read_text()))
    branches, _ = load_branches(run_dir(settings, first["run_id"]), plan)
    np.testing.assert_allclose(out, embed(branches["all"], fm.matrix), atol=1e-5)

    # Same seed, same data: same metrics. Not better than the champion by the margin: not promoted.
    second, d2 = _run(settings, SMALL_JOB)
    assert _model_metrics(registry, second["run_id"]) == _model_metrics(registry, first["run_id"])
    assert not d2.promoted and second["version"] == "2"
    assert registry.alias(CHAMPION) == "1" and registry.alias(CHALLENGER) == "2"
    v2 = registry.version("2")
    assert v2.tags["gate.decision"] == "rejected" and "does not beat champion" in v2.tags["gate.reasons"]
    # The champion's recipe was judged on this very catalogue: its numbers are carried over for the gate.
    champ_metrics = registry.run_metrics(second["run_id"])
    assert champ_metrics["champion/cross_source/map_at_10"] == champ_metrics["model/cross_source/map_at_10"]
    # The comparison is logged with the challenger as one self-contained page: both versions, images inline.
    local = registry.client.download_artifacts(
        second["run_id"], "review/comparison.html", str(settings.paths.data_root)
    )
    page = Path(local).read_text()
    assert "Version 2: not promoted" in page and "challenger 2" in page and "champion 1" in page
    assert "data:image/png;base64," in page and "http" not in page and "src='/" not in page

    # By hand: promote 2, then roll back to 1, with audit tags.
    assert registry.set_champion("2", by="manual:test", reason="review") == "1"
    v2 = registry.version("2")
    assert v2.tags["previous_champion"] == "1" and v2.tags["promoted_by"] == "manual:test"
    assert registry.rollback(by="manual:test") == ("2", "1")
    assert registry.alias(CHAMPION) == "1"
    assert registry.version("2").tags["rolled_back_to"] == "1" and "restored_at" in registry.version("1").tags
    with pytest.raises(UserError, match="no previous champion"):
        registry.rollback()
    with pytest.raises(UserError, match="no version '9'"):
        registry.set_champion("9", by="t", reason="t")


def test_nan_loss_fails_the_run_and_registers_nothing(synth_settings: Settings) -> None:
    job = SMALL_JOB.model_copy(update={"train": SMALL_JOB.train.model_copy(update={"lr": 1e30}), "secondary": False})
    prepared = prepare(synth_settings, job)
    with pytest.raises(TrainingFailed, match="nan"):
        train(synth_settings, job, prepared)
    registry = Registry(synth_settings)
    runs = registry.client.search_runs([registry.experiment_id()])
    assert [r.info.status for r in runs] == ["FAILED"] and "TrainingFailed" in runs[0].data.tags["failure"]
    assert registry.versions() == [] and registry.alias(CHALLENGER) is None


def test_mlflow_down_is_a_clear_error_before_anything_is_written(synth_catalogue: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    settings = synth_catalogue.model_copy(
        update={"paths": synth_catalogue.paths.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{port}"})}
    )
    runs_before = set((training_dir(settings) / "runs").glob("*"))
    with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:{port} is not reachable"):
        train(settings, SMALL_JOB, {"feature_version": "x", "split": "x", "triplets": "x"})
    assert set((training_dir(settings) / "runs").glob("*")) == runs_before


def test_a_style_with_one_track_is_refused_by_name(tmp_path: Path) -> None:
    from pipelines.catalogue.importer import import_catalogue
    from pipelines.features.build import FeatureBuild
    from tests.pipelines.training.synth_catalogue import SYNTH_FEATURES

    for i in range(3):
        write(tmp_path / "lib" / "plucks" / f"p{i}.wav", track("plucks", 2.0, seed=i))
        write(tmp_path / "lib" / "hits" / f"h{i}.wav", track("hits", 2.0, seed=10 + i))
    write(tmp_path / "lib" / "pads" / "only.wav", track("pads", 2.0, seed=20))
    settings = Settings(paths=PathSettings(data_root=tmp_path / "data"), features=SYNTH_FEATURES)
    import_catalogue(tmp_path / "lib", settings)
    FeatureBuild(settings=settings, shards=1).run()
    with pytest.raises(UserError, match=r"'pads' \(1 track\)"):
        prepare(settings, SMALL_JOB)
    assert MODEL_NAME  # nothing else to check: nothing was trained


def test_one_source_per_style_is_warned_and_one_source_overall_falls_back_to_tracks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.pipelines.training.synth_catalogue import build_synthetic_catalogue

    settings = build_synthetic_catalogue(tmp_path, per_style=6, sources=1)  # a folder per style, no albums
    with caplog.at_level("WARNING", logger="pipelines.training"):
        prepared = prepare(settings, SMALL_JOB)
    text = caplog.text
    assert "style(s) hits, pads, plucks come from a single source" in text and "not the style" in text
    assert "falls back to 3 folds by track" in text
    assert Path(prepared["split"]).name == "split-track-k3-s0.parquet"
    plan = plan_from_json(json.loads(Path(prepared["plan"]).read_text()))
    assert [h.name for h in plan][:2] == ["all", "source:fold0"] and len(plan) == 5
    # Held-out tracks never feed their own branch's triplets.
    triplets = pd.read_parquet(prepared["triplets"])
    for h in plan:
        mine = triplets[triplets["holdout"] == h.name]
        used = set(mine["anchor"]) | set(mine["positive"]) | set(mine["negative"])
        assert len(mine) and not used & set(h.tracks)


def test_branches_are_the_same_trained_in_one_process_or_two(synth_settings: Settings) -> None:
    import torch

    quick = SMALL_JOB.train.model_copy(update={"epochs": 2, "min_epochs": 1})
    runs = {}
    for workers in (1, 2):
        job = SMALL_JOB.model_copy(update={"workers": workers, "secondary": False, "train": quick})
        run_id = train(synth_settings, job, prepare(synth_settings, job))
        runs[workers] = run_dir(synth_settings, run_id)
    files = sorted(p.name for p in runs[1].glob("branch-*.pt"))
    assert len(files) == 7 * 2 and files == sorted(p.name for p in runs[2].glob("branch-*.pt"))
    for name in files:
        one, two = (torch.load(runs[w] / name, weights_only=True) for w in (1, 2))
        assert all(torch.equal(one[k], two[k]) for k in one)
