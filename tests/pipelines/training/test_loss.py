"""Triplet margin loss on cosine distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.training.loss import cosine_distance, pairwise_cosine_distance, triplet_loss


def test_zero_when_negative_is_farther_by_the_margin_positive_otherwise() -> None:
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.1]])
    far = torch.tensor([[-1.0, 0.0]])
    near = torch.tensor([[1.0, 0.2]])
    assert triplet_loss(a, p, far, margin=0.2) == 0
    loss = triplet_loss(a, p, near, margin=0.2)
    expected = cosine_distance(a, p) - cosine_distance(a, near) + 0.2
    assert torch.allclose(loss, expected.mean()) and loss > 0


def test_gradient_pulls_positive_in_and_pushes_negative_out() -> None:
    a = F.normalize(torch.tensor([[1.0, 0.3]]), dim=1)
    p = torch.tensor([[0.2, 1.0]], requires_grad=True)
    n = torch.tensor([[1.0, 0.2]], requires_grad=True)
    triplet_loss(a, p, n, margin=0.5).backward()
    with torch.no_grad():
        p2, n2 = p - 0.1 * p.grad, n - 0.1 * n.grad
    assert cosine_distance(a, p2) < cosine_distance(a, p.detach())
    assert cosine_distance(a, n2) > cosine_distance(a, n.detach())


def test_pairwise_distances_match_rowwise() -> None:
    x = F.normalize(torch.randn(5, 3), dim=1)
    d = pairwise_cosine_distance(x)
    assert torch.allclose(d[1, 3], cosine_distance(x[1:2], x[3:4])[0], atol=1e-6)
    assert torch.allclose(torch.diagonal(d), torch.zeros(5), atol=1e-6)
