"""One lock for everything that writes the track index (refresh, rollback, prune), across processes.

The generic lock is :func:`pipelines.locks.writer_lock` (an ``flock``, dropped by the kernel when its holder
dies); this module says where the index's lock file lives and names the error.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipelines import locks


class IndexBusy(locks.Busy):
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


@contextlib.contextmanager
def writer_lock(path: Path, timeout_s: float, what: str = "write the index") -> Iterator[None]:
    """Hold the index writer lock at ``path`` for the duration; wait at most ``timeout_s`` for it."""
    with locks.writer_lock(path, timeout_s, what, IndexBusy):
        yield
