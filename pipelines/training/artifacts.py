"""What a reviewer looks at in the registry: plots, tables and a decision summary, written to a folder.

Every function writes plain files (PNG, CSV, Markdown) into ``out`` and returns the path, so the run can
log the folder as MLflow artifacts and a test can open the files. matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.training.evaluate import format_table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_curves(histories: Mapping[Any, pd.DataFrame], out: Path, best_epoch: int | None = None) -> Path:
    """Training loss and validation mAP@10 per epoch, one line per fold (the evaluation fold in bold)."""
    plt = _pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (fold, h) in enumerate(sorted(histories.items())):
        width = 2.2 if i == 0 else 0.9
        ax_loss.plot(h["epoch"], h["loss"], lw=width, label=f"fold {fold}")
        if "val_map@10" in h:
            ax_val.plot(h["epoch"], h["val_map@10"], lw=width, label=f"fold {fold}")
    if best_epoch:
        ax_val.axvline(best_epoch, color="grey", ls="--", lw=0.8)
    ax_loss.set(title="triplet loss (train)", xlabel="epoch")
    ax_val.set(title="validation mAP@10", xlabel="epoch")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion(per_query: pd.DataFrame, model: str, view: str, out: Path) -> Path:
    """Top-1 style confusion (rows: query style, columns: style of the nearest candidate) as CSV and PNG."""
    t = per_query[(per_query["model"] == model) & (per_query["view"] == view)]
    styles = sorted(set(t["style"]) | set(t["top1_style"]))
    matrix = pd.crosstab(t["style"], t["top1_style"]).reindex(index=styles, columns=styles, fill_value=0)
    matrix.to_csv(out / f"confusion_{view}.csv")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(styles), 0.8 + 0.6 * len(styles)))
    ax.imshow(matrix.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(styles)), styles, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(styles)), styles, fontsize=8)
    for (i, j), v in np.ndenumerate(matrix.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set(xlabel="style of the nearest track", ylabel="query style", title=f"top-1 style, {view} view")
    fig.tight_layout()
    path = out / f"confusion_{view}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def projection(embeddings: np.ndarray, styles: list[str], out: Path, title: str) -> Path:
    """The evaluation embeddings on their first two principal components, coloured by style."""
    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if len(vt) >= 2 else np.c_[x[:, :1], np.zeros(len(x))]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for s in sorted(set(styles)):
        m = np.asarray(styles) == s
        ax.scatter(xy[m, 0], xy[m, 1], s=16, label=s)
    ax.legend(fontsize=7)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    path = out / "projection.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_queries(
    embeddings: np.ndarray, track_ids: list[str], styles: list[str], queries: list[str], out: Path, k: int = 5
) -> Path:
    """Markdown: for a few evaluation tracks, their k nearest catalogue tracks with style and distance."""
    ids = np.asarray(track_ids)
    pos = {t: i for i, t in enumerate(track_ids)}
    lines = ["# Example queries (catalogue-wide, cosine distance)", ""]
    for q in queries:
        i = pos[q]
        d = 1.0 - embeddings @ embeddings[i]
        d[i] = np.inf
        order = np.argsort(d, kind="stable")[:k]
        lines += [f"## {q} ({styles[i]})", "", "| # | track | style | distance |", "|---|---|---|---|"]
        for r, j in enumerate(order, 1):
            mark = "" if styles[j] == styles[i] else " ✗"
            lines.append(f"| {r} | {ids[j]} | {styles[j]}{mark} | {d[j]:.3f} |")
        lines.append("")
    path = out / "example_queries.md"
    path.write_text("\n".join(lines))
    return path


def style_csv(table: pd.DataFrame, out: Path) -> Path:
    path = out / "per_style.csv"
    table.to_csv(path, index=False, float_format="%.4f")
    return path


def decision_summary(
    summary: pd.DataFrame,
    decision: Mapping[str, str],
    per_style_md: str,
    out: Path,
    header: Mapping[str, str],
) -> Path:
    """The reviewer's page: what was trained, the evaluation table, per-style numbers, the gate's decision."""
    lines = ["# musicrec-triplet: training run summary", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", "## Evaluation (mean ± sd over folds)", "", format_table(summary), ""]
    lines += ["## Per style (model)", "", per_style_md, ""]
    lines += ["## Gate", ""] + [f"- **{k}**: {v}" for k, v in decision.items()]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
