"""Retrieval metrics on rankings small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.metrics import per_style, retrieval_table, summarise


def _unit(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.c_[np.cos(a), np.sin(a)]


def test_hand_computed_ranking() -> None:
    # Query q (style A) at 0 degrees; candidates ordered by angle: a1 (A), b1 (B), a2 (A), b2 (B).
    cands = _unit([0, 10, 20, 30, 40])
    ids = ["q", "a1", "b1", "a2", "b2"]
    styles = ["A", "A", "B", "A", "B"]
    t = retrieval_table(cands[:1], ["q"], ["A"], cands, ids, styles)
    row = t.iloc[0]
    assert row["n_relevant"] == 2  # the query itself is not a candidate
    assert row["p@1"] == 1.0
    assert row["p@5"] == pytest.approx(2 / 4)  # only 4 candidates: hits over the ranks that exist
    # AP@10 = (P@1 * 1 + P@3 * 1) / min(R, 10) = (1 + 2/3) / 2
    assert row["map@10"] == pytest.approx((1 + 2 / 3) / 2)
    assert row["r_prec"] == pytest.approx(1 / 2)  # first R=2 ranks: a1 hit, b1 miss
    assert row["top1_style"] == "A"


def test_perfect_ranking_scores_one_even_with_few_relevant() -> None:
    emb = _unit([0, 1, 2, 90, 91, 92, 93])
    styles = ["A", "A", "A", "B", "B", "B", "B"]
    ids = [f"t{i}" for i in range(7)]
    t = retrieval_table(emb, ids, styles, emb, ids, styles)
    assert (t["map@10"] == 1.0).all() and (t["r_prec"] == 1.0).all() and (t["p@1"] == 1.0).all()
    # p@10 cannot reach 1 with 2-3 same-style candidates: why the unseen view reports mAP and R-precision.
    assert t["p@10"].max() < 1.0


def test_queries_without_relevant_candidates_are_dropped_and_summaries_average_queries() -> None:
    emb = _unit([0, 5, 50, 55])
    t = retrieval_table(
        emb, ["a", "b", "c", "d"], ["A", "A", "B", "C"], emb, ["a", "b", "c", "d"], ["A", "A", "B", "C"]
    )
    assert list(t["track_id"]) == ["a", "b"]
    s = summarise(t)
    assert s["p@1"] == 1.0
    assert per_style(t).loc["A", "queries"] == 2


def test_ties_are_broken_deterministically() -> None:
    emb = np.ones((5, 2)) / np.sqrt(2)
    styles = ["A", "B", "A", "B", "A"]
    ids = list("vwxyz")
    t1 = retrieval_table(emb, ids, styles, emb, ids, styles)
    t2 = retrieval_table(emb, ids, styles, emb, ids, styles)
    assert t1.equals(t2)
