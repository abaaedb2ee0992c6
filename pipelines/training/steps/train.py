"""The train step: one MLflow run, a branch per holdout trained side by side in worker processes.

Also ends the runs a killed training left RUNNING (a SIGKILL cannot be caught).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines import parallel
from pipelines.errors import UserError
from pipelines.progress import BranchProgress
from pipelines.settings import Settings
from pipelines.training.config import TrainConfig, TrainingJob
from pipelines.training.labelled import (
    LabelledFeatures,
    carve,
    file_sha,
    load_labelled,
    recipe_params,
    run_dir,
    training_side,
    window_bank,
)
from pipelines.training.plan import ALL, Holdout, file_stem, member_name, plan_from_json
from pipelines.training.steps.prepare import Prepared
from pipelines.training.train import TrainingFailed, TrainResult, WindowBank, train_branch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BranchInputs:
    """What every branch needs: the labelled features, the job, the window bank and the triplets file."""

    cat: LabelledFeatures
    job: TrainingJob
    bank: WindowBank
    triplets: str


# Set once per worker process by _init_worker (and in this process for one worker). Workers are spawned,
# not forked: a fork of a process that has threads running (Airflow, MLflow, torch) can inherit a held
# lock and hang; pipelines.parallel says why they also run anywhere.
_INPUTS: list[BranchInputs] = []


def _init_worker(inputs: BranchInputs) -> None:
    _INPUTS[:] = [inputs]


@dataclass(frozen=True)
class BranchDone:
    """One trained branch as a worker hands it back, with what it cost (wall and CPU seconds)."""

    name: str
    state: dict
    history: pd.DataFrame
    best_epoch: int
    wall_s: float
    cpu_s: float


def _train_one(args: tuple[int, int, Holdout, TrainConfig]) -> BranchDone:
    i, k, holdout, cfg = args
    wall, cpu = time.perf_counter(), time.process_time()
    shared = _INPUTS[0]
    cfg = cfg.member(k)
    fit, val = carve(training_side(shared.cat, shared.job, holdout), cfg, cfg.seed + i)
    mine = pd.read_parquet(shared.triplets, filters=[("holdout", "==", holdout.name), ("member", "==", k)])
    result: TrainResult = train_branch(cfg.model_copy(update={"seed": cfg.seed + i}), shared.bank, fit, val, mine)
    return BranchDone(
        member_name(holdout.name, k),
        result.model.state_dict(),
        result.history,
        result.best_epoch,
        time.perf_counter() - wall,
        time.process_time() - cpu,
    )


def _launcher() -> dict[str, str]:
    """Who runs this training, so a run whose process was killed can be found and ended (see below)."""
    tags = {"launcher.host": socket.gethostname(), "launcher.pid": str(os.getpid())}
    if dag_run := os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"):  # set by Airflow for a task's process
        dag = os.environ.get("AIRFLOW_CTX_DAG_ID", "")
        return tags | {"launcher": "airflow", "airflow.dag_id": dag, "airflow.dag_run_id": dag_run}
    return tags | {"launcher": "cli"}


def end_abandoned_runs(settings: Settings, dag_run_id: str | None = None) -> list[str]:
    """Mark FAILED the training runs left RUNNING by a process that was killed; returns their ids.

    With ``dag_run_id``: the runs of that Airflow DAG run (its failure callback calls this). Without: runs
    started by ``musicrec train`` on this host whose process is gone. A SIGKILL cannot be caught, so this
    is how a killed run stops showing as RUNNING.
    """
    from pipelines.registry import Registry

    registry = Registry(settings)
    ended = []
    for run in registry.running_runs():
        tags = run.data.tags
        if dag_run_id is not None:
            abandoned = tags.get("airflow.dag_run_id") == dag_run_id
        else:
            abandoned = (
                tags.get("launcher") == "cli"
                and tags.get("launcher.host") == socket.gethostname()
                and not parallel.pid_alive(int(tags.get("launcher.pid", "0") or 0))
            )
        if abandoned:
            registry.set_run_tags(run.info.run_id, {"failure": "abandoned: its process was killed"})
            registry.end_run(run.info.run_id, failed=True)
            ended.append(run.info.run_id)
    if ended:
        log.warning("ended %d abandoned training run(s) as FAILED: %s", len(ended), ", ".join(ended))
    return ended


def _train_branches(
    inputs: BranchInputs, cfg: TrainConfig, plan: list[Holdout], on_branch: BranchProgress | None
) -> Iterable[BranchDone]:
    """Train every holdout's branches (one per seed), ``job.workers`` at a time; results as they finish.

    Each branch is seeded by its place in the plan and its seed and uses ``cfg.threads`` threads, so the
    weights do not depend on how many workers there are. The biggest branches (``all`` trains on every
    track) go first, so that no worker is left with a long one at the end.
    """
    tasks = [(i, k, h, cfg) for i, h in enumerate(plan) for k in range(cfg.seeds)]
    tasks.sort(key=lambda t: (t[2].name != ALL, t[0], t[1]))
    results = parallel.imap_unordered(_train_one, tasks, inputs.job.workers, _init_worker, (inputs,))
    for done, item in enumerate(results, 1):
        log.info(
            "branch %s trained: %d epochs (best %d) in %.1f s wall, %.1f s CPU",
            item.name,
            len(item.history),
            item.best_epoch,
            item.wall_s,
            item.cpu_s,
        )
        if on_branch is not None:
            on_branch(item.name, done, len(tasks))
        yield item


def train(
    settings: Settings, job: TrainingJob, prepared: dict[str, str], on_branch: BranchProgress | None = None
) -> str:
    """Train a branch per holdout in one MLflow run; returns the run id. A failure marks the run FAILED."""
    import torch

    from pipelines.registry import Registry

    registry = Registry(settings)
    registry.check()
    cat = load_labelled(settings)
    if cat.feature_version != prepared["feature_version"]:
        raise UserError("the feature store changed since the triplets were built; run the preparation again")
    plan = plan_from_json(json.loads(Path(prepared["plan"]).read_text()))
    missing = {t for h in plan for t in h.tracks} - set(cat.track_ids)
    if missing:
        raise UserError(f"{len(missing)} planned tracks left the feature store; run the preparation again")
    cfg = job.train
    encoder = cfg.encoder.model_copy(
        update={"n_frames": settings.features.n_frames, "n_mfcc": settings.features.n_mfcc, "members": 1}
    )
    cfg = cfg.model_copy(update={"encoder": encoder})
    params = {
        "feature_version": cat.feature_version,
        "features": settings.features.model_dump_json(),
        "split_file": Path(prepared["split"]).name,
        "split_sha256": file_sha(Path(prepared["split"])),
        "triplets_file": Path(prepared["triplets"]).name,
        "n_tracks": len(cat.track_ids),
        "branches": len(plan) * cfg.seeds,
        "group_by": job.group_by,
        "n_folds": job.n_folds,
        "eval_fold": job.eval_fold,
        "gate": job.gate.model_dump_json(),
        **recipe_params(cfg),
    }
    run_id = registry.start_run(
        params, {"feature_version": cat.feature_version, "job": job.key, **_launcher()}, "train"
    )
    out = run_dir(settings, run_id)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with registry.run(run_id, tag_failure=True):
            inputs = BranchInputs(cat, job, window_bank(settings, cat, job), prepared["triplets"])
            for branch in _train_branches(inputs, cfg, plan, on_branch):
                name, state, history, best_epoch = branch.name, branch.state, branch.history, branch.best_epoch
                prefix = "" if name == ALL else f"{name.removeprefix(ALL + '@')}/"
                for rec in history.to_dict("records"):
                    registry.log_metrics(
                        run_id, {prefix + k: v for k, v in rec.items() if k != "epoch"}, step=int(rec["epoch"])
                    )
                torch.save(state, out / f"branch-{file_stem(name)}.pt")
                history.assign(holdout=name, best_epoch=best_epoch).to_csv(
                    out / f"history-{file_stem(name)}.csv", index=False
                )
            (out / "encoder.json").write_text(encoder.model_copy(update={"members": cfg.seeds}).model_dump_json())
            (out / "prepared.json").write_text(json.dumps(prepared))
    except TrainingFailed as exc:
        log.error("training failed, nothing registered: %s", exc)
        raise
    finally:
        _INPUTS.clear()
    return run_id


@dataclass(frozen=True)
class Trained:
    """The train step's report: the MLflow run that holds the trained branches."""

    run_id: str
    tracking_uri: str

    def line(self) -> str:
        return f"MLflow run {self.run_id} ({self.tracking_uri})"


def run(settings: Settings, job: TrainingJob, inputs: Prepared, on_branch: BranchProgress | None = None) -> Trained:
    """The train step on the prepare step's output."""
    run_id = train(settings, job, inputs.as_dict(), on_branch)
    return Trained(run_id, settings.paths.mlflow_tracking_uri)
