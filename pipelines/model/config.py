"""The shape of the branch as plain data: importable without torch (DAG files, job validation)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EncoderConfig(BaseModel):
    """Shape of the branch. Defaults: the best configuration of the comparison in docs/training.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # a misspelt field is an error, not a default

    n_frames: int = Field(default=430, ge=1, description="N: frames in the front-end vector.")
    n_mfcc: int = Field(default=20, ge=1, description="MFCCs per frame.")
    kind: Literal["frames", "flat"] = Field(
        default="frames", description="frames: shared per-frame layers + pooling; flat: MLP over all values."
    )
    deltas: int = Field(default=1, ge=0, le=2, description="Append first (1) and second (2) differences.")
    context: int = Field(default=1, ge=1, description="Frames stacked around each frame (odd).")
    frame_layers: tuple[int, ...] = Field(default=(64,), description="Widths of the shared per-frame MLP.")
    pooling: Literal["mean", "meanstd", "max"] = Field(default="meanstd", description="Pooling over frames.")
    head_layers: tuple[int, ...] = Field(default=(64,), description="Widths after pooling (or of flat).")
    dim: int = Field(default=32, ge=2, description="Embedding size.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    stats_weight: float = Field(
        default=0.7, ge=0.0, le=1.0, description="Share of the cosine given to the fixed mean+std statistics."
    )
    members: int = Field(
        default=1,
        ge=1,
        description="Branches of this shape trained with different seeds whose cosines are averaged (an ensemble).",
    )

    @property
    def learned_dim(self) -> int:
        """Size of the learned part of the output: ``dim`` of every member."""
        return self.dim * self.members

    @property
    def out_dim(self) -> int:
        """Size of the output: the learned part, plus the ``2 * n_mfcc`` statistics when they are appended."""
        return self.learned_dim + (2 * self.n_mfcc if self.stats_weight else 0)

    @property
    def member(self) -> EncoderConfig:
        """The shape of one member of the ensemble."""
        return self if self.members == 1 else self.model_copy(update={"members": 1})

    @property
    def input_dim(self) -> int:
        return self.n_frames * self.n_mfcc

    @property
    def channels(self) -> int:
        """Values per frame after the deltas are appended."""
        return self.n_mfcc * (1 + self.deltas)
