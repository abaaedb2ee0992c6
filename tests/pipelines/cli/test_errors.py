"""The CLI's face of the two error families: bad input and outages are one line each, with their exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from pipelines.cli.app import EXIT_UNAVAILABLE, EXIT_USER_ERROR, run
from pipelines.errors import Unavailable, UserError
from pipelines.index.errors import CollectionGone, MilvusUnavailable
from pipelines.index.lite_server import free_port
from pipelines.registry import RegistryUnavailable

_MAIN = "from pipelines.cli.app import run; run()"


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise exc

    @app.command()
    def other() -> None:  # a second command, so Typer keeps the command name
        pass

    return app


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UserError("unknown track id 'x'"), EXIT_USER_ERROR),
        (MilvusUnavailable("Milvus is not reachable at x\n(details)"), EXIT_UNAVAILABLE),
        (RegistryUnavailable("MLflow at x is not reachable"), EXIT_UNAVAILABLE),
        (CollectionGone("a Milvus collection does not exist"), EXIT_UNAVAILABLE),
    ],
)
def test_each_family_is_one_line_and_its_exit_code(
    exc: Exception, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["musicrec", "fail"])
    with pytest.raises(SystemExit) as done:
        run(_app(exc))
    assert done.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(exc).split("\n")[0] in err


def test_outages_are_not_user_errors_and_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    for outage in (MilvusUnavailable, RegistryUnavailable, CollectionGone):
        assert issubclass(outage, Unavailable) and not issubclass(outage, UserError)
    monkeypatch.setattr(sys, "argv", ["musicrec", "fail"])
    with pytest.raises(RuntimeError, match="a bug"):
        run(_app(RuntimeError("a bug")))


def test_milvus_down_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    env |= {"MUSICREC_DATA_ROOT": str(tmp_path), "MUSICREC_MILVUS_URI": f"http://127.0.0.1:{free_port()}"}
    cmd = [sys.executable, "-c", _MAIN, "index", "rollback"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=180)
    assert out.returncode == EXIT_UNAVAILABLE, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not reachable" in last and "start the Milvus server" in last, out.stderr
