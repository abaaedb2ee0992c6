"""The evaluation table: ``holdouts`` counts the folds its means are over; ``unseen`` is only a sanity line."""

from __future__ import annotations

import numpy as np

from pipelines.training.evaluate import baseline_embeddings, evaluate_models, format_table, summary


def test_a_single_track_source_still_counts_as_a_holdout_and_unseen_is_labelled() -> None:
    rng = np.random.default_rng(0)
    sources = ["a"] * 4 + ["b"] * 4 + ["c"]  # source c has a single track: its unseen view has no candidate
    styles = ["x", "x", "y", "y", "x", "y", "y", "x", "y"]
    ids = [f"t{i}" for i in range(len(sources))]
    x = rng.standard_normal((len(ids), 40)).astype(np.float32)
    folds = np.array(sources)
    emb = {m: dict.fromkeys("abc", baseline_embeddings(m, x, 20)) for m in ("raw", "meanstd", "random")}
    table = summary(evaluate_models(emb, x, ids, styles, folds, sources))
    assert int(table[(table["model"] == "raw") & (table["view"] == "unseen")]["folds"].iloc[0]) == 2
    text = format_table(table)
    head, _, *rows = text.splitlines()
    assert "unseen" not in head and head.endswith("| holdouts |")
    for row in rows[: len(emb)]:
        assert row.endswith("| 3 |"), row  # the three sources the catalogue means are over
    assert "Sanity check, not a quality measure: `unseen`" in text
