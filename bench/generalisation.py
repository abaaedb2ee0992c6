"""Generalisation candidates leave-one-source-out, each paired against mean+std with 95% bootstrap intervals.

The method's shape is kept (a feed-forward branch over the first N frames' MFCCs, trained on style
triplets, cosine at the end). The candidates start from a training run's per-source branches (each
trained without the source it embeds; ``musicrec train`` keeps them under ``training/runs/<run>``), so
most need no training:

- ``champion``: the stored output, learned part and mean+std statistics at the recipe's fixed weight;
- ``learned``: the learned part alone;
- ``weight-chosen``: the statistics' weight picked for each source on the *other* sources' held-out
  results (grid 0, 0.1, ..., 1; criterion: mean of catalogue p@10 and cross-source mAP@10), never on the
  source it is applied to;
- ``meanstd-z`` / ``champion-z``: the statistics standardised per coefficient with means and deviations
  fitted on the training sources only (per fold), alone and appended at the fixed weight;
- ``ensemble`` (with ``--members``): the learned parts of branches trained with other seeds (the same
  recipe, leave-one-source-out, by ``compare_loso.py --save``) averaged with the run's, then the
  statistics appended.

Run: ``nice -n 5 .venv/bin/python bench/generalisation.py --data-root DATA [--run RUN_ID]
[--members SAVED.npz ...]``. Results: stdout, appended to bench/results/generalisation.md (machine and date), and one
MLflow run per candidate (``generalise:<name>``, tag ``comparison``) in DATA's tracking store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from pipelines.evaluation.bootstrap import interval_metrics, paired_table
from pipelines.evaluation.model_eval import KEYS, _heldout_branches
from pipelines.model.embedder import l2_normalise
from pipelines.settings import PathSettings, Settings
from pipelines.training.evaluate import baseline_embeddings, evaluate_models, fold_summary, meanstd_vectors
from pipelines.training.labelled import LabelledFeatures, load_labelled, run_dir

RESULTS = Path(__file__).resolve().parent / "results" / "generalisation.md"
GRID = np.round(np.linspace(0.0, 1.0, 11), 2)


def combine(learned: np.ndarray, stats: np.ndarray, w: float) -> np.ndarray:
    """Unit vectors whose cosine is ``(1 - w) cos(learned) + w cos(stats)`` (both parts unit length)."""
    return l2_normalise(np.concatenate([np.sqrt(1 - w) * learned, np.sqrt(w) * stats], axis=1))


def standardised_stats(raw_stats: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Mean+std statistics z-scored per coefficient with the training rows' means and deviations, unit length."""
    mu = raw_stats[train_rows].mean(0)
    sd = raw_stats[train_rows].std(0) + 1e-6
    return l2_normalise((raw_stats - mu) / sd)


def _score(per_fold_emb: dict[str, np.ndarray], cat: LabelledFeatures, folds: np.ndarray) -> pd.DataFrame:
    sources = list(folds)
    pq = evaluate_models({"m": per_fold_emb}, cat.matrix, cat.track_ids, list(cat.tracks["style"]), folds, sources)
    return fold_summary(pq[pq["view"] != "unseen"])


def choose_weights(learned: dict[str, np.ndarray], stats: np.ndarray, cat: LabelledFeatures, folds: np.ndarray):
    """Per source: the weight that does best on the other sources' held-out numbers (nested, no peeking)."""
    scores = {}
    for w in GRID:
        pf = _score({f: combine(e, stats, float(w)) for f, e in learned.items()}, cat, folds)
        wide = pf.pivot_table(index="fold", columns="view", values=["p@10", "map@10"])
        scores[float(w)] = (wide[("p@10", "catalogue")] + wide[("map@10", "cross_source")]) / 2
    table = pd.DataFrame(scores)  # rows: source, columns: weight
    chosen = {}
    for f in learned:
        others = table.drop(index=f).mean(axis=0)
        chosen[f] = float(others.idxmax())
    return chosen, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--run", default=None, help="Training run with per-source branches (default: the champion's).")
    ap.add_argument(
        "--members", type=Path, nargs="*", default=[], help="compare_loso --save files of other seeds (ensemble)."
    )
    ap.add_argument("--draws", type=int, default=2000)
    args = ap.parse_args()
    from pipelines.registry import CHAMPION, Registry

    settings = Settings(paths=PathSettings(data_root=args.data_root))
    registry = Registry(settings)
    run_id = args.run or registry.version(registry.alias(CHAMPION)).run_id
    cat = load_labelled(settings)
    folds = np.asarray(cat.groups("source"), dtype=object)
    names = sorted(set(folds))
    served = _heldout_branches(settings, cat, run_id, dict(zip(cat.track_ids, folds, strict=True)))
    if served is None:
        raise SystemExit(f"run {run_id} has no per-source branches for this catalogue")
    encoder = json.loads((run_dir(settings, run_id) / "encoder.json").read_text())
    dim, w0 = int(encoder["dim"]) * int(encoder.get("members", 1)), float(encoder["stats_weight"])
    learned = {f: l2_normalise(e[:, :dim]) for f, e in served.items()}
    stats = baseline_embeddings("meanstd", cat.matrix, cat.n_mfcc)
    raw_stats = meanstd_vectors(cat.matrix, cat.n_mfcc)
    z = {f: standardised_stats(raw_stats, folds != f) for f in names}

    candidates: dict[str, tuple[str, dict[str, np.ndarray]]] = {
        "champion": (f"the run's output: learned part + statistics at {w0}", served),
        "learned": ("the learned part alone", learned),
        "meanstd-z": ("statistics standardised on the training sources only, alone", z),
        "champion-z": (
            f"learned part + standardised statistics at {w0}",
            {f: combine(learned[f], z[f], w0) for f in names},
        ),
    }
    chosen, weight_table = choose_weights(learned, stats, cat, folds)
    candidates["weight-chosen"] = (
        "statistics weight chosen per source on the other sources' held-out results "
        f"(chosen: {', '.join(f'{w:.1f}' for w in sorted(set(chosen.values())))})",
        {f: combine(learned[f], stats, chosen[f]) for f in names},
    )
    if args.members:
        members = [learned, *load_members(args.members, cat, dim)]
        mean_learned = {f: l2_normalise(sum(m[f] for m in members)) for f in names}
        candidates["ensemble-learned"] = (
            f"learned parts of {len(members)} seeds averaged (the run's and {', '.join(p.stem for p in args.members)})",
            mean_learned,
        )
        candidates["ensemble"] = (
            f"that ensemble + statistics at {w0}",
            {f: combine(mean_learned[f], stats, w0) for f in names},
        )
    embedders = {n: e for n, (_, e) in candidates.items()}
    for b in ("raw", "meanstd", "random"):
        embedders[b] = dict.fromkeys(names, baseline_embeddings(b, cat.matrix, cat.n_mfcc))
    pq = evaluate_models(embedders, cat.matrix, cat.track_ids, list(cat.tracks["style"]), folds, list(folds))
    per_fold = fold_summary(pq)
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    lines = [
        f"## {stamp} UTC, {cpu_model()}, {os.cpu_count()} cores (shared with other work)",
        "",
        f"{len(cat.track_ids)} tracks, {len(names)} sources, training run {run_id}; "
        f"each cell: mean over sources, then the paired difference with mean+std [95% bootstrap interval, "
        f"{args.draws} draws over sources]; `*`: lower bound above zero."
        "",
        "| candidate | catalogue p@10 | catalogue mAP@10 | cross-source p@10 | cross-source mAP@10 |",
        "|---|---|---|---|---|",
    ]
    comparison = f"generalisation {stamp}"
    for name in embedders:
        cells = []
        iv = paired_table(per_fold, name, ["meanstd"], KEYS, args.draws) if name != "meanstd" else None
        for view, metric in KEYS:
            mean = per_fold[(per_fold["model"] == name) & (per_fold["view"] == view)][metric].mean()
            cell = f"{mean:.3f}"
            if iv is not None:
                r = iv[(iv["view"] == view) & (iv["metric"] == metric)].iloc[0]
                star = " *" if r["lo"] > 0 else ""
                cell += f" ({r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]{star})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if name in candidates:
            metrics = {
                f"model/{view}/{metric}": per_fold[(per_fold["model"] == name) & (per_fold["view"] == view)][
                    metric
                ].mean()
                for view, metric in KEYS
            }
            metrics |= interval_metrics(iv, "model") if iv is not None else {}
            rid = registry.start_run(
                {"candidate": name, "description": candidates[name][0], "run": run_id},
                {"comparison": comparison},
                name=f"generalise:{name}",
            )
            registry.log_metrics(rid, metrics)
            registry.end_run(rid)
    notes = [f"- `{n}`: {d}" for n, (d, _) in candidates.items()]
    text = "\n".join([*lines, "", *notes, ""])
    text += "\nStatistics weight per source (mean of catalogue p@10 and cross-source mAP@10, learned + statistics):\n\n"
    text += "| source | " + " | ".join(f"{w:.1f}" for w in weight_table.columns) + " | chosen |\n"
    text += "|---" * (len(weight_table.columns) + 2) + "|\n"
    for f, row in weight_table.iterrows():
        text += f"| {f} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {chosen[f]:.1f} |\n"
    text += "\n"
    print(text, flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(text)


def load_members(paths: list[Path], cat: LabelledFeatures, dim: int) -> list[dict[str, np.ndarray]]:
    """Learned parts of other seeds' leave-one-source-out branches saved by ``compare_loso.py --save``.

    Their keys are compare_loso's fold numbers; the same split (a fold per source, ``make_split``) maps
    them back to sources.
    """
    from pipelines.training.split import make_split

    split = make_split(cat.tracks, n_folds=0, group_by="source").merge(
        cat.tracks[["track_id", "source"]], on="track_id"
    )
    source_of = split.groupby("fold")["source"].first()
    members = []
    for path in paths:
        saved = np.load(path)
        members.append({str(source_of[int(f)]): l2_normalise(saved[f][:, :dim]) for f in saved.files})
    return members


if __name__ == "__main__":
    main()
