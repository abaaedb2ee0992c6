"""Compare training recipes leave-one-source-out: does the branch learn the style or the recording?

For each recipe and each source in turn, a branch is trained without that source (the real
``train_branch`` on the real triplet builder), the whole catalogue is embedded with it, and the held-out
source's tracks are scored (:mod:`pipelines.training.evaluate`): ``catalogue`` (every other track is a
candidate) and ``cross_source`` (only other sources' tracks are). The baselines (raw MFCC, MFCC
mean+std, random) are scored on the same folds. Numbers are the mean over sources (every source weighs
the same) with the standard deviation over sources as the spread.

Run: ``.venv/bin/python bench/compare_loso.py --data-root DATA [--only NAME ...] [--workers 2] [--save DIR]``;
``--analyse NAME ... --save DIR`` appends the statistics to saved embeddings (as the default recipe does
after training) and compares them with mean+std source by source, without training. DATA
needs the extended demo corpus's feature store (``MUSICREC_DEMO_EXTENDED=true musicrec features build``).
Results go to stdout, are appended to bench/results/loso_comparison.md, and each recipe is an MLflow run
(``loso:<recipe>``, tag ``comparison``) in DATA's tracking store.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.model.encoder import EncoderConfig
from pipelines.model.ref import EVALUATED_BASELINES
from pipelines.settings import PathSettings, Settings
from pipelines.training.config import TrainingJob
from pipelines.training.evaluate import baseline_embeddings, evaluate_models, fold_summary, summary
from pipelines.training.labelled import LabelledFeatures, load_labelled, recipe_params, window_bank
from pipelines.training.split import make_split, validation_carve
from pipelines.training.steps.evaluate import table_metrics
from pipelines.training.train import TrainConfig, embed, train_branch
from pipelines.training.triplets import triplets_for

RESULTS = Path(__file__).resolve().parent / "results" / "loso_comparison.md"
BASE = TrainConfig(positives="any", encoder=EncoderConfig(stats_weight=0.0))  # the first track-disjoint recipe
CROSS = BASE.model_copy(update={"positives": "other-source"})
SMALL = EncoderConfig(frame_layers=(32,), head_layers=(32,), dim=16, dropout=0.3, stats_weight=0.0)

RECIPES: dict[str, tuple[str, TrainConfig]] = {
    "default": ("the track-disjoint winner", BASE),
    "current": ("today's TrainConfig() defaults", TrainConfig()),
    "cross-pos": ("positives from another source of the style, pools balanced over sources", CROSS),
    "cross-pos+aug": ("+ channel augmentation 0.5 sd", CROSS.model_copy(update={"augment_channel": 0.5})),
    "cross-pos+aug1": ("+ channel augmentation 1.0 sd", CROSS.model_copy(update={"augment_channel": 1.0})),
    "cross-pos+valsrc": ("+ early stopping on held-out sources", CROSS.model_copy(update={"val_by": "source"})),
    "cross-pos+aug+small": (
        "+ augmentation 0.5, per-frame 32, head 32, dim 16, dropout 0.3, weight decay 1e-2",
        CROSS.model_copy(update={"augment_channel": 0.5, "encoder": SMALL, "weight_decay": 1e-2}),
    ),
    "cross-pos+aug+valsrc": (
        "+ augmentation 0.5 and early stopping on held-out sources",
        CROSS.model_copy(update={"augment_channel": 0.5, "val_by": "source"}),
    ),
    "cross-pos+small": (
        "per-frame 32, head 32, dim 16, dropout 0.3, weight decay 1e-2",
        CROSS.model_copy(update={"encoder": SMALL, "weight_decay": 1e-2}),
    ),
    "cross-pos+small+valsrc": (
        "small, early stopping on held-out sources",
        CROSS.model_copy(update={"encoder": SMALL, "weight_decay": 1e-2, "val_by": "source"}),
    ),
    "cross-pos+first-60s": (
        "windows only up to 60 s into the track",
        CROSS.model_copy(update={"window_offsets_s": (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)}),
    ),
    "cross-pos+lr3e-4": ("learning rate 3e-4", CROSS.model_copy(update={"lr": 3e-4})),
    "cross-pos+stats0.5": (
        "+ the fixed mean+std statistics appended to the output, half of the cosine",
        CROSS.model_copy(update={"encoder": EncoderConfig(stats_weight=0.5), "stats_in_training": True}),
    ),
    "cross-pos+stats0.7": (
        "+ the fixed mean+std statistics appended to the output, 0.7 of the cosine",
        CROSS.model_copy(update={"encoder": EncoderConfig(stats_weight=0.7), "stats_in_training": True}),
    ),
    "cross-pos+stats0.7-after": (
        "the learned part trained alone (cross-pos); the statistics appended to the output at 0.7 afterwards",
        CROSS.model_copy(update={"encoder": EncoderConfig(stats_weight=0.7)}),
    ),
    "cross-pos-seed1": (
        "cross-pos with another seed: the noise level of these numbers",
        CROSS.model_copy(update={"seed": 1}),
    ),
}

_STATE: dict[str, object] = {}


def _train_fold(args: tuple[str, int]) -> tuple[int, np.ndarray, float]:
    name, fold = args
    cfg: TrainConfig = RECIPES[name][1]
    split: pd.DataFrame = _STATE["split"]  # type: ignore[assignment]
    bank = _STATE["bank"]
    cat = _STATE["cat"]
    keep = {0.0, *cfg.window_offsets_s}
    offsets: dict[str, list[float]] = {}
    for t, o in sorted(bank.row):  # every (track, offset) the bank holds, offsets in order
        if o in keep:
            offsets.setdefault(t, []).append(o)
    start = time.perf_counter()
    side = split[split["fold"] != fold]
    fit, val = validation_carve(side, cfg.val_fraction, cfg.seed + fold, by=cfg.val_by)
    trip = triplets_for(fit, offsets, cfg, fold, str(fold))
    result = train_branch(cfg.model_copy(update={"seed": cfg.seed + fold}), bank, fit, val, trip)  # type: ignore[arg-type]
    return fold, embed(result.model, cat.matrix), time.perf_counter() - start  # type: ignore[attr-defined]


def _row(name: str, table: pd.DataFrame, seconds: float) -> str:
    cells = []
    for view, metric in [(v, m) for v in ("catalogue", "cross_source") for m in ("p@10", "map@10")]:
        r = table[(table["model"] == name) & (table["view"] == view)]
        cells.append(f"{float(r[metric].iloc[0]):.3f} ± {float(r[metric + '_sd'].iloc[0]):.3f}")
    return f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |"


def _log_run(settings: Settings, name: str, stamp: str, table: pd.DataFrame, base: pd.DataFrame, wins: int) -> None:
    """One MLflow run per recipe (tag ``comparison=<stamp>``): its recipe as parameters, its numbers and the
    baselines' as metrics, so the comparison can be reviewed beside the training runs."""
    from pipelines.registry import Registry

    registry = Registry(settings)
    params = recipe_params(RECIPES[name][1])
    run_id = registry.start_run(params, {"comparison": stamp, "recipe": RECIPES[name][0]}, name=f"loso:{name}")
    metrics = {"sources_beating_meanstd": float(wins)}
    metrics |= table_metrics(table.assign(model="model")) | table_metrics(base)
    registry.log_metrics(run_id, metrics)
    registry.end_run(run_id)


def analyse(cat: LabelledFeatures, folds: np.ndarray, names: list[str], saved: Path, weight: float) -> None:
    """Saved embeddings of ``names`` with the mean+std statistics appended at ``weight`` (as the default
    recipe does after training), paired against mean+std per source: mean difference ± standard error."""
    from pipelines.model.embedder import l2_normalise

    sources, styles = list(cat.tracks["source"].astype(str)), list(cat.tracks["style"])
    ms = baseline_embeddings("meanstd", cat.matrix, cat.n_mfcc)
    embedders: dict[str, dict[int, np.ndarray]] = {"meanstd": dict.fromkeys(sorted(set(folds)), ms)}
    for name in names:
        e = np.load(saved / f"{name}.npz")
        embedders[name] = {
            int(f): l2_normalise(np.concatenate([np.sqrt(1 - weight) * e[f], np.sqrt(weight) * ms], 1)) for f in e
        }
    per_query = evaluate_models(embedders, cat.matrix, cat.track_ids, styles, folds, sources)
    print(summary(per_query).round(3).to_string())
    per_fold = fold_summary(per_query)
    for view in ("catalogue", "cross_source"):
        for metric in ("p@10", "map@10"):
            table = per_fold[per_fold["view"] == view].pivot(index="fold", columns="model", values=metric)
            for name in names:
                d = table[name] - table["meanstd"]
                print(
                    f"{name} {view} {metric}: model - meanstd {d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f}"
                    f" (se), wins {int((d > 0).sum())}, ties {int((d == 0).sum())} of {len(d)}"
                )
    table = per_fold[per_fold["view"] == "cross_source"].pivot(index="fold", columns="model", values="map@10")
    print(table.round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--save", type=Path, default=None, help="Keep each recipe's per-fold embeddings here (.npz).")
    ap.add_argument("--analyse", nargs="*", default=None, help="Saved recipes (--save) to analyse, no training.")
    ap.add_argument("--weight", type=float, default=0.7, help="Statistics weight for --analyse.")
    args = ap.parse_args()
    settings = Settings(paths=PathSettings(data_root=args.data_root))
    cat = load_labelled(settings)
    tracks = cat.tracks
    split = make_split(tracks, n_folds=0, group_by="source").merge(tracks[["track_id", "source"]], on="track_id")
    folds_of = split.set_index("track_id").reindex(cat.track_ids)["fold"].to_numpy()
    if args.analyse:
        analyse(cat, folds_of, args.analyse, args.save, args.weight)
        return
    bank = window_bank(settings, cat, TrainingJob())
    _STATE.update(split=split, bank=bank, cat=cat)
    sources = list(tracks["source"].astype(str))
    styles = list(tracks["style"])
    base = {
        b: dict.fromkeys(sorted(set(folds_of)), baseline_embeddings(b, cat.matrix, cat.n_mfcc))
        for b in EVALUATED_BASELINES
    }
    per_query = evaluate_models(base, cat.matrix, cat.track_ids, styles, folds_of, sources)
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    lines = [
        f"## {stamp} UTC, {len(cat.track_ids)} tracks, {len(set(folds_of))} sources",
        "",
        "| recipe | catalogue p@10 | catalogue mAP@10 | cross-source p@10 | cross-source mAP@10 | s/fold "
        "| sources where cross-source mAP@10 beats mean+std |",
        "|---|---|---|---|---|---|---|",
    ]
    table = summary(per_query)
    lines += [_row(b, table, 0) + " - |" for b in EVALUATED_BASELINES]
    print("\n".join(lines), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    names = args.only or list(RECIPES)
    ctx = mp.get_context("fork")
    for name in names:
        jobs = [(name, int(f)) for f in sorted(set(folds_of))]
        with ctx.Pool(args.workers) as pool:
            done = pool.map(_train_fold, jobs)
        emb = {fold: e for fold, e in (d[:2] for d in done)}
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            np.savez(args.save / f"{name}.npz", **{str(f): e for f, e in emb.items()})
        pq = evaluate_models({name: emb}, cat.matrix, cat.track_ids, styles, folds_of, sources)
        per_query = pd.concat([per_query, pq], ignore_index=True)
        t = summary(pq)
        per_source = fold_summary(per_query[per_query["view"] == "cross_source"]).pivot(
            index="fold", columns="model", values="map@10"
        )
        wins = int((per_source[name] > per_source["meanstd"]).sum())
        line = _row(name, t, float(np.mean([d[2] for d in done]))) + f" {wins} of {len(per_source)} |"
        _log_run(settings, name, stamp, t, summary(per_query[per_query["model"].isin(EVALUATED_BASELINES)]), wins)
        print(line, f"  <- {RECIPES[name][0]}", flush=True)
        with RESULTS.open("a") as f:
            f.write(line + "\n")
    notes = "\n".join(f"- `{n}`: {RECIPES[n][0]}" for n in names)
    with RESULTS.open("a") as f:
        f.write("\n" + notes + "\n\n")


if __name__ == "__main__":
    main()
