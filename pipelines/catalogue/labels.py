"""Checking style labels that come from package notes rather than from listening.

Each track's timbre summary (mean and standard deviation of its MFCCs over the first 30 s) is compared
with the style centroids of *other* sources. A track whose own style is far down that ranking is more
likely mislabelled (a menu jingle, a stinger, a track in another idiom) than a hard example, and is left
out rather than guessed; the rest get a confidence: how strongly the statistics agree with the label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.features.frontend import decode, mfcc_frames
from pipelines.features.params import FeatureParams

log = logging.getLogger(__name__)

STATS_SECONDS = 30.0
TEMPERATURE = 0.1  # softmax temperature over cosine similarities to the style centroids


def timbre_stats(path: Path, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """MFCC mean and standard deviation over the first 30 s: a summary that ignores time alignment."""
    frames = mfcc_frames(decode(path, params.sr, 0.0, STATS_SECONDS), params)
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


def cached_stats(paths: Sequence[Path], cache_file: Path) -> np.ndarray:
    """Stats for every path, computed once per (path, size, mtime) and kept in ``cache_file``."""
    keys = [f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in paths]
    cache: dict[str, np.ndarray] = {}
    if cache_file.exists():
        old = pd.read_parquet(cache_file)
        cache = {k: np.asarray(v, dtype=np.float32) for k, v in zip(old["key"], old["stats"], strict=True)}
    missing = [i for i, k in enumerate(keys) if k not in cache]
    for i in missing:
        cache[keys[i]] = timbre_stats(paths[i])
    if missing:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        pd.DataFrame({"key": list(cache), "stats": [v.tolist() for v in cache.values()]}).to_parquet(tmp)
        tmp.replace(cache_file)
    return np.stack([cache[k] for k in keys])


def label_agreement(
    stats: np.ndarray, styles: Sequence[str | None], sources: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """For each track: confidence in its label, the label's rank among styles, and the nearest style.

    Centroids are computed without the track's own source, so a source cannot vouch for itself. Every track
    needs a style (the scan's ``None``, unlabelled, has no centroid to agree with).
    """
    z = (stats - stats.mean(axis=0)) / (stats.std(axis=0) + 1e-9)
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-9
    styles_arr, sources_arr = np.asarray(styles), np.asarray(sources)
    names = sorted({s for s in styles if s is not None})
    conf = np.zeros(len(z))
    rank = np.zeros(len(z), dtype=int)
    nearest: list[str] = []
    for i in range(len(z)):
        others = sources_arr != sources_arr[i]
        sims = np.full(len(names), -1.0)
        for j, name in enumerate(names):
            members = z[others & (styles_arr == name)]
            if len(members):
                centroid = members.mean(axis=0)
                sims[j] = float(z[i] @ centroid / (np.linalg.norm(centroid) + 1e-9))
        probs = np.exp((sims - sims.max()) / TEMPERATURE)
        probs /= probs.sum()
        own = names.index(styles_arr[i])
        conf[i] = probs[own]
        rank[i] = int((sims > sims[own]).sum()) + 1
        nearest.append(names[int(sims.argmax())])
    return conf, rank, nearest
