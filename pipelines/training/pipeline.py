"""The training pipeline as four plain steps: prepare -> train -> evaluate -> gate.

Each step takes the settings and the job and returns small JSON-able values (paths, ids), so the
``train_triplet_model`` DAG runs one step per task and ``musicrec train`` runs them in a row.

- :func:`prepare` (DAG ``build_triplets``): frozen split, training windows, the triplet dataset (Parquet).
- :func:`train`: one MLflow run; a branch per fold (the evaluation fold's is the candidate, the others
  give the spread), per-epoch loss and validation metrics logged; weights kept under the data root.
- :func:`evaluate`: the fold models, baselines (a) raw (b) mean+std (c) random and (d) the current champion
  side by side on the same folds; metrics and review artifacts logged; the candidate logged as an MLflow
  model and registered as ``musicrec-triplet`` with alias ``challenger``.
- :func:`gate`: promote the challenger to ``champion`` only if it beats the raw baseline and the champion
  by the configured margin, on the frozen evaluation fold; decision and reasons as version tags.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from pipelines.catalogue.manifest import read_manifest
from pipelines.errors import UserError
from pipelines.settings import Settings
from pipelines.training import artifacts
from pipelines.training.evaluate import (
    BASELINES,
    baseline_embeddings,
    evaluate_models,
    fold_summary,
    format_table,
    metric_value,
    style_table,
    summary,
)
from pipelines.training.split import GroupBy, check_styles, frozen_split, split_path, validation_carve
from pipelines.training.train import TrainConfig, TrainingFailed, WindowBank, embed, train_branch
from pipelines.training.triplets import TRIPLET_SCHEMA, build_triplets
from pipelines.training.windows import build_windows

log = logging.getLogger(__name__)

Progress = Callable[[Iterable], Iterable]
EpochProgress = Callable[[int, dict[str, float]], None]  # (fold, epoch record)


class GateConfig(BaseModel):
    """When a challenger may replace the champion. Metrics are ``view/metric`` on the evaluation fold."""

    model_config = ConfigDict(frozen=True)

    metric: str = Field(default="catalogue/p@10", description="Compared with the champion's.")
    margin: float = Field(default=0.01, ge=0.0, description="How much better than the champion it must be.")
    beat_raw_on: tuple[str, ...] = Field(
        default=("catalogue/p@10", "unseen/map@10"), description="Must beat baseline (a) on each."
    )


class TrainingJob(BaseModel):
    """One training job: the training recipe, how it is evaluated, and the gate."""

    model_config = ConfigDict(frozen=True)

    train: TrainConfig = Field(default_factory=TrainConfig)
    n_folds: int = Field(default=5, ge=2)
    eval_fold: int = Field(default=0, ge=0, description="The frozen fold every challenger is judged on.")
    split_seed: int = 0
    group_by: GroupBy = "track"
    spread: bool = Field(default=True, description="Train every fold for the spread (else the eval fold only).")
    gate: GateConfig = Field(default_factory=GateConfig)

    def folds(self) -> list[int]:
        """Folds to train, the evaluation fold first."""
        rest = [f for f in range(self.n_folds) if f != self.eval_fold] if self.spread else []
        return [self.eval_fold, *rest]

    @property
    def key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Catalogue:
    """The feature matrix with its tracks' manifest rows, in the same order."""

    track_ids: list[str]
    matrix: np.ndarray
    tracks: pd.DataFrame  # track_id, style, source, album, artist, path, sha256, duration_s
    feature_version: str
    n_mfcc: int


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
    cols = ["track_id", "style", "source", "album", "artist", "path", "sha256", "duration_s"]
    return Catalogue(fm.track_ids, fm.matrix, rows[cols], fm.version, fm.params.n_mfcc)


def inputs_fingerprint(cat: Catalogue, job: TrainingJob) -> str:
    """What a trained model depends on: the recipe and every training track's content and label.

    Registered versions carry it as a tag, so a scheduled or repeated run can tell that retraining would
    reproduce a model the registry already has (training is seeded and deterministic).
    """
    digest = hashlib.sha256(f"{job.key}|{cat.feature_version}".encode())
    for row in cat.tracks.sort_values("track_id").itertuples(index=False):
        digest.update(f"|{row.track_id}:{row.sha256}:{row.style}:{row.source}".encode())
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
    from pipelines.features.params import FeatureParams  # noqa: F401  (the settings carry them)

    kwargs = {"progress": progress} if progress else {}
    return build_windows(
        cat.tracks, settings.features, job.train.window_offsets_s, training_dir(settings) / "windows", **kwargs
    )


def prepare(settings: Settings, job: TrainingJob, progress: Progress | None = None) -> dict[str, str]:
    """Freeze the split, compute training windows, write the triplet dataset; returns their paths."""
    cat = load_catalogue(settings)
    check_styles(cat.tracks)
    root = training_dir(settings)
    split = frozen_split(
        cat.tracks,
        split_path(root, job.group_by, job.n_folds, job.split_seed),
        job.n_folds,
        job.split_seed,
        job.group_by,
    )
    windows = _windows(settings, cat, job, progress)
    offsets: dict[str, list[float]] = {t: [0.0] for t in cat.track_ids}
    for t, o in zip(windows.track_ids, windows.offsets, strict=True):
        offsets[t].append(float(o))
    cfg = job.train
    parts = []
    for fold in job.folds():
        fit, _val = validation_carve(split[split["fold"] != fold], cfg.val_fraction, cfg.seed + fold)
        check_styles(fit, 1)
        parts.append(
            build_triplets(
                fit,
                offsets,
                n_batches=cfg.epochs * cfg.batches_per_epoch,
                tracks_per_style=cfg.tracks_per_style,
                triplets_per_batch=cfg.triplets_per_batch,
                seed=cfg.seed + 1000 * fold,
                strategy=cfg.mining,
                fold=fold,
            )
        )
    triplets = pd.concat(parts, ignore_index=True)
    path = root / "triplets" / f"triplets-{cat.feature_version}-{job.key}.parquet"
    _write_parquet(triplets, TRIPLET_SCHEMA, path)
    log.info("triplet dataset: %d triplets over %d folds at %s", len(triplets), len(parts), path)
    split_file = split_path(root, job.group_by, job.n_folds, job.split_seed)
    return {
        "split": str(split_file),
        "triplets": str(path),
        "feature_version": cat.feature_version,
        "tracks": str(len(cat.track_ids)),
    }


def _bank(settings: Settings, cat: Catalogue, job: TrainingJob) -> WindowBank:
    w = _windows(settings, cat, job, None)
    return WindowBank.build(cat.track_ids, cat.matrix, w.track_ids, w.offsets, w.matrix)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_dir(settings: Settings, run_id: str) -> Path:
    return training_dir(settings) / "runs" / run_id


def train(settings: Settings, job: TrainingJob, prepared: dict[str, str], on_epoch: EpochProgress | None = None) -> str:
    """Train a branch per fold in one MLflow run; returns the run id. A failure marks the run FAILED."""
    import torch

    from pipelines.registry import Registry

    registry = Registry(settings)
    registry.check()
    cat = load_catalogue(settings)
    if cat.feature_version != prepared["feature_version"]:
        raise UserError("the feature store changed since the triplets were built; run the preparation again")
    split = pd.read_parquet(prepared["split"])
    split = split[split["track_id"].isin(cat.track_ids)]
    triplets = pd.read_parquet(prepared["triplets"])
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
        "n_folds": job.n_folds,
        "eval_fold": job.eval_fold,
        "group_by": job.group_by,
        "gate": job.gate.model_dump_json(),
        **{k: v for k, v in cfg.model_dump(exclude={"encoder"}).items()},
        **{f"encoder.{k}": v for k, v in encoder.model_dump().items()},
    }
    run_id = registry.start_run(params, {"feature_version": cat.feature_version, "job": job.key}, name="train")
    out = run_dir(settings, run_id)
    out.mkdir(parents=True, exist_ok=True)
    try:
        bank = _bank(settings, cat, job)
        for fold in job.folds():
            fit, val = validation_carve(split[split["fold"] != fold], cfg.val_fraction, cfg.seed + fold)
            prefix = "" if fold == job.eval_fold else f"fold{fold}/"

            def log_epoch(rec: dict[str, float], fold: int = fold, prefix: str = prefix) -> None:
                registry.log_metrics(
                    run_id, {prefix + k: v for k, v in rec.items() if k != "epoch"}, step=int(rec["epoch"])
                )
                if on_epoch is not None:
                    on_epoch(fold, rec)

            fold_cfg = cfg.model_copy(update={"seed": cfg.seed + fold})
            result = train_branch(fold_cfg, bank, fit, val, triplets[triplets["fold"] == fold], log_epoch)
            torch.save(result.model.state_dict(), out / f"fold-{fold}.pt")
            result.history.assign(fold=fold, best_epoch=result.best_epoch).to_csv(
                out / f"history-{fold}.csv", index=False
            )
        (out / "encoder.json").write_text(encoder.model_dump_json())
        (out / "prepared.json").write_text(json.dumps(prepared))
    except BaseException as exc:
        registry.set_run_tags(run_id, {"failure": f"{type(exc).__name__}: {exc}"[:500]})
        registry.end_run(run_id, failed=True)
        if isinstance(exc, TrainingFailed):
            log.error("training failed, nothing registered: %s", exc)
        raise
    return run_id


def _load_fold_models(out: Path) -> tuple[dict[int, object], object]:
    import torch

    from pipelines.model.encoder import Encoder, EncoderConfig

    config = EncoderConfig.model_validate_json((out / "encoder.json").read_text())
    models = {}
    for path in sorted(out.glob("fold-*.pt")):
        model = Encoder(config)
        model.load_state_dict(torch.load(path, weights_only=True))
        models[int(path.stem.split("-")[1])] = model.eval()
    return models, config


def _champion_embeddings(settings: Settings, cat: Catalogue) -> tuple[str | None, np.ndarray | None, str]:
    """The current champion's embeddings of the catalogue, when it can read the current features."""
    from pipelines.registry import CHAMPION, Registry, load_embedder

    version = Registry(settings).alias(CHAMPION)
    if version is None:
        return None, None, "no champion yet"
    embedder = load_embedder(settings, version)
    if embedder.feature_version != cat.feature_version:
        return version, None, f"champion v{version} expects features {embedder.feature_version}"
    return version, embedder.embed(cat.matrix), ""


def evaluate(settings: Settings, job: TrainingJob, run_id: str, register: bool = True) -> dict[str, str]:
    """Score fold models, baselines and the champion; log everything; register the challenger.

    ``register=False`` (recipe comparisons) logs the evaluation and finishes the run, registering nothing.
    """
    from pipelines.registry import Registry

    registry = Registry(settings)
    registry.check()
    out = run_dir(settings, run_id)
    try:
        prepared = json.loads((out / "prepared.json").read_text())
        cat = load_catalogue(settings)
        split = pd.read_parquet(prepared["split"]).set_index("track_id").reindex(cat.track_ids)
        folds = split["fold"].to_numpy()
        styles = list(cat.tracks["style"])
        models, config = _load_fold_models(out)
        fold_embeddings = {f: embed(m, cat.matrix) for f, m in models.items()}
        embedders: dict[str, dict[int, np.ndarray]] = {"model": fold_embeddings}
        for name in BASELINES:
            e = baseline_embeddings(name, cat.matrix, cat.n_mfcc, seed=job.train.seed)
            embedders[name] = dict.fromkeys(models, e)
        champ_version, champ_emb, champ_note = _champion_embeddings(settings, cat)
        if champ_emb is not None:
            embedders["champion"] = {job.eval_fold: champ_emb}
        per_query = evaluate_models(embedders, cat.matrix, cat.track_ids, styles, folds)
        table = summary(per_query)
        on_eval = per_query[per_query["fold"] == job.eval_fold]
        eval_table = summary(on_eval)
        metrics: dict[str, float] = {}
        for _, row in table.iterrows():
            for m in ("p@1", "p@5", "p@10", "map@10", "r_prec"):
                metrics[f"{row['model']}/{row['view']}/{m}"] = row[m]
                if row["folds"] > 1:
                    metrics[f"{row['model']}/{row['view']}/{m}_sd"] = row[f"{m}_sd"]
        for _, row in eval_table.iterrows():
            for m in ("p@1", "p@5", "p@10", "map@10", "r_prec"):
                metrics[f"evalfold/{row['model']}/{row['view']}/{m}"] = row[m]
        registry.log_metrics(run_id, metrics)

        art = out / "artifacts"
        art.mkdir(exist_ok=True)
        histories = {int(p.stem.split("-")[1]): pd.read_csv(p) for p in sorted(out.glob("history-*.csv"))}
        histories = {
            job.eval_fold: histories[job.eval_fold],
            **{k: v for k, v in histories.items() if k != job.eval_fold},
        }
        best = int(histories[job.eval_fold]["best_epoch"].iloc[0])
        artifacts.loss_curves(histories, art, best)
        styles_df = style_table(per_query, "model")
        artifacts.style_csv(styles_df, art)
        for view in ("catalogue", "unseen"):
            artifacts.confusion(per_query[per_query["fold"] == job.eval_fold], "model", view, art)
        held = folds == job.eval_fold
        artifacts.projection(
            fold_embeddings[job.eval_fold][held],
            [s for s, h in zip(styles, held, strict=True) if h],
            art,
            f"evaluation fold {job.eval_fold}: model embeddings (PCA)",
        )
        eval_ids = [t for t, h in zip(cat.track_ids, held, strict=True) if h]
        examples = [eval_ids[i] for i in np.linspace(0, len(eval_ids) - 1, min(4, len(eval_ids))).astype(int)]
        artifacts.example_queries(fold_embeddings[job.eval_fold], cat.track_ids, styles, examples, art)
        (art / "evaluation.md").write_text(
            f"# Evaluation ({len(models)} folds, mean ± sd)\n\n{format_table(table)}\n\n"
            f"# Evaluation fold {job.eval_fold} only (the gate's numbers)\n\n{format_table(eval_table)}\n"
        )
        table.to_csv(art / "evaluation.csv", index=False, float_format="%.4f")
        eval_table.to_csv(art / "evaluation_fold.csv", index=False, float_format="%.4f")
        pq.write_table(pa.Table.from_pandas(per_query, preserve_index=False), art / "per_query.parquet")
        registry.log_artifacts(run_id, art, "review")

        registry.set_run_tags(run_id, {"champion_at_evaluation": champ_version or "", "champion_note": champ_note})
        if not register:
            registry.end_run(run_id)
            return {"run_id": run_id, "version": ""}
        candidate = models[job.eval_fold]
        model_uri = registry.log_model(run_id, candidate, cat.feature_version, cat.matrix[:2])
        tags = {
            "feature_version": cat.feature_version,
            "dim": str(config.dim),
            "encoder": config.model_dump_json(),
            "run_id": run_id,
            "split_file": Path(prepared["split"]).name,
            "eval_fold": str(job.eval_fold),
            "inputs": inputs_fingerprint(cat, job),
        }
        version = registry.register(run_id, model_uri, tags)
        registry.set_run_tags(run_id, {"model_version": version})
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
    return {"run_id": run_id, "version": version}


@dataclass(frozen=True)
class Decision:
    promoted: bool
    version: str
    previous_champion: str | None
    reasons: list[str]

    def line(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "kept as challenger (not promoted)"
        return f"version {self.version}: {verdict}: " + "; ".join(self.reasons)


def decide(metrics: dict[str, float], gate: GateConfig) -> tuple[bool, list[str]]:
    """The gate's rule on evaluation-fold metrics (keys ``evalfold/<model>/<view>/<metric>``)."""
    ok, reasons = True, []

    def get(model: str, key: str) -> float:
        return float(metrics.get(f"evalfold/{model}/{key}".replace("@", "_at_"), np.nan))

    for key in gate.beat_raw_on:
        mine, raw = get("model", key), get("raw", key)
        if not mine > raw:
            ok = False
            reasons.append(f"{key} {mine:.3f} does not beat raw {raw:.3f}")
        else:
            reasons.append(f"{key} {mine:.3f} beats raw {raw:.3f}")
    champ = get("champion", gate.metric)
    mine = get("model", gate.metric)
    if np.isnan(champ):
        reasons.append("no comparable champion")
    elif mine >= champ + gate.margin:
        reasons.append(f"{gate.metric} {mine:.3f} beats champion {champ:.3f} by >= {gate.margin}")
    else:
        ok = False
        reasons.append(f"{gate.metric} {mine:.3f} does not beat champion {champ:.3f} by {gate.margin}")
    return ok, reasons


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
    "metric_value",
    "prepare",
    "train",
]
