"""The platform run as services, end to end, through the real scheduler on Celery workers.

`musicrec stack up` starts PostgreSQL, Redis, the Milvus server, the MLflow server, Airflow (api-server,
scheduler, dag-processor, triggerer, two Celery workers) and the API as separate processes. The retraining
clock is set to a daily slot just before the start, so on any day and hour a timed training run starts with
the empty platform: it must skip with its reason in the task log and post no alert. A catalogue
import announces the manifest Asset, and from there nothing is triggered by hand: ingest -> features ->
training (in a Celery worker, whose ``__main__`` is the ``airflow`` entry script and whose ORM is blocked,
with the job's default two training workers) -> a champion -> the index. A second import of new tracks
reaches the index under the same champion, the API answers for a new track, and `musicrec stack down`
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dags.clock import daily_cron_before
from tests.dags.webhook import Webhook
from tests.pipelines.training.synth_catalogue import SYNTH_FEATURES
from tests.pipelines.training.synth_styles import STYLES, recording, style_library, track
from tests.synth import write

pytestmark = [pytest.mark.integration, pytest.mark.stack]

BIN = Path(sys.executable).parent
CHAIN_DEADLINE_S = 1200
# Small and quick, but the job's `workers` stays at its default (two training processes per task).
TRAINING_JOB = {
    "n_folds": 3,
    "secondary": False,
    "train": {
        "encoder": {"frame_layers": [32], "head_layers": [32], "dim": 16},
        "epochs": 6,
        "batches_per_epoch": 10,
        "min_epochs": 3,
        "patience_epochs": 3,
        "tracks_per_style": 4,
        "triplets_per_batch": 64,
        "window_offsets_s": [1.0, 2.0],
    },
    "gate": {"baselines": ["raw"], "interval": False},  # see MECHANICS_GATE in the synthetic catalogue
}


def _free_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports above it."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65000:
            continue
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


def _env(root: Path, retrain_cron: str, webhook_url: str) -> dict[str, str]:
    base = _free_block(20)
    ports = {"POSTGRES": base, "REDIS": base + 1, "MLFLOW": base + 2, "AIRFLOW": base + 3, "API": base + 4}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MUSICREC_"))}
    env |= {f"MUSICREC_STACK__{k}": str(v) for k, v in ports.items()}
    env |= {
        "MUSICREC_STACK__MILVUS": str(base + 8),  # and the ten ports above it
        "MUSICREC_STACK__DIR": str(root / "stack"),
        "MUSICREC_FEATURES__N_FRAMES": str(SYNTH_FEATURES.n_frames),
        "MUSICREC_TRAINING_JOB": json.dumps(TRAINING_JOB),
        "MUSICREC_CACHE_DIR": str(root / "cache"),
        "MUSICREC_AIRFLOW_RETRAIN_CRON": retrain_cron,
        "MUSICREC_ALERT_WEBHOOK_URL": webhook_url,
    }
    out = subprocess.run(
        [str(BIN / "musicrec"), "stack", "env"], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    for line in out.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


def _musicrec(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "musicrec"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _stack_processes(root: Path) -> list[str]:
    """Command lines of live processes that belong to the stack under ``root`` (its folder in their argv/env)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(root).encode() in environ or str(root) in cmd):
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    if not Path("/usr/lib/postgresql/15/bin/postgres").exists() or shutil.which("redis-server") is None:
        pytest.fail("the stack needs postgresql-15 and redis-server: run `make stack-deps`")
    # PostgreSQL runs as the postgres user when we are root: its folder must be reachable by that user.
    root = Path(tempfile.mkdtemp(prefix="musicrec-stack-", dir="/tmp"))
    root.chmod(0o755)
    # The latest slot of the retraining clock is two minutes ago, the next one a day away.
    cron, slot = daily_cron_before(datetime.now(UTC), minutes=2)
    webhook = Webhook()
    env = _env(root, cron, webhook.url)
    start = time.monotonic()
    up = _musicrec(env, "stack", "up")
    info = {"env": env, "root": root, "slot": slot, "webhook": webhook, "up_s": time.monotonic() - start}
    try:
        assert up.returncode == 0, up.stdout + up.stderr + _logs(root)
        yield info
    finally:
        start = time.monotonic()
        down = _musicrec(env, "stack", "down", timeout=300)
        info["down_s"] = time.monotonic() - start
        print(f"\nstack timings: { ({k: round(v, 1) for k, v in info.items() if k.endswith('_s')}) }")
        assert down.returncode == 0, down.stderr
        webhook.close()
        left = _stack_processes(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes left behind after `musicrec stack down`: {left}"


def _logs(root: Path) -> str:
    """The end of every service's log, and the errors in Airflow's task logs."""
    out = []
    logs = root / "stack" / "logs"
    for log in sorted(logs.glob("*.log")):
        out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    for log in sorted((logs / "airflow").rglob("*.log")):
        errors = [line[:3000] for line in log.read_text(errors="replace").splitlines() if '"level":"error"' in line]
        if errors:
            out.append(f"--- {log.relative_to(logs)}\n" + "\n".join(errors[-5:]))
    return "\n".join(out)


def _task_log(root: Path, dag_id: str, run_id: str, task_id: str, text: str, timeout_s: float = 60) -> str:
    """The task's log (every attempt) once it holds ``text``; the worker may write it just after the state."""
    folder = root / "stack" / "logs" / "airflow" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    deadline = time.monotonic() + timeout_s
    while True:
        log = "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(1)


class Airflow:
    """The api-server's REST API, as an operator's script would use it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=env["MUSICREC_AIRFLOW_API_URL"], timeout=30)
        token = self.client.post(
            "/auth/token",
            json={"username": env["MUSICREC_AIRFLOW_USERNAME"], "password": env["MUSICREC_AIRFLOW_PASSWORD"]},
        )
        token.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        resp = self.client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
        resp.raise_for_status()
        return list(resp.json()["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        resp = self.client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        resp.raise_for_status()
        return {t["task_id"]: t["state"] for t in resp.json()["task_instances"]}


DAGS = ("build_features", "train_triplet_model", "refresh_index")
TRAINING_TASKS = ("check_inputs", "build_triplets", "train", "evaluate", "gate", "announce_champion")


def _wait(airflow: Airflow, root: Path, done: Any, what: str) -> dict[str, list[dict[str, Any]]]:
    """Poll the DAG runs until ``done(runs)``; fail at once on a failed run, or at the deadline."""
    deadline = time.monotonic() + CHAIN_DEADLINE_S
    while True:
        runs = {dag: airflow.runs(dag) for dag in DAGS}
        failed = [(dag, r["dag_run_id"]) for dag, rs in runs.items() for r in rs if r["state"] == "failed"]
        if failed:
            states = {f"{d}/{r}": airflow.task_states(d, r) for d, r in failed}
            pytest.fail(f"DAG runs failed while waiting for {what}: {states}\n{_logs(root)}")
        if done(runs):
            return runs
        if time.monotonic() > deadline:
            summary = {d: [(r["dag_run_id"], r["state"]) for r in rs] for d, rs in runs.items()}
            pytest.fail(f"{what} did not happen within {CHAIN_DEADLINE_S}s: {summary}\n{_logs(root)}")
        time.sleep(3)


def _finished(runs: list[dict[str, Any]], n: int) -> bool:
    return len(runs) >= n and all(r["state"] == "success" for r in runs)


def _timed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs the clock started."""
    return [r for r in runs if r["run_type"] == "scheduled"]


def _on_assets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs an Asset event started, oldest first."""
    return sorted((r for r in runs if r["run_type"] == "asset_triggered"), key=lambda r: r["run_after"])


def _library(root: Path) -> None:
    style_library(root, per_style=8, seconds=4.0, sources=2)


def _add_tracks(root: Path) -> list[Path]:
    """One new track per style, on a recording chain of its own (a new album)."""
    paths = []
    for k, style in enumerate(STYLES):
        audio = recording(track(style, 4.0, seed=9000 + k), 10 * k + 7)
        paths.append(write(root / style / f"{style}-album9" / f"{style}_new.wav", audio))
    return paths


def test_the_chain_runs_by_itself_on_celery_workers_and_new_tracks_reach_the_api(stack: dict[str, Any]) -> None:
    env, root = stack["env"], stack["root"]
    webhook: Webhook = stack["webhook"]
    status = _musicrec(env, "stack", "status")
    assert status.returncode == 0, status.stdout
    assert _musicrec(env, "stack", "up").stdout.count("already up") == len(status.stdout.splitlines())
    airflow = Airflow(env)

    # The clock's run on the empty platform: skipped with its reason, no alert.
    start = time.monotonic()
    runs = _wait(
        airflow,
        root,
        lambda r: _finished(_timed(r["train_triplet_model"]), 1),
        "the timed training run on the empty platform",
    )
    stack["timed_run_s"] = time.monotonic() - start
    (timed,) = _timed(runs["train_triplet_model"])
    assert datetime.fromisoformat(timed["run_after"]) == stack["slot"], timed
    states = airflow.task_states("train_triplet_model", timed["dag_run_id"])
    assert states == dict.fromkeys(TRAINING_TASKS, "skipped"), states
    reason = "nothing to train on yet: no catalogue manifest at"
    log = _task_log(root, "train_triplet_model", timed["dag_run_id"], "check_inputs", reason)
    assert reason in log, log[-3000:]
    assert [a for a in webhook.received if a.get("dag_id") == "train_triplet_model"] == []

    library = root / "library"
    _library(library)
    start = time.monotonic()
    imported = _musicrec(env, "catalogue", "import", str(library))
    assert imported.returncode == 0, imported.stderr
    assert "announced to Airflow" in imported.stdout

    def refreshed(runs: list[dict[str, Any]]) -> bool:
        """Some refresh run embedded the catalogue (a run on features before any champion only skips)."""
        done = [r for r in runs if r["state"] == "success"]
        return any(airflow.task_states("refresh_index", r["dag_run_id"])["refresh"] == "success" for r in done)

    _wait(
        airflow,
        root,
        lambda r: (
            _finished(r["build_features"], 1)
            and _finished(_on_assets(r["train_triplet_model"]), 1)
            and refreshed(r["refresh_index"])
        ),
        "the first chain (ingest, train, refresh)",
    )
    stack["first_chain_s"] = time.monotonic() - start
    train_run = _on_assets(airflow.runs("train_triplet_model"))[0]
    states = airflow.task_states("train_triplet_model", train_run["dag_run_id"])
    assert states["train"] == "success" and states["announce_champion"] == "success", states

    from pipelines.registry import CHAMPION, Registry
    from pipelines.settings import PathSettings, Settings

    settings = Settings(
        paths=PathSettings(
            data_root=Path(env["MUSICREC_DATA_ROOT"]),
            mlflow_tracking_uri=env["MUSICREC_MLFLOW_TRACKING_URI"],
            milvus_uri=env["MUSICREC_MILVUS_URI"],
        ),
        features=SYNTH_FEATURES,
    )
    registry = Registry(settings)
    assert registry.alias(CHAMPION) == "1"
    version = registry.version("1")
    assert version.tags["gate.decision"] == "promoted"
    run = registry.client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["launcher"] == "airflow"
    assert run.data.params["n_tracks"] == "24"  # 8 tracks in each of 3 styles
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # served, not a path

    # New tracks under the unchanged champion reach the index (and the API) without waiting for a retrain.
    new = _add_tracks(library)
    start = time.monotonic()
    again = _musicrec(env, "catalogue", "import", str(library))
    assert again.returncode == 0 and "3 added" in again.stdout, again.stdout + again.stderr
    from pipelines.catalogue.manifest import read_manifest

    manifest = read_manifest(settings.manifest_path)
    new_ids = manifest.set_index("path").loc[[str(p) for p in new], "track_id"].tolist()
    api = httpx.Client(base_url=f"http://127.0.0.1:{env['MUSICREC_STACK__API']}", timeout=30)
    deadline = time.monotonic() + CHAIN_DEADLINE_S
    while True:
        answer = api.get(f"/tracks/{new_ids[0]}/similar", params={"k": 5})
        if answer.status_code == 200:
            break
        _wait(airflow, root, lambda r: True, "the new tracks in the index")  # fails on a failed run
        assert time.monotonic() < deadline, f"new track never served: {answer.status_code} {answer.text}"
        time.sleep(3)
    stack["new_track_served_s"] = time.monotonic() - start
    body = answer.json()
    assert len(body["results"]) == 5
    assert all(n["track_id"] != new_ids[0] for n in body["results"])
    assert body["model_version"] == "1"

    # Let the runs the import started finish: none may fail (the retrain may or may not promote).
    _wait(
        airflow,
        root,
        lambda r: (
            _finished(r["build_features"], 2)
            and _finished(_on_assets(r["train_triplet_model"]), 2)
            and all(x["state"] in ("success",) for x in r["train_triplet_model"] + r["refresh_index"])
        ),
        "the second chain",
    )
    stack["second_chain_s"] = time.monotonic() - start
    assert len(registry.versions()) == 2  # trained again on the changed features, by the Asset alone
    assert len(_timed(airflow.runs("train_triplet_model"))) == 1  # the clock's next slot is a day away
    assert webhook.received == [], webhook.received  # nothing failed, so nothing was posted
