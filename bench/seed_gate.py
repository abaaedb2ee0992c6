"""The gate under different seeds: train the same recipe from several base seeds, each in a fresh copy of a
data root, and tabulate the ensemble's and each seed's gate metrics and decisions.

Each run is ``musicrec train`` (the full job: every holdout's branches with ``train.seeds`` seeds) in a
copy of ``--data-root`` without its registry, runs or model cache, so every run is judged as a first model
(no champion). The table gives, per base seed, the ensemble's catalogue p@10 and cross-source mAP@10 with
the paired 95% interval against the strongest baseline, the gate's decision, and the same for each seed's
branches alone; then the mean and spread over base seeds. Wall and CPU seconds of each run are printed.

Run: ``.venv/bin/python bench/seed_gate.py --data-root data --seeds 0 100 200 [--job JSON] [--label NAME]
[--append bench/results/seeds.md]``. The data root needs the feature store (``make run`` or ``musicrec
features build``); cached training windows make the runs cheaper.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model

BIN = Path(sys.executable).parent
SKIP = {"mlflow.db", "mlartifacts", "mlflow-root.json", "model-cache", "runs", "milvus", "index"}
KEYS = ("catalogue/p_at_10", "cross_source/map_at_10")


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n in SKIP])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(src: Path, seed: int, job: dict) -> dict:
    """Train from base ``seed`` in a fresh copy of ``src``; the run's gate metrics and decisions."""
    from pipelines.registry import Registry
    from pipelines.settings import PathSettings, Settings

    with tempfile.TemporaryDirectory(prefix=f"seed-gate-{seed}-") as tmp:
        root = Path(tmp) / "data"
        _copy(src, root)
        merged = {**job, "train": {**job.get("train", {}), "seed": seed}}
        env = os.environ | {"MUSICREC_DATA_ROOT": str(root), "MUSICREC_TRAINING_JOB": json.dumps(merged)}
        wall, cpu = time.perf_counter(), _cpu()
        done = subprocess.run([str(BIN / "musicrec"), "train"], env=env, capture_output=True, text=True, check=False)
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"musicrec train (seed {seed}) failed:\n{done.stderr[-3000:]}")
        registry = Registry(Settings(paths=PathSettings(data_root=root)))
        version = registry.version("1")
        metrics = registry.run_metrics(version.run_id)
    from pipelines.evaluation.gate import decide, seed_decisions, strongest_baseline
    from pipelines.training.config import GateConfig

    gate = GateConfig()
    promoted, _ = decide(metrics, gate)
    out = {"seed": seed, "wall_s": wall, "cpu_s": cpu, "promoted": promoted, "tag": version.tags["gate.decision"]}
    out["alone"] = {name: ok for name, (ok, _) in seed_decisions(metrics, gate).items()}
    for key in KEYS:
        best, _ = strongest_baseline(metrics, gate.baselines, key.replace("_at_", "@"))
        out[key] = {
            "model": metrics[f"model/{key}"],
            "baseline": best,
            "lo": metrics.get(f"paired/model-{best}/{key}/lo", float("nan")),
            "hi": metrics.get(f"paired/model-{best}/{key}/hi", float("nan")),
            "seeds": [metrics[k] for k in sorted(metrics) if k.startswith("seed") and k.endswith(f"/{key}")],
        }
    return out


def table(runs: list[dict], label: str) -> str:
    lines = [
        f"### {label}",
        "",
        "| base seed | catalogue p@10 [paired 95% vs strongest] | cross-source mAP@10 [paired 95%] | "
        "each seed alone: p@10 / mAP@10 | gate (ensemble) | seeds alone passing | wall / CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        cells = []
        for key in KEYS:
            m = r[key]
            cells.append(f"{m['model']:.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}] vs {m['baseline']}")
        alone = " / ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(r[KEYS[0]]["seeds"], r[KEYS[1]]["seeds"], strict=True))
        passing = f"{sum(r['alone'].values())} of {len(r['alone'])}"
        verdict = "promoted" if r["promoted"] else "not promoted"
        lines.append(
            f"| {r['seed']} | {cells[0]} | {cells[1]} | {alone} | {verdict} | {passing} | "
            f"{r['wall_s']:.0f} / {r['cpu_s']:.0f} |"
        )
    lines.append("")
    for key, name in zip(KEYS, ("catalogue p@10", "cross-source mAP@10"), strict=True):
        ens = np.array([r[key]["model"] for r in runs])
        single = np.array([v for r in runs for v in r[key]["seeds"]])
        lo = np.array([r[key]["lo"] for r in runs])
        lines.append(
            f"- {name}: ensemble {ens.mean():.3f} (sd {ens.std():.3f} over {len(ens)} base seeds, range "
            f"{ens.min():.3f}-{ens.max():.3f}); single seeds {single.mean():.3f} (sd {single.std():.3f} over "
            f"{len(single)}, range {single.min():.3f}-{single.max():.3f}); interval's lower bound "
            f"{lo.min():+.3f} to {lo.max():+.3f}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 100, 200])
    ap.add_argument("--job", default="{}", help="TrainingJob overrides (JSON), as MUSICREC_TRAINING_JOB")
    ap.add_argument("--label", default="default recipe")
    ap.add_argument("--append", type=Path)
    args = ap.parse_args()
    job = json.loads(args.job)
    runs = []
    for seed in args.seeds:
        runs.append(one_run(args.data_root.resolve(), seed, job))
        print(json.dumps(runs[-1]), flush=True)
    when = time.strftime("%Y-%m-%d", time.gmtime())
    machine = f"{cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
    text = f"{table(runs, args.label)}\nMeasured {when} on {machine}; job overrides {json.dumps(job)}.\n"
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
