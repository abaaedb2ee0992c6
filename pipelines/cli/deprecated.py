"""Old command names kept working, hidden from the help: each says once on stderr what replaced it.

``musicrec catalogue refresh`` and ``musicrec catalogue rollback`` were the index commands before the
``index`` group existed; they now run ``musicrec index refresh`` and ``musicrec index rollback``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from pipelines.cli import index
from pipelines.cli.catalogue import catalogue_app


def _alias(old: str, new: str, command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` under its old name: a one-line note on stderr, then the same call with the same options."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        typer.echo(f"note: `musicrec {old}` is deprecated; use `musicrec {new}`", err=True)
        return command(*args, **kwargs)

    return run


def add_aliases() -> None:
    """Add the hidden old names to the ``catalogue`` group."""
    catalogue_app.command("refresh", hidden=True)(_alias("catalogue refresh", "index refresh", index.refresh))
    catalogue_app.command("rollback", hidden=True)(_alias("catalogue rollback", "index rollback", index.rollback))
