"""A trained triplet branch behind the :class:`~pipelines.model.embedder.Embedder` protocol.

Serving and the index refresh see only ``version``, ``feature_version``, ``dim`` and ``embed()``; the
module inside may be the :class:`~pipelines.model.encoder.Encoder` just trained or the exported program
loaded back from the registry (which needs no musicrec code to run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.model.embedder import l2_normalise


@dataclass(frozen=True)
class TorchEmbedder:
    """Embeds raw front-end vectors ``(n, input_dim)`` with a torch module in batches, without gradients."""

    version: str
    feature_version: str
    dim: int
    input_dim: int
    module: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 512

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors of shape (n, {self.input_dim}), got {vectors.shape}")
        if isinstance(self.module, torch.nn.Module):
            # An exported program was captured in eval mode and refuses .eval(); an Encoder needs it.
            with contextlib.suppress(NotImplementedError):
                self.module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(vectors), self.batch_size):
                chunk = torch.from_numpy(np.array(vectors[i : i + self.batch_size]))  # a copy: inputs may be read-only
                out.append(self.module(chunk).numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        # The branch already normalises; doing it again costs nothing and guards against drift in exports.
        return l2_normalise(np.concatenate(out))
