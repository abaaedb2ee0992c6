"""Same-style retrieval metrics: for each query, rank candidates by cosine distance and score the ranking.

Pure numpy, so the same code scores a trained model, the baselines and any split of queries and candidates
(precision@k, AP@10, R-precision). Design: docs/training.md#retrieval-metrics
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KS = (1, 5, 10)
METRICS = ("p@1", "p@5", "p@10", "map@10", "r_prec")


def retrieval_table(
    queries: np.ndarray,
    query_ids: list[str],
    query_styles: list[str],
    candidates: np.ndarray,
    candidate_ids: list[str],
    candidate_styles: list[str],
) -> pd.DataFrame:
    """One row per query: track_id, style, n_relevant, top1_style and the :data:`METRICS`.

    ``queries`` and ``candidates`` are L2-normalised embeddings; a candidate with the query's own id is
    left out. Queries with no relevant candidate are dropped (nothing to find).
    """
    q_styles = np.asarray(query_styles)
    c_styles = np.asarray(candidate_styles)
    c_ids = np.asarray(candidate_ids)
    sims = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    self_mask = np.asarray(query_ids)[:, None] == c_ids[None, :]
    sims[self_mask] = -np.inf
    n_cand = len(c_ids) - self_mask.sum(1)
    # Stable sort on the negated similarity: ties broken by candidate order, deterministically.
    order = np.argsort(-sims, axis=1, kind="stable")
    rel = (c_styles[order] == q_styles[:, None]) & ~self_mask[np.arange(len(q_styles))[:, None], order]
    n_rel = rel.sum(1)
    rows = []
    for i, qid in enumerate(query_ids):
        r = int(n_rel[i])
        if r == 0:
            continue
        hits = rel[i, : n_cand[i]]
        row: dict[str, object] = {"track_id": qid, "style": q_styles[i], "n_relevant": r}
        for k in KS:
            row[f"p@{k}"] = hits[:k].mean()
        top = hits[:10]
        prec_at = np.cumsum(top) / np.arange(1, len(top) + 1)
        row["map@10"] = float((prec_at * top).sum() / min(r, 10))
        row["r_prec"] = float(hits[:r].mean())
        row["top1_style"] = c_styles[order[i, 0]]
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """Overall means (every query weighs the same) of the metric columns."""
    return {m: float(table[m].mean()) for m in METRICS} if len(table) else dict.fromkeys(METRICS, np.nan)


def per_style(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per style, with the number of queries."""
    out = table.groupby("style")[list(METRICS)].mean()
    out.insert(0, "queries", table.groupby("style").size())
    return out
