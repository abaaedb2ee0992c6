"""Stage-by-stage timing of ``make run`` on a fresh data root (measures; asserts nothing).

The stages of ``make run``: ``data fetch-demo`` (the .deb cache is reused, so this is the unpack and
import), ``features build``, then ``train``'s steps one by one (training windows, triplets, the branches,
evaluation, gate), ``index refresh --model-version best`` and ``recommend --examples 3``. The CLI commands
run as subprocesses, exactly as the Makefile runs them; the train steps run in this process (the same
functions ``musicrec train`` calls) so each can be timed. Every stage gets wall time and CPU seconds
(user + system, this process and its children), with the load average before and after, because the
machine may be shared. Per branch: wall and CPU seconds, epochs and best epoch, from the train step's log.

Run: ``.venv/bin/python bench/bench_make_run.py --data-root /tmp/wt-train-run/data [--label NAME]``
(the data root must not exist yet). Appends a table to bench/results/train_speed.md and writes the
evaluation table and the per-branch rows next to it (``--save DIR``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.md"
BIN = Path(sys.executable).parent


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stages:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, str]] = []

    def time(self, name: str, fn):  # type: ignore[no-untyped-def]
        load = os.getloadavg()[0]
        w0, c0 = time.perf_counter(), _cpu()
        out = fn()
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
        load_txt = f"{load:.2f} -> {os.getloadavg()[0]:.2f}"
        self.rows.append((name, wall, cpu, load_txt))
        print(f"{name:<28} wall {wall:7.1f} s  cpu {cpu:7.1f} s  load {load_txt}", flush=True)
        return out


class _BranchLog(logging.Handler):
    """Collects the train step's per-branch lines."""

    PATTERN = re.compile(r"branch (\S+) trained: (\d+) epochs \(best (\d+)\) in ([\d.]+) s wall, ([\d.]+) s CPU")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.branches: list[tuple[str, int, int, float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if m := self.PATTERN.search(record.getMessage()):
            name, epochs, best, wall, cpu = m.groups()
            self.branches.append((name, int(epochs), int(best), float(wall), float(cpu)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--label", default="current")
    ap.add_argument("--save", type=Path, default=None, help="Folder for the evaluation table and branch rows.")
    args = ap.parse_args()
    if args.data_root.exists():
        sys.exit(f"{args.data_root} exists; give a fresh data root")
    os.environ["MUSICREC_DATA_ROOT"] = str(args.data_root)

    started = datetime.now(UTC)
    load0 = os.getloadavg()
    stages = Stages()
    w_all, c_all = time.perf_counter(), _cpu()

    def cli(*argv: str) -> None:
        subprocess.run([str(BIN / "musicrec"), *argv], check=True, stdout=subprocess.DEVNULL)

    stages.time("fetch-demo (import)", lambda: cli("data", "fetch-demo"))
    stages.time("features build", lambda: cli("features", "build"))

    def imports():  # type: ignore[no-untyped-def]
        from pipelines.registry import Registry
        from pipelines.settings import get_settings
        from pipelines.training.config import scheduled_job
        from pipelines.training.labelled import load_labelled, trained_version

        settings = get_settings()
        job = scheduled_job(settings, {"train": {"seed": 0}})
        Registry(settings).check()
        assert trained_version(settings, job) is None
        return settings, job, load_labelled(settings)

    settings, job, cat = stages.time("train: imports, registry", imports)
    from pipelines.training.labelled import windows_for
    from pipelines.training.steps import evaluate, gate, prepare
    from pipelines.training.steps import train as train_step

    stages.time("train: windows", lambda: windows_for(settings, cat, job, None))
    prepared = stages.time("train: triplets (prepare)", lambda: prepare.run(settings, job))
    handler = _BranchLog()
    logging.getLogger("pipelines.training.steps.train").addHandler(handler)
    logging.getLogger("pipelines.training.steps.train").setLevel(logging.INFO)
    trained = stages.time("train: branches", lambda: train_step.run(settings, job, prepared))
    evaluated = stages.time("train: evaluate", lambda: evaluate.run(settings, job, trained))
    decision = stages.time("train: gate", lambda: gate.run(settings, job, evaluated))
    stages.time("index refresh", lambda: cli("index", "refresh", "--model-version", "best"))
    stages.time("recommend --examples 3", lambda: cli("recommend", "--examples", "3"))
    wall, cpu = time.perf_counter() - w_all, _cpu() - c_all
    print(evaluated.line())
    print(decision.line())

    lines = [
        f"\n## {args.label}: {started:%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores",
        "",
        f"Load average at the start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min), at the end "
        + "{:.2f} / {:.2f} / {:.2f}.".format(*os.getloadavg()),
        "",
        "| stage | wall s | CPU s (user+sys) | load (1 min) before -> after |",
        "|---|---|---|---|",
        *[f"| {n} | {w:.1f} | {c:.1f} | {load} |" for n, w, c, load in stages.rows],
        f"| **total** | **{wall:.1f}** | **{cpu:.1f}** | |",
        "",
    ]
    if handler.branches:
        b = handler.branches
        lines += [
            f"Branches: {len(b)}, {sum(x[1] for x in b)} epochs in all; per branch "
            f"wall {min(x[3] for x in b):.1f}-{max(x[3] for x in b):.1f} s, "
            f"CPU {min(x[4] for x in b):.1f}-{max(x[4] for x in b):.1f} s "
            f"(sum {sum(x[4] for x in b):.1f} s).",
            "",
        ]
    lines += [f"Gate: {decision.line()}", ""]
    text = "\n".join(lines)
    print(text)
    with RESULTS.open("a") as fh:
        fh.write(text)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "evaluation.md").write_text(evaluated.line())
        (args.save / "branches.tsv").write_text(
            "holdout\tepochs\tbest\twall_s\tcpu_s\n" + "".join("\t".join(map(str, x)) + "\n" for x in handler.branches)
        )
        (args.save / "run_id").write_text(trained.run_id)


if __name__ == "__main__":
    main()
