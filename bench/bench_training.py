"""Benchmark of triplet training and evaluation on the demo corpus (measures; asserts nothing).

1. Training throughput of the default recipe on one fold: triplets/s and windows/s, time per epoch, with
   one torch thread and with all cores (``torch.set_num_threads``), side by side in one run.
2. Peak memory (resident set size of this process) after the training runs.
3. Evaluation time: embedding the whole catalogue with a trained branch, and scoring model and
   baselines in both views for one fold.

Needs the demo corpus and its feature store under ``--data-root`` (built if missing: ``fetch_demo`` and
``FeatureBuild``); the training windows are cached there too, so a second run measures training only.
Writes a markdown table to stdout and to bench/results/training.md.
Run: ``.venv/bin/python bench/bench_training.py [--data-root /tmp/musicrec-bench] [--epochs 4]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from pipelines.catalogue.demo import fetch_demo
from pipelines.features.build import FeatureBuild
from pipelines.features.store import part_files
from pipelines.model.ref import EVALUATED_BASELINES
from pipelines.settings import PathSettings, Settings
from pipelines.training.config import TrainingJob
from pipelines.training.evaluate import baseline_embeddings, evaluate_models
from pipelines.training.labelled import load_labelled, window_bank
from pipelines.training.split import make_split, validation_carve
from pipelines.training.train import TrainConfig, embed, train_branch
from pipelines.training.triplets import build_triplets

RESULTS = Path(__file__).resolve().parent / "results" / "training.md"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/musicrec-bench/data"))
    ap.add_argument("--epochs", type=int, default=4, help="Epochs timed per thread setting.")
    args = ap.parse_args()

    settings = Settings(paths=PathSettings(data_root=args.data_root))
    t0 = time.perf_counter()
    fetch_demo(settings)
    if not part_files(settings, settings.features):
        FeatureBuild(settings=settings).run()
    job = TrainingJob(train=TrainConfig(epochs=args.epochs, min_epochs=args.epochs))
    cat = load_labelled(settings)
    t_windows = time.perf_counter()
    bank = window_bank(settings, cat, job)
    t_windows = time.perf_counter() - t_windows
    elapsed = time.perf_counter() - t0
    print(f"catalogue: {len(cat.track_ids)} tracks, {len(bank.matrix)} training vectors ({elapsed:.0f} s)")

    cfg = job.train.model_copy(
        update={
            "encoder": job.train.encoder.model_copy(
                update={"n_frames": settings.features.n_frames, "n_mfcc": settings.features.n_mfcc}
            )
        }
    )
    split = make_split(cat.tracks, job.n_folds, job.split_seed)
    fit, val = validation_carve(split[split["fold"] != 0], cfg.val_fraction, cfg.seed)
    offsets: dict[str, list[float]] = {}
    for t, o in bank.row:
        offsets.setdefault(t, []).append(o)
    triplets = build_triplets(
        fit, offsets, cfg.epochs * cfg.batches_per_epoch, cfg.tracks_per_style, cfg.triplets_per_batch, cfg.seed
    )
    pool = triplets.groupby("batch")["anchor"].count().mean()
    windows_per_batch = (
        triplets.groupby("batch")[["anchor", "positive", "negative"]].agg(lambda c: set(c)).sum(axis=1).map(len).mean()
    )

    rows = []
    model = None
    for threads in sorted({1, os.cpu_count() or 1}):
        run_cfg = cfg.model_copy(update={"threads": threads, "val_fraction": cfg.val_fraction})
        stamps: list[float] = []
        start = time.perf_counter()
        result = train_branch(
            run_cfg, bank, fit, val, triplets, on_epoch=lambda _r, stamps=stamps: stamps.append(time.perf_counter())
        )
        total = time.perf_counter() - start
        epochs = len(result.history)
        per_epoch = np.diff([start, *stamps])
        n_trip = epochs * cfg.batches_per_epoch * pool
        rows.append(
            {
                "threads": threads,
                "epochs": epochs,
                "s_per_epoch": float(np.median(per_epoch)),
                "triplets_per_s": n_trip / total,
                "windows_per_s": epochs * cfg.batches_per_epoch * windows_per_batch / total,
            }
        )
        model = result.model
    peak = _peak_rss_mb()

    import torch

    torch.set_num_threads(1)
    t = time.perf_counter()
    emb = embed(model, cat.matrix)
    t_embed = time.perf_counter() - t
    folds = split.set_index("track_id").reindex(cat.track_ids)["fold"].to_numpy()
    embedders = {"model": {0: emb}} | {
        b: {0: baseline_embeddings(b, cat.matrix, cat.n_mfcc)} for b in EVALUATED_BASELINES
    }
    t = time.perf_counter()
    evaluate_models(embedders, cat.matrix, cat.track_ids, list(cat.tracks["style"]), folds)
    t_score = time.perf_counter() - t

    lines = [
        f"# Training benchmark ({datetime.now(UTC):%Y-%m-%d}, {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__})",
        "",
        f"Demo corpus: {len(cat.track_ids)} tracks, {len(bank.matrix)} training windows "
        f"(computed or read from cache in {t_windows:.1f} s); default recipe, one fold "
        f"({len(fit)} training + {len(val)} validation tracks), {cfg.triplets_per_batch} triplets per batch "
        f"over a pool of {windows_per_batch:.0f} windows, {cfg.batches_per_epoch} batches per epoch.",
        "",
        "| torch threads | epochs | s / epoch | triplets / s | windows / s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['epochs']} | {r['s_per_epoch']:.2f} | {r['triplets_per_s']:.0f} | "
            f"{r['windows_per_s']:.0f} |"
        )
    lines += [
        "",
        f"Peak memory (RSS of the process, training included): {peak:.0f} MB.",
        f"Evaluation: embedding {len(cat.track_ids)} tracks {t_embed * 1000:.0f} ms (1 thread); scoring model + "
        f"{len(EVALUATED_BASELINES)} baselines, both views, one fold: {t_score * 1000:.0f} ms.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
