"""Real small file systems and index reads for tests of full disks and of what a failed command left."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"8m"``) on ``folder``; skip where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def alias_target(milvus_uri: Path) -> str | None:
    """The collection the alias names, read once the CLI processes that held the folder have exited."""
    from pipelines.index.milvus import TrackIndex

    index = TrackIndex(str(milvus_uri))
    try:
        return index.alias_target()
    finally:
        index.close()
