"""The evaluate step: held-out branches and baselines scored, review artifacts logged, ``all`` registered."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipelines.evaluation.gate import gate_intervals
from pipelines.model.config import EncoderConfig
from pipelines.model.encoder import Encoder, Ensemble
from pipelines.model.ref import EVALUATED_BASELINES
from pipelines.settings import Settings
from pipelines.training import artifacts
from pipelines.training.config import SEED_PREFIX, TrainingJob
from pipelines.training.evaluate import (
    baseline_embeddings,
    evaluate_models,
    fold_summary,
    format_table,
    style_table,
    summary,
)
from pipelines.training.labelled import evaluation_fingerprint, inputs_fingerprint, load_labelled, run_dir
from pipelines.training.metrics import METRICS
from pipelines.training.plan import ALL, PRIMARY, SECONDARY, Holdout, file_stem, member_name, plan_from_json
from pipelines.training.steps.train import Trained
from pipelines.training.train import embed


def load_branches(out: Path, plan: list[Holdout]) -> tuple[dict[str, Encoder | Ensemble], EncoderConfig]:
    """The trained model of every holdout of a run, by holdout name, in eval mode: its branch, or the
    ensemble of its seeds' branches when the run trained several (``config.members``)."""
    config = EncoderConfig.model_validate_json((out / "encoder.json").read_text())
    models: dict[str, Encoder | Ensemble] = {}
    for holdout in plan:
        members = []
        for k in range(config.members):
            model = Encoder(config.member)
            path = out / f"branch-{file_stem(member_name(holdout.name, k))}.pt"
            model.load_state_dict(torch.load(path, weights_only=True))
            members.append(model.eval())
        models[holdout.name] = members[0] if config.members == 1 else Ensemble.of(members).eval()
    return models, config


def seed_models(models: dict[str, Encoder | Ensemble]) -> dict[str, dict[str, Encoder]]:
    """Each seed's branches alone, as models ``seed0``, ``seed1``, ... by holdout (empty for single branches)."""
    out: dict[str, dict[str, Encoder]] = {}
    for name, model in models.items():
        if isinstance(model, Ensemble):
            for k, member in enumerate(model.branches()):
                out.setdefault(f"{SEED_PREFIX}{k}", {})[name] = member
    return out


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
    with registry.run(run_id):
        prepared = json.loads((out / "prepared.json").read_text())
        plan = plan_from_json(json.loads(Path(prepared["plan"]).read_text()))
        cat = load_labelled(settings)
        models, config = load_branches(out, plan)
        styles = list(cat.tracks["style"])
        sources = cat.groups(job.group_by)
        base = {b: baseline_embeddings(b, cat.matrix, cat.n_mfcc, seed=job.train.seed) for b in EVALUATED_BASELINES}
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
            if protocol == PRIMARY:  # the spread over seeds: each seed's branches alone
                for name, per_holdout in seed_models({h.name: models[h.name] for h in holdouts}).items():
                    embedders[name] = {h: embed(m, cat.matrix) for h, m in per_holdout.items()}
            for name, e in base.items():
                embedders[name] = {h.name: e for h in holdouts}
            tables[protocol] = evaluate_models(embedders, cat.matrix, cat.track_ids, styles, fold_of, sources)
        primary = tables[PRIMARY]
        table = summary(primary)
        fingerprint = evaluation_fingerprint(cat, job.group_by)
        champ_version, champ_metrics, champ_note = _champion_metrics(settings, fingerprint)
        seeds = sorted({m for m in primary["model"].unique() if m.startswith(SEED_PREFIX)})
        metrics = table_metrics(table) | champ_metrics
        for model in ("model", *seeds):
            metrics |= gate_intervals(primary, job.gate, job.train.seed, model)
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
            [style_table(primary, m).assign(model=m) for m in ("model", *EVALUATED_BASELINES)], ignore_index=True
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


def evaluation_text(settings: Settings, run_id: str) -> str:
    """The evaluation tables of a run (as the CLI prints them)."""
    return (run_dir(settings, run_id) / "artifacts" / "evaluation.md").read_text()


@dataclass(frozen=True)
class Evaluated:
    """The evaluate step's report: the run and the version it registered; ``line()`` is the tables."""

    run_id: str
    version: str
    tables: str = field(default="", compare=False, repr=False)

    def line(self) -> str:
        return self.tables

    def as_dict(self) -> dict[str, str]:
        return {"run_id": self.run_id, "version": self.version}


def run(settings: Settings, job: TrainingJob, inputs: Trained) -> Evaluated:
    """The evaluate step on the train step's run."""
    evaluated = evaluate(settings, job, inputs.run_id)
    return Evaluated(evaluated["run_id"], evaluated["version"], evaluation_text(settings, inputs.run_id))
