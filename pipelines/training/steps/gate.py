"""The gate step: promote the challenger to champion only if it beats the baselines and the champion."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipelines.evaluation.gate import decide, seed_decisions
from pipelines.registry import Registry
from pipelines.settings import Settings
from pipelines.training import artifacts
from pipelines.training.comparison import comparison_html
from pipelines.training.config import TrainingJob
from pipelines.training.labelled import run_dir
from pipelines.training.steps.evaluate import Evaluated


@dataclass(frozen=True)
class Decision:
    promoted: bool
    version: str
    previous_champion: str | None
    reasons: list[str]
    seeds_passing: int = 0  # how many seeds' branches alone would pass the baselines (0 of 0: one seed)
    seeds: int = 0

    def line(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "kept as challenger (not promoted)"
        line = f"version {self.version}: {verdict}: " + "; ".join(self.reasons)
        if self.seeds:
            line += f" [each seed alone: {self.seeds_passing} of {self.seeds} beat the baselines]"
        return line


def gate(settings: Settings, job: TrainingJob, evaluated: dict[str, str]) -> Decision:
    """Decide on the challenger, tag the decision on its version, move ``champion`` if it passes."""
    from pipelines.registry import CHAMPION

    registry = Registry(settings)
    registry.check()
    run_id, version = evaluated["run_id"], evaluated["version"]
    with registry.run(run_id, finish=True):
        metrics = registry.run_metrics(run_id)
        promoted, reasons = decide(metrics, job.gate)
        alone = seed_decisions({k: v for k, v in metrics.items() if not k.startswith("champion/")}, job.gate)
        passing = sum(ok for ok, _ in alone.values())
        previous = registry.alias(CHAMPION)
        registry.tag_version(
            version,
            {
                "gate.decision": "promoted" if promoted else "rejected",
                "gate.reasons": "; ".join(reasons),
                "gate.metric": job.gate.metric,
                "gate.margin": job.gate.margin,
                "gate.champion_version": previous or "",
                "gate.decided_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
                "gate.seeds_passing": f"{passing}/{len(alone)}",
            },
        )
        if promoted:
            registry.set_champion(version, by="gate", reason="; ".join(reasons))
        decision = Decision(promoted, version, previous, reasons, passing, len(alone))
        out = run_dir(settings, run_id)
        table = pd.read_csv(out / "artifacts" / "evaluation.csv")
        styles_df = pd.read_csv(out / "artifacts" / "per_style.csv")
        summary_dir = out / "decision"
        summary_dir.mkdir(exist_ok=True)
        artifacts.decision_summary(
            table,
            {
                "decision": "promoted to champion" if promoted else "not promoted",
                "version": version,
                "previous champion": previous or "none",
                "reasons": "; ".join(reasons),
            },
            _markdown(styles_df),
            summary_dir,
            {"run": run_id, "feature version": metrics_tag(registry, run_id, "feature_version")},
        )
        champion_metrics = registry.run_metrics(registry.version(previous).run_id) if previous else {}
        images = {p.name: p.read_bytes() for p in sorted((out / "artifacts").glob("*.png"))}
        verdict = "promoted to champion" if promoted else "not promoted"
        page = comparison_html(version, previous, verdict, reasons, metrics, champion_metrics, styles_df, images)
        (summary_dir / "comparison.html").write_text(page)
        registry.log_artifacts(run_id, summary_dir, "review")
        registry.set_run_tags(run_id, {"gate.decision": "promoted" if promoted else "rejected"})
    return decision


def metrics_tag(registry: Registry, run_id: str, tag: str) -> str:
    """A tag of the run (an empty string when it has none)."""
    return str(registry.client.get_run(run_id).data.tags.get(tag, ""))


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def run(settings: Settings, job: TrainingJob, inputs: Evaluated) -> Decision:
    """The gate step on the evaluate step's registered version."""
    return gate(settings, job, inputs.as_dict())
