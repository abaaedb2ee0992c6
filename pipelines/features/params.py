"""Feature parameters and their version: every setting that changes the vector, hashed.

The feature store is partitioned by this version, so changing any parameter builds a new set of vectors
beside the old one instead of mixing incompatible vectors.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field


class FeatureParams(BaseModel):
    """How a track becomes a vector. Defaults: see the README's feature benchmark for why."""

    model_config = ConfigDict(frozen=True)

    sr: int = Field(default=22050, description="Resample rate (Hz).")
    n_fft: int = Field(default=2048, description="STFT window (samples).")
    hop: int = Field(default=512, description="Hop between frames (samples).")
    n_mels: int = Field(default=128, description="Mel bands before the DCT.")
    n_mfcc: int = Field(default=20, description="MFCCs per frame.")
    n_frames: int = Field(default=430, description="N: frames concatenated into the vector (~10 s at the defaults).")
    offset_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Seconds skipped at the start (e.g. intros); a shorter track gives its last N frames.",
    )

    @property
    def dim(self) -> int:
        return self.n_frames * self.n_mfcc

    @property
    def duration_s(self) -> float:
        """Seconds of audio the first N frames need: N-1 hops, plus half a window so that the last frame
        (centred) sees real audio, not padding, and a prefix gives the same vector as a full decode."""
        return ((self.n_frames - 1) * self.hop + self.n_fft // 2) / self.sr

    @property
    def version(self) -> str:
        """Short stable hash of every parameter; names a partition of the feature store."""
        blob = json.dumps(self.model_dump(), sort_keys=True).encode()
        return "v" + hashlib.sha256(blob).hexdigest()[:10]
