"""The one ``musicrec`` Typer app with the offline commands, and ``run`` that turns errors into one line.

:mod:`serving.cli_serve` adds the online commands and calls :func:`run`; pipelines never import serving.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer
from typer.exceptions import TyperException

from pipelines.cli import catalogue, console, deprecated, evaluate, features, index, stack, train
from pipelines.errors import Unavailable, UserError, one_line
from pipelines.settings import effective_values, get_settings

app = typer.Typer(help="musicrec: recommend music by how it sounds.", no_args_is_help=True, add_completion=False)


# Exit codes: bad input and usage errors 2; an outage 2 as well (what it has always been, and what the docs
# and scripts expect); a full disk 1; Ctrl-C 130. One place, so each error family has one code.
EXIT_USER_ERROR = 2
EXIT_UNAVAILABLE = 2
EXIT_NO_SPACE = 1
EXIT_ABORTED = 130

# Commands whose children outlive them (servers): their decoder messages go to the log, not to a summary.
_LONG_RUNNING = frozenset({"serve", "stack"})


@app.callback()
def _setup(
    ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.quiet_libraries(ctx, verbose)
    if ctx.invoked_subcommand not in _LONG_RUNNING:
        console.summarise_decoder_messages(ctx)


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: name -> {value, source}.")] = False,
) -> None:
    """Print every effective setting and where it came from: default, environment (MUSICREC_*) or .env."""
    rows = effective_values(get_settings())
    if as_json:
        values = {name: {"value": _plain(value), "source": source} for name, value, source in rows}
        typer.echo(json.dumps(values, indent=1))
        return
    for name, value, source in rows:
        typer.echo(f"{name} = {value}  ({source})")


def _plain(value: object) -> object:
    """A setting's value as JSON: paths and secrets as strings, tuples as lists."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


catalogue.register(app)
index.register(app)
deprecated.add_aliases()
features.register(app)
train.register(app)
evaluate.register(app)
stack.register(app)


def _out_of_room(exc: BaseException) -> bool:
    """A full disk or quota, however it was raised: pyarrow's OSErrors and Milvus Lite's MilvusExceptions
    carry the errno only in their text."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def run(app: typer.Typer = app) -> None:
    """Run ``app``, turning user errors and outages into one line on stderr and their exit codes."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except Unavailable as exc:
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(EXIT_ABORTED)
    except TyperException as exc:  # usage errors: missing argument, unknown option, bare group
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())  # `musicrec` alone shows the help, as usual
        else:
            typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:  # a full disk, however a library reports it; anything else is a bug to show
        if not _out_of_room(exc):
            raise
        filename = getattr(exc, "filename", None)
        where = f" writing {filename}" if filename else ""
        typer.echo(
            f"error: no space left on the device{where}: free space (or point MUSICREC_DATA_ROOT elsewhere) and "
            "run the command again; files are written whole or not at all, so the previous state is kept",
            err=True,
        )
        sys.exit(EXIT_NO_SPACE)
