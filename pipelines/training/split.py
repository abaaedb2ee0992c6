"""Frozen evaluation splits: which tracks every model is judged on, written once and reused.

A split assigns every track a fold, by track, album or source (leave-one-source-out is the gate's view), and
is frozen on disk so every later challenger is judged on the same holdouts and their numbers stay comparable.
Design: docs/training.md#frozen-splits-and-the-plan
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.catalogue.manifest import read_table, write_table
from pipelines.errors import UserError
from pipelines.training.config import GroupBy

log = logging.getLogger(__name__)


SPLIT_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("style", pa.string()),
        ("group", pa.string()),
        ("fold", pa.int32()),
        ("group_by", pa.string()),
        ("n_folds", pa.int32()),
        ("seed", pa.int64()),
    ]
)

MIN_TRACKS_PER_STYLE = 2


def labelled(tracks: pd.DataFrame) -> pd.DataFrame:
    """The tracks with a style label: unlabelled tracks are indexed but never trained or evaluated on."""
    keep = tracks["style"].notna() & (tracks["style"].astype(str) != "")
    return tracks if keep.all() else tracks[keep]


def check_styles(tracks: pd.DataFrame, min_per_style: int = MIN_TRACKS_PER_STYLE) -> None:
    """Refuse a catalogue that cannot give a positive for every anchor, naming the styles at fault."""
    counts = labelled(tracks).groupby("style").size()
    if len(counts) < 2:
        raise UserError(
            f"training needs at least two styles, the catalogue has {len(counts)}: "
            f"{', '.join(map(str, counts.index)) or 'none'}"
        )
    small = counts[counts < min_per_style]
    if len(small):
        names = ", ".join(f"{s!r} ({n} track{'s' if n != 1 else ''})" for s, n in small.items())
        raise UserError(f"every style needs at least {min_per_style} tracks to train on triplets; too few: {names}")


def _groups(tracks: pd.DataFrame, group_by: GroupBy) -> pd.Series:
    if group_by == "track":
        return tracks["track_id"].astype(str)
    col = tracks[group_by] if group_by in tracks else pd.Series([None] * len(tracks), index=tracks.index)
    known = col.notna() & (col.astype(str).str.len() > 0)
    # A track with no album/source is its own group; prefixes keep the two kinds of name apart.
    return ("g:" + col.astype(str)).where(known, "t:" + tracks["track_id"].astype(str))


def _stable_fold(track_id: str, seed: int, n_folds: int) -> int:
    digest = hashlib.sha256(f"{seed}:{track_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_folds


def make_split(tracks: pd.DataFrame, n_folds: int = 5, seed: int = 0, group_by: GroupBy = "track") -> pd.DataFrame:
    """Assign folds stratified by style: each style's groups are shuffled and dealt round-robin by size.

    ``tracks`` needs ``track_id`` and ``style`` (and ``album``/``source`` for those groupings).
    """
    if n_folds == 1 or n_folds < 0:
        raise UserError(f"n_folds must be at least 2 (or 0: one fold per {group_by}), got {n_folds}")
    tracks = labelled(tracks)
    check_styles(tracks)
    tracks = tracks.sort_values("track_id").reset_index(drop=True)
    groups = _groups(tracks, group_by)
    if n_folds == 0:
        return _leave_one_group_out(tracks, groups, group_by, seed)
    rng = np.random.default_rng(seed)
    fold_of_group: dict[str, int] = {}
    for style in sorted(tracks["style"].unique()):
        in_style = groups[tracks["style"] == style]
        sizes = in_style.value_counts()
        names = sorted(sizes.index)
        rng.shuffle(names)
        # Largest groups first, each to the currently smallest fold: balanced sides, random ties.
        names.sort(key=lambda g: -sizes[g])
        load = np.zeros(n_folds)
        start = int(rng.integers(n_folds))
        for g in names:
            if g in fold_of_group:  # a group spanning styles stays on one side
                load[fold_of_group[g]] += sizes[g]
                continue
            order = (np.arange(n_folds) + start) % n_folds
            fold = int(order[np.argmin(load[order])])
            fold_of_group[g] = fold
            load[fold] += sizes[g]
        used = {fold_of_group[g] for g in names}
        if len(used) < 2:
            log.warning("style %r has a single %s: it cannot appear on both sides of the split", style, group_by)
    return _split_frame(tracks, groups, fold_of_group, group_by, n_folds, seed)


def _split_frame(
    tracks: pd.DataFrame, groups: pd.Series, fold_of: dict[str, int], group_by: GroupBy, n_folds: int, seed: int
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "track_id": tracks["track_id"],
            "style": tracks["style"],
            "group": groups,
            "fold": [fold_of[g] for g in groups],
            "group_by": group_by,
            "n_folds": n_folds,
            "seed": seed,
        }
    )


def _leave_one_group_out(tracks: pd.DataFrame, groups: pd.Series, group_by: GroupBy, seed: int) -> pd.DataFrame:
    """A fold per group, numbered in the groups' sorted order (so the numbering is stable)."""
    if group_by == "track":
        raise UserError("one fold per track is not supported; leave-one-out needs --group-by source or album")
    fold_of = {g: i for i, g in enumerate(sorted(groups.unique()))}
    for style, g in groups.groupby(tracks["style"]):
        if g.nunique() < 2:
            log.warning("style %r has a single %s: held out, no other %s of it can be found", style, group_by, group_by)
    return _split_frame(tracks, groups, fold_of, group_by, 0, seed)


def split_path(root: Path, group_by: GroupBy, n_folds: int, seed: int) -> Path:
    k = f"k{n_folds}" if n_folds else "loo"
    return root / f"split-{group_by}-{k}-s{seed}.parquet"


def frozen_split(
    tracks: pd.DataFrame, path: Path, n_folds: int = 5, seed: int = 0, group_by: GroupBy = "track"
) -> pd.DataFrame:
    """The split stored at ``path``, extended to new tracks; created from ``tracks`` if absent.

    Returns the rows of the tracks in ``tracks`` only (removed tracks stay in the file, unused). The file
    is rewritten only when it gains tracks, so repeated runs leave it byte-for-byte alone.
    """
    tracks = labelled(tracks)
    check_styles(tracks)
    if not path.exists():
        write_table(make_split(tracks, n_folds, seed, group_by), SPLIT_SCHEMA, path)
        log.info("froze a new %s split of %d tracks at %s", group_by, len(tracks), path)
    stored = read_table(path, SPLIT_SCHEMA)
    if len(stored) and (
        int(stored["n_folds"].iloc[0]) != n_folds
        or int(stored["seed"].iloc[0]) != seed
        or stored["group_by"].iloc[0] != group_by
    ):
        raise UserError(f"{path} was frozen with other settings; remove it to start a new split")
    new = tracks[~tracks["track_id"].isin(stored["track_id"])]
    if len(new):
        groups = _groups(new, group_by)
        known = dict(zip(stored["group"], stored["fold"], strict=False))
        if n_folds == 0:  # leave-one-out: a new group gets a new fold of its own
            for g in sorted(set(groups) - set(known)):
                known[g] = max(known.values(), default=-1) + 1
        # A new track of a known album joins its album's side.
        folds = [known[g] if g in known else _stable_fold(g, seed, n_folds) for g in groups]
        added = pd.DataFrame(
            {
                "track_id": new["track_id"].to_numpy(),
                "style": new["style"].to_numpy(),
                "group": groups.to_numpy(),
                "fold": folds,
                "group_by": group_by,
                "n_folds": n_folds,
                "seed": seed,
            }
        )
        stored = pd.concat([stored, added], ignore_index=True)
        write_table(stored, SPLIT_SCHEMA, path)
        log.info("added %d new tracks to the frozen split %s", len(new), path)
    current = stored[stored["track_id"].isin(tracks["track_id"])].copy()
    # The style in the manifest wins over the frozen one (a relabelled track keeps its fold).
    style = dict(zip(tracks["track_id"], tracks["style"], strict=True))
    current["style"] = current["track_id"].map(style)
    return current.reset_index(drop=True)


def validation_carve(
    train: pd.DataFrame, frac: float, seed: int, by: Literal["track", "source"] = "track"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split training rows into (fit, validation), stratified by style, for early stopping.

    ``by="track"``: a share ``frac`` of each style's tracks. Styles with fewer than four training tracks
    keep all of them for fitting (two are needed for a positive pair, and validation of a style needs one
    more plus a same-style candidate).

    ``by="source"`` (needs a ``source`` column): each style with at least three sources on the training
    side lends its smallest source to validation, so early stopping rewards finding a style in a source
    the branch is not fitted on (the source-disjoint view) rather than memorising recordings.
    """
    rng = np.random.default_rng(seed)
    val_ids: list[str] = []
    for _style, rows in train.groupby("style", sort=True):
        if by == "source":
            sizes = rows.groupby("source").size().sort_index()
            if len(sizes) >= 3:
                smallest = sizes.index[int(np.argmin(sizes.to_numpy()))]
                val_ids += list(rows.loc[rows["source"] == smallest, "track_id"])
            continue
        ids = sorted(rows["track_id"])
        if len(ids) < 4:
            continue
        rng.shuffle(ids)
        val_ids += ids[: max(1, round(len(ids) * frac))]
    is_val = train["track_id"].isin(val_ids)
    return train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True)
