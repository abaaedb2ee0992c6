"""Triplet margin loss on cosine distance, as training computes it: a pool's pairwise distances, then hinges."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.training.loss import margin_loss, pairwise_cosine_distance


def _triplet_loss(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float) -> torch.Tensor:
    """One triplet scored the way a training batch scores its pool: embed once, pairwise distances, hinge."""
    d = pairwise_cosine_distance(F.normalize(torch.cat([a, p, n]), dim=1))
    return margin_loss(d[0, 1:2], d[0, 2:3], margin)


def test_zero_when_negative_is_farther_by_the_margin_positive_otherwise() -> None:
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.1]])
    far = torch.tensor([[-1.0, 0.0]])
    near = torch.tensor([[1.0, 0.2]])
    assert _triplet_loss(a, p, far, margin=0.2) == 0
    loss = _triplet_loss(a, p, near, margin=0.2)
    cos = F.cosine_similarity
    expected = (1 - cos(a, p)) - (1 - cos(a, near)) + 0.2
    assert torch.allclose(loss, expected.mean(), atol=1e-6) and loss > 0


def test_gradient_pulls_positive_in_and_pushes_negative_out() -> None:
    a = F.normalize(torch.tensor([[1.0, 0.3]]), dim=1)
    p = torch.tensor([[0.2, 1.0]], requires_grad=True)
    n = torch.tensor([[1.0, 0.2]], requires_grad=True)
    _triplet_loss(a, p, n, margin=0.5).backward()
    with torch.no_grad():
        p2, n2 = p - 0.1 * p.grad, n - 0.1 * n.grad
    cos = F.cosine_similarity
    assert cos(a, p2) > cos(a, p.detach())
    assert cos(a, n2) < cos(a, n.detach())


def test_pairwise_distances_are_one_minus_cosine() -> None:
    x = F.normalize(torch.randn(5, 3), dim=1)
    d = pairwise_cosine_distance(x)
    assert torch.allclose(d[1, 3], 1 - F.cosine_similarity(x[1:2], x[3:4])[0], atol=1e-6)
    assert torch.allclose(torch.diagonal(d), torch.zeros(5), atol=1e-6)
