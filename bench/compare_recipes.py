"""Compare training recipes on the demo corpus with the real pipeline; every recipe is an MLflow run.

Each recipe goes through ``prepare -> train -> evaluate`` (5 folds by track, the frozen split) and is
logged to MLflow as a run named after it (tag ``comparison=<date>``), registering nothing. The table of
catalogue-wide p@10 and unseen-only mAP@10 (mean ± sd over folds) goes to stdout and to
bench/results/training_comparison.md; docs/training.md quotes it.

Run: ``.venv/bin/python bench/compare_recipes.py [--data-root ...] [--only NAME ...]`` (a few minutes per
recipe on one core). The data root needs the demo corpus's feature store (``musicrec features build``).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.catalogue.demo import fetch_demo
from pipelines.features.build import FeatureBuild
from pipelines.features.store import part_files
from pipelines.model.encoder import EncoderConfig
from pipelines.registry import Registry
from pipelines.settings import Settings
from pipelines.training import pipeline
from pipelines.training.evaluate import metric_value, summary
from pipelines.training.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results" / "training_comparison.md"
DEFAULT = TrainConfig()
NO_WINDOWS: tuple[float, ...] = ()
WINDOWS_60 = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)

# name -> (what it tests, the recipe)
RECIPES: dict[str, tuple[str, TrainConfig]] = {
    "flat": (
        "flat MLP over the 8,600 standardised values, first window only",
        TrainConfig(
            encoder=EncoderConfig(kind="flat", deltas=0, head_layers=(256,), dim=64), window_offsets_s=NO_WINDOWS
        ),
    ),
    "flat+windows": (
        "flat MLP, windows 10..60 s",
        TrainConfig(
            encoder=EncoderConfig(kind="flat", deltas=0, head_layers=(256,), dim=64), window_offsets_s=WINDOWS_60
        ),
    ),
    "frames-mean": (
        "per-frame MLP + mean pooling, no deltas, windows 10..60 s",
        TrainConfig(encoder=EncoderConfig(deltas=0, pooling="mean"), window_offsets_s=WINDOWS_60),
    ),
    "frames-meanstd": (
        "per-frame MLP + mean/std pooling, no deltas, windows 10..60 s",
        TrainConfig(encoder=EncoderConfig(deltas=0), window_offsets_s=WINDOWS_60),
    ),
    "frames-meanstd+deltas": (
        "+ deltas, windows 10..60 s",
        TrainConfig(window_offsets_s=WINDOWS_60),
    ),
    "default": ("+ windows up to 180 s (the default recipe)", DEFAULT),
    "default-first-window": (
        "default without extra windows",
        DEFAULT.model_copy(update={"window_offsets_s": NO_WINDOWS}),
    ),
    "default-random-mining": ("default, random triplets", DEFAULT.model_copy(update={"mining": "random"})),
    "default-semi-hard": ("default, semi-hard mining", DEFAULT.model_copy(update={"mining": "semi-hard"})),
    "default-wide": (
        "default, per-frame 128, head 128, dim 64",
        DEFAULT.model_copy(update={"encoder": EncoderConfig(frame_layers=(128,), head_layers=(128,), dim=64)}),
    ),
    "default-margin0.4": ("default, margin 0.4", DEFAULT.model_copy(update={"margin": 0.4})),
    "default-40-epochs": ("default, up to 40 epochs", DEFAULT.model_copy(update={"epochs": 40})),
    "default-pool12": ("default, 12 tracks per style in a batch", DEFAULT.model_copy(update={"tracks_per_style": 12})),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/musicrec-bench/data"))
    ap.add_argument("--only", nargs="*", help="Recipe names to run (default: all).")
    args = ap.parse_args()
    settings = Settings(data_root=args.data_root)
    fetch_demo(settings)
    if not part_files(settings, settings.features):
        FeatureBuild(settings=settings).run()
    registry = Registry(settings)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    rows = []
    for name, (what, recipe) in RECIPES.items():
        if args.only and name not in args.only:
            continue
        job = pipeline.TrainingJob(train=recipe)
        start = time.perf_counter()
        prepared = pipeline.prepare(settings, job)
        run_id = pipeline.train(settings, job, prepared)
        registry.client.set_tag(run_id, "mlflow.runName", name)
        registry.set_run_tags(run_id, {"comparison": stamp, "recipe": what})
        pipeline.evaluate(settings, job, run_id, register=False)
        seconds = (time.perf_counter() - start) / job.n_folds
        import pandas as pd

        per_query = pd.read_parquet(pipeline.run_dir(settings, run_id) / "artifacts" / "per_query.parquet")
        table = summary(per_query)
        row = {"recipe": name, "what": what, "s_per_fold": seconds}
        for model in ("model", "raw", "meanstd", "random"):
            for view, metric in (("catalogue", "p@10"), ("unseen", "map@10")):
                row[f"{model}/{view}/{metric}"] = metric_value(table, model, view, metric)
                row[f"{model}/{view}/{metric}_sd"] = metric_value(table, model, view, f"{metric}_sd")
        rows.append(row)
        print(
            f"{name:24s} catalogue p@10 {row['model/catalogue/p@10']:.3f} ± {row['model/catalogue/p@10_sd']:.3f}  "
            f"unseen mAP@10 {row['model/unseen/map@10']:.3f} ± {row['model/unseen/map@10_sd']:.3f}  "
            f"({seconds:.0f} s/fold, run {run_id})",
            flush=True,
        )
    if not rows:
        return
    base = rows[0]
    lines = [
        f"# Training recipes on the demo corpus ({stamp} UTC; 5 folds by track, mean ± sd over folds)",
        "",
        "| recipe | what changes | catalogue p@10 | unseen mAP@10 | s / fold |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['what']} | {r['model/catalogue/p@10']:.3f} ± {r['model/catalogue/p@10_sd']:.3f} | "
            f"{r['model/unseen/map@10']:.3f} ± {r['model/unseen/map@10_sd']:.3f} | {r['s_per_fold']:.0f} |"
        )
    for b in ("raw", "meanstd", "random"):
        lines.append(
            f"| baseline {b} | no training | "
            f"{base[f'{b}/catalogue/p@10']:.3f} ± {base[f'{b}/catalogue/p@10_sd']:.3f} | "
            f"{base[f'{b}/unseen/map@10']:.3f} ± {base[f'{b}/unseen/map@10_sd']:.3f} | - |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
