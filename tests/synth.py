"""Audio the tests make themselves: tones, noise, silence and deliberately broken files (no fixtures)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3, harmonics: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    sig = sum(amp / (h + 1) * np.sin(2 * np.pi * freq * (h + 1) * t) for h in range(harmonics))
    return np.asarray(sig, dtype=np.float32)


def noise(seconds: float, sr: int = SR, amp: float = 0.2, seed: int = 0, colour: float = 0.0) -> np.ndarray:
    """White noise, or low-passed (``colour`` in 0..1, higher is darker) for a different timbre."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * sr))
    if colour > 0:
        for i in range(1, len(x)):
            x[i] = colour * x[i - 1] + (1 - colour) * x[i]
        x /= np.abs(x).max() + 1e-9
    return (amp * x).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    """Write audio in the format given by the suffix (.wav, .flac, .ogg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr)
    return path


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
