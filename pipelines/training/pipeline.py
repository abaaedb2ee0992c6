"""The training pipeline as four plain steps: prepare -> train -> evaluate -> gate.

Each step takes the settings and the job and returns small JSON-able values (paths, ids), so the
``train_triplet_model`` DAG runs one step per task and ``musicrec train`` runs them in a row.

- :func:`prepare` (DAG ``build_triplets``): frozen splits, the plan of branches to train
  (:mod:`pipelines.training.plan`), training windows, the triplet dataset (Parquet).
- :func:`train`: one MLflow run; a branch per holdout (leave-one-source-out, the track-disjoint fold, and
  ``all`` for serving), trained side by side in worker processes; per-epoch loss and validation logged.
- :func:`evaluate`: the held-out branches and the baselines (a) raw (b) mean+std (c) random on the same
  holdouts; metrics and review artifacts logged; the ``all`` branch logged as an MLflow model and
  registered as ``musicrec-triplet`` with alias ``challenger``.
- :func:`gate`: promote the challenger to ``champion`` only if, leave-one-source-out, it beats the
  required baselines and the champion's recipe by the configured margin; decision and reasons as tags.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import parallel
from pipelines.catalogue.manifest import UNLABELLED, read_manifest
from pipelines.errors import UserError
from pipelines.evaluation.gate import decide, gate_intervals
from pipelines.settings import Settings
from pipelines.training import artifacts
from pipelines.training.comparison import comparison_html
from pipelines.training.config import GateConfig, TrainConfig, TrainingJob
from pipelines.training.evaluate import (
    BASELINES,
    baseline_embeddings,
    evaluate_models,
    fold_summary,
    format_table,
    style_table,
    summary,
)
from pipelines.training.metrics import METRICS
from pipelines.training.plan import (
    ALL,
    PRIMARY,
    SECONDARY,
    Holdout,
    file_stem,
    make_plan,
    plan_from_json,
    plan_to_json,
    primary_split,
    single_source_styles,
)
from pipelines.training.split import GroupBy, check_styles, frozen_split, split_path, validation_carve
from pipelines.training.train import TrainingFailed, TrainResult, WindowBank, embed, train_branch
from pipelines.training.triplets import TRIPLET_SCHEMA, triplets_for
from pipelines.training.windows import build_windows

log = logging.getLogger(__name__)

Progress = Callable[[Iterable], Iterable]
BranchProgress = Callable[[str, int, int], None]  # (holdout just trained, done, total)


@dataclass(frozen=True)
class Catalogue:
    """The feature matrix with its tracks' manifest rows, in the same order."""

    track_ids: list[str]
    matrix: np.ndarray
    tracks: pd.DataFrame  # track_id, style, source, album, artist, path, sha256, duration_s
    feature_version: str
    n_mfcc: int

    def groups(self, group_by: GroupBy) -> list[str]:
        """Each track's source under ``group_by`` (a track with none is its own)."""
        col = self.tracks[group_by] if group_by in self.tracks else pd.Series([None] * len(self.tracks))
        return [str(g) if isinstance(g, str) and g else f"track:{t}" for g, t in zip(col, self.track_ids, strict=True)]


def training_dir(settings: Settings) -> Path:
    return settings.data_root / "training"


def load_catalogue(settings: Settings) -> Catalogue:
    """Feature-store vectors of the active tracks joined with their manifest rows."""
    from pipelines.features.store import read_features

    fm = read_features(settings)
    manifest = read_manifest(settings.manifest_path).drop_duplicates("track_id", keep="last")
    rows = manifest.set_index("track_id").reindex(fm.track_ids).reset_index()
    if rows["style"].isna().any():
        missing = rows.loc[rows["style"].isna(), "track_id"].head(3).tolist()
        raise UserError(f"feature rows without a manifest style, e.g. {missing}; rebuild the features")
    labelled = (rows["style"] != UNLABELLED).to_numpy()
    if not labelled.all():
        log.info("%d unlabelled track(s) left out of training and evaluation", int((~labelled).sum()))
    cols = ["track_id", "style", "source", "album", "artist", "path", "sha256", "duration_s"]
    kept = rows.loc[labelled, cols].reset_index(drop=True)
    ids = [t for t, keep in zip(fm.track_ids, labelled, strict=True) if keep]
    return Catalogue(ids, fm.matrix[labelled], kept, fm.version, fm.params.n_mfcc)


def inputs_fingerprint(cat: Catalogue, job: TrainingJob) -> str:
    """What a trained model depends on: the recipe and every training track's content and label.

    Registered versions carry it as a tag, so a scheduled or repeated run can tell that retraining would
    reproduce a model the registry already has (training is seeded and deterministic).
    """
    digest = hashlib.sha256(f"{job.key}|{catalogue_fingerprint(cat, job.group_by)}".encode())
    return digest.hexdigest()[:16]


def catalogue_fingerprint(cat: Catalogue, group_by: GroupBy) -> str:
    """The evaluation's ground: features, tracks, labels and sources. Equal fingerprints: comparable metrics."""
    digest = hashlib.sha256(f"{cat.feature_version}|{group_by}".encode())
    rows = sorted(zip(cat.track_ids, cat.tracks["sha256"], cat.tracks["style"], cat.groups(group_by), strict=True))
    for row in rows:
        digest.update("|{}:{}:{}:{}".format(*row).encode())
    return digest.hexdigest()[:16]


def trained_version(settings: Settings, job: TrainingJob) -> str | None:
    """The registered version trained on exactly these inputs, if any (see :func:`inputs_fingerprint`)."""
    from pipelines.registry import Registry

    fingerprint = inputs_fingerprint(load_catalogue(settings), job)
    for version in Registry(settings).versions():
        if version.tags.get("inputs") == fingerprint:
            return str(version.version)
    return None


def _write_parquet(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    from pipelines.features.store import write_atomic

    write_atomic(pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema, preserve_index=False), path)


def _windows(settings: Settings, cat: Catalogue, job: TrainingJob, progress: Progress | None):
    kwargs = {"progress": progress} if progress else {}
    root = training_dir(settings) / "windows"
    return build_windows(cat.tracks, settings.features, job.train.window_offsets_s, root, workers=job.workers, **kwargs)


def window_bank(settings: Settings, cat: Catalogue, job: TrainingJob) -> WindowBank:
    """Every training vector (first N frames and the later windows) of the catalogue, by (track, offset)."""
    w = _windows(settings, cat, job, None)
    return WindowBank.build(cat.track_ids, cat.matrix, w.track_ids, w.offsets, w.matrix)


def _training_side(cat: Catalogue, job: TrainingJob, holdout: Holdout) -> pd.DataFrame:
    """The tracks a holdout's branch learns from: track_id, style, and its source under ``group_by``."""
    side = pd.DataFrame({"track_id": cat.track_ids, "style": cat.tracks["style"], "source": cat.groups(job.group_by)})
    return side[~side["track_id"].isin(set(holdout.tracks))].reset_index(drop=True)


def _carve(side: pd.DataFrame, cfg: TrainConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return validation_carve(side, cfg.val_fraction, seed, by=cfg.val_by)


def prepare(settings: Settings, job: TrainingJob, progress: Progress | None = None) -> dict[str, str]:
    """Freeze the splits, plan the branches, compute training windows, write the triplet dataset."""
    cat = load_catalogue(settings)
    check_styles(cat.tracks)
    tracks = cat.tracks.assign(**{job.group_by: cat.groups(job.group_by)})
    if single := single_source_styles(tracks, job.group_by):
        log.warning(
            "style(s) %s come from a single %s: their numbers may measure the %s, not the style; "
            "add tracks of other %ss (albums, artists) of them",
            ", ".join(single),
            job.group_by,
            job.group_by,
            job.group_by,
        )
    root = training_dir(settings)
    primary, primary_file = primary_split(tracks, root, job.group_by, job.max_groups, job.n_folds, job.split_seed)
    secondary = None
    if job.secondary:
        path = split_path(root, "track", job.n_folds, job.split_seed)
        secondary = frozen_split(cat.tracks, path, job.n_folds, job.split_seed, "track")
    plan = make_plan(primary, secondary, job.eval_fold)
    windows = _windows(settings, cat, job, progress)
    offsets: dict[str, list[float]] = {t: [0.0] for t in cat.track_ids}
    for t, o in zip(windows.track_ids, windows.offsets, strict=True):
        offsets[t].append(float(o))
    cfg = job.train
    parts = []
    for i, holdout in enumerate(plan):
        fit, _val = _carve(_training_side(cat, job, holdout), cfg, cfg.seed + i)
        check_styles(fit, 1)
        parts.append(triplets_for(fit, offsets, cfg, i, holdout.name))
    triplets = pd.concat(parts, ignore_index=True)
    path = root / "triplets" / f"triplets-{cat.feature_version}-{job.key}.parquet"
    _write_parquet(triplets, TRIPLET_SCHEMA, path)
    plan_file = root / "plans" / f"plan-{cat.feature_version}-{job.key}.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan_to_json(plan)))
    log.info("triplet dataset: %d triplets for %d branches at %s", len(triplets), len(plan), path)
    return {
        "plan": str(plan_file),
        "split": str(primary_file),
        "triplets": str(path),
        "feature_version": cat.feature_version,
        "tracks": str(len(cat.track_ids)),
        "branches": str(len(plan)),
    }


def recipe_params(cfg: TrainConfig) -> dict[str, object]:
    """A training recipe as flat MLflow parameters (the encoder's fields as ``encoder.<field>``)."""
    params: dict[str, object] = dict(cfg.model_dump(exclude={"encoder"}))
    return params | {f"encoder.{k}": v for k, v in cfg.encoder.model_dump().items()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_dir(settings: Settings, run_id: str) -> Path:
    return training_dir(settings) / "runs" / run_id


# What every branch needs, set once per worker process by _init_worker (and in this process for one
# worker). Workers are spawned, not forked: a fork of a process that has threads running (Airflow,
# MLflow, torch) can inherit a held lock and hang; pipelines.parallel says why they also run anywhere.
_SHARED: dict[str, object] = {}


def _init_worker(shared: dict[str, object]) -> None:
    _SHARED.update(shared)


def _train_one(args: tuple[int, Holdout, TrainConfig]) -> tuple[str, dict, pd.DataFrame, int]:
    i, holdout, cfg = args
    cat: Catalogue = _SHARED["cat"]  # type: ignore[assignment]
    job: TrainingJob = _SHARED["job"]  # type: ignore[assignment]
    fit, val = _carve(_training_side(cat, job, holdout), cfg, cfg.seed + i)
    mine = pd.read_parquet(_SHARED["triplets"], filters=[("holdout", "==", holdout.name)])  # type: ignore[arg-type]
    result: TrainResult = train_branch(cfg.model_copy(update={"seed": cfg.seed + i}), _SHARED["bank"], fit, val, mine)  # type: ignore[arg-type]
    return holdout.name, result.model.state_dict(), result.history, result.best_epoch


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
    job: TrainingJob, cfg: TrainConfig, plan: list[Holdout], on_branch: BranchProgress | None
) -> Iterable[tuple[str, dict, pd.DataFrame, int]]:
    """Train every holdout's branch, ``job.workers`` at a time; results as they finish (any order).

    Each branch is seeded by its place in the plan and uses ``cfg.threads`` threads, so the weights do not
    depend on how many workers there are.
    """
    tasks = [(i, h, cfg) for i, h in enumerate(plan)]
    results = parallel.imap_unordered(_train_one, tasks, job.workers, _init_worker, (dict(_SHARED),))
    for done, item in enumerate(results, 1):
        if on_branch is not None:
            on_branch(item[0], done, len(tasks))
        yield item


def train(
    settings: Settings, job: TrainingJob, prepared: dict[str, str], on_branch: BranchProgress | None = None
) -> str:
    """Train a branch per holdout in one MLflow run; returns the run id. A failure marks the run FAILED."""
    import torch

    from pipelines.registry import Registry

    registry = Registry(settings)
    registry.check()
    cat = load_catalogue(settings)
    if cat.feature_version != prepared["feature_version"]:
        raise UserError("the feature store changed since the triplets were built; run the preparation again")
    plan = plan_from_json(json.loads(Path(prepared["plan"]).read_text()))
    missing = {t for h in plan for t in h.tracks} - set(cat.track_ids)
    if missing:
        raise UserError(f"{len(missing)} planned tracks left the feature store; run the preparation again")
    cfg = job.train
    encoder = cfg.encoder.model_copy(
        update={"n_frames": settings.features.n_frames, "n_mfcc": settings.features.n_mfcc}
    )
    cfg = cfg.model_copy(update={"encoder": encoder})
    params = {
        "feature_version": cat.feature_version,
        "features": settings.features.model_dump_json(),
        "split_file": Path(prepared["split"]).name,
        "split_sha256": _sha(Path(prepared["split"])),
        "triplets_file": Path(prepared["triplets"]).name,
        "n_tracks": len(cat.track_ids),
        "branches": len(plan),
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
        bank = window_bank(settings, cat, job)
        _SHARED.update(cat=cat, job=job, bank=bank, triplets=prepared["triplets"])
        for name, state, history, best_epoch in _train_branches(job, cfg, plan, on_branch):
            prefix = "" if name == ALL else f"{name}/"
            for rec in history.to_dict("records"):
                registry.log_metrics(
                    run_id, {prefix + k: v for k, v in rec.items() if k != "epoch"}, step=int(rec["epoch"])
                )
            torch.save(state, out / f"branch-{file_stem(name)}.pt")
            history.assign(holdout=name, best_epoch=best_epoch).to_csv(
                out / f"history-{file_stem(name)}.csv", index=False
            )
        (out / "encoder.json").write_text(encoder.model_dump_json())
        (out / "prepared.json").write_text(json.dumps(prepared))
    except BaseException as exc:
        registry.set_run_tags(run_id, {"failure": f"{type(exc).__name__}: {exc}"[:500]})
        registry.end_run(run_id, failed=True)
        if isinstance(exc, TrainingFailed):
            log.error("training failed, nothing registered: %s", exc)
        raise
    finally:
        _SHARED.clear()
    return run_id


def load_branches(out: Path, plan: list[Holdout]) -> tuple[dict[str, object], object]:
    """The trained branch of every holdout of a run, by holdout name, in eval mode."""
    import torch

    from pipelines.model.encoder import Encoder, EncoderConfig

    config = EncoderConfig.model_validate_json((out / "encoder.json").read_text())
    models = {}
    for holdout in plan:
        model = Encoder(config)
        model.load_state_dict(torch.load(out / f"branch-{file_stem(holdout.name)}.pt", weights_only=True))
        models[holdout.name] = model.eval()
    return models, config


def _champion_metrics(settings: Settings, fingerprint: str) -> tuple[str | None, dict[str, float], str]:
    """The champion's own source-disjoint metrics, when they were measured on this very catalogue.

    The served champion was trained on every track, so it cannot be judged leave-one-source-out now; its
    recipe was, when it was evaluated, and those numbers are comparable if the catalogue is the same.
    """
    from pipelines.registry import CHAMPION, Registry

    registry = Registry(settings)
    version = registry.alias(CHAMPION)
    if version is None:
        return None, {}, "no champion yet"
    mv = registry.version(version)
    if mv.tags.get("catalogue") != fingerprint:
        return version, {}, f"champion v{version} was evaluated on another catalogue or feature version"
    found = registry.run_metrics(mv.run_id)
    metrics = {f"champion/{k.removeprefix('model/')}": v for k, v in found.items() if k.startswith("model/")}
    return version, metrics, ""


def _champion_rows(metrics: dict[str, float], folds: int) -> pd.DataFrame:
    """The champion's carried-over metrics as rows of the evaluation table (see :func:`summary`)."""
    rows = []
    for view in sorted({k.split("/")[1] for k in metrics}):
        row: dict[str, object] = {"model": "champion", "view": view, "folds": folds}
        for m in METRICS:
            key = f"champion/{view}/{m.replace('@', '_at_')}"
            row[m] = metrics.get(key, np.nan)
            row[f"{m}_sd"] = metrics.get(f"{key}_sd", np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def table_metrics(table: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """A :func:`summary` table as MLflow metrics ``<prefix><model>/<view>/<metric>`` (and ``_sd`` over folds)."""
    out: dict[str, float] = {}
    for _, row in table.iterrows():
        for m in METRICS:
            out[f"{prefix}{row['model']}/{row['view']}/{m}"] = row[m]
            if row["folds"] > 1:
                out[f"{prefix}{row['model']}/{row['view']}/{m}_sd"] = row[f"{m}_sd"]
    return out


def evaluate(settings: Settings, job: TrainingJob, run_id: str, register: bool = True) -> dict[str, str]:
    """Score the held-out branches and the baselines; log everything; register the ``all`` branch.

    ``register=False`` (recipe comparisons) logs the evaluation and finishes the run, registering nothing.
    """
    from pipelines.registry import Registry

    registry = Registry(settings)
    registry.check()
    out = run_dir(settings, run_id)
    try:
        prepared = json.loads((out / "prepared.json").read_text())
        plan = plan_from_json(json.loads(Path(prepared["plan"]).read_text()))
        cat = load_catalogue(settings)
        models, config = load_branches(out, plan)
        styles = list(cat.tracks["style"])
        sources = cat.groups(job.group_by)
        base = {b: baseline_embeddings(b, cat.matrix, cat.n_mfcc, seed=job.train.seed) for b in BASELINES}
        pos = {t: i for i, t in enumerate(cat.track_ids)}
        tables: dict[str, pd.DataFrame] = {}
        for protocol in (PRIMARY, SECONDARY):
            holdouts = [h for h in plan if h.protocol == protocol]
            if not holdouts:
                continue
            fold_of = np.full(len(cat.track_ids), "", dtype=object)
            for h in holdouts:
                fold_of[[pos[t] for t in h.tracks]] = h.name
            embedders: dict[str, dict[str, np.ndarray]] = {
                "model": {h.name: embed(models[h.name], cat.matrix) for h in holdouts}
            }
            for name, e in base.items():
                embedders[name] = {h.name: e for h in holdouts}
            tables[protocol] = evaluate_models(embedders, cat.matrix, cat.track_ids, styles, fold_of, sources)
        primary = tables[PRIMARY]
        table = summary(primary)
        fingerprint = catalogue_fingerprint(cat, job.group_by)
        champ_version, champ_metrics, champ_note = _champion_metrics(settings, fingerprint)
        metrics = table_metrics(table) | champ_metrics | gate_intervals(primary, job.gate, job.train.seed)
        if champ_metrics:
            table = pd.concat([table, _champion_rows(champ_metrics, int(table["folds"].max()))], ignore_index=True)
        second = summary(tables[SECONDARY]) if SECONDARY in tables else None
        if second is not None:
            metrics |= table_metrics(second, f"{SECONDARY}/")
        registry.log_metrics(run_id, metrics)

        art = out / "artifacts"
        art.mkdir(exist_ok=True)
        histories = {h.name: pd.read_csv(out / f"history-{file_stem(h.name)}.csv") for h in plan}
        artifacts.loss_curves(histories, art, int(histories[ALL]["best_epoch"].iloc[0]))
        per_style = pd.concat(
            [style_table(primary, m).assign(model=m) for m in ("model", *BASELINES)], ignore_index=True
        )
        artifacts.style_csv(per_style[["model", *[c for c in per_style.columns if c != "model"]]], art)
        fold_summary(primary).to_csv(art / "per_source.csv", index=False, float_format="%.4f")
        for view in ("catalogue", "cross_source"):
            artifacts.confusion(primary, "model", view, art)
        served = embed(models[ALL], cat.matrix)
        artifacts.projection(served, styles, art, "the served branch (trained on every track), PCA")
        picks = np.linspace(0, len(cat.track_ids) - 1, min(4, len(cat.track_ids))).astype(int)
        artifacts.example_queries(served, cat.track_ids, styles, [cat.track_ids[i] for i in picks], art)
        text = f"# {_primary_title(Path(prepared['split']).name, job.group_by, int(table['folds'].max()))}"
        text += f"\n\n{format_table(table)}\n"
        if second is not None:
            second.to_csv(art / "evaluation_track.csv", index=False, float_format="%.4f")
            text += f"\n# Track-disjoint fold {job.eval_fold} (secondary; not used by the gate)\n\n"
            text += format_table(second, unseen_is_sanity=False) + "\n"
        (art / "evaluation.md").write_text(text)
        table.to_csv(art / "evaluation.csv", index=False, float_format="%.4f")
        all_tables = pd.concat([t.assign(protocol=p) for p, t in tables.items()], ignore_index=True)
        pq.write_table(pa.Table.from_pandas(all_tables, preserve_index=False), art / "per_query.parquet")
        registry.log_artifacts(run_id, art, "review")

        registry.set_run_tags(run_id, {"champion_at_evaluation": champ_version or "", "champion_note": champ_note})
        if not register:
            registry.end_run(run_id)
            return {"run_id": run_id, "version": ""}
        model_uri = registry.log_model(run_id, models[ALL], cat.feature_version, cat.matrix[:2])
        tags = {
            "feature_version": cat.feature_version,
            "dim": str(config.out_dim),
            "encoder": config.model_dump_json(),
            "run_id": run_id,
            "split_file": Path(prepared["split"]).name,
            "group_by": job.group_by,
            "catalogue": fingerprint,
            "inputs": inputs_fingerprint(cat, job),
        }
        version = registry.register(run_id, model_uri, tags)
        registry.set_run_tags(run_id, {"model_version": version})
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
    return {"run_id": run_id, "version": version}


def _primary_title(split_file: str, group_by: str, holdouts: int) -> str:
    """What the primary table measures, from the split it was made with (see ``plan.primary_split``)."""
    if split_file.startswith("split-track"):
        return (
            f"{holdouts} folds by track: the catalogue is one {group_by}, so these numbers measure the "
            f"{group_by} as much as the style (the gate's view)"
        )
    if "-loo-" in split_file:
        return f"Leave-one-{group_by}-out ({holdouts} holdouts, mean ± sd over them; the gate's view)"
    return f"{holdouts} folds that keep each {group_by} on one side (mean ± sd; the gate's view)"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    version: str
    previous_champion: str | None
    reasons: list[str]

    def line(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "kept as challenger (not promoted)"
        return f"version {self.version}: {verdict}: " + "; ".join(self.reasons)


def gate(settings: Settings, job: TrainingJob, evaluated: dict[str, str]) -> Decision:
    """Decide on the challenger, tag the decision on its version, move ``champion`` if it passes."""
    from pipelines.registry import CHAMPION, Registry

    registry = Registry(settings)
    registry.check()
    run_id, version = evaluated["run_id"], evaluated["version"]
    try:
        metrics = registry.run_metrics(run_id)
        promoted, reasons = decide(metrics, job.gate)
        previous = registry.alias(CHAMPION)
        registry.tag_version(
            version,
            {
                "gate.decision": "promoted" if promoted else "rejected",
                "gate.reasons": "; ".join(reasons),
                "gate.metric": job.gate.metric,
                "gate.margin": job.gate.margin,
                "gate.champion_version": previous or "",
                "gate.decided_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            },
        )
        if promoted:
            registry.set_champion(version, by="gate", reason="; ".join(reasons))
        decision = Decision(promoted, version, previous, reasons)
        out = run_dir(settings, run_id)
        table = pd.read_csv(out / "artifacts" / "evaluation.csv")
        styles_df = pd.read_csv(out / "artifacts" / "per_style.csv")
        summary_dir = out / "decision"
        summary_dir.mkdir(exist_ok=True)
        artifacts.decision_summary(
            table,
            {
                "decision": "promoted to champion" if promoted else "not promoted",
                "version": version,
                "previous champion": previous or "none",
                "reasons": "; ".join(reasons),
            },
            _markdown(styles_df),
            summary_dir,
            {"run": run_id, "feature version": metrics_tag(registry, run_id, "feature_version")},
        )
        champion_metrics = registry.run_metrics(registry.version(previous).run_id) if previous else {}
        images = {p.name: p.read_bytes() for p in sorted((out / "artifacts").glob("*.png"))}
        verdict = "promoted to champion" if promoted else "not promoted"
        page = comparison_html(version, previous, verdict, reasons, metrics, champion_metrics, styles_df, images)
        (summary_dir / "comparison.html").write_text(page)
        registry.log_artifacts(run_id, summary_dir, "review")
        registry.set_run_tags(run_id, {"gate.decision": "promoted" if promoted else "rejected"})
        registry.end_run(run_id)
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
    return decision


def metrics_tag(registry: object, run_id: str, tag: str) -> str:
    return registry.client.get_run(run_id).data.tags.get(tag, "")  # type: ignore[attr-defined]


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def evaluation_text(settings: Settings, run_id: str) -> str:
    """The evaluation tables of a run (as the CLI prints them)."""
    return (run_dir(settings, run_id) / "artifacts" / "evaluation.md").read_text()


__all__ = [
    "Decision",
    "GateConfig",
    "TrainingJob",
    "decide",
    "evaluate",
    "fold_summary",
    "gate",
    "prepare",
    "train",
]
