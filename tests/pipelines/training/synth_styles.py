"""Synthetic styles that are separable by timbre but not by timing: what the triplet branch should learn.

Each track is a random sequence of events of its style (random onsets, pitches, gain), so two tracks of
one style share how they sound, not when: the raw frame-aligned MFCC vector matches them poorly, while a
branch that standardises, looks at every frame alike and pools over time can group them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.synth import SR, write

STYLES = ("plucks", "pads", "hits")


def _event(style: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    if style == "plucks":  # short decaying harmonic notes, mid register
        n = int(rng.uniform(0.15, 0.4) * sr)
        t = np.arange(n) / sr
        f = rng.uniform(300, 900)
        sig = sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 2, 3, 4))
        return sig * np.exp(-t * rng.uniform(8, 16))
    if style == "pads":  # long swelling low chords
        n = int(rng.uniform(0.8, 1.6) * sr)
        t = np.arange(n) / sr
        f = rng.uniform(80, 160)
        sig = sum(np.sin(2 * np.pi * f * r * t) for r in (1.0, 1.25, 1.5))
        return sig * np.sin(np.pi * t / t[-1]) ** 2
    n = int(rng.uniform(0.05, 0.15) * sr)  # hits: bright noise bursts
    burst = np.diff(rng.standard_normal(n + 1))
    return burst * np.exp(-np.arange(n) / sr * 30)


def track(style: str, seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr))
    t = rng.uniform(0, 0.5)
    while t < seconds:
        ev = _event(style, rng, sr)
        start = int(t * sr)
        end = min(len(out), start + len(ev))
        out[start:end] += ev[: end - start] * rng.uniform(0.3, 1.0)
        t += rng.uniform(0.1, 0.9)
    out += 0.01 * rng.standard_normal(len(out))  # a little room noise, never digital silence
    gain = 10 ** (rng.uniform(-14, -2) / 20)
    return (gain * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def recording(signal: np.ndarray, source_seed: int) -> np.ndarray:
    """The source's own recording chain: a fixed short filter (an EQ) and level, the same for all its tracks."""
    rng = np.random.default_rng(10_000 + source_seed)
    taps = np.r_[1.0, rng.uniform(-0.9, 0.9, 3)]
    out = np.convolve(signal, taps)[: len(signal)]
    return (out / (np.abs(out).max() + 1e-9) * np.abs(signal).max()).astype(np.float32)


def style_library(root: Path, per_style: int = 8, seconds: float = 4.0, sources: int = 1) -> dict[str, list[Path]]:
    """A folder-per-style catalogue to import: ``root/<style>/<style>_<i>.wav`` for the three styles.

    With ``sources > 1`` each style's tracks are dealt over that many albums (``root/<style>/<album>/``,
    which the importer records as the track's source), each with its own recording chain: a catalogue
    where a model can tell sources apart, for the source-disjoint views.
    """
    out: dict[str, list[Path]] = {}
    for k, style in enumerate(STYLES):
        out[style] = []
        for i in range(per_style):
            audio = track(style, seconds, seed=1000 * k + i)
            folder = root / style
            if sources > 1:
                j = i % sources
                audio = recording(audio, 10 * k + j)
                folder = folder / f"{style}-album{j}"
            out[style].append(write(folder / f"{style}_{i}.wav", audio))
    return out
