"""``musicrec stack up|down|status|env``: the platform's services as local processes (see pipelines.stack)."""

from __future__ import annotations

import shlex

import typer

stack_app = typer.Typer(help="The local service stack: Postgres, Redis, Milvus, MLflow, Airflow on Celery, the API.")


def _stack():
    from pipelines.settings import get_settings
    from pipelines.stack import Stack

    return Stack(get_settings())


@stack_app.command("up")
def up() -> None:
    """Start every service that is not running, each health-checked before the next (idempotent)."""
    stack = _stack()
    stack.up(echo=typer.echo)
    typer.echo(f'stack up under {stack.root}; use it from a shell with: eval "$(musicrec stack env)"')


@stack_app.command("down")
def down() -> None:
    """Stop every service (process groups, last started first); nothing is left running."""
    _stack().down(echo=typer.echo)


@stack_app.command("status")
def status() -> None:
    """Each service and whether it is up; exit code 1 when any is not."""
    rows = _stack().status()
    for name, state in rows:
        typer.echo(f"{name:24} {state}")
    if any(state != "up" for _, state in rows):
        raise typer.Exit(1)


@stack_app.command("env")
def env() -> None:
    """The environment that points musicrec and Airflow's CLI at the stack, as shell `export` lines."""
    for key, value in _stack().client_env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
