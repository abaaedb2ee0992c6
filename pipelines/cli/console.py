"""Terminal helpers shared by the commands: progress bars, quiet third-party libraries, one-line summaries.

Bars go to stderr and switch themselves off when stderr is not a terminal, so piped output stays clean;
libraries that print on their own (MLflow's loggers and download bar, C decoders on fd 2) are kept to
what a user needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

# pipelines.audio.DECODER_TALLY_ENV, not imported from there at start-up: pipelines.audio loads numpy and
# libsndfile, which commands such as `musicrec config` do without (a test keeps the two equal).
DECODER_TALLY_ENV = "MUSICREC_DECODER_TALLY"


def bar(desc: str, unit: str = "file") -> Any:
    """A progress-bar wrapper for library calls that accept ``progress=`` (an iterable in, the same out)."""
    from tqdm import tqdm

    def wrap(items: Iterable[Any]) -> Iterable[Any]:
        sized: Any = items if hasattr(items, "__len__") else list(items)  # a generator: the bar needs its length
        return tqdm(sized, total=len(sized), desc=desc, unit=unit, disable=None, file=sys.stderr)

    return wrap


class BranchBar:
    """A progress callback for training: one step per trained branch (holdouts train side by side)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="training", unit="branch", disable=None, file=sys.stderr)

    def __call__(self, name: str, done: int, total: int) -> None:
        self.bar.set_postfix_str(name[:40])
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class CountBar:
    """A bar over the files to compute, with running counts; fed from the feature build's shard threads."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.lock = threading.Lock()
        self.counts = {"embedded": 0, "skipped": 0, "quarantined": 0}
        self.bar = tqdm(total=0, desc="features", unit="file", disable=None, file=sys.stderr)

    def __call__(self, event: str, n: int) -> None:
        with self.lock:
            if event == "todo":
                self.bar.reset(total=n)
            elif event in self.counts:
                self.counts[event] += n
                if event != "skipped":
                    self.bar.update(n)
            self.bar.set_postfix(self.counts, refresh=False)

    def close(self) -> None:
        self.bar.close()


def quiet_clients() -> None:
    """pymilvus and Milvus Lite log every failed call with a traceback; the CLI says it in one line instead.

    Their logs stay on with ``musicrec -v``.
    """
    import pymilvus  # noqa: F401 - configures its loggers on import; levels must be set after that

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _setenv(ctx: typer.Context, name: str, value: str) -> None:
    """Set ``name`` for this command and the processes it starts; the previous value returns at its end."""
    previous = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    ctx.call_on_close(restore)


def quiet_libraries(ctx: typer.Context, verbose: bool) -> None:
    """MLflow logs INFO on its own handler (its database set-up, every command) and draws a download bar.

    Its level follows ``-v`` like everything else, and its artifact download bar is drawn only on a
    terminal (piped, it is dozens of carriage-return fragments). A value the user set in the environment
    (``MLFLOW_LOGGING_LEVEL``, ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``) wins. Both are read by MLflow at
    import and per download, and inherited by the processes the command starts.
    """
    level = "INFO" if verbose else "WARNING"
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        _setenv(ctx, "MLFLOW_LOGGING_LEVEL", level)
        if "mlflow" in sys.modules:  # imported already (a test, a plugin): its loggers were set at import
            logging.getLogger("mlflow").setLevel(level)
    if "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ and not _is_terminal(sys.stderr):
        _setenv(ctx, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def summarise_decoder_messages(ctx: typer.Context) -> None:
    """Collect what audio decoders print during this command (in any of its processes) into one line at its end.

    Decoding redirects the C decoders' stderr (:func:`pipelines.audio.decoder_output`) and appends a count
    per file to a tally file named in the environment; at the end of the command that becomes one
    ``note:`` line on stderr. The file is unlinked at once and named by ``/proc/<pid>/fd/<fd>`` (where
    there is a /proc), so even a killed command leaves nothing behind and orphans cannot write to it.
    """
    fd, name = tempfile.mkstemp(prefix="musicrec-decoder-", suffix=".jsonl")
    tally = Path(f"/proc/{os.getpid()}/fd/{fd}")
    if tally.exists():
        os.unlink(name)
    else:
        tally = Path(name)

    def report() -> None:
        summary = None
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size:
                from pipelines.audio import decoder_summary

                summary = decoder_summary(tally)
        os.close(fd)
        with contextlib.suppress(OSError):
            Path(name).unlink(missing_ok=True)
        if summary:
            typer.echo(f"note: {summary}", err=True)

    ctx.call_on_close(report)  # runs after the restore below: callbacks run last-registered first
    _setenv(ctx, DECODER_TALLY_ENV, str(tally))
