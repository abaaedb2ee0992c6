"""Training windows: front-end vectors of the same tracks at later offsets, as augmentation.

The feature store holds each track's first-N-frames vector, which is what every query and catalogue track
is embedded from. Training only on those teaches the branch where things happen in the first ten seconds;
windows from further into the track (same N frames, same front end, just a later start) show it more of
each style and measurably help unseen tracks (docs/training.md). Evaluation never uses them.

Windows are cached per feature version, keyed by the audio's sha256 and the offset, so a second training
run decodes nothing; a window that would run past the end of its track, or is silent, is simply absent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from threadpoolctl import threadpool_limits

from pipelines import parallel
from pipelines.audio import AudioRejected
from pipelines.features import frontend
from pipelines.features.params import FeatureParams
from pipelines.progress import ItemProgress, Sized, no_items

log = logging.getLogger(__name__)


def window_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("track_id", pa.string()),
            ("sha256", pa.string()),
            ("offset_s", pa.float32()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


@dataclass(frozen=True)
class Windows:
    """Vectors of training windows: row i is track ``track_ids[i]`` at ``offsets[i]`` seconds."""

    track_ids: list[str]
    offsets: np.ndarray  # float32 (m,)
    matrix: np.ndarray  # float32 (m, D)


def window_vector(path: str | Path, params: FeatureParams, offset_s: float) -> np.ndarray | None:
    """The front-end vector of the N frames starting ``offset_s`` seconds later than the front end's own.

    Exactly :func:`frontend.track_vector` at another offset; None when the window is not all real audio
    (runs past the end) or is silent.
    """
    start = params.offset_s + offset_s
    try:
        # The front end moves a too-late offset back to the track's last seconds (never losing a short
        # track); for training that would only repeat another window, so such a window is absent instead.
        if sf.info(str(path)).duration < start + params.duration_s:
            return None
        audio = frontend.decode(path, params.sr, start, params.duration_s)
        if frontend.rms_db(audio) < frontend.SILENCE_FLOOR_DB:
            return None
        tv = frontend.frames_to_vector(frontend.mfcc_frames(audio, params), params.n_frames)
    except (AudioRejected, sf.LibsndfileError, RuntimeError, OSError):
        return None
    if tv.frames_real < params.n_frames or not np.isfinite(tv.vector).all():
        return None
    return tv.vector


def _window(job: tuple[str, FeatureParams, float]) -> np.ndarray | None:
    # One BLAS thread, as the feature store's workers have (features/worker.py): two decodes run at once
    # on two cores, and a second BLAS thread per decode only fights for them (the mel projection took 35 ms
    # of CPU instead of 2). Same thread count, same sums: a window is computed exactly like the store.
    with threadpool_limits(1, user_api="blas"):
        return window_vector(*job)


def windows_path(root: Path, params: FeatureParams) -> Path:
    return root / f"version={params.version}" / "windows.parquet"


def _read(path: Path, dim: int) -> pd.DataFrame:
    if not path.exists():
        return window_schema(dim).empty_table().to_pandas()
    return pq.read_table(path, schema=window_schema(dim)).to_pandas()


def build_windows(
    tracks: pd.DataFrame,
    params: FeatureParams,
    offsets_s: Sequence[float],
    root: Path,
    progress: ItemProgress = no_items,
    workers: int = 1,
) -> Windows:
    """Windows at ``offsets_s`` (seconds, > 0) of every track in ``tracks`` (track_id, path, sha256, duration_s).

    Computes only (sha256, offset) pairs not cached yet, ``workers`` decodes at a time (spawned processes);
    the cache file is replaced atomically. Offsets past a track's known duration are not attempted.
    """
    from pipelines.features.store import write_atomic

    path = windows_path(root, params)
    cached = _read(path, params.dim)
    have = set(zip(cached["sha256"], cached["offset_s"].astype(float), strict=True))
    todo = [
        (r.track_id, r.sha256, r.path, float(o))
        for r in tracks.itertuples(index=False)
        for o in offsets_s
        if o > 0
        and (r.sha256, float(np.float32(o))) not in have
        and (pd.isna(r.duration_s) or params.offset_s + o + params.duration_s <= r.duration_s)
    ]
    if todo:
        rows, vectors = [], []
        jobs = [(audio_path, params, offset) for _t, _s, audio_path, offset in todo]
        # Spawned, not forked: the caller may have threads (Airflow, MLflow) whose locks a fork inherits.
        computed = list(progress(Sized(parallel.imap(_window, jobs, workers, chunk=4), len(jobs))))
        for (track_id, sha, _path, offset), vec in zip(todo, computed, strict=True):
            # An absent window is stored as a row of NaN so it is not attempted again.
            rows.append({"track_id": track_id, "sha256": sha, "offset_s": offset})
            vectors.append(vec if vec is not None else np.full(params.dim, np.nan, np.float32))
        new = pd.DataFrame(rows)
        new["vector"] = list(np.stack(vectors))
        merged = pd.concat([cached, new], ignore_index=True) if len(cached) else new
        table = pa.Table.from_pydict(
            {
                "track_id": pa.array(merged["track_id"], pa.string()),
                "sha256": pa.array(merged["sha256"], pa.string()),
                "offset_s": pa.array(merged["offset_s"], pa.float32()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.stack(merged["vector"].to_list()).reshape(-1), pa.float32()), params.dim
                ),
            },
            schema=window_schema(params.dim),
        )
        write_atomic(table, path)
        cached = merged
        log.info("computed %d training windows (%d absent)", len(todo), sum(v is None for v in vectors))
    wanted = {float(np.float32(o)) for o in offsets_s if o > 0}
    current = dict(zip(tracks["sha256"], tracks["track_id"], strict=True))
    keep = cached[cached["sha256"].isin(current) & cached["offset_s"].astype(float).isin(wanted)]
    matrix = np.stack(keep["vector"].to_list()).astype(np.float32) if len(keep) else np.zeros((0, params.dim))
    ok = np.isfinite(matrix).all(axis=1) if len(keep) else np.zeros(0, bool)
    keep = keep[ok]
    return Windows(
        track_ids=[current[s] for s in keep["sha256"]],
        offsets=keep["offset_s"].to_numpy(np.float32),
        matrix=matrix[ok],
    )
