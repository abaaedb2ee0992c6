"""Triplet datasets (Parquet) and the miners that choose negatives.

Batches, miners and positives are described in docs/training.md ("Triplet datasets and mining").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.errors import UserError
from pipelines.training.config import TrainConfig

Strategy = Literal["random", "semi-hard", "batch-all"]
STRATEGIES = ("random", "semi-hard", "batch-all")
Positives = Literal["any", "other-source"]

TRIPLET_SCHEMA = pa.schema(
    [
        ("holdout", pa.string()),  # the branch these triplets train (its held-out tracks are never in them)
        ("batch", pa.int32()),
        ("anchor", pa.string()),
        ("positive", pa.string()),
        ("negative", pa.string()),
        ("anchor_offset", pa.float32()),
        ("positive_offset", pa.float32()),
        ("negative_offset", pa.float32()),
        ("anchor_style", pa.string()),
        ("positive_style", pa.string()),
        ("negative_style", pa.string()),
        ("seed", pa.int64()),
        ("strategy", pa.string()),
        ("member", pa.int32()),  # which seed of the holdout's ensemble (see TrainConfig.seeds)
    ]
)


def build_triplets(
    tracks: pd.DataFrame,
    offsets: Mapping[str, Sequence[float]],
    n_batches: int,
    tracks_per_style: int = 8,
    triplets_per_batch: int = 256,
    seed: int = 0,
    strategy: Strategy = "random",
    holdout: str = "all",
    positives: Positives = "any",
    member: int = 0,
) -> pd.DataFrame:
    """A balanced, reproducible triplet dataset over ``tracks`` (track_id, style[, source]).

    ``offsets[track_id]`` lists the window offsets available for a track (missing: only 0.0).
    ``positives="other-source"`` needs a ``source`` column.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"unknown mining strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    # Tracks, styles and sources as integer codes in sorted order: every draw below is the one the same
    # generator makes on the names (same lengths, same order), without hashing strings per batch.
    names = np.array(sorted(tracks["track_id"]))
    code = {t: i for i, t in enumerate(names.tolist())}
    style_names = np.array(sorted(tracks["style"].unique()))
    style_idx = np.empty(len(names), np.int64)
    style_idx[[code[t] for t in tracks["track_id"]]] = np.searchsorted(style_names, tracks["style"].to_numpy(str))
    by_style = {i: np.flatnonzero(style_idx == i) for i in range(len(style_names))}
    anchor_styles = [s for s, ids in by_style.items() if len(ids) >= 2]
    if not anchor_styles or len(by_style) < 2:
        raise UserError("triplets need two styles, one of them with at least two tracks")
    rng = np.random.default_rng(seed)
    per_style = max(1, triplets_per_batch // len(anchor_styles))
    cross = positives == "other-source"
    source_of = np.zeros(len(names), np.int64)
    if cross:
        sources = tracks["source"].astype(str).to_numpy(str)
        source_names = np.array(sorted(set(sources.tolist())))
        source_of[[code[t] for t in tracks["track_id"]]] = np.searchsorted(source_names, sources)
    sources_of = source_of.tolist()
    choices = [np.asarray(offsets.get(t, (0.0,)), dtype=np.float32) for t in names.tolist()]
    off = np.zeros(len(names), np.float64)  # this batch's window offset of each pool member
    roles = ("anchor", "positive", "negative")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("batch", *roles, *(f"{r}_offset" for r in roles))}
    for b in range(n_batches):
        if cross:
            pool = {s: _draw_over_sources(ids, sources_of, tracks_per_style, rng) for s, ids in by_style.items()}
        else:
            pool = {s: rng.choice(ids, min(tracks_per_style, len(ids)), replace=False) for s, ids in by_style.items()}
        for ids in pool.values():
            for t in ids.tolist():
                c = choices[t]
                off[t] = float(c[rng.integers(0, len(c))])  # what rng.choice(c) draws
        everyone = np.concatenate(list(pool.values()))
        rows_a, rows_p, rows_n = [], [], []
        for s in anchor_styles:
            same = pool[s]
            others = everyone[style_idx[everyone] != s]
            if strategy == "batch-all":  # every ordered pair of the style's pool members
                a_idx, p_idx = (x.ravel() for x in np.meshgrid(np.arange(len(same)), np.arange(len(same))))
                keep = a_idx != p_idx
                if cross:
                    keep &= _cross_source_pairs(source_of[same])[a_idx, p_idx]
                a_idx, p_idx = a_idx[keep], p_idx[keep]
            else:
                a_idx = rng.integers(len(same), size=per_style)
                # A positive is another member of the anchor's style: shift by 1..len-1 places.
                p_idx = (a_idx + rng.integers(1, len(same), size=per_style)) % len(same)
                if cross:
                    allowed = _cross_source_pairs(source_of[same])
                    p_idx = np.array([rng.choice(np.flatnonzero(allowed[i])) for i in a_idx], dtype=np.int64)
            rows_a.append(same[a_idx])
            rows_p.append(same[p_idx])
            rows_n.append(rng.choice(others, len(a_idx)))
        a, p, n = (np.concatenate(x) for x in (rows_a, rows_p, rows_n))
        order = rng.permutation(len(a))
        for role, ids in zip(roles, (a[order], p[order], n[order]), strict=True):
            cols[role].append(ids)
            cols[f"{role}_offset"].append(off[ids])
        cols["batch"].append(np.full(len(a), b, np.int64))
    # One frame at the end (a frame per batch costs more than drawing the batch).
    joined = {k: np.concatenate(v) for k, v in cols.items()}
    frame: dict[str, object] = {"holdout": holdout, "batch": joined["batch"]}
    frame |= {r: names[joined[r]] for r in roles} | {f"{r}_offset": joined[f"{r}_offset"] for r in roles}
    frame |= {f"{r}_style": style_names[style_idx[joined[r]]] for r in roles}
    return pd.DataFrame(frame | {"seed": seed, "strategy": strategy, "member": member})


def triplets_for(
    fit: pd.DataFrame,
    offsets: Mapping[str, Sequence[float]],
    cfg: TrainConfig,
    index: int,
    holdout: str,
    member: int = 0,
) -> pd.DataFrame:
    """The triplets of one branch of a training job: ``cfg``'s recipe for seed ``member``, seeded by the
    branch's ``index`` in the plan."""
    cfg = cfg.member(member)
    return build_triplets(
        fit,
        offsets,
        n_batches=cfg.epochs * cfg.batches_per_epoch,
        tracks_per_style=cfg.tracks_per_style,
        triplets_per_batch=cfg.triplets_per_batch,
        seed=cfg.seed + 1000 * index,
        strategy=cfg.mining,
        holdout=holdout,
        positives=cfg.positives,
        member=member,
    )


def branch_triplets(
    task: tuple[pd.DataFrame, Mapping[str, Sequence[float]], TrainConfig, int, str, int],
) -> pd.DataFrame:
    """:func:`triplets_for` on one tuple: the job of a worker process (this module imports no torch)."""
    return triplets_for(*task)


def _draw_over_sources(ids: np.ndarray, source_of: list[int], k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` distinct tracks (codes), dealt round-robin over their sources in a random order."""
    by_source: dict[int, list[int]] = {}
    for t in rng.permutation(ids).tolist():
        by_source.setdefault(source_of[t], []).append(t)
    queues = [by_source[s] for s in rng.permutation(sorted(by_source)).tolist()]
    picked: list[int] = []
    while len(picked) < min(k, len(ids)):
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop())
    return np.array(picked, np.int64)


def _cross_source_pairs(src: np.ndarray) -> np.ndarray:
    """``allowed[a, p]`` for pool members of sources ``src``: p may be a's positive: another source when
    the pool has one, else any other track."""
    other = src[:, None] != src[None, :]
    fallback = ~np.eye(len(src), dtype=bool)
    has_other = other.any(1, keepdims=True)
    return np.where(has_other, other, fallback)


def semi_hard_negatives(
    dist: np.ndarray,
    styles: np.ndarray,
    anchors: np.ndarray,
    positives: np.ndarray,
    margin: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of semi-hard negatives for (anchor, positive) index pairs into a pool.

    ``dist`` is the pool's pairwise cosine distance matrix under the current model, ``styles`` the pool
    members' styles. Returns one negative index per pair (see the module docstring for the fallbacks).
    """
    out = np.empty(len(anchors), dtype=np.int64)
    for i, (a, p) in enumerate(zip(anchors, positives, strict=True)):
        cand = np.flatnonzero(styles != styles[a])
        d_ap = dist[a, p]
        d_an = dist[a, cand]
        semi = cand[(d_an > d_ap) & (d_an < d_ap + margin)]
        if len(semi):
            out[i] = rng.choice(semi)
            continue
        hard = cand[d_an <= d_ap]
        out[i] = hard[np.argmax(dist[a, hard])] if len(hard) else rng.choice(cand)
    return out
