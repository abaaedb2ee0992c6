"""``musicrec data fetch-demo`` and ``musicrec catalogue import|sync|show``.

The catalogue is the manifest of tracks; the index built from it has its own group (:mod:`pipelines.cli.index`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.console import bar
from pipelines.settings import get_settings

data_app = typer.Typer(help="Demo data.", no_args_is_help=True)
catalogue_app = typer.Typer(help="The catalogue manifest: import, sync, show.", no_args_is_help=True)

GenreMapOption = Annotated[
    Path | None,
    typer.Option("--genre-map", help="CSV genre,style: styles from genre tags (default MUSICREC_GENRE_MAP)."),
]


@data_app.command("fetch-demo")
def fetch_demo() -> None:
    """Fetch the demo corpus (Debian game-soundtrack packages) into the cache and build the manifest."""
    from pipelines.catalogue.demo import fetch_demo as run
    from pipelines.catalogue.summary import format_summary

    settings = get_settings()
    report, downloaded = run(settings, progress=bar("demo packages", "pkg"))
    _notes(report)
    typer.echo(f"packages downloaded: {downloaded} (cache: {settings.demo_dir})")
    typer.echo(report.line())
    typer.echo(format_summary(settings))
    _announce(settings, report)


@catalogue_app.command("import")
def catalogue_import(
    path: Annotated[
        Path, typer.Argument(help="A folder per style, an Artist/Album library, or a CSV (path[, style, ...]).")
    ],
    genre_map: GenreMapOption = None,
) -> None:
    """Import your own music into the manifest; broken files go to the rejects table, nothing is changed."""
    from pipelines.catalogue.import_step import ImportJob, run
    from pipelines.catalogue.summary import format_summary

    settings = get_settings()
    report = run(settings, ImportJob(path=path, genre_map=genre_map), progress=bar("importing"))
    _notes(report)
    typer.echo(report.line())
    typer.echo(format_summary(settings))
    _announce(settings, report)


@catalogue_app.command("sync")
def catalogue_sync(
    path: Annotated[Path, typer.Argument(help="A folder or CSV imported before.")],
    genre_map: GenreMapOption = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Then embed what changed and update the index in place.")
    ] = False,
    model_version: Annotated[
        str, typer.Option("--model-version", help="With --refresh: 'champion', 'raw', 'meanstd', 'best' or a version.")
    ] = "champion",
) -> None:
    """Pick up added, changed, moved and removed files of an imported library; moved files keep their ids."""
    from pipelines.catalogue.import_step import ImportJob, run

    settings = get_settings()
    report = run(settings, ImportJob(path=path, sync=True, genre_map=genre_map), progress=bar("syncing"))
    _notes(report)
    typer.echo(f"{report.line()}; {report.hashed} files hashed")
    if not refresh:
        _announce(settings, report)
        return
    from pipelines.features import build
    from pipelines.index import refresh as index_refresh

    typer.echo(build.run(settings, build.FeatureJob()).line())
    typer.echo(index_refresh.run(settings, index_refresh.RefreshJob(model_version=model_version)).line())


def _notes(report: Any) -> None:
    """Print what the import noticed (ignored files, confounded styles, drift), one `note:` line each."""
    for note in report.notes:
        typer.echo(f"note: {note}")


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
        typer.echo(f"announced to Airflow at {settings.airflow.api_url}: manifest event {event}")


@catalogue_app.command("show")
def catalogue_show() -> None:
    """Per-style track counts and hours of the catalogue, with removed tracks and rejects."""
    from pipelines.catalogue.summary import format_summary

    typer.echo(format_summary(get_settings()))


def register(app: typer.Typer) -> None:
    """Add the ``data`` and ``catalogue`` groups to ``app``."""
    app.add_typer(data_app, name="data")
    app.add_typer(catalogue_app, name="catalogue")
