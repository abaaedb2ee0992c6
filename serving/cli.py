"""The ``musicrec`` command line: a thin front over :mod:`pipelines` and :mod:`serving`.

Every command reads :class:`~pipelines.settings.Settings`, calls one library function, and prints the
result. Bad input (:class:`~pipelines.errors.UserError`) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from pipelines.errors import UserError, one_line
from pipelines.settings import get_settings

app = typer.Typer(help="musicrec: recommend music by how it sounds.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Demo data.", no_args_is_help=True)
catalogue_app = typer.Typer(help="The catalogue manifest: import, sync, show.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(catalogue_app, name="catalogue")


def _bar(desc: str, unit: str = "file") -> Any:
    """A progress-bar wrapper for library calls that accept ``progress=``; silent when not on a terminal."""
    from tqdm import tqdm

    def wrap(items: Iterable[Any]) -> Iterable[Any]:
        if not hasattr(items, "__len__"):  # a generator: its length is needed for the bar
            items = list(items)
        return tqdm(items, total=len(items), desc=desc, unit=unit, disable=None, file=sys.stderr)  # type: ignore[arg-type]

    return wrap


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def config() -> None:
    """Print the effective settings (environment variables MUSICREC_* override them)."""
    settings = get_settings()
    for name, value in settings.model_dump().items():
        typer.echo(f"{name} = {value}")


@data_app.command("fetch-demo")
def fetch_demo() -> None:
    """Fetch the demo corpus (Debian game-soundtrack packages) into the cache and build the manifest."""
    from pipelines.catalogue.demo import fetch_demo as run
    from pipelines.catalogue.summary import format_summary

    settings = get_settings()
    report, downloaded = run(settings, progress=_bar("demo packages", "pkg"))
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
    from pipelines.catalogue.importer import import_catalogue
    from pipelines.catalogue.summary import format_summary

    settings = get_settings()
    report = import_catalogue(path, settings, progress=_bar("importing"), genre_map=genre_map)
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
    from pipelines.catalogue.importer import sync_catalogue

    settings = get_settings()
    report = sync_catalogue(path, settings, progress=_bar("syncing"), genre_map=genre_map)
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{report.line()}; {report.hashed} files hashed")
    if not refresh:
        _announce(settings, report)
        return
    from pipelines.features.build import FeatureBuild
    from pipelines.index.refresh import RefreshCatalogue

    typer.echo(FeatureBuild(settings=settings).run().line())
    typer.echo(RefreshCatalogue(settings=settings, model_version=model_version).run().line())


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


# Each feature area keeps its commands in its own module with a ``register(app)`` function; listing a
# module here is all it takes to add its commands.
_COMMAND_MODULES: tuple[str, ...] = (
    "serving.cli_serve",
    "serving.cli_features",
    "serving.cli_train",
    "serving.cli_stack",
    "serving.cli_mpd",
)
for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except TyperException as exc:  # usage errors: missing argument, unknown option, bare group
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())  # `musicrec` alone shows the help, as usual
        else:
            typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
