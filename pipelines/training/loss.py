"""The training objective, kept apart from the encoder so serving never imports it.

Triplet margin loss on cosine distance, the distance used at query time: for unit vectors
``d(a, b) = 1 - a.b``, and each triplet costs ``max(0, d(a, p) - d(a, n) + margin)``. Minimising the mean
over the training triplets pushes every anchor closer to its same-style positive than to its negative by
at least the margin.
"""

from __future__ import annotations

import torch


def pairwise_cosine_distance(unit: torch.Tensor) -> torch.Tensor:
    """``(m, m)`` distances between all rows of L2-normalised embeddings (a pool embedded once)."""
    return 1.0 - unit @ unit.T


def margin_loss(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge ``max(0, d(a,p) - d(a,n) + margin)`` from the distances of each triplet."""
    return torch.relu(d_ap - d_an + margin).mean()
