"""The feature build: manifest -> shards -> vectors per shard -> one validated part file in the store.

Three plain functions (:func:`plan_shards`, :func:`compute_shard`, :func:`merge_shards`) so Airflow can run
them as separate tasks (shards mapped) and the CLI in one process with a thread per shard; the store is
untouched until the merge, so a failed run changes nothing.
Design: docs/features.md#the-build-pipelinesfeaturesbuildpy
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

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
from pipelines.features.store import (
    ROW_GROUP_ROWS,
    PartWriter,
    add_part_from,
    build_table,
    feature_schema,
    iter_tables,
    read_store,
    stored_shas,
    write_atomic,
)
from pipelines.features.worker import EmbedWorker
from pipelines.progress import CountProgress, ProgressLog, no_counts
from pipelines.settings import Settings
from pipelines.steps import StepJob

log = logging.getLogger(__name__)

# Called with ("todo", n), ("skipped", n), ("embedded", 1) or ("quarantined", 1); may come from threads.

_STALE_STAGING = timedelta(days=1)


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
    reused: list[str] = field(default_factory=list)
    n_reused: int = 0


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
    reused: int = 0

    def line(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        taken = f"{self.reused} reused from an interrupted run, " if self.reused else ""
        return (
            f"features {self.version}: {self.embedded} embedded, {taken}{self.skipped} skipped (already stored), "
            f"{self.quarantined} quarantined{f' ({why})' if why else ''}, {self.still_quarantined} still "
            f"quarantined; {self.rows} rows in the store ({self.seconds:.1f} s)"
        )


def _staging(settings: Settings) -> Path:
    return settings.features_dir / "_staging"


def _owner_lock(run_dir: Path) -> Path:
    """The lock file a CLI run holds for its whole life; a free lock means the run's process is gone."""
    return run_dir.with_name(f"{run_dir.name}.lock")


def _lock_is_free(lock: Path) -> bool:
    try:
        with lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _abandoned_runs(settings: Settings) -> list[Path]:
    """Run folders no live process owns: the owner's lock is free, or (no lock: Airflow) a day old."""
    root = _staging(settings)
    if not root.is_dir():
        return []
    limit = time.time() - _STALE_STAGING.total_seconds()
    runs = []
    for run in sorted(root.iterdir()):
        if not run.is_dir():
            continue
        lock = _owner_lock(run)
        owned = lock.exists()
        if (owned and _lock_is_free(lock)) or (not owned and run.stat().st_mtime < limit):
            runs.append(run)
    return runs


def _item_key(item: dict) -> tuple:
    return (item["track_id"], item["path"], item["sha256"], item["size"], item["mtime_ns"])


def _finished_outputs(
    runs: list[Path], params: FeatureParams, todo: list[dict]
) -> tuple[list[dict], pa.Table, list[dict]]:
    """From finished shards of ``runs`` with the same parameters: the items of ``todo`` they already decided.

    An item is taken over only when its track id, path, sha256, size and mtime are those planned now; its
    vector (by sha256) or its verdict (by track id) comes along. Unreadable leftovers are ignored.
    """
    wanted = {_item_key(t): t for t in todo}
    schema = feature_schema(params.dim)
    taken: dict[tuple, dict] = {}
    tables = [schema.empty_table()]
    verdicts: list[dict] = []
    for run in runs:
        try:
            old_params, _ = _load_plan(run)
        except (OSError, ValueError, KeyError):
            continue
        if old_params != params:
            continue
        for done in sorted(run.glob("shard-*.done.json")):
            shard = done.with_name(done.name.replace(".done.json", ".todo.json"))
            try:
                items = json.loads(shard.read_text())
                vectors = pq.read_table(_out(shard, "features.parquet"), schema=schema)
                held = pq.read_table(_out(shard, "quarantine.parquet"), schema=QUARANTINE_SCHEMA).to_pylist()
            except (OSError, ValueError, pa.ArrowException):
                continue
            shas = set(vectors.column("sha256").to_pylist())
            held_by_id = {r["track_id"]: r for r in held}
            mine = [
                wanted[_item_key(i)]
                for i in items
                if _item_key(i) in wanted
                and _item_key(i) not in taken
                and (i["sha256"] in shas or i["track_id"] in held_by_id)
            ]
            if not mine:
                continue
            keep_shas = {i["sha256"] for i in mine if i["sha256"] in shas}
            keep = vectors.filter(
                pc.is_in(vectors.column("sha256"), value_set=pa.array(sorted(keep_shas), pa.string()))
            )
            tables.append(keep.take(_first_per_sha(keep)))
            verdicts += [held_by_id[i["track_id"]] for i in mine if i["sha256"] not in keep_shas]
            taken.update({_item_key(i): i for i in mine})
    return list(taken.values()), pa.concat_tables(tables), verdicts


def _first_per_sha(table: pa.Table) -> pa.Array:
    seen: set[str] = set()
    rows = []
    for i, sha in enumerate(table.column("sha256").to_pylist()):
        if sha not in seen:
            seen.add(sha)
            rows.append(i)
    return pa.array(rows, pa.int64())


def _remove_runs(runs: list[Path]) -> None:
    for run in runs:
        shutil.rmtree(run, ignore_errors=True)
        _owner_lock(run).unlink(missing_ok=True)
        log.info("removed the staging folder of abandoned run %s", run.name)


def _remove_staging_if_empty(settings: Settings) -> None:
    root = _staging(settings)
    if root.is_dir():
        for lock in root.glob("*.lock"):
            if not lock.with_suffix("").exists() and _lock_is_free(lock):
                lock.unlink(missing_ok=True)  # an owner killed before it made its folder
        with contextlib.suppress(OSError):
            root.rmdir()


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
    have = stored_shas(settings, params, on_corrupt="rebuild")  # a damaged part is moved aside and recomputed
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

    abandoned = _abandoned_runs(settings)
    done_items, done_vectors, done_verdicts = _finished_outputs(abandoned, params, todo)
    if done_items:
        finished = {_item_key(i) for i in done_items}
        todo = [t for t in todo if _item_key(t) not in finished]
    run_id = run_id or new_run_id()
    run_dir = _staging(settings) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    reused: list[str] = []
    if done_items:
        shard = run_dir / "shard-reused.todo.json"
        _write_json(done_items, shard)
        write_atomic(done_vectors, _out(shard, "features.parquet"))
        write_atomic(pa.Table.from_pylist(done_verdicts, schema=QUARANTINE_SCHEMA), _out(shard, "quarantine.parquet"))
        _write_json({"shard": str(shard), "reused": len(done_items)}, _out(shard, "done.json"))
        reused.append(str(shard))
        log.info("taking over %d finished files from %d abandoned runs", len(done_items), len(abandoned))
    _remove_runs(abandoned)
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
        reused=reused,
        n_reused=len(done_items),
    )
    _write_json({"params": params.model_dump(), "plan": asdict(plan)}, run_dir / "plan.json")
    log.info(
        "plan %s: %d active tracks, %d to compute in %d shards, %d taken over, %d already stored, %d still quarantined",
        params.version,
        plan.active,
        plan.todo,
        n_shards,
        plan.n_reused,
        plan.stored,
        plan.settled,
    )
    return plan


def new_run_id() -> str:
    """A unique, time-ordered run id."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def _load_plan(run_dir: Path) -> tuple[FeatureParams, dict]:
    meta = json.loads((run_dir / "plan.json").read_text())
    return FeatureParams.model_validate(meta["params"]), meta["plan"]


def _out(shard: Path, kind: str) -> Path:
    return shard.with_name(shard.name.replace(".todo.json", f".{kind}"))


def compute_shard(shard: str | Path, settings: Settings, progress: CountProgress = no_counts) -> ShardResult:
    """Embed every file of one shard; a file that fails is quarantined and the shard goes on.

    Writes ``.features.parquet``, ``.quarantine.parquet`` and ``.done.json`` next to the shard file (each
    atomically), so a retried task simply overwrites its own output.
    """
    shard = Path(shard)
    started = time.time()
    params, _ = _load_plan(shard.parent)
    items: list[dict] = json.loads(shard.read_text())
    rows: list[dict] = []  # embedded but not yet written: at most ROW_GROUP_ROWS vectors are held
    vectors: list[np.ndarray] = []
    rejected: list[dict] = []
    embedded = 0
    meter = ProgressLog(f"features {shard.name}", len(items), log, unit="files")
    with (
        EmbedWorker(params, settings.max_audio_bytes, settings.decode_timeout_s) as worker,
        PartWriter(_out(shard, "features.parquet"), feature_schema(params.dim)) as out,
    ):
        for item in meter.iterate(items):
            outcome = worker.embed(item["path"], item["size"], item["mtime_ns"])
            if outcome.ok:
                assert outcome.vector is not None
                rows.append({**item, "frames_real": outcome.frames_real, "computed_at": datetime.now(UTC)})
                vectors.append(outcome.vector)
                embedded += 1
                progress("embedded", 1)
                if len(rows) >= ROW_GROUP_ROWS:
                    out.write(build_table(rows, np.stack(vectors), params))
                    rows, vectors = [], []
            else:
                log.info("quarantined %s: %s (%s)", item["path"], outcome.reason, outcome.detail)
                rejected.append(
                    quarantine_row(item, params.version, outcome.reason, outcome.error_type, outcome.detail)
                )
                progress("quarantined", 1)
        if rows:
            out.write(build_table(rows, np.stack(vectors), params))
        worker_pid, restarts = worker.pid, worker.restarts
    write_atomic(pa.Table.from_pylist(rejected, schema=QUARANTINE_SCHEMA), _out(shard, "quarantine.parquet"))
    result = ShardResult(
        shard=str(shard),
        embedded=embedded,
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


def _fresh_tables(files: list[Path], schema: pa.Schema, have: set[str], params: FeatureParams) -> Iterator[pa.Table]:
    """The rows of ``files`` whose content is not stored yet, a row group at a time, each one validated."""
    stored = pa.array(sorted(have), pa.string())
    for path in files:
        for table in iter_tables(path, schema):
            fresh = table.filter(pc.invert(pc.is_in(table.column("sha256"), value_set=stored)))
            _validate_new(fresh, params)
            yield fresh


def merge_shards(run_dir: str | Path, settings: Settings) -> BuildReport:
    """Validate all shard outputs of a run and publish them; then check the whole version.

    After publishing, every track that was active when the run was planned must have exactly one row or a
    quarantine verdict under the version; otherwise the run fails loudly instead of training on a hole.
    """
    started = time.time()
    run_dir = Path(run_dir)
    params, plan = _load_plan(run_dir)
    shards = [Path(s) for s in plan["shards"] + plan.get("reused", [])]
    missing = [s.name for s in shards if not _out(s, "done.json").exists()]
    if missing:
        raise FeatureStoreInvalid(f"shards without output: {', '.join(missing)}")
    schema = feature_schema(params.dim)
    # Vectors are streamed shard by shard, row group by row group, into the new part file; only the
    # content hashes of the run are held at once.
    vector_files = [_out(s, "features.parquet") for s in shards]
    new_shas = [sha for f in vector_files for sha in pq.read_table(f, columns=["sha256"]).column("sha256").to_pylist()]
    rejected = pa.concat_tables(
        [QUARANTINE_SCHEMA.empty_table()]
        + [pq.read_table(_out(s, "quarantine.parquet"), schema=QUARANTINE_SCHEMA) for s in shards]
    ).to_pylist()
    decided = {t["track_id"] for s in shards for t in json.loads(s.read_text())}

    active = json.loads((run_dir / "active.json").read_text())
    with _store_lock(settings):
        have = stored_shas(settings, params, on_corrupt="rebuild")
        fresh_shas = [sha for sha in new_shas if sha not in have]
        if len(fresh_shas) < len(new_shas):
            log.warning("%d vectors were stored meanwhile by another run", len(new_shas) - len(fresh_shas))
        if len(set(fresh_shas)) != len(fresh_shas):
            raise FeatureStoreInvalid("a content hash would be stored twice")
        # Check coverage before publishing anything: every track active at planning time ends with a vector
        # (by content) or a verdict, or the run fails and the store stays as it was.
        old = read_quarantine(settings, params.version)
        held = {t for t in old["track_id"] if t not in decided} | {r["track_id"] for r in rejected}
        held_shas = set(old.loc[~old["track_id"].isin(decided), "sha256"]) | {r["sha256"] for r in rejected}
        stored = have | set(fresh_shas)
        covered = stored | held_shas
        holes = [a["track_id"] for a in active if a["sha256"] not in covered and a["track_id"] not in held]
        if holes:
            raise FeatureStoreInvalid(f"{len(holes)} active tracks have neither a vector nor a verdict: {holes[:5]}")
        part = add_part_from(_fresh_tables(vector_files, schema, have, params), settings, params, run_dir.name)
        update_quarantine(settings, params.version, decided, rejected)
        rows = read_store(settings, params, ["sha256"]).num_rows
        if rows != len(stored):
            raise FeatureStoreInvalid(f"version {params.version} holds {rows} rows for {len(stored)} contents")

    taken_over = {i["sha256"] for s in plan.get("reused", []) for i in json.loads(Path(s).read_text())}
    n_taken = sum(1 for sha in fresh_shas if sha in taken_over)
    shutil.rmtree(run_dir, ignore_errors=True)
    _remove_staging_if_empty(settings)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    report = BuildReport(
        version=params.version,
        embedded=len(fresh_shas) - n_taken,
        skipped=plan["stored"],
        quarantined=len(rejected),
        still_quarantined=plan["settled"],
        rows=rows,
        part=str(part) if part else None,
        seconds=time.time() - started,
        reasons=reasons,
        reused=plan.get("n_reused", 0),
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
    """The whole step without Airflow: plan, shards on a thread (and one worker process) each, merge.

    A large library has more shards than cores (shards hold at most ``max_shard_tracks`` files, the size of
    one Airflow task); they run ``shards`` (default: one per core) at a time, so the number of worker
    processes, and the memory they take, does not grow with the library.
    """

    model_config = ConfigDict(frozen=True)

    settings: Settings
    params: FeatureParams | None = None
    shards: int = 0
    max_shard_tracks: int = 2000

    def run(self, progress: CountProgress = no_counts) -> BuildReport:
        """Hold the run's owner lock throughout: should this process die, the next run takes over its work."""
        started = time.time()
        run_id = new_run_id()
        lock = _owner_lock(_staging(self.settings) / run_id)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                plan = plan_shards(
                    self.settings,
                    self.params,
                    shards=self.shards,
                    max_shard_tracks=self.max_shard_tracks,
                    run_id=run_id,
                )
                progress("todo", plan.todo)
                progress("skipped", plan.stored + plan.settled + plan.n_reused)
                meter = ProgressLog("features (all shards)", plan.todo, log, unit="files")

                def tick(event: str, n: int) -> None:
                    progress(event, n)
                    if event in ("embedded", "quarantined"):
                        meter.add(n)

                if plan.shards:
                    at_once = min(len(plan.shards), self.shards or default_shards())
                    with ThreadPoolExecutor(at_once, thread_name_prefix="shard") as pool:
                        futures = [pool.submit(compute_shard, s, self.settings, tick) for s in plan.shards]
                        for f in futures:
                            f.result()
                    meter.finish()
                report = merge_shards(plan.run_dir, self.settings)
            finally:
                if not lock.with_suffix("").exists():
                    lock.unlink(missing_ok=True)
                _remove_staging_if_empty(self.settings)
        return BuildReport(**{**asdict(report), "seconds": time.time() - started})


class FeatureJob(StepJob):
    """Embed every manifest track not yet stored, in ``shards`` worker processes (0: one per core)."""

    shards: int = Field(default=0, ge=0)


def run(settings: Settings, job: FeatureJob, inputs: None = None, progress: CountProgress = no_counts) -> BuildReport:
    """The feature build step; its input is the manifest the settings point at."""
    return FeatureBuild(settings=settings, shards=job.shards).run(progress)
