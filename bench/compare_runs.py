"""Paired comparison of two training runs' leave-one-source-out numbers, holdout by holdout.

Reads each run's ``per_source.csv`` (the evaluate step's per-holdout table, under
``<data root>/training/runs/<run id>/artifacts/``) and, for the four headline metrics (catalogue and
cross-source p@10 and mAP@10), prints the mean of each run, the mean paired difference (candidate minus
reference) and its paired bootstrap 95% interval over the holdouts (pipelines.evaluation.bootstrap), and
how many holdouts went up, down or stayed. ``--per-holdout`` adds every holdout's difference.

Run: ``.venv/bin/python bench/compare_runs.py REFERENCE_RUN_DIR CANDIDATE_RUN_DIR [--label NAME]
[--per-holdout] [--append FILE]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.evaluation.bootstrap import paired_interval

KEYS = (("catalogue", "p@10"), ("catalogue", "map@10"), ("cross_source", "p@10"), ("cross_source", "map@10"))


def per_holdout(run_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(run_dir / "artifacts" / "per_source.csv")
    return table[table["model"] == "model"]


def compare(reference: Path, candidate: Path, label: str, holdouts: bool) -> str:
    ref, cand = per_holdout(reference), per_holdout(candidate)
    lines = [
        f"| {label}: metric | reference | candidate | paired diff [95% CI] | up / down / same |",
        "|---|---|---|---|---|",
    ]
    detail = []
    for view, metric in KEYS:
        a = cand[cand["view"] == view].set_index("fold")[metric]
        b = ref[ref["view"] == view].set_index("fold")[metric]
        folds = sorted(set(a.index) & set(b.index))
        iv = paired_interval(a[folds].to_numpy(), b[folds].to_numpy())
        down = iv.sources - iv.wins - iv.ties
        lines.append(
            f"| {view} {metric} | {b[folds].mean():.3f} | {a[folds].mean():.3f} | {iv.text()} "
            f"| {iv.wins} / {down} / {iv.ties} |"
        )
        if holdouts:
            detail += [f"| {f} | {view} {metric} | {b[f]:.3f} | {a[f]:.3f} | {a[f] - b[f]:+.3f} |" for f in folds]
    text = "\n".join(lines) + "\n"
    if detail:
        head = "| holdout | metric | reference | candidate | diff |\n|---|---|---|---|---|\n"
        text += "\n" + head + "\n".join(detail) + "\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--label", default="candidate")
    ap.add_argument("--per-holdout", action="store_true")
    ap.add_argument("--append", type=Path, default=None)
    args = ap.parse_args()
    text = compare(args.reference, args.candidate, args.label, args.per_holdout)
    print(text)
    if args.append:
        with args.append.open("a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
