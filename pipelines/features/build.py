"""The feature build: manifest -> shards -> vectors per shard -> one validated part file in the store.

Three plain functions, so Airflow can run them as separate tasks (shards as mapped tasks) and the CLI can
run them in one process with a thread per shard:

1. :func:`plan_shards` reads the manifest, skips what is stored or settled in quarantine, and writes the
   rest as shard files under ``features/_staging/<run id>/``.
2. :func:`compute_shard` embeds one shard in a child process (:mod:`pipelines.features.worker`) with a
   time limit per file, and writes the shard's vectors and quarantine verdicts next to it.
3. :func:`merge_shards` validates every shard's output and publishes it: one part file, atomically, then
   the quarantine table. Until then the store is untouched, so a failed run changes nothing.

Tasks exchange paths only; the parameters are frozen in the plan, so all shards of a run agree.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipelines.catalogue.manifest import read_manifest
from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.features.quarantine import (
    QUARANTINE_SCHEMA,
    quarantine_row,
    read_quarantine,
    settled,
    update_quarantine,
)
from pipelines.features.store import add_part, build_table, feature_schema, read_store, stored_shas, write_atomic
from pipelines.features.worker import EmbedWorker
from pipelines.settings import Settings

log = logging.getLogger(__name__)

# Called with ("todo", n), ("skipped", n), ("embedded", 1) or ("quarantined", 1); may come from threads.
Progress = Callable[[str, int], None]

_STALE_STAGING = timedelta(days=1)


def _no_progress(event: str, n: int) -> None:
    return None


def default_shards() -> int:
    """One shard per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """What a build will do; ``shards`` are the files the compute tasks get."""

    run_dir: str
    version: str
    shards: list[str]
    active: int
    todo: int
    stored: int
    settled: int


@dataclass(frozen=True)
class ShardResult:
    """One shard's counts and where it ran (pid and times show that shards really ran side by side)."""

    shard: str
    embedded: int
    quarantined: int
    worker_restarts: int
    pid: int
    worker_pid: int | None
    started: float
    finished: float


@dataclass(frozen=True)
class BuildReport:
    """What a build did; printed by the CLI, logged by Airflow, attached to the feature Asset event."""

    version: str
    embedded: int
    skipped: int
    quarantined: int
    still_quarantined: int
    rows: int
    part: str | None
    seconds: float
    reasons: dict[str, int]

    def line(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return (
            f"features {self.version}: {self.embedded} embedded, {self.skipped} skipped (already stored), "
            f"{self.quarantined} quarantined{f' ({why})' if why else ''}, {self.still_quarantined} still "
            f"quarantined; {self.rows} rows in the store ({self.seconds:.1f} s)"
        )


def _staging(settings: Settings) -> Path:
    return settings.features_dir / "_staging"


def _clean_stale_staging(settings: Settings) -> None:
    """Remove what crashed runs left behind a day ago or more (a live run's folder is younger)."""
    root = _staging(settings)
    if not root.is_dir():
        return
    limit = time.time() - _STALE_STAGING.total_seconds()
    for run in root.iterdir():
        if run.is_dir() and run.stat().st_mtime < limit:
            shutil.rmtree(run, ignore_errors=True)


def _write_json(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _active_tracks(settings: Settings) -> list[dict]:
    if not settings.manifest_path.exists():
        raise UserError(
            f"no catalogue manifest at {settings.manifest_path}; run `musicrec data fetch-demo` or "
            "`musicrec catalogue import <folder>` first"
        )
    manifest = read_manifest(settings.manifest_path, active_only=True)
    if "added_at" in manifest.columns:
        manifest = manifest.sort_values("added_at", kind="stable")
    manifest = manifest.drop_duplicates("track_id", keep="last").sort_values("track_id")
    cols = ["track_id", "path", "style", "source", "sha256", "size", "mtime_ns"]
    items = manifest[cols].to_dict("records")
    for item in items:
        for key in ("size", "mtime_ns"):
            item[key] = None if item[key] is None or item[key] != item[key] else int(item[key])
    return items


def check_manifest(settings: Settings) -> dict:
    """The manifest a build would read: its path and how many active tracks it lists (fails if absent)."""
    items = _active_tracks(settings)
    log.info("manifest %s: %d active tracks", settings.manifest_path, len(items))
    return {"path": str(settings.manifest_path), "active": len(items)}


def _stat(path: str) -> tuple[int | None, int | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def plan_shards(
    settings: Settings,
    params: FeatureParams | None = None,
    shards: int = 0,
    max_shard_tracks: int = 2000,
    run_id: str | None = None,
) -> Plan:
    """Decide what to compute and split it into shards (``shards=0``: one per core).

    Skipped: tracks whose content (sha256) is stored under this version, and tracks quarantined under this
    version whose file has not changed since. Writes ``plan.json``, ``active.json`` (the tracks the build
    must account for) and ``shard-NNNN.todo.json`` files into a fresh staging folder.
    """
    params = params or settings.features
    items = _active_tracks(settings)
    have = stored_shas(settings, params)
    stuck = settled(settings, params.version)
    todo: list[dict] = []
    queued: set[str] = set()
    n_stored = n_settled = 0
    for item in items:
        if item["sha256"] in have:
            n_stored += 1
            continue
        if item["track_id"] in stuck and stuck[item["track_id"]] == (item["sha256"], *_stat(item["path"])):
            n_settled += 1
            continue
        if item["sha256"] in queued:  # the same content twice: compute it once
            continue
        queued.add(item["sha256"])
        todo.append(item)

    _clean_stale_staging(settings)
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_dir = _staging(settings) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    n_shards = min(len(todo), max(shards or default_shards(), math.ceil(len(todo) / max_shard_tracks)))
    shard_paths = []
    for i in range(n_shards):
        path = run_dir / f"shard-{i:04d}.todo.json"
        _write_json(todo[i::n_shards], path)  # round robin: long and short files spread evenly
        shard_paths.append(str(path))
    _write_json([{"track_id": t["track_id"], "sha256": t["sha256"]} for t in items], run_dir / "active.json")
    plan = Plan(
        run_dir=str(run_dir),
        version=params.version,
        shards=shard_paths,
        active=len(items),
        todo=len(todo),
        stored=n_stored,
        settled=n_settled,
    )
    _write_json({"params": params.model_dump(), "plan": asdict(plan)}, run_dir / "plan.json")
    log.info(
        "plan %s: %d active tracks, %d to compute in %d shards, %d already stored, %d still quarantined",
        params.version,
        plan.active,
        plan.todo,
        n_shards,
        plan.stored,
        plan.settled,
    )
    return plan


def _load_plan(run_dir: Path) -> tuple[FeatureParams, dict]:
    meta = json.loads((run_dir / "plan.json").read_text())
    return FeatureParams.model_validate(meta["params"]), meta["plan"]


def _out(shard: Path, kind: str) -> Path:
    return shard.with_name(shard.name.replace(".todo.json", f".{kind}"))


def compute_shard(shard: str | Path, settings: Settings, progress: Progress = _no_progress) -> ShardResult:
    """Embed every file of one shard; a file that fails is quarantined and the shard goes on.

    Writes ``.features.parquet``, ``.quarantine.parquet`` and ``.done.json`` next to the shard file (each
    atomically), so a retried task simply overwrites its own output.
    """
    shard = Path(shard)
    started = time.time()
    params, _ = _load_plan(shard.parent)
    items: list[dict] = json.loads(shard.read_text())
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    rejected: list[dict] = []
    with EmbedWorker(params, settings.max_audio_bytes, settings.decode_timeout_s) as worker:
        for n, item in enumerate(items, 1):
            outcome = worker.embed(item["path"], item["size"], item["mtime_ns"])
            if outcome.ok:
                assert outcome.vector is not None
                rows.append({**item, "frames_real": outcome.frames_real, "computed_at": datetime.now(UTC)})
                vectors.append(outcome.vector)
                progress("embedded", 1)
            else:
                log.info("quarantined %s: %s (%s)", item["path"], outcome.reason, outcome.detail)
                rejected.append(
                    quarantine_row(item, params.version, outcome.reason, outcome.error_type, outcome.detail)
                )
                progress("quarantined", 1)
            if n % 50 == 0:
                log.info("%s: %d/%d files", shard.name, n, len(items))
        worker_pid, restarts = worker.pid, worker.restarts
    matrix = np.stack(vectors) if vectors else np.zeros((0, params.dim), np.float32)
    write_atomic(build_table(rows, matrix, params), _out(shard, "features.parquet"))
    write_atomic(pa.Table.from_pylist(rejected, schema=QUARANTINE_SCHEMA), _out(shard, "quarantine.parquet"))
    result = ShardResult(
        shard=str(shard),
        embedded=len(rows),
        quarantined=len(rejected),
        worker_restarts=restarts,
        pid=os.getpid(),
        worker_pid=worker_pid,
        started=started,
        finished=time.time(),
    )
    _write_json(asdict(result), _out(shard, "done.json"))
    log.info("%s: %d embedded, %d quarantined", shard.name, result.embedded, result.quarantined)
    return result


class FeatureStoreInvalid(RuntimeError):
    """Validation found rows that must not be published (a bug, never bad input)."""


def _validate_new(table: pa.Table, params: FeatureParams) -> None:
    """Rows about to be published: right length, finite, sane padding record, one per content hash."""
    n = table.num_rows
    if n == 0:
        return
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if flat.size != n * params.dim:
        raise FeatureStoreInvalid(f"{n} vectors hold {flat.size} values, expected {n} x {params.dim}")
    if not np.isfinite(flat).all():
        raise FeatureStoreInvalid("vectors contain NaN or infinite values")
    frames = table.column("frames_real").to_numpy()
    if frames.min() < 1 or frames.max() > params.n_frames:
        raise FeatureStoreInvalid(f"frames_real outside 1..{params.n_frames}")
    if len(set(table.column("sha256").to_pylist())) != n:
        raise FeatureStoreInvalid("a content hash would be stored twice")


def merge_shards(run_dir: str | Path, settings: Settings) -> BuildReport:
    """Validate all shard outputs of a run and publish them; then check the whole version.

    After publishing, every track that was active when the run was planned must have exactly one row or a
    quarantine verdict under the version; otherwise the run fails loudly instead of training on a hole.
    """
    started = time.time()
    run_dir = Path(run_dir)
    params, plan = _load_plan(run_dir)
    shards = [Path(s) for s in plan["shards"]]
    missing = [s.name for s in shards if not _out(s, "done.json").exists()]
    if missing:
        raise FeatureStoreInvalid(f"shards without output: {', '.join(missing)}")
    schema = feature_schema(params.dim)
    new = pa.concat_tables(
        [schema.empty_table()] + [pq.read_table(_out(s, "features.parquet"), schema=schema) for s in shards]
    )
    rejected = pa.concat_tables(
        [QUARANTINE_SCHEMA.empty_table()]
        + [pq.read_table(_out(s, "quarantine.parquet"), schema=QUARANTINE_SCHEMA) for s in shards]
    ).to_pylist()
    decided = {t["track_id"] for s in shards for t in json.loads(s.read_text())}

    active = json.loads((run_dir / "active.json").read_text())
    with _store_lock(settings):
        have = stored_shas(settings, params)
        fresh = new.filter(pc.invert(pc.is_in(new.column("sha256"), value_set=pa.array(list(have), pa.string()))))
        if fresh.num_rows < new.num_rows:
            log.warning("%d vectors were stored meanwhile by another run", new.num_rows - fresh.num_rows)
        _validate_new(fresh, params)
        # Check coverage before publishing anything: every track active at planning time ends with a vector
        # (by content) or a verdict, or the run fails and the store stays as it was.
        old = read_quarantine(settings, params.version)
        held = {t for t in old["track_id"] if t not in decided} | {r["track_id"] for r in rejected}
        held_shas = set(old.loc[~old["track_id"].isin(decided), "sha256"]) | {r["sha256"] for r in rejected}
        stored = have | set(fresh.column("sha256").to_pylist())
        covered = stored | held_shas
        holes = [a["track_id"] for a in active if a["sha256"] not in covered and a["track_id"] not in held]
        if holes:
            raise FeatureStoreInvalid(f"{len(holes)} active tracks have neither a vector nor a verdict: {holes[:5]}")
        part = add_part(fresh, settings, params, run_dir.name)
        update_quarantine(settings, params.version, decided, rejected)
        rows = read_store(settings, params, ["sha256"]).num_rows
        if rows != len(stored):
            raise FeatureStoreInvalid(f"version {params.version} holds {rows} rows for {len(stored)} contents")

    shutil.rmtree(run_dir, ignore_errors=True)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    report = BuildReport(
        version=params.version,
        embedded=fresh.num_rows,
        skipped=plan["stored"],
        quarantined=len(rejected),
        still_quarantined=plan["settled"],
        rows=rows,
        part=str(part) if part else None,
        seconds=time.time() - started,
        reasons=reasons,
    )
    log.info("%s", report.line())
    return report


@contextmanager
def _store_lock(settings: Settings) -> Iterator[None]:
    """An exclusive lock on the feature store while a run publishes, so two builds never interleave."""
    path = settings.features_dir / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class FeatureBuild(BaseModel):
    """The whole step without Airflow: plan, one thread (and one worker process) per shard, merge."""

    model_config = ConfigDict(frozen=True)

    settings: Settings
    params: FeatureParams | None = None
    shards: int = 0

    def run(self, progress: Progress = _no_progress) -> BuildReport:
        started = time.time()
        plan = plan_shards(self.settings, self.params, shards=self.shards)
        progress("todo", plan.todo)
        progress("skipped", plan.stored + plan.settled)
        if plan.shards:
            with ThreadPoolExecutor(len(plan.shards), thread_name_prefix="shard") as pool:
                futures = [pool.submit(compute_shard, s, self.settings, progress) for s in plan.shards]
                for f in futures:
                    f.result()
        report = merge_shards(plan.run_dir, self.settings)
        return BuildReport(**{**asdict(report), "seconds": time.time() - started})
