"""``musicrec features build`` and ``musicrec features show``: the feature store from the command line.

The build is the same step the ``ingest_catalogue`` DAG runs (:class:`pipelines.features.build.FeatureBuild`),
here with one thread and one worker process per shard and a progress bar.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.cli.console import CountBar
from pipelines.settings import get_settings


def build(
    shards: Annotated[int, typer.Option(help="Worker processes (shards); 0: one per core.", min=0)] = 0,
) -> None:
    """Embed every catalogue track not yet in the feature store; broken files go to the quarantine table."""
    from pipelines.features.build import FeatureJob, run

    bar = CountBar()
    try:
        report = run(get_settings(), FeatureJob(shards=shards), progress=bar)
    finally:
        bar.close()
    typer.echo(report.line())


def show() -> None:
    """Stored feature versions: rows, quarantined files by reason, parameters (* marks the current one)."""
    from pipelines.features.store import summary

    settings = get_settings()
    typer.echo(f"feature store: {settings.features_dir}")
    for line in summary(settings):
        p = line["params"]
        held = ", ".join(f"{n} {r}" for r, n in sorted(line["quarantined"].items())) or "none"
        mark = "*" if line["current"] else " "
        typer.echo(
            f"{mark} {line['version']}  {line['rows']} rows; quarantined: {held}; "
            f"N={p.n_frames} n_mfcc={p.n_mfcc} sr={p.sr} n_fft={p.n_fft} hop={p.hop} offset={p.offset_s:g}s "
            f"({p.duration_s:.1f} s of audio, {p.dim} values)"
        )


def register(app: typer.Typer) -> None:
    features_app = typer.Typer(help="The feature store: build, show.", no_args_is_help=True)
    features_app.command("build")(build)
    features_app.command("show")(show)
    app.add_typer(features_app, name="features")
