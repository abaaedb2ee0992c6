"""Which branches a training job trains, and which tracks each one must never see.

A holdout is one branch: the served ``all`` branch (nothing held out), one per source-disjoint holdout that
the gate judges, and optionally the track-disjoint fold. Design: docs/training.md#frozen-splits-and-the-plan
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pipelines.training.split import GroupBy, frozen_split, split_path

log = logging.getLogger(__name__)

ALL = "all"
PRIMARY = "source"  # protocol name of the source-disjoint holdouts (whatever column they group by)
SECONDARY = "track"


@dataclass(frozen=True)
class Holdout:
    name: str
    protocol: str  # "all", PRIMARY or SECONDARY
    tracks: tuple[str, ...]  # held out from training; judged by this branch


def primary_split(
    tracks: pd.DataFrame, root: Path, group_by: GroupBy, max_groups: int, n_folds: int, seed: int
) -> tuple[pd.DataFrame, Path]:
    """The frozen source-disjoint split and its file: leave-one-group-out, or k group folds when groups are many.

    ``tracks[group_by]`` must be filled (a track without a source is its own, see ``Catalogue.groups``).
    """
    n_groups = tracks[group_by].nunique()
    if n_groups < 2:
        log.warning(
            "the whole catalogue is one %s: nothing can be held out by %s, so the primary view falls back to "
            "%d folds by track, which measure the %s as much as the style",
            group_by,
            group_by,
            n_folds,
            group_by,
        )
        path = split_path(root, "track", n_folds, seed)
        return frozen_split(tracks, path, n_folds, seed, "track"), path
    k = 0 if n_groups <= max_groups else n_folds
    if k:
        log.info("%d %s groups (more than %d): %d folds that keep each on one side", n_groups, group_by, max_groups, k)
    path = split_path(root, group_by, k, seed)
    return frozen_split(tracks, path, k, seed, group_by), path


def single_source_styles(tracks: pd.DataFrame, group_by: GroupBy) -> list[str]:
    """Styles whose tracks all come from one source (album, artist): their numbers measure that source.

    ``tracks[group_by]`` must be filled, as for :func:`primary_split`.
    """
    counts = tracks.groupby("style")[group_by].nunique()
    return sorted(counts[counts < 2].index)


def make_plan(primary: pd.DataFrame, secondary: pd.DataFrame | None, eval_fold: int) -> list[Holdout]:
    """``all`` first, then every primary fold (named after its source when it holds exactly one)."""
    plan = [Holdout(ALL, ALL, ())]
    for fold, rows in primary.groupby("fold", sort=True):
        groups = rows["group"].unique()
        label = groups[0].removeprefix("g:") if len(groups) == 1 else f"fold{fold}"
        plan.append(Holdout(f"{PRIMARY}:{label}", PRIMARY, tuple(sorted(rows["track_id"]))))
    if secondary is not None:
        held = secondary.loc[secondary["fold"] == eval_fold, "track_id"]
        plan.append(Holdout(f"{SECONDARY}:fold{eval_fold}", SECONDARY, tuple(sorted(held))))
    return plan


def plan_to_json(plan: list[Holdout]) -> list[dict]:
    return [asdict(h) | {"tracks": list(h.tracks)} for h in plan]


def plan_from_json(items: list[dict]) -> list[Holdout]:
    return [Holdout(d["name"], d["protocol"], tuple(d["tracks"])) for d in items]


def member_name(holdout: str, k: int) -> str:
    """The name of the ``k``-th seed's branch of a holdout (the first keeps the holdout's own name)."""
    return holdout if k == 0 else f"{holdout}@seed{k}"


def file_stem(name: str) -> str:
    """A holdout name as a file name (sources may contain any character)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return f"{safe[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
