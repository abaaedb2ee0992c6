"""What serving and the catalogue refresh need of a model: turn front-end vectors into embeddings.

Anything with this shape can fill a Milvus collection or answer a query: a trained triplet branch loaded
from the registry, or the untrained baseline below. Serving depends on this protocol only, never on
training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Maps raw front-end vectors ``(n, D)`` to L2-normalised float32 embeddings ``(n, dim)``."""

    @property
    def version(self) -> str:
        """The model version that made the vectors ("raw" for the baseline)."""
        ...

    @property
    def feature_version(self) -> str:
        """The feature-parameter version the model expects as input."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, vectors: np.ndarray) -> np.ndarray: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so inner product equals cosine similarity; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class RawEmbedder:
    """Baseline (a): the concatenated MFCC vector itself, compared by cosine — the method without training."""

    feature_version: str
    dim: int
    version: str = "raw"

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return l2_normalise(vectors)
