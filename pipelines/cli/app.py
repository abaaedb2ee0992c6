"""The one ``musicrec`` Typer app with the offline commands, and ``run`` that turns user errors into one line.

:mod:`serving.cli_serve` adds the online commands and calls :func:`run`; pipelines never import serving.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from typer.exceptions import TyperException

from pipelines.cli import catalogue, features, stack, train
from pipelines.errors import UserError, one_line
from pipelines.settings import get_settings

app = typer.Typer(help="musicrec: recommend music by how it sounds.", no_args_is_help=True, add_completion=False)


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


catalogue.register(app)
features.register(app)
train.register(app)
stack.register(app)


def run(app: typer.Typer = app) -> None:
    """Run ``app``, turning user errors into one line on stderr and exit code 2."""
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
