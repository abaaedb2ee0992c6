"""Worker processes that behave the same under a terminal, pytest, and any Airflow executor.

Spawned multiprocessing workers normally re-run the parent's ``__main__`` script. Inside an Airflow task
that script is the ``airflow`` entry point, and Airflow 3 blocks the ORM there
(``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow-db-not-allowed:///``), so every worker died at start-up and
``multiprocessing.Pool`` replaced it forever; in a Celery worker the task's process is a daemon, which
multiprocessing does not let start children at all. Here workers import only the module that holds the work,
a worker that dies fails the whole call at once (``BrokenProcessPool``) instead of hanging, and workers die
with their parent, so a killed task leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1

# glibc's allocator in the workers: keep freed memory instead of returning it to the kernel after every
# step. By default a training step's tensors (a few MB each) are unmapped or trimmed when freed and faulted
# in again by the next step; that page-faulting was a third of a branch's CPU time (bench/results/train_speed.md).
# A value the user set in the environment wins.
WORKER_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),  # glibc's largest: blocks below it come from the heap
    "MALLOC_TRIM_THRESHOLD_": str(256 * 1024 * 1024),
    "MALLOC_TOP_PAD_": str(256 * 1024 * 1024),
}


def _die_with_parent(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """Runs first in every worker: ask the kernel to SIGKILL it when its parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def _spawnable() -> Iterator[None]:
    """While workers start, make this process look like an ordinary parent to multiprocessing.

    - Hide the ``__main__`` script, so workers do not re-run it (``python -m`` imports by name: harmless).
    - In a Celery pool process, the current process is billiard's: a daemon (multiprocessing refuses it
      children; ours die with their parent anyway, which is what the flag protects) whose authentication
      key is billiard's type, which the standard library will not pickle for the child.
    - Give the workers :data:`WORKER_MALLOC` in their environment (read by glibc when they start).
    """
    added = {k: v for k, v in WORKER_MALLOC.items() if k not in os.environ}
    os.environ.update(added)
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if main is not None else None
    hide = path is not None and getattr(main, "__spec__", None) is None
    config = mp.current_process()._config  # type: ignore[attr-defined]  # private: daemon flag and authkey
    saved = {key: config[key] for key in ("daemon", "authkey") if key in config}
    if hide:
        del main.__file__  # type: ignore[union-attr]  # hide is only true when main is a module
    config["daemon"] = False
    auth_type = mp.process.AuthenticationString  # type: ignore[attr-defined]  # private class, not in typeshed
    if "authkey" in saved and type(saved["authkey"]) is not auth_type:
        config["authkey"] = auth_type(bytes(saved["authkey"]))
    try:
        yield
    finally:
        if hide:
            main.__file__ = path  # type: ignore[union-attr]  # as above: main is a module here
        config.pop("daemon", None)
        config.update(saved)
        for key in added:
            os.environ.pop(key, None)


def imap_unordered(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[R]:
    """``fn`` over ``items`` in up to ``workers`` spawned processes; results as they finish.

    With one worker (or one item) everything runs here, in order, after ``initializer``. ``fn`` and
    ``initializer`` must be importable module-level functions. Leaving the loop early, an exception in
    ``fn`` or a dead worker stops every worker before the error propagates.
    """
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=_die_with_parent, initargs=(initializer, initargs)
    )
    try:
        with _spawnable():  # a spawn-context pool starts its workers as work is submitted
            pending: set[Future[R]] = {pool.submit(fn, item) for item in items}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        _stop(pool)


def imap(fn: Callable[[T], R], items: Sequence[T], workers: int, chunk: int = 1) -> Iterator[R]:
    """``fn`` over ``items`` in spawned workers, results in input order (see :func:`imap_unordered`)."""
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), max(1, chunk))]
    indexed = list(enumerate(chunks))
    results: dict[int, list[R]] = {}
    next_out = 0
    for i, out in imap_unordered(_apply_chunk, [(fn, c, i) for i, c in indexed], workers):
        results[i] = out
        while next_out in results:
            yield from results.pop(next_out)
            next_out += 1


def _apply_chunk(job: tuple[Callable[[Any], Any], Iterable[Any], int]) -> tuple[int, list[Any]]:
    fn, chunk, i = job
    return i, [fn(x) for x in chunk]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a pid <= 0 never does: it would name a process group)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: queued work is cancelled and running workers are terminated, not awaited."""
    processes = list(getattr(pool, "_processes", {}).values())  # private, but there is no public handle
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
