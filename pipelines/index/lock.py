"""One lock for everything that writes the track index (refresh, rollback, prune), across processes.

An ``fcntl.flock`` on a file: the kernel drops it when its holder exits or is killed, so a crashed writer
never leaves a stale lock behind. Within a process the lock is re-entrant (a refresh that prunes holds it
once), and threads of one process exclude each other like processes do. A writer that cannot get the lock
within its deadline fails with a :class:`~pipelines.errors.UserError` naming who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import UserError

log = logging.getLogger(__name__)

_POLL_S = 0.05
_HELD: dict[str, tuple[threading.RLock, list[int]]] = {}  # path -> (thread lock, [depth, fd])
_HELD_LOCK = threading.Lock()


class IndexBusy(UserError):
    """Another writer holds the index lock past the deadline."""


def lock_path_for(uri: str, data_root: Path | None = None) -> Path:
    """Where the writer lock of index ``uri`` lives.

    Beside a Milvus Lite folder (``<folder>.writer.lock``, under the data root by default); for a Milvus
    server, under ``data_root``, or in the temporary folder keyed by the URI when there is none.
    """
    from pipelines.index.lite_server import is_remote

    if not is_remote(uri):
        folder = Path(uri).expanduser().resolve()
        return folder.with_name(folder.name + ".writer.lock")
    if data_root is not None:
        return Path(data_root) / "index-writer.lock"
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"musicrec-index-{key}.writer.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another writer"
    return f"another writer ({text})" if text else "another writer"


@contextlib.contextmanager
def writer_lock(path: Path, timeout_s: float, what: str = "write the index") -> Iterator[None]:
    """Hold the index writer lock at ``path`` for the duration; wait at most ``timeout_s`` for it."""
    key = str(Path(path).resolve())
    with _HELD_LOCK:
        entry = _HELD.setdefault(key, (threading.RLock(), [0, -1]))
    rlock, state = entry
    deadline = time.monotonic() + timeout_s
    if not rlock.acquire(timeout=max(0.0, timeout_s)):
        raise IndexBusy(f"cannot {what}: {_holder(Path(key))} holds {key} for more than {timeout_s:g} s; retry later")
    try:
        if state[0] == 0:
            state[1] = _flock(Path(key), deadline, timeout_s, what)
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


def _flock(path: Path, deadline: float, timeout_s: float, what: str) -> int:
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
                raise IndexBusy(
                    f"cannot {what}: {holder} holds {path} for more than {timeout_s:g} s; retry when it has finished"
                ) from None
            time.sleep(_POLL_S)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode())
    return fd
