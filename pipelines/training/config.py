"""A training job as plain data: the recipe, the evaluation protocol and the gate; importable without torch.

DAG files build their parameter schema from :func:`job_schema` when Airflow parses them, so nothing here
may import torch, pandas or MLflow.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.errors import UserError
from pipelines.model.config import EncoderConfig
from pipelines.settings import Settings

GroupBy = Literal["track", "album", "artist", "source"]  # what a "source" is in the source-disjoint views
# Seeds of a branch's ensemble members are this far apart, so no two members of any job share a stream.
MEMBER_SEED_STRIDE = 1_000_003
SEED_PREFIX = "seed"  # evaluation rows seed0, seed1, ...: one seed's branches alone


class TrainConfig(BaseModel):
    """Everything that shapes one training run. Defaults: see docs/training.md for the measurements."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # a misspelt field is an error, not a default

    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    seed: int = 0
    epochs: int = Field(default=24, ge=1, description="Upper bound; early stopping usually ends sooner.")
    batches_per_epoch: int = Field(default=25, ge=1)
    tracks_per_style: int = Field(default=8, ge=2, description="Pool size per style in a batch.")
    triplets_per_batch: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    margin: float = Field(default=0.2, gt=0)
    mining: Literal["random", "semi-hard", "batch-all"] = "batch-all"
    positives: Literal["any", "other-source"] = Field(
        default="other-source",
        description="other-source: a positive from another source of the style when there is one.",
    )
    val_by: Literal["track", "source"] = Field(
        default="track", description="Validation tracks for early stopping: a share of tracks, or whole sources."
    )
    stats_in_training: bool = Field(
        default=False,
        description="With encoder.stats_weight > 0: train on the whole output (True) or on the learned part only.",
    )
    augment_channel: float = Field(default=0.0, ge=0.0, description="Random cepstral offset per window, in sds.")
    mine_after_epochs: int = Field(default=2, ge=0)
    patience_epochs: int = Field(default=8, ge=1)
    min_epochs: int = Field(default=8, ge=1)
    val_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    window_offsets_s: tuple[float, ...] = Field(
        default=(10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 105.0, 120.0, 150.0, 180.0),
        description="Extra training windows (seconds after the front end's own); () for none.",
    )
    threads: int = Field(default=1, ge=1, description="torch threads; results are reproducible per value.")
    crop_frames: int = Field(
        default=215,
        ge=0,
        description="Train each step on a random crop of this many frames of every window (0 or >= N: all).",
    )
    seeds: int = Field(
        default=3,
        ge=1,
        description="Branches trained per holdout with different seeds; the model is their ensemble (cosines "
        "averaged), each seed alone gives the spread.",
    )

    @field_validator("encoder")
    @classmethod
    def _one_member(cls, encoder: EncoderConfig) -> EncoderConfig:
        if encoder.members != 1:
            raise ValueError("the ensemble's size is train.seeds, not train.encoder.members")
        return encoder

    def member(self, k: int) -> TrainConfig:
        """The recipe of the ``k``-th seed of every branch (member 0 is the recipe itself)."""
        return self if k == 0 else self.model_copy(update={"seed": self.seed + k * MEMBER_SEED_STRIDE})


class GateConfig(BaseModel):
    """When a challenger may replace the champion. Metrics are ``view/metric``, leave-one-source-out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(default="cross_source/map@10", description="Compared with the champion's.")
    margin: float = Field(default=0.01, ge=0.0, description="How much better than the champion it must be.")
    beat_on: tuple[str, ...] = Field(
        default=("catalogue/p@10", "cross_source/map@10"), description="Must beat each required baseline on these."
    )
    baselines: tuple[str, ...] = Field(
        default=("raw", "meanstd"), description="It must beat the strongest of these on each beat_on metric."
    )
    interval: bool = Field(
        default=True,
        description="Also require the paired 95% bootstrap interval over sources against that baseline above zero.",
    )


class TrainingJob(BaseModel):
    """One training job: the training recipe, how it is evaluated, and the gate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: TrainConfig = Field(default_factory=TrainConfig)
    group_by: GroupBy = Field(default="source", description="What a 'source' is: source, album or artist.")
    max_groups: int = Field(default=24, ge=2, description="Above this many sources, k source-disjoint folds.")
    n_folds: int = Field(default=5, ge=2, description="k of the track-disjoint split (and of many sources).")
    eval_fold: int = Field(default=0, ge=0, description="The frozen track-disjoint fold (secondary view).")
    secondary: bool = Field(default=True, description="Also train the track-disjoint fold (secondary view).")
    split_seed: int = 0
    workers: int = Field(default=2, ge=1, description="Branches trained at once (one process and core each).")
    gate: GateConfig = Field(default_factory=GateConfig)

    @property
    def key(self) -> str:
        """The recipe and protocol; ``workers`` changes how fast, not what, so it is left out."""
        return hashlib.sha256(self.model_dump_json(exclude={"workers"}).encode()).hexdigest()[:10]


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def scheduled_job(settings: Settings, overrides: dict[str, Any] | None = None) -> TrainingJob:
    """The job of a scheduled run: ``settings.training.job`` with a run's ``overrides`` on top (deep merge)."""
    from pydantic import ValidationError

    try:
        return TrainingJob.model_validate(_merged(settings.training.job, overrides or {}))
    except ValidationError as exc:
        raise UserError(f"invalid training job: {exc.errors(include_url=False)}") from exc


def job_schema() -> dict[str, Any]:
    """JSON schema of job overrides (every field optional, unknown fields refused), for DAG parameters."""
    schema = TrainingJob.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    return schema
