"""Paired bootstrap over sources: how sure is "model A beats model B" when sources, not tracks, vary?

Leave-one-source-out gives one number per source and model. The sources are the sampling unit (tracks of
one source share a recording chain, so they are not independent), so the interval resamples whole
sources with replacement and recomputes the mean difference A - B over the resampled sources, each draw
using the same sources for A and B (paired). The 95% interval is the 2.5th and 97.5th percentile of the
draws (percentile bootstrap); seeded, so the same table gives the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_DRAWS = 2000
DEFAULT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``a - b`` over the sources, and its paired bootstrap interval."""

    diff: float
    lo: float
    hi: float
    sources: int
    wins: int  # sources where a > b
    ties: int

    def text(self) -> str:
        return f"{self.diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


def _indices(n: int, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def paired_interval(
    a: np.ndarray, b: np.ndarray, draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED, level: float = LEVEL
) -> Interval:
    """Paired bootstrap interval of ``mean(a - b)``; ``a[i]`` and ``b[i]`` are the same source's numbers."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equal-length, non-empty 1-d arrays, got {a.shape} and {b.shape}")
    d = a - b
    means = d[_indices(len(d), draws, seed)].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(d.mean()), float(lo), float(hi), len(d), int((d > 0).sum()), int((d == 0).sum()))


def mean_interval(
    a: np.ndarray, draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED, level: float = LEVEL
) -> tuple[float, float]:
    """Bootstrap interval of the mean of one model's per-source numbers."""
    a = np.asarray(a, float)
    means = a[_indices(len(a), draws, seed)].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def paired_table(
    per_fold: pd.DataFrame,
    model: str,
    against: list[str],
    keys: list[tuple[str, str]],
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Intervals of ``model - other`` for every ``other`` in ``against`` and (view, metric) in ``keys``.

    ``per_fold`` is :func:`pipelines.training.evaluate.fold_summary`'s table (model, view, fold, metrics).
    Only folds both models have are paired. Columns: against, view, metric, diff, lo, hi, sources, wins, ties.
    """
    rows = []
    for view, metric in keys:
        wide = per_fold[per_fold["view"] == view].pivot(index="fold", columns="model", values=metric)
        for other in against:
            if model not in wide or other not in wide:
                continue
            pair = wide[[model, other]].dropna()
            if not len(pair):
                continue
            iv = paired_interval(pair[model].to_numpy(), pair[other].to_numpy(), draws, seed)
            rows.append({"against": other, "view": view, "metric": metric, **iv.__dict__})
    return pd.DataFrame(rows, columns=["against", "view", "metric", "diff", "lo", "hi", "sources", "wins", "ties"])


def interval_metrics(table: pd.DataFrame, model: str = "model") -> dict[str, float]:
    """A :func:`paired_table` as MLflow metric keys ``paired/<model>-<other>/<view>/<metric>/{diff,lo,hi}``."""
    out: dict[str, float] = {}
    for _, r in table.iterrows():
        base = f"paired/{model}-{r['against']}/{r['view']}/{r['metric']}"
        out |= {f"{base}/diff": r["diff"], f"{base}/lo": r["lo"], f"{base}/hi": r["hi"]}
    return out
