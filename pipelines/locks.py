"""Writer locks across processes: one writer at a time for a file that is read, changed and written back.

An ``fcntl.flock`` on a lock file: the kernel drops it when its holder exits or is killed, so a crashed
writer never leaves a stale lock behind. Within a process the lock is re-entrant, and threads of one
process exclude each other like processes do. A writer that cannot get the lock within its deadline fails
with a :class:`~pipelines.errors.UserError` naming who holds it. One host only: ``flock`` on a network
file system is not a lock between machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import UserError

log = logging.getLogger(__name__)

_POLL_S = 0.05
_HELD: dict[str, tuple[threading.RLock, list[int]]] = {}  # path -> (thread lock, [depth, fd])
_HELD_LOCK = threading.Lock()


class Busy(UserError):
    """Another writer holds the lock past the deadline."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another writer"
    return f"another writer ({text})" if text else "another writer"


@contextlib.contextmanager
def writer_lock(path: Path, timeout_s: float, what: str, busy: type[UserError] = Busy) -> Iterator[None]:
    """Hold the writer lock at ``path`` for the duration; wait at most ``timeout_s`` for it.

    ``busy`` is the error raised past the deadline (a subclass of :class:`Busy` names what was locked).
    """
    key = str(Path(path).resolve())
    with _HELD_LOCK:
        entry = _HELD.setdefault(key, (threading.RLock(), [0, -1]))
    rlock, state = entry
    deadline = time.monotonic() + timeout_s
    if not rlock.acquire(timeout=max(0.0, timeout_s)):
        raise busy(f"cannot {what}: {_holder(Path(key))} holds {key} for more than {timeout_s:g} s; retry later")
    try:
        if state[0] == 0:
            state[1] = _flock(Path(key), deadline, timeout_s, what, busy)
        state[0] += 1
        try:
            yield
        finally:
            state[0] -= 1
            if state[0] == 0:
                fd, state[1] = state[1], -1
                os.close(fd)  # closing the descriptor releases the flock
    finally:
        rlock.release()


def _flock(path: Path, deadline: float, timeout_s: float, what: str, busy: type[UserError]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not waited:
                log.info("waiting for %s to release %s", _holder(path), path)
                waited = True
            if time.monotonic() >= deadline:
                holder = _holder(path)
                os.close(fd)
                raise busy(
                    f"cannot {what}: {holder} holds {path} for more than {timeout_s:g} s; retry when it has finished"
                ) from None
            time.sleep(_POLL_S)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode())
    return fd
