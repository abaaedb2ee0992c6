"""Audio the tests make themselves: tones, noise, silence and deliberately broken files (no fixtures)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from pipelines.synthetic import SR, noise, tone, write

__all__ = ["SR", "hanging_open", "noise", "style_tree", "tone", "truncated", "write"]


def truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    """A copy of ``source`` cut after ``keep`` of its bytes, as an interrupted copy would leave it."""
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def style_tree(root: Path, per_style: int = 4, seconds: float = 3.0, fmt: str = "wav") -> dict[str, list[Path]]:
    """A folder-per-style library of three audibly different synthetic styles."""
    styles: dict[str, list[Path]] = {"low_tones": [], "high_tones": [], "noise": []}
    for i in range(per_style):
        styles["low_tones"].append(
            write(root / "low_tones" / f"low_{i}.{fmt}", tone(110 + 15 * i, seconds, harmonics=3))
        )
        styles["high_tones"].append(write(root / "high_tones" / f"high_{i}.{fmt}", tone(1800 + 90 * i, seconds)))
        styles["noise"].append(write(root / "noise" / f"noise_{i}.{fmt}", noise(seconds, seed=i, colour=0.5)))
    return styles


@contextlib.contextmanager
def hanging_open(path: Path) -> Iterator[Path]:
    """While inside, any other process that opens ``path`` blocks in the kernel (a real stuck read).

    A write lease held here makes another process's ``open()`` wait up to /proc/sys/fs/lease-break-time
    (45 s by default) for the lease to be given up: a regular file whose decoding hangs, as a decoder stuck
    in C code would.
    """
    previous = signal.signal(signal.SIGIO, signal.SIG_IGN)  # the kernel signals the holder when someone waits
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        yield path
    finally:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)
        signal.signal(signal.SIGIO, previous)
