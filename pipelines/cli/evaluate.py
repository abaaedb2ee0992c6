"""``musicrec model evaluate``: a registered model or a baseline on a labelled catalogue, no training.

Runs the evaluate-model step (:func:`pipelines.evaluation.model_eval.run`, as the ``evaluate_model`` DAG
does) and prints its report: means with intervals over sources, paired differences against every
baseline, per style and per source, and the MLflow run it was logged as; ``musicrec model show`` lists
these runs under their version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def evaluate(
    version: Annotated[str, typer.Argument(help="A version number, champion, challenger, raw, meanstd or random.")],
    catalogue: Annotated[
        Path | None,
        typer.Option(help="Data root of a labelled catalogue (manifest and features); default: this data root."),
    ] = None,
    draws: Annotated[int, typer.Option(help="Bootstrap draws for the 95% intervals over sources.")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap (and random baseline) seed.")] = 0,
) -> None:
    """Evaluate VERSION leave-one-source-out on a catalogue, beside every baseline, with paired intervals."""
    from pipelines.evaluation.model_eval import EvaluateModelJob, run
    from pipelines.settings import get_settings

    job = EvaluateModelJob(version=version, catalogue=catalogue, draws=draws, seed=seed)
    typer.echo(run(get_settings(), job).line())


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the ``model`` group (which :mod:`pipelines.cli.train` adds to ``app``)."""
    from pipelines.cli.train import model_app

    model_app.command("evaluate")(evaluate)
