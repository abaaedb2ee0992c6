"""``--model-version best``: the champion when it beats the baselines, else the strongest baseline.

The champion is judged by its own training run's leave-one-source-out metrics under today's gate rule
(strongest baseline, paired interval above zero; :func:`pipelines.evaluation.gate.passes_baselines`), so a
champion promoted by an older, weaker rule is not served when a baseline does better. A run trained before
the intervals were logged is judged by its latest ``model evaluate`` on the catalogue it was trained on.
Without a champion, or when it fails, the baseline that is strongest on the gate's metric in the latest
evaluated run is served (``meanstd`` when nothing was measured yet: it beats raw on every measurement so
far).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipelines.model.ref import CHAMPION, MEANSTD
from pipelines.settings import Settings

log = logging.getLogger(__name__)

FALLBACK = MEANSTD  # served when nothing better is known


@dataclass(frozen=True)
class Choice:
    version: str  # a registered version, or a baseline name
    reason: str

    def line(self) -> str:
        return f"serving {self.version}: {self.reason}"


def choose_best(settings: Settings) -> Choice:
    """What ``best`` means now; reads the registry only (no evaluation is run)."""
    from pipelines.evaluation.gate import passes_baselines, strongest_baseline
    from pipelines.registry import Registry
    from pipelines.training.config import GateConfig

    gate = GateConfig()
    registry = Registry(settings)
    versions = registry.versions()
    if not versions:
        return Choice(FALLBACK, f"no trained model yet; {FALLBACK} is the strongest baseline measured so far")
    champion = registry.alias(CHAMPION)
    latest = registry.version(champion) if champion else versions[0]
    metrics = registry.run_metrics(latest.run_id) if latest.run_id else {}
    if not any(k.startswith("paired/") for k in metrics):
        metrics = _evaluated_metrics(settings, latest) or metrics
    if champion:
        ok, reasons = passes_baselines(metrics, gate)
        if ok:
            return Choice(str(champion), f"champion v{champion} beats the baselines: " + "; ".join(reasons))
        why = "; ".join(r for r in reasons if "does not" in r or "no paired" in r or "no baseline" in r)
        prefix = f"champion v{champion} does not beat the strongest baseline ({why})"
    else:
        prefix = f"no champion (latest v{latest.version} was not promoted)"
    best, value = strongest_baseline(metrics, gate.baselines, gate.metric)
    if best is None:
        return Choice(FALLBACK, f"{prefix}; no baseline measured, {FALLBACK} by default")
    return Choice(best, f"{prefix}; {best} is the strongest baseline on {gate.metric} ({value:.3f})")


def _evaluated_metrics(settings: Settings, version: object) -> dict[str, float]:
    """A ``model evaluate`` run's metrics for a version trained before the intervals were logged: the
    latest one on the catalogue it was trained on, scored by its held-out branches; else empty."""
    from pipelines.evaluation.model_eval import evaluation_runs

    for run in evaluation_runs(settings, str(version.version)):  # type: ignore[attr-defined]
        tags = run.data.tags
        same = tags.get("catalogue") == version.tags.get("catalogue")  # type: ignore[attr-defined]
        if same and tags.get("mode", "").startswith("leave-one-source-out"):
            log.info("best: using evaluation run %s of version %s", run.info.run_id, version.version)  # type: ignore[attr-defined]
            return dict(run.data.metrics)
    return {}
