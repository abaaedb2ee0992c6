"""``musicrec index refresh|rollback``: the Milvus collections behind the alias ``tracks``.

The index is built from the feature store with a model version; the manifest itself is the catalogue
(``musicrec catalogue``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.cli.console import bar, quiet_clients
from pipelines.settings import get_settings

index_app = typer.Typer(help="The track index: refresh, rollback.", no_args_is_help=True)


@index_app.command("refresh")
def refresh(
    model_version: Annotated[
        str,
        typer.Option(
            "--model-version",
            help="'champion' (registry alias), 'raw' or 'meanstd' (baselines), 'best' (the champion if it beats "
            "the baselines, else the strongest baseline) or a version.",
        ),
    ] = "champion",
) -> None:
    """Embed the feature store into a new collection for the model version, verify it, move `tracks` to it."""
    from pipelines.index.refresh import RefreshJob, run
    from pipelines.model.ref import REFRESH_NAMES, Kind, ModelRef

    quiet_clients()
    settings = get_settings()
    ref = ModelRef.parse(model_version, REFRESH_NAMES)
    if ref.kind is Kind.BEST:  # resolved here to say the choice; the refresh gets the concrete version
        ref = ref.resolve(settings)
        typer.echo(ref.reason)
        model_version = ref.text
    report = run(settings, RefreshJob(model_version=model_version), progress=bar("embedding", "batch"))
    typer.echo(report.line())


@index_app.command("rollback")
def rollback() -> None:
    """Point `tracks` back at the collection the last refresh replaced."""
    from pipelines.index.milvus import TrackIndex
    from pipelines.index.refresh import rollback as run

    quiet_clients()
    index = TrackIndex.from_settings(get_settings())
    try:
        old, new = run(index)
    finally:
        index.close()
    typer.echo(f"alias {index.alias}: {old} -> {new}")


def register(app: typer.Typer) -> None:
    """Add the ``index`` group to ``app``."""
    app.add_typer(index_app, name="index")
