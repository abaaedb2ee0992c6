"""``musicrec model evaluate``: a registered model or a baseline on any labelled catalogue, without training.

Scores the version leave-one-source-out beside the raw, mean+std and random baselines, with paired bootstrap
intervals over sources, and records the result as an MLflow run under that version, so any model can be
judged on any catalogue after the fact.
Design: docs/evaluation.md#musicrec-model-evaluate-version---catalogue-data_root
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import UserError
from pipelines.evaluation.bootstrap import DEFAULT_DRAWS, DEFAULT_SEED, interval_metrics, mean_interval, paired_table
from pipelines.model.embedder import l2_normalise
from pipelines.model.ref import CHAMPION, EVALUATE_NAMES, EVALUATED_BASELINES, MEANSTD, RANDOM, RAW, ModelRef
from pipelines.settings import Settings
from pipelines.steps import StepJob

log = logging.getLogger(__name__)

LEARNED = "learned"  # the model's output without the appended statistics
KEYS = [("catalogue", "p@10"), ("catalogue", "map@10"), ("cross_source", "p@10"), ("cross_source", "map@10")]
EVAL_TAG = "evaluation"


@dataclass(frozen=True)
class ModelEvaluation:
    """What an evaluation produced: the printed report, its MLflow run, and the tables behind it."""

    version: str
    mode: str
    text: str
    run_id: str | None
    table: pd.DataFrame  # summary: model, view, metrics, _sd, folds
    per_fold: pd.DataFrame
    intervals: pd.DataFrame  # paired: model, against, view, metric, diff, lo, hi, ...

    def line(self) -> str:
        """The report, then one line with the headline numbers and the MLflow run."""
        cells = []
        for view, metric in (("catalogue", "p@10"), ("cross_source", "map@10")):
            row = self.table[(self.table["model"] == "model") & (self.table["view"] == view)]
            value = float(row[metric].iloc[0]) if len(row) else float("nan")
            cells.append(f"{view.replace('_', '-')} {metric.replace('map', 'mAP')} {value:.3f}")
        logged = f"MLflow run {self.run_id}" if self.run_id else "not logged"
        return f"{self.text.rstrip()}\n\nmodel {self.version}: " + ", ".join(cells) + f" ({logged})"


class EvaluateModelJob(StepJob):
    """Which model to evaluate on which labelled catalogue, and the bootstrap's draws and seed."""

    version: str = CHAMPION  # a version number, champion, challenger, raw, meanstd or random (EVALUATE_NAMES)
    catalogue: Path | None = None  # a data root with a manifest and features; None: this data root
    draws: int = DEFAULT_DRAWS
    seed: int = DEFAULT_SEED


def catalogue_settings(settings: Settings, catalogue: Path | None) -> Settings:
    """Settings whose data root is ``catalogue`` for reading tracks; MLflow and Milvus stay where they were."""
    if catalogue is None:
        return settings
    root = Path(catalogue).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"--catalogue {catalogue}: no such folder (a data root with a manifest and features)")
    if not (root / "catalogue").exists() or not (root / "features").exists():
        raise UserError(
            f"--catalogue {catalogue} is not a data root with a manifest and a feature store; bring a library in "
            "with MUSICREC_DATA_ROOT=<it> musicrec catalogue import <folder> and musicrec features build"
        )
    return settings.model_copy(update={"paths": settings.paths.model_copy(update={"data_root": root})})


def _heldout_branches(settings: Settings, cat: object, run_id: str, fold_of: dict[str, str]) -> dict | None:
    """Per-source embeddings from a training run's leave-one-source-out branches, or None when not there."""
    from pipelines.training.labelled import run_dir
    from pipelines.training.plan import PRIMARY, plan_from_json
    from pipelines.training.steps.evaluate import load_branches
    from pipelines.training.train import embed

    out = run_dir(settings, run_id)
    try:
        prepared = json.loads((out / "prepared.json").read_text())
        plan_file = out.parent.parent / "plans" / Path(prepared["plan"]).name  # this data root's, if it moved
        plan = plan_from_json(json.loads((plan_file if plan_file.exists() else Path(prepared["plan"])).read_text()))
        holdouts = [h for h in plan if h.protocol == PRIMARY]
        models, _ = load_branches(out, holdouts)
    except (OSError, KeyError, ValueError) as exc:
        log.info("training run %s has no usable per-source branches here (%s)", run_id, exc)
        return None
    ids = set(cat.track_ids)  # type: ignore[attr-defined]
    embedded: dict[str, np.ndarray] = {}
    for h in holdouts:
        mine = {fold_of[t] for t in h.tracks if t in ids}
        if len(mine) != 1 or not set(h.tracks) <= ids:
            return None  # the run's holdouts are not this catalogue's sources
        embedded[mine.pop()] = embed(models[h.name], cat.matrix)  # type: ignore[attr-defined]
    return embedded if set(embedded) == set(fold_of.values()) else None


def _learned_part(emb: np.ndarray, dim: int, stats_weight: float) -> np.ndarray | None:
    """The learned values of an output with the statistics appended (first ``dim`` columns), unit length."""
    if not stats_weight or emb.shape[1] <= dim:
        return None
    return l2_normalise(emb[:, :dim])


def _model_embeddings(
    settings: Settings, cat: object, requested: str, folds: np.ndarray
) -> tuple[str, str, dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """(version, mode, {name: {fold: embeddings}}, version tags) of what was asked for."""
    from pipelines.training.labelled import evaluation_fingerprint

    fold_names = sorted(set(folds))
    matrix = cat.matrix  # type: ignore[attr-defined]
    ref = ModelRef.parse(requested, EVALUATE_NAMES)
    if ref.text in EVALUATED_BASELINES:
        return requested, "baseline (no weights)", {}, {}
    from pipelines.registry import Registry, load_embedder

    version = ref.resolve(settings).text
    registry = Registry(settings)
    mv = registry.version(version)
    tags = dict(mv.tags)
    if tags.get("feature_version") != cat.feature_version:  # type: ignore[attr-defined]
        raise UserError(
            f"model version {version} expects feature version {tags.get('feature_version')}, but the catalogue's "
            f"features are {cat.feature_version}; build them with that model's feature parameters"  # type: ignore[attr-defined]
        )
    encoder = json.loads(tags.get("encoder", "{}"))
    dim = int(encoder.get("dim", 0)) * int(encoder.get("members", 1))  # the learned part: every member's values
    weight = float(encoder.get("stats_weight", 0.0))
    same = tags.get("catalogue") == evaluation_fingerprint(cat, tags.get("group_by", "source"))  # type: ignore[arg-type]
    fold_of = dict(zip(cat.track_ids, folds, strict=True))  # type: ignore[attr-defined]
    per_fold = _heldout_branches(settings, cat, mv.run_id, fold_of) if same and mv.run_id else None
    if per_fold is not None:
        mode = f"leave-one-source-out: each source embedded by training run {mv.run_id}'s branch trained without it"
    else:
        served = load_embedder(settings, version).embed(matrix)
        per_fold = dict.fromkeys(fold_names, served)
        mode = "the registered model on every source"
        if same:
            mode += " (it was trained on these very tracks: NOT held out; its per-source branches are gone)"
            log.warning("model version %s was trained on this catalogue: the numbers are not held out", version)
    out = {"model": per_fold}
    learned = {f: _learned_part(e, dim, weight) for f, e in per_fold.items()}
    if all(v is not None for v in learned.values()):
        out[LEARNED] = learned
    return version, mode, out, tags


def _ci_cell(values: np.ndarray, draws: int, seed: int) -> str:
    lo, hi = mean_interval(values, draws, seed)
    return f"{values.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def _report(
    title: str,
    per_fold: pd.DataFrame,
    per_query: pd.DataFrame,
    intervals: pd.DataFrame,
    models: list[str],
    draws: int,
    seed: int,
) -> str:
    """The report as markdown: means with intervals, paired differences, per style, per source."""
    lines = [f"# {title}", "", "## Mean over sources [95% bootstrap interval over sources]", ""]
    head = " | ".join(f"{v.replace('_', '-')} {m.replace('map', 'mAP')}" for v, m in KEYS)
    lines += [f"| model | {head} | holdouts |", "|---" * (len(KEYS) + 2) + "|"]
    for m in models:
        cells, n = [], 0
        for view, metric in KEYS:
            v = per_fold[(per_fold["model"] == m) & (per_fold["view"] == view)][metric].to_numpy()
            cells.append(_ci_cell(v, draws, seed) if len(v) else "-")
            n = max(n, len(v))
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {n} |")
    lines += ["", "## Paired differences per source: mean [95% interval] (sources won / all)", ""]
    lines += ["| pair | " + head + " |", "|---" * (len(KEYS) + 1) + "|"]
    for (model, other), g in intervals.groupby(["model", "against"], sort=False):
        cells = []
        for view, metric in KEYS:
            r = g[(g["view"] == view) & (g["metric"] == metric)]
            if not len(r):
                cells.append("-")
                continue
            r0 = r.iloc[0]
            mark = " *" if r0["lo"] > 0 else ""
            cells.append(f"{r0['diff']:+.3f} [{r0['lo']:+.3f}, {r0['hi']:+.3f}]{mark} ({r0['wins']}/{r0['sources']})")
        lines.append(f"| {model} - {other} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: the interval's lower bound is above zero.", ""]
    from pipelines.training.evaluate import style_table

    lines += ["## Per style (every query of every source)", ""]
    styles = pd.concat([style_table(per_query, m).assign(model=m) for m in models], ignore_index=True)
    lines += ["mAP@10 per style, catalogue / cross-source:", ""]
    lines += ["| style | queries | " + " | ".join(models) + " |", "|---" * (len(models) + 2) + "|"]
    for style in sorted(styles["style"].unique()):

        def cell(m: str, view: str, style: str = style) -> float:
            r = styles[(styles["model"] == m) & (styles["view"] == view) & (styles["style"] == style)]
            return float(r["map@10"].iloc[0]) if len(r) else float("nan")

        q = styles[(styles["model"] == models[0]) & (styles["view"] == "catalogue") & (styles["style"] == style)]
        n = int(q["queries"].iloc[0]) if len(q) else 0
        cells = [f"{cell(m, 'catalogue'):.3f} / {cell(m, 'cross_source'):.3f}" for m in models]
        lines.append(f"| {style} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Per source: cross-source mAP@10", ""]
    src = per_fold[per_fold["view"] == "cross_source"].pivot(index="fold", columns="model", values="map@10")
    lines += ["| source | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for fold, row in src.iterrows():
        lines.append(f"| {fold} | " + " | ".join(f"{row.get(m, np.nan):.3f}" for m in models) + " |")
    sanity = per_fold[per_fold["view"] == "unseen"].groupby("model")["map@10"].mean()
    lines += [
        "",
        "Sanity check, not a quality measure: the `unseen` view (candidates only the held-out source's own "
        "tracks) gives mAP@10 " + ", ".join(f"{m} {sanity.get(m, np.nan):.3f}" for m in models) + "; "
        "a source is mostly one style, so every model, random included, scores near its share of that style.",
    ]
    return "\n".join(lines) + "\n"


def evaluate_model(
    settings: Settings,
    requested: str,
    catalogue: Path | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
    log_run: bool = True,
) -> ModelEvaluation:
    """Evaluate ``requested`` (a version, ``champion``, ``challenger``, or a baseline) on ``catalogue``."""
    from pipelines.training.evaluate import baseline_embeddings, evaluate_models, fold_summary, summary
    from pipelines.training.labelled import evaluation_fingerprint, load_labelled

    if draws < 100:
        raise UserError(f"--draws must be at least 100, not {draws}")
    cat_settings = catalogue_settings(settings, catalogue)
    cat = load_labelled(cat_settings)
    sources = cat.groups("source")
    styles = list(cat.tracks["style"])
    if len(set(sources)) < 2 or len(set(styles)) < 2:
        raise UserError(
            f"the catalogue has {len(set(sources))} source(s) and {len(set(styles))} style(s); "
            "leave-one-source-out needs at least 2 of each"
        )
    folds = np.asarray(sources, dtype=object)
    fold_names = sorted(set(sources))
    version, mode, embedders, _tags = _model_embeddings(settings, cat, requested, folds)
    for b in EVALUATED_BASELINES:
        embedders[b] = dict.fromkeys(fold_names, baseline_embeddings(b, cat.matrix, cat.n_mfcc, seed=seed))
    if requested in EVALUATED_BASELINES:
        embedders = {"model": embedders[requested], **embedders}
    per_query = evaluate_models(embedders, cat.matrix, cat.track_ids, styles, folds, sources)
    per_fold = fold_summary(per_query)
    table = summary(per_query)
    models = list(embedders)
    parts = [paired_table(per_fold, "model", [b for b in EVALUATED_BASELINES if b != requested], KEYS, draws, seed)]
    parts[0].insert(0, "model", "model")
    if LEARNED in embedders:
        for other in (RAW, MEANSTD):
            t = paired_table(per_fold, LEARNED, [other], KEYS, draws, seed)
            t.insert(0, "model", LEARNED)
            parts.append(t)
    for b in (RAW, RANDOM):
        t = paired_table(per_fold, b, [MEANSTD], KEYS, draws, seed)
        t.insert(0, "model", b)
        parts.append(t)
    intervals = pd.concat(parts, ignore_index=True)
    fingerprint = evaluation_fingerprint(cat, "source")
    root = cat_settings.paths.data_root
    title = (
        f"model {version} ({requested}) on {root}: {len(cat.track_ids)} tracks, {len(fold_names)} sources, "
        f"{len(set(styles))} styles; {mode}; {draws} bootstrap draws, seed {seed}"
    )
    text = _report(title, per_fold, per_query, intervals, models, draws, seed)
    run_id = (
        _log(settings, version, requested, root, fingerprint, mode, draws, seed, table, per_fold, intervals, text)
        if log_run
        else None
    )
    return ModelEvaluation(version, mode, text, run_id, table, per_fold, intervals)


def _log(
    settings: Settings,
    version: str,
    requested: str,
    root: Path,
    fingerprint: str,
    mode: str,
    draws: int,
    seed: int,
    table: pd.DataFrame,
    per_fold: pd.DataFrame,
    intervals: pd.DataFrame,
    text: str,
) -> str:
    """One MLflow run for the evaluation, linked to the version by tag and parameter; the tables as artifacts."""
    from pipelines.registry import Registry
    from pipelines.training.steps.evaluate import table_metrics

    registry = Registry(settings)
    registry.check()
    params = {"model_version": version, "requested": requested, "catalogue": str(root), "draws": draws, "seed": seed}
    tags = {EVAL_TAG: "model", "model_version": version, "catalogue": fingerprint, "mode": mode}
    run_id = registry.start_run(params, tags, name=f"evaluate:{version}")
    with registry.run(run_id, finish=True):
        metrics = table_metrics(table)
        for model, g in intervals.groupby("model", sort=False):
            metrics |= interval_metrics(g, str(model))
        registry.log_metrics(run_id, metrics)
        out = settings.paths.data_root / "evaluations" / run_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.md").write_text(text)
        per_fold.to_csv(out / "per_source.csv", index=False, float_format="%.4f")
        intervals.to_csv(out / "intervals.csv", index=False, float_format="%.4f")
        table.to_csv(out / "summary.csv", index=False, float_format="%.4f")
        registry.log_artifacts(run_id, out, "evaluation")
        if version not in EVALUATED_BASELINES:
            registry.tag_version(version, {"evaluation.last_run": run_id, "evaluation.catalogue": str(root)})
    return run_id


def evaluation_runs(settings: Settings, version: str | None = None) -> list[Any]:
    """Evaluation runs, newest first; of one model version (or baseline name) when given."""
    from pipelines.registry import EXPERIMENT_NAME, Registry

    registry = Registry(settings)
    exp = registry.client.get_experiment_by_name(EXPERIMENT_NAME)
    if exp is None:
        return []
    flt = f"tags.{EVAL_TAG} = 'model'"
    if version is not None:
        flt += f" and tags.model_version = '{version}'"
    return list(registry.client.search_runs([exp.experiment_id], filter_string=flt, order_by=["start_time DESC"]))


def evaluation_line(run: object) -> str:
    """One line for ``model show``: where, the headline numbers, and the paired difference with mean+std."""
    m = run.data.metrics  # type: ignore[attr-defined]
    p = run.data.params  # type: ignore[attr-defined]

    def pair(key: str) -> str:
        base = f"paired/model-meanstd/{key}"
        if f"{base}/diff" not in m:
            return ""
        return f" (vs meanstd {m[f'{base}/diff']:+.3f} [{m[f'{base}/lo']:+.3f}, {m[f'{base}/hi']:+.3f}])"

    cat, cross = "catalogue/p_at_10", "cross_source/map_at_10"
    return (
        f"evaluated on {p.get('catalogue', '?')}: catalogue p@10 {m.get(f'model/{cat}', float('nan')):.3f}"
        f"{pair(cat)}, cross-source mAP@10 {m.get(f'model/{cross}', float('nan')):.3f}{pair(cross)} "
        f"[run {run.info.run_id}]"  # type: ignore[attr-defined]
    )


def run(settings: Settings, job: EvaluateModelJob, inputs: None = None) -> ModelEvaluation:
    """The evaluate-model step: score ``job.version`` on ``job.catalogue`` and log it as an MLflow run."""
    return evaluate_model(settings, job.version, job.catalogue, draws=job.draws, seed=job.seed)
