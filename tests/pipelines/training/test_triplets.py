"""Triplet datasets: valid, balanced per style, reproducible from the seed; the semi-hard miner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.training.triplets import TRIPLET_SCHEMA, build_triplets, semi_hard_negatives


def _tracks() -> pd.DataFrame:
    counts = {"big": 30, "mid": 8, "small": 2}
    return pd.DataFrame([{"track_id": f"{s}{i}", "style": s} for s, n in counts.items() for i in range(n)])


def test_triplets_are_valid_and_balanced_per_style() -> None:
    tracks = _tracks()
    offsets = {t: [0.0, 10.0, 20.0] for t in tracks["track_id"] if t.startswith("big")}
    t = build_triplets(tracks, offsets, n_batches=20, tracks_per_style=6, triplets_per_batch=90, seed=1)
    assert list(t.columns) == TRIPLET_SCHEMA.names
    assert (t["anchor"] != t["positive"]).all()
    assert (t["anchor_style"] == t["positive_style"]).all()
    assert (t["anchor_style"] != t["negative_style"]).all()
    counts = t["anchor_style"].value_counts()
    assert counts["big"] == counts["mid"] == counts["small"] == 20 * 30  # balanced, not proportional
    assert set(t.loc[t["anchor"].str.startswith("big"), "anchor_offset"]) == {0.0, 10.0, 20.0}
    assert set(t.loc[t["anchor"].str.startswith("mid"), "anchor_offset"]) == {0.0}
    # one window per track per batch: the pool is embedded once
    for col in ("anchor", "positive", "negative"):
        per = t.groupby(["batch", col])[f"{col}_offset"].nunique()
        assert (per == 1).all()
    assert set(t["strategy"]) == {"random"} and set(t["seed"]) == {1}


def test_same_seed_same_dataset_other_seed_other_dataset() -> None:
    tracks = _tracks()
    a = build_triplets(tracks, {}, n_batches=5, seed=7)
    assert a.equals(build_triplets(tracks, {}, n_batches=5, seed=7))
    assert not a.equals(build_triplets(tracks, {}, n_batches=5, seed=8))


def test_needs_two_styles_and_a_pair() -> None:
    with pytest.raises(UserError):
        build_triplets(pd.DataFrame({"track_id": ["a", "b"], "style": ["x", "x"]}), {}, n_batches=1)
    with pytest.raises(UserError, match="strategy"):
        build_triplets(_tracks(), {}, n_batches=1, strategy="hardest")  # type: ignore[arg-type]


def test_semi_hard_miner_picks_negatives_beyond_the_positive_within_the_margin() -> None:
    styles = np.array(["A", "A", "B", "B", "B", "B"])
    d = np.full((6, 6), 1.0)
    # anchor 0, positive 1 at 0.3; negatives: 2 at 0.1 (hard), 3 at 0.4 (semi-hard), 4 at 0.45 (semi-hard),
    # 5 at 0.9 (easy, margin 0.2)
    d[0, 1], d[0, 2], d[0, 3], d[0, 4], d[0, 5] = 0.3, 0.1, 0.4, 0.45, 0.9
    rng = np.random.default_rng(0)
    picks = {int(semi_hard_negatives(d, styles, np.array([0]), np.array([1]), 0.2, rng)[0]) for _ in range(50)}
    assert picks == {3, 4}
    # no semi-hard one: the least hard of the violating negatives
    d[0, 3] = d[0, 4] = 0.95
    d[0, 2] = 0.25
    assert semi_hard_negatives(d, styles, np.array([0]), np.array([1]), 0.2, rng)[0] == 2


def test_batch_all_lists_every_pair_of_each_pool() -> None:
    tracks = _tracks()
    t = build_triplets(tracks, {}, n_batches=3, tracks_per_style=5, seed=0, strategy="batch-all")
    per_batch = t.groupby(["batch", "anchor_style"]).size().unstack()
    # 5 pool members: 20 ordered pairs; "small" has only 2 tracks: 2 pairs
    assert (per_batch["big"] == 20).all() and (per_batch["mid"] == 20).all() and (per_batch["small"] == 2).all()
    assert not t.duplicated(["batch", "anchor", "positive"]).any()
    assert (t["anchor"] != t["positive"]).all() and (t["anchor_style"] != t["negative_style"]).all()


def test_other_source_positives_cross_sources_and_pools_cover_small_sources() -> None:
    rows = [("x", "x-big", 20), ("x", "x-small", 2), ("y", "y-only", 6), ("z", "z-one", 5), ("z", "z-two", 5)]
    tracks = pd.DataFrame(
        [{"track_id": f"{src}{i}", "style": s, "source": src} for s, src, n in rows for i in range(n)]
    )
    source = dict(zip(tracks["track_id"], tracks["source"], strict=True))
    for strategy in ("batch-all", "random"):
        t = build_triplets(
            tracks, {}, n_batches=30, tracks_per_style=4, seed=3, strategy=strategy, positives="other-source"
        )
        a, p = t["anchor"].map(source), t["positive"].map(source)
        multi = t["anchor_style"] != "y"  # y has one source: same-source positives are all it has
        assert (a[multi] != p[multi]).all() and (a[~multi] == p[~multi]).all() and (~multi).any()
        # Round-robin over sources: the 2-track source of x is in every batch's pool, not 2 in 22 of the time.
        small = t[(t["anchor"].map(source) == "x-small") | (t["positive"].map(source) == "x-small")]
        assert small["batch"].nunique() == 30
    plain = build_triplets(tracks, {}, n_batches=30, tracks_per_style=4, seed=3, strategy="batch-all")
    assert (plain["anchor"].map(source) == plain["positive"].map(source)).any()
