"""Baseline (b) as a servable embedder: per-coefficient MFCC mean and standard deviation over the N frames.

The same numbers as the evaluation's ``meanstd`` baseline, so a catalogue can be served with it when no
trained model beats it (``musicrec index refresh --model-version meanstd``). No weights, no registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.model.embedder import l2_normalise
from pipelines.model.ref import MEANSTD


@dataclass(frozen=True)
class MeanStdEmbedder:
    """Front-end vectors ``(n, N * n_mfcc)`` -> unit vectors of ``[mean, std]`` per coefficient ``(n, 2 n_mfcc)``."""

    feature_version: str
    input_dim: int
    n_mfcc: int
    version: str = MEANSTD

    @property
    def dim(self) -> int:
        return 2 * self.n_mfcc

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors of shape (n, {self.input_dim}), got {vectors.shape}")
        frames = np.asarray(vectors, np.float32).reshape(len(vectors), -1, self.n_mfcc)
        return l2_normalise(np.concatenate([frames.mean(1), frames.std(1)], axis=1))
