"""Evaluation: same-style retrieval of the evaluation tracks, for the model and its baselines, per fold.

The views (catalogue, unseen, cross_source) and baselines are described in docs/training.md
("Evaluation views and baselines").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipelines.model.embedder import l2_normalise
from pipelines.model.ref import EVALUATED_BASELINES, MEANSTD, RANDOM, RAW
from pipelines.training.config import SEED_PREFIX
from pipelines.training.metrics import METRICS, retrieval_table

Embed = Callable[[np.ndarray], np.ndarray]


def meanstd_vectors(matrix: np.ndarray, n_mfcc: int) -> np.ndarray:
    """Per-coefficient mean and standard deviation over the frames: ``(n, 2 * n_mfcc)``."""
    frames = np.asarray(matrix, np.float32).reshape(len(matrix), -1, n_mfcc)
    return np.concatenate([frames.mean(1), frames.std(1)], axis=1)


def baseline_embeddings(name: str, matrix: np.ndarray, n_mfcc: int, seed: int = 0) -> np.ndarray:
    """Embeddings of baseline ``name`` for the rows of ``matrix`` (front-end vectors)."""
    if name == RAW:
        return l2_normalise(matrix)
    if name == MEANSTD:
        return l2_normalise(meanstd_vectors(matrix, n_mfcc))
    if name == RANDOM:
        return l2_normalise(np.random.default_rng(seed).standard_normal((len(matrix), 64)))
    raise ValueError(f"unknown baseline {name!r}")


def evaluate_fold(
    embeddings: np.ndarray,
    track_ids: list[str],
    styles: list[str],
    held_out: np.ndarray,
    sources: list[str] | None = None,
) -> pd.DataFrame:
    """Per-query metrics of the views for one fold; ``held_out`` is a boolean mask of the fold's tracks."""
    ids = np.asarray(track_ids)
    sty = np.asarray(styles)
    q = np.flatnonzero(held_out)
    tables = []
    for view, cand in (("catalogue", np.arange(len(ids))), ("unseen", q)):
        t = retrieval_table(
            embeddings[q], list(ids[q]), list(sty[q]), embeddings[cand], list(ids[cand]), list(sty[cand])
        )
        t.insert(0, "view", view)
        tables.append(t)
    if sources is not None:
        src = np.asarray(sources)
        for source in sorted(set(src[q])):
            mine = q[src[q] == source]
            cand = np.flatnonzero(src != source)
            t = retrieval_table(
                embeddings[mine], list(ids[mine]), list(sty[mine]), embeddings[cand], list(ids[cand]), list(sty[cand])
            )
            t.insert(0, "view", "cross_source")
            tables.append(t)
    return pd.concat(tables, ignore_index=True)


def evaluate_models(
    embedders: Mapping[str, Mapping[Any, Embed | np.ndarray]],
    matrix: np.ndarray,
    track_ids: list[str],
    styles: list[str],
    folds: np.ndarray,
    sources: list[str] | None = None,
) -> pd.DataFrame:
    """Per-query metrics of every model on the folds it has: columns model, fold, view, track_id, style, ...

    ``embedders[model][fold]`` is either an embedding function (front-end vectors -> unit vectors; a model
    trained without that fold) or the embeddings of all rows already computed.
    """
    out = []
    for model, per_fold in embedders.items():
        for fold, emb in per_fold.items():
            vectors = emb if isinstance(emb, np.ndarray) else emb(matrix)
            t = evaluate_fold(vectors, track_ids, styles, folds == fold, sources)
            t.insert(0, "fold", fold)
            t.insert(0, "model", model)
            out.append(t)
    return pd.concat(out, ignore_index=True)


def fold_summary(per_query: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per (model, view, fold): every query of a fold weighs the same."""
    return per_query.groupby(["model", "view", "fold"])[list(METRICS)].mean().reset_index()


def summary(per_query: pd.DataFrame) -> pd.DataFrame:
    """Per (model, view): mean over folds of each metric, its standard deviation, and the fold count."""
    folds = fold_summary(per_query)
    g = folds.groupby(["model", "view"])
    mean = g[list(METRICS)].mean()
    std = g[list(METRICS)].std(ddof=0).add_suffix("_sd")
    out = pd.concat([mean, std], axis=1)
    out["folds"] = g.size()
    return out.reset_index()


def style_table(per_query: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per style and view, the mean metrics of ``model`` over every query of every fold."""
    t = per_query[per_query["model"] == model]
    out = t.groupby(["view", "style"])[list(METRICS)].mean()
    out.insert(0, "queries", t.groupby(["view", "style"]).size())
    return out.reset_index()


COLUMNS = (
    ("catalogue", "p@10"),
    ("catalogue", "map@10"),
    ("cross_source", "p@10"),
    ("cross_source", "map@10"),
)


def format_table(table: pd.DataFrame, models: list[str] | None = None, unseen_is_sanity: bool = True) -> str:
    """The evaluation table as markdown: a row per model, p@10 / mAP@10 of the views, ± the spread.

    ``holdouts`` is the number of folds the row's means are over (the most any of its views has; a view
    with fewer says so in its cell). The ``unseen`` view is left out of the table: with a source per fold it
    is close to 1 for every model, random included (a source is mostly one style), so it follows as a
    labelled sanity check; with track folds (``unseen_is_sanity=False``) it follows as a plain line.
    """
    present = list(dict.fromkeys(table["model"]))
    seeds = sorted((m for m in present if is_seed(m)), key=lambda m: int(m.removeprefix(SEED_PREFIX)))
    present = [m for m in present if not is_seed(m)]
    order = ["model", "champion", *EVALUATED_BASELINES]
    models = models or [m for m in order if m in present] + [m for m in present if m not in order]
    head = "| model | " + " | ".join(f"{v.replace('_', '-')} {m.replace('map', 'mAP')}" for v, m in COLUMNS)
    lines = [head + " | holdouts |", "|---" * (len(COLUMNS) + 2) + "|"]
    for m in models:
        mine = table[table["model"] == m]
        shown = mine[mine["view"].isin({v for v, _ in COLUMNS})]
        folds = int(shown["folds"].max()) if len(shown) else 0
        cells = []
        for view, metric in COLUMNS:
            row = mine[mine["view"] == view]
            if not len(row):
                cells.append("-")
                continue
            mean, sd = float(row[metric].iloc[0]), float(row[f"{metric}_sd"].iloc[0])
            n = int(row["folds"].iloc[0])
            cell = f"{mean:.3f} ± {sd:.3f}" if n > 1 else f"{mean:.3f}"
            cells.append(cell if n == folds else f"{cell} (over {n})")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {folds} |")
    unseen = table[table["view"] == "unseen"].set_index("model")["map@10"]
    if len(unseen):
        values = ", ".join(f"{m} {float(unseen[m]):.3f}" for m in models if m in unseen.index)
        label = "Sanity check, not a quality measure: " if unseen_is_sanity else ""
        lines += ["", f"{label}`unseen` mAP@10 (candidates: the holdout's own tracks) {values}."]
    if seeds:
        lines += ["", seed_spread(table, seeds)]
    return "\n".join(lines)


def is_seed(model: str) -> bool:
    """Is ``model`` one seed's branches alone (a row of the spread, not a model of its own)?"""
    return model.startswith(SEED_PREFIX) and model.removeprefix(SEED_PREFIX).isdigit()


def seed_spread(table: pd.DataFrame, seeds: list[str]) -> str:
    """One line: the gate's metrics of each seed's branches alone, their range and standard deviation."""
    parts = []
    for view, metric in (("catalogue", "p@10"), ("cross_source", "map@10")):
        rows = table[(table["view"] == view) & table["model"].isin(seeds)].set_index("model")[metric]
        values = [float(rows[s]) for s in seeds if s in rows.index]
        if values:
            each = " / ".join(f"{v:.3f}" for v in values)
            label = f"{view.replace('_', '-')} {metric.replace('map', 'mAP')}"
            parts.append(f"{label} {each} (range {max(values) - min(values):.3f}, sd {np.std(values):.3f})")
    return (
        f"Seed spread: `model` is the ensemble of {len(seeds)} seeds (cosines averaged); each seed alone: "
        + "; ".join(parts)
        + "."
    )
