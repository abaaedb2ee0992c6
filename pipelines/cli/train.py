"""``musicrec train`` and ``musicrec model show|promote|rollback``: training and the registry by hand.

``train`` runs the same four steps as the ``train_triplet_model`` DAG (triplets, train, evaluate, gate)
in this process, with progress bars, and prints the evaluation table and the gate's decision.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from pipelines.cli.console import BranchBar, bar

model_app = typer.Typer(help="The model registry: show, evaluate, promote, roll back.", no_args_is_help=True)


def train(
    group_by: Annotated[
        str | None, typer.Option(help="What a source is for the source-disjoint views: source, album or artist.")
    ] = None,
    folds: Annotated[int | None, typer.Option(help="k of the track-disjoint split (the secondary view).")] = None,
    secondary: Annotated[
        bool | None, typer.Option(help="Also train the track-disjoint fold; --no-secondary skips that view.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Branches trained at once (a process and a core each).")] = None,
    seed: Annotated[int | None, typer.Option(help="Base training seed (same seed and data: same metrics).")] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Seeds per branch: the model is their ensemble (default: the recipe's, 3).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Upper bound of epochs (default: the recipe's).")] = None,
    mining: Annotated[str | None, typer.Option(help="random or semi-hard (default: the recipe's).")] = None,
    if_changed: Annotated[
        bool,
        typer.Option("--if-changed", help="Skip when a registered version was trained on exactly these inputs."),
    ] = False,
) -> None:
    """Train the triplet model, evaluate it leave-one-source-out, register it, and run the promotion gate."""
    from pipelines.errors import UserError
    from pipelines.settings import get_settings
    from pipelines.training.config import GroupBy, scheduled_job
    from pipelines.training.labelled import trained_version
    from pipelines.training.steps import evaluate, gate, prepare
    from pipelines.training.steps import train as train_step
    from pipelines.training.steps.train import end_abandoned_runs

    groups: dict[str, GroupBy] = {"source": "source", "album": "album", "artist": "artist"}
    if group_by is not None and group_by not in groups:
        raise UserError(f"--group-by must be source, album or artist, not {group_by!r}")
    recipe = {"seed": seed, "seeds": seeds, "epochs": epochs, "mining": mining}
    settings = get_settings()
    # MUSICREC_TRAINING_JOB as for scheduled runs, the options given on top (an option left out keeps the
    # job's value, so the environment's recipe is never replaced by a default)
    options = {"n_folds": folds, "secondary": secondary, "workers": workers, "group_by": group_by}
    options = {k: v for k, v in options.items() if v is not None}
    overrides: dict[str, Any] = {k: v for k, v in recipe.items() if v is not None}
    job = scheduled_job(settings, options | {"train": overrides})
    from pipelines.registry import Registry

    Registry(settings).check()
    end_abandoned_runs(settings)  # runs of an earlier `musicrec train` that was killed
    # SIGTERM (a service manager, `kill`) ends the MLflow run as FAILED, like Ctrl+C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if if_changed and (version := trained_version(settings, job)):
        typer.echo(f"model version {version} was trained on these features with this recipe: not retraining")
        return
    prepared = prepare.run(settings, job, progress=bar("training windows", "window"))
    typer.echo(prepared.line())
    branches = BranchBar(int(prepared.branches))
    try:
        trained = train_step.run(settings, job, prepared, on_branch=branches)
    finally:
        branches.close()
    evaluated = evaluate.run(settings, job, trained)
    decision = gate.run(settings, job, evaluated)
    typer.echo(evaluated.line())
    typer.echo(trained.line())
    typer.echo(decision.line())


@model_app.command("show")
def show() -> None:
    """Every registered version with its aliases, gate decision and headline metrics."""
    from pipelines.evaluation.model_eval import evaluation_line, evaluation_runs
    from pipelines.registry import CHALLENGER, CHAMPION, MODEL_NAME, Registry
    from pipelines.settings import get_settings

    settings = get_settings()
    registry = Registry(settings)
    versions = registry.versions()
    if not versions:
        typer.echo(f"{MODEL_NAME}: no versions yet; run `musicrec train`")
        return
    aliases = {CHAMPION: registry.alias(CHAMPION), CHALLENGER: registry.alias(CHALLENGER)}
    typer.echo(f"{MODEL_NAME}: champion v{aliases[CHAMPION] or '-'}, challenger v{aliases[CHALLENGER] or '-'}")
    for mv in versions:
        marks = ",".join(a for a, v in aliases.items() if v == str(mv.version))
        metrics = registry.run_metrics(mv.run_id) if mv.run_id else {}
        cat = metrics.get("model/catalogue/p_at_10", float("nan"))
        cross = metrics.get("model/cross_source/map_at_10", float("nan"))
        tags = mv.tags
        typer.echo(
            f"v{mv.version:<4} {marks or '-':<20} catalogue p@10 {cat:.3f}{_spread(metrics, 'catalogue/p_at_10')}  "
            f"cross-source mAP@10 {cross:.3f}{_spread(metrics, 'cross_source/map_at_10')}  "
            f"gate: {tags.get('gate.decision', '-')}"
            + (f"  promoted {tags['promoted_at']} by {tags.get('promoted_by')}" if "promoted_at" in tags else "")
            + (f"  rolled back {tags['rolled_back_at']}" if "rolled_back_at" in tags else "")
        )
        if "gate.reasons" in tags:
            typer.echo(f"      reasons: {tags['gate.reasons']}")
        for run in evaluation_runs(settings, str(mv.version))[:3]:
            typer.echo(f"      {evaluation_line(run)}")
    from pipelines.model.ref import EVALUATED_BASELINES

    for baseline in EVALUATED_BASELINES:
        for run in evaluation_runs(settings, baseline)[:1]:
            typer.echo(f"{baseline:<5} baseline {evaluation_line(run)}")


def _spread(metrics: dict[str, float], key: str) -> str:
    """`` (seeds alone 0.308-0.355)``: the range of one seed's branches alone, when the model is an ensemble."""
    values = [v for k, v in metrics.items() if k.startswith("seed") and k.endswith(f"/{key}")]
    return f" (seeds alone {min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""


@model_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="The model version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit tags).")] = "manual promotion",
) -> None:
    """Make VERSION the champion by hand (audit tags record who, when and the previous champion)."""
    from pipelines.registry import Registry, current_user
    from pipelines.settings import get_settings

    previous = Registry(get_settings()).set_champion(version, by=f"manual:{current_user()}", reason=reason)
    typer.echo(f"champion: v{previous or '-'} -> v{version}")


@model_app.command("rollback")
def rollback() -> None:
    """Give the champion alias back to the version the current champion replaced."""
    from pipelines.registry import Registry
    from pipelines.settings import get_settings

    demoted, restored = Registry(get_settings()).rollback()
    typer.echo(f"champion: v{demoted} -> v{restored} (rolled back)")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.add_typer(model_app, name="model")
