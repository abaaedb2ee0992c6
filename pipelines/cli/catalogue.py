"""``musicrec data fetch-demo`` and ``musicrec catalogue import|sync|show|refresh|rollback``.

The catalogue is the manifest of tracks; ``refresh`` and ``rollback`` act on the index built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.console import bar, quiet_clients
from pipelines.settings import get_settings

data_app = typer.Typer(help="Demo data.", no_args_is_help=True)
catalogue_app = typer.Typer(help="The catalogue manifest: import, sync, show.", no_args_is_help=True)


@data_app.command("fetch-demo")
def fetch_demo() -> None:
    """Fetch the demo corpus (Debian game-soundtrack packages) into the cache and build the manifest."""
    from pipelines.catalogue.demo import fetch_demo as run
    from pipelines.catalogue.summary import format_summary

    settings = get_settings()
    report, downloaded = run(settings, progress=bar("demo packages", "pkg"))
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"packages downloaded: {downloaded} (cache: {settings.demo_dir})")
    typer.echo(report.line())
    typer.echo(format_summary(settings))
    _announce(settings, report)


@catalogue_app.command("import")
def catalogue_import(
    path: Annotated[
        Path, typer.Argument(help="A folder per style, an Artist/Album library, or a CSV (path[, style, ...]).")
    ],
    genre_map: Annotated[
        Path | None,
        typer.Option("--genre-map", help="CSV genre,style: styles from genre tags (default MUSICREC_GENRE_MAP)."),
    ] = None,
) -> None:
    """Import your own music into the manifest; broken files go to the rejects table, nothing is changed."""
    from pipelines.catalogue.import_step import ImportJob, run
    from pipelines.catalogue.summary import format_summary

    settings = get_settings()
    report = run(settings, ImportJob(path=path, genre_map=genre_map), progress=bar("importing"))
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(report.line())
    typer.echo(format_summary(settings))
    _announce(settings, report)


@catalogue_app.command("sync")
def catalogue_sync(
    path: Annotated[Path, typer.Argument(help="A folder or CSV imported before.")],
    genre_map: Annotated[
        Path | None,
        typer.Option("--genre-map", help="CSV genre,style: styles from genre tags (default MUSICREC_GENRE_MAP)."),
    ] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Then embed what changed and update the index in place.")
    ] = False,
    model_version: Annotated[
        str, typer.Option("--model-version", help="With --refresh: 'champion', 'raw' or a version.")
    ] = "champion",
) -> None:
    """Pick up added, changed, moved and removed files of an imported library; moved files keep their ids."""
    from pipelines.catalogue.import_step import ImportJob, run

    settings = get_settings()
    report = run(settings, ImportJob(path=path, sync=True, genre_map=genre_map), progress=bar("syncing"))
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{report.line()}; {report.hashed} files hashed")
    if not refresh:
        _announce(settings, report)
        return
    from pipelines.features import build
    from pipelines.index import refresh as index_refresh

    typer.echo(build.run(settings, build.FeatureJob()).line())
    typer.echo(index_refresh.run(settings, index_refresh.RefreshJob(model_version=model_version)).line())


def _announce(settings: Any, report: Any) -> None:
    """Tell Airflow the manifest changed (when it did and an Airflow API is configured), and say which."""
    from pipelines.catalogue.announce import announce_manifest

    if not (report.added or report.updated or report.moved or report.removed):
        typer.echo("manifest unchanged: nothing announced to Airflow")
        return
    extra = {
        "origin": report.origin,
        "added": report.added,
        "updated": report.updated,
        "moved": report.moved,
        "removed": report.removed,
    }
    event = announce_manifest(settings, extra)
    if event is None:
        typer.echo("Airflow not configured (MUSICREC_AIRFLOW_API_URL): the manifest change was not announced")
    else:
        typer.echo(f"announced to Airflow at {settings.airflow_api_url}: manifest event {event}")


@catalogue_app.command("show")
def catalogue_show() -> None:
    """Per-style track counts and hours of the catalogue, with removed tracks and rejects."""
    from pipelines.catalogue.summary import format_summary

    typer.echo(format_summary(get_settings()))


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
    from pipelines.index.models import BEST
    from pipelines.index.refresh import RefreshJob, run

    quiet_clients()
    settings = get_settings()
    if model_version == BEST:
        from pipelines.evaluation.best import choose_best

        choice = choose_best(settings)
        typer.echo(choice.line())
        model_version = choice.version
    report = run(settings, RefreshJob(model_version=model_version), progress=bar("embedding", "batch"))
    typer.echo(report.line())


def rollback() -> None:
    """Point `tracks` back at the collection the last refresh replaced."""
    from pipelines.index.milvus import CatalogueIndex
    from pipelines.index.refresh import rollback as run

    quiet_clients()
    index = CatalogueIndex.from_settings(get_settings())
    try:
        old, new = run(index)
    finally:
        index.close()
    typer.echo(f"alias {index.alias}: {old} -> {new}")


catalogue_app.command("refresh")(refresh)
catalogue_app.command("rollback")(rollback)


def register(app: typer.Typer) -> None:
    """Add the ``data`` and ``catalogue`` groups to ``app``."""
    app.add_typer(data_app, name="data")
    app.add_typer(catalogue_app, name="catalogue")
