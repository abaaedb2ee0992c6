"""The labelled feature matrix training and evaluation read, its fingerprints, and where runs keep files.

The matrix is the feature store's vectors of the labelled tracks joined with their manifest rows; the
fingerprints tell whether two evaluations are comparable and whether a model was already trained.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.catalogue.manifest import UNLABELLED, read_manifest
from pipelines.errors import UserError
from pipelines.progress import ItemProgress
from pipelines.settings import Settings
from pipelines.training.config import TrainConfig, TrainingJob
from pipelines.training.plan import Holdout
from pipelines.training.split import GroupBy, validation_carve
from pipelines.training.train import WindowBank
from pipelines.training.windows import Windows, build_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledFeatures:
    """The feature matrix with its tracks' manifest rows, in the same order."""

    track_ids: list[str]
    matrix: np.ndarray
    tracks: pd.DataFrame  # track_id, style, source, album, artist, path, sha256, duration_s
    feature_version: str
    n_mfcc: int

    def groups(self, group_by: GroupBy) -> list[str]:
        """Each track's source under ``group_by`` (a track with none is its own)."""
        col = self.tracks[group_by] if group_by in self.tracks else pd.Series([None] * len(self.tracks))
        return [str(g) if isinstance(g, str) and g else f"track:{t}" for g, t in zip(col, self.track_ids, strict=True)]


def training_dir(settings: Settings) -> Path:
    """Where splits, plans, windows, triplets and runs live."""
    return settings.data_root / "training"


def run_dir(settings: Settings, run_id: str) -> Path:
    """One training run's branches, histories and review artifacts."""
    return training_dir(settings) / "runs" / run_id


def load_labelled(settings: Settings) -> LabelledFeatures:
    """Feature-store vectors of the active tracks joined with their manifest rows."""
    from pipelines.features.store import read_features

    fm = read_features(settings)
    manifest = read_manifest(settings.manifest_path).drop_duplicates("track_id", keep="last")
    rows = manifest.set_index("track_id").reindex(fm.track_ids).reset_index()
    if rows["style"].isna().any():
        missing = rows.loc[rows["style"].isna(), "track_id"].head(3).tolist()
        raise UserError(f"feature rows without a manifest style, e.g. {missing}; rebuild the features")
    labelled = (rows["style"] != UNLABELLED).to_numpy()
    if not labelled.all():
        log.info("%d unlabelled track(s) left out of training and evaluation", int((~labelled).sum()))
    cols = ["track_id", "style", "source", "album", "artist", "path", "sha256", "duration_s"]
    kept = rows.loc[labelled, cols].reset_index(drop=True)
    ids = [t for t, keep in zip(fm.track_ids, labelled, strict=True) if keep]
    return LabelledFeatures(ids, fm.matrix[labelled], kept, fm.version, fm.params.n_mfcc)


def inputs_fingerprint(cat: LabelledFeatures, job: TrainingJob) -> str:
    """What a trained model depends on: the recipe and every training track's content and label.

    Registered versions carry it as a tag, so a scheduled or repeated run can tell that retraining would
    reproduce a model the registry already has (training is seeded and deterministic).
    """
    digest = hashlib.sha256(f"{job.key}|{evaluation_fingerprint(cat, job.group_by)}".encode())
    return digest.hexdigest()[:16]


def evaluation_fingerprint(cat: LabelledFeatures, group_by: GroupBy) -> str:
    """The evaluation's ground: features, tracks, labels and sources. Equal fingerprints: comparable metrics."""
    digest = hashlib.sha256(f"{cat.feature_version}|{group_by}".encode())
    rows = sorted(zip(cat.track_ids, cat.tracks["sha256"], cat.tracks["style"], cat.groups(group_by), strict=True))
    for row in rows:
        digest.update("|{}:{}:{}:{}".format(*row).encode())
    return digest.hexdigest()[:16]


def trained_version(settings: Settings, job: TrainingJob) -> str | None:
    """The registered version trained on exactly these inputs, if any (see :func:`inputs_fingerprint`)."""
    from pipelines.registry import Registry

    fingerprint = inputs_fingerprint(load_labelled(settings), job)
    for version in Registry(settings).versions():
        if version.tags.get("inputs") == fingerprint:
            return str(version.version)
    return None


def windows_for(settings: Settings, cat: LabelledFeatures, job: TrainingJob, progress: ItemProgress | None) -> Windows:
    """The later training windows of every track (cached on disk by :func:`build_windows`)."""
    kwargs = {"progress": progress} if progress else {}
    root = training_dir(settings) / "windows"
    return build_windows(cat.tracks, settings.features, job.train.window_offsets_s, root, workers=job.workers, **kwargs)


def window_bank(settings: Settings, cat: LabelledFeatures, job: TrainingJob) -> WindowBank:
    """Every training vector (first N frames and the later windows) of the catalogue, by (track, offset)."""
    w = windows_for(settings, cat, job, None)
    return WindowBank.build(cat.track_ids, cat.matrix, w.track_ids, w.offsets, w.matrix)


def training_side(cat: LabelledFeatures, job: TrainingJob, holdout: Holdout) -> pd.DataFrame:
    """The tracks a holdout's branch learns from: track_id, style, and its source under ``group_by``."""
    side = pd.DataFrame({"track_id": cat.track_ids, "style": cat.tracks["style"], "source": cat.groups(job.group_by)})
    return side[~side["track_id"].isin(set(holdout.tracks))].reset_index(drop=True)


def carve(side: pd.DataFrame, cfg: TrainConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return validation_carve(side, cfg.val_fraction, seed, by=cfg.val_by)


def recipe_params(cfg: TrainConfig) -> dict[str, object]:
    """A training recipe as flat MLflow parameters (the encoder's fields as ``encoder.<field>``)."""
    params: dict[str, object] = dict(cfg.model_dump(exclude={"encoder"}))
    return params | {f"encoder.{k}": v for k, v in cfg.encoder.model_dump().items()}


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
