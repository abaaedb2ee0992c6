"""The prepare step (DAG ``build_triplets``): frozen splits, the plan of branches, windows, triplets."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines import parallel
from pipelines.progress import ItemProgress
from pipelines.settings import Settings
from pipelines.training.config import TrainingJob
from pipelines.training.labelled import carve, load_labelled, training_dir, training_side, windows_for
from pipelines.training.plan import make_plan, plan_to_json, primary_split, single_source_styles
from pipelines.training.split import check_styles, frozen_split, split_path
from pipelines.training.triplets import TRIPLET_SCHEMA, branch_triplets

log = logging.getLogger(__name__)


def _write_parquet(parts: list[pd.DataFrame], schema: pa.Schema, path: Path) -> None:
    """One row group per part (a branch's triplets), so each branch reads only its own rows back."""
    from pipelines.features.store import write_atomic

    tables = [
        pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema, preserve_index=False) for df in parts
    ]
    write_atomic(tables, path)


def prepare(settings: Settings, job: TrainingJob, progress: ItemProgress | None = None) -> dict[str, str]:
    """Freeze the splits, plan the branches, compute training windows, write the triplet dataset."""
    cat = load_labelled(settings)
    check_styles(cat.tracks)
    tracks = cat.tracks.assign(**{job.group_by: cat.groups(job.group_by)})
    if single := single_source_styles(tracks, job.group_by):
        log.warning(
            "style(s) %s come from a single %s: their numbers may measure the %s, not the style; "
            "add tracks of other %ss (albums, artists) of them",
            ", ".join(single),
            job.group_by,
            job.group_by,
            job.group_by,
        )
    root = training_dir(settings)
    primary, primary_file = primary_split(tracks, root, job.group_by, job.max_groups, job.n_folds, job.split_seed)
    secondary = None
    if job.secondary:
        path = split_path(root, "track", job.n_folds, job.split_seed)
        secondary = frozen_split(cat.tracks, path, job.n_folds, job.split_seed, "track")
    plan = make_plan(primary, secondary, job.eval_fold)
    windows = windows_for(settings, cat, job, progress)
    offsets: dict[str, list[float]] = {t: [0.0] for t in cat.track_ids}
    for t, o in zip(windows.track_ids, windows.offsets, strict=True):
        offsets[t].append(float(o))
    cfg = job.train
    tasks = []
    for i, holdout in enumerate(plan):
        for k in range(cfg.seeds):
            fit, _val = carve(training_side(cat, job, holdout), cfg, cfg.member(k).seed + i)
            check_styles(fit, 1)
            tasks.append((fit, offsets, cfg, i, holdout.name, k))
    # Each branch's triplets are seeded by its place in the plan and its seed: the same rows with any
    # number of workers.
    triplets = list(parallel.imap(branch_triplets, tasks, job.workers))
    path = root / "triplets" / f"triplets-{cat.feature_version}-{job.key}.parquet"
    _write_parquet(triplets, TRIPLET_SCHEMA, path)
    plan_file = root / "plans" / f"plan-{cat.feature_version}-{job.key}.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan_to_json(plan)))
    log.info("triplet dataset: %d triplets for %d branches at %s", sum(map(len, triplets)), len(tasks), path)
    return {
        "plan": str(plan_file),
        "split": str(primary_file),
        "triplets": str(path),
        "feature_version": cat.feature_version,
        "tracks": str(len(cat.track_ids)),
        "branches": str(len(tasks)),
    }


@dataclass(frozen=True)
class Prepared:
    """The prepare step's report: where the plan, split and triplets are, and how much there is to train."""

    plan: str
    split: str
    triplets: str
    feature_version: str
    tracks: str
    branches: str

    def line(self) -> str:
        return f"triplets: {self.triplets} ({self.branches} branches to train)"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run(settings: Settings, job: TrainingJob, inputs: None = None, progress: ItemProgress | None = None) -> Prepared:
    """The prepare step (its input is the feature store the settings point at)."""
    return Prepared(**prepare(settings, job, progress))
