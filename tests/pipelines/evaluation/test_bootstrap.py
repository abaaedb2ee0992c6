"""Paired bootstrap intervals over sources: exact on degenerate inputs, honest about one lucky source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.bootstrap import interval_metrics, mean_interval, paired_interval, paired_table


def test_identical_numbers_give_a_zero_interval_and_a_constant_lead_its_own_value() -> None:
    b = np.array([0.2, 0.5, 0.1, 0.7, 0.3])
    tie = paired_interval(b, b)
    assert (tie.diff, tie.lo, tie.hi, tie.wins, tie.ties, tie.sources) == (0.0, 0.0, 0.0, 0, 5, 5)
    lead = paired_interval(b + 0.1, b)
    assert lead.lo == pytest.approx(0.1) and lead.hi == pytest.approx(0.1) and lead.wins == 5


def test_a_mean_lead_carried_by_one_source_is_not_significant() -> None:
    # +1 on one source of ten, 0 elsewhere: a mean lead of 0.1, yet a draw without that source is common.
    a = np.array([1.0] + [0.0] * 9)
    iv = paired_interval(a, np.zeros(10))
    assert iv.diff == pytest.approx(0.1) and iv.lo == 0.0 and iv.hi > 0.1 and iv.wins == 1
    # Consistent small leads on every source are: the whole interval is above zero.
    rng = np.random.default_rng(1)
    b = rng.uniform(0, 1, 16)
    assert paired_interval(b + rng.uniform(0.02, 0.06, 16), b).lo > 0.02


def test_pairing_removes_the_spread_between_sources() -> None:
    # Sources differ a lot (0.05 .. 0.95), the model is always 0.03 above: unpaired intervals overlap, paired do not.
    b = np.linspace(0.05, 0.95, 12)
    a = b + 0.03
    lo_a, _ = mean_interval(a)
    _, hi_b = mean_interval(b)
    assert lo_a < hi_b  # the two means' intervals overlap
    assert paired_interval(a, b).lo > 0


def test_seeded_and_checked() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 8), rng.uniform(0, 1, 8)
    assert paired_interval(a, b, seed=3) == paired_interval(a, b, seed=3)
    assert paired_interval(a, b, seed=3).lo != paired_interval(a, b, seed=4).lo
    with pytest.raises(ValueError, match="equal-length"):
        paired_interval(a, b[:5])


def test_paired_table_pairs_by_fold_and_names_its_metrics() -> None:
    per_fold = pd.DataFrame(
        {
            "model": ["model"] * 3 + ["meanstd"] * 3,
            "view": ["cross_source"] * 6,
            "fold": ["s1", "s2", "s3", "s3", "s2", "s1"],  # a different order: pairing is by fold
            "map@10": [0.5, 0.4, 0.3, 0.2, 0.3, 0.4],
        }
    )
    t = paired_table(per_fold, "model", ["meanstd", "raw"], [("cross_source", "map@10")])
    assert len(t) == 1 and t.iloc[0]["against"] == "meanstd"  # raw is not in the table: no row
    assert t.iloc[0]["lo"] == pytest.approx(0.1) and t.iloc[0]["wins"] == 3
    keys = interval_metrics(t)
    assert keys["paired/model-meanstd/cross_source/map@10/lo"] == pytest.approx(0.1)
