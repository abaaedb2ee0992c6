"""The promotion rule: beat the strongest baseline with a paired interval above zero, and the champion.

:func:`decide` turns a challenger's logged metrics into a promotion decision with reasons, and
:func:`gate_intervals` computes the intervals it reads, so the decision can be re-read from MLflow alone.
Design: docs/evaluation.md#the-gate
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.evaluation.bootstrap import DEFAULT_DRAWS, interval_metrics, paired_table
from pipelines.training.config import SEED_PREFIX, GateConfig


def _split(key: str) -> tuple[str, str]:
    view, metric = key.split("/", 1)
    return view, metric


def gate_intervals(per_query: pd.DataFrame, gate: GateConfig, seed: int = 0, model: str = "model") -> dict[str, float]:
    """Paired intervals of ``model`` against each baseline on the gate's metrics, as metric keys.

    Against raw and mean+std always, whatever this job's gate asks, so that ``best`` and later reviews can
    apply today's rule to the run.
    """
    from pipelines.training.evaluate import fold_summary

    keys = [_split(k) for k in dict.fromkeys([*gate.beat_on, gate.metric])]
    per_fold = fold_summary(per_query)
    baselines = [b for b in dict.fromkeys(["raw", "meanstd", *gate.baselines]) if b in set(per_fold["model"])]
    return interval_metrics(paired_table(per_fold, model, baselines, keys, DEFAULT_DRAWS, seed), model)


def strongest_baseline(metrics: dict[str, float], baselines: tuple[str, ...], key: str) -> tuple[str | None, float]:
    """The baseline with the highest ``key`` among those measured (name, value); (None, nan) if none."""
    found = {b: _get(metrics, b, key) for b in baselines}
    found = {b: v for b, v in found.items() if not np.isnan(v)}
    if not found:
        return None, float("nan")
    best = max(found, key=lambda b: found[b])
    return best, found[best]


def _get(metrics: dict[str, float], model: str, key: str) -> float:
    return float(metrics.get(f"{model}/{key}".replace("@", "_at_"), np.nan))


def decide(metrics: dict[str, float], gate: GateConfig) -> tuple[bool, list[str]]:
    """The gate's rule on leave-one-source-out metrics (keys ``<model>/<view>/<metric>``, as logged)."""
    ok, reasons = True, []
    for key in gate.beat_on:
        mine = _get(metrics, "model", key)
        best, theirs = strongest_baseline(metrics, gate.baselines, key)
        if best is None:
            ok = False
            reasons.append(f"{key}: no baseline measured")
            continue
        if not mine > theirs:
            ok = False
            reasons.append(f"{key} {mine:.3f} does not beat {best} {theirs:.3f} ({best} wins)")
            continue
        if not gate.interval:
            reasons.append(f"{key} {mine:.3f} beats {best} {theirs:.3f}")
            continue
        base = f"paired/model-{best}/{key}".replace("@", "_at_")
        lo, hi = metrics.get(f"{base}/lo", np.nan), metrics.get(f"{base}/hi", np.nan)
        if np.isnan(lo):
            ok = False
            reasons.append(f"{key} {mine:.3f} beats {best} {theirs:.3f} but has no paired interval")
        elif lo > 0:
            reasons.append(f"{key} {mine:.3f} beats {best} {theirs:.3f}, paired 95% [{lo:+.3f}, {hi:+.3f}]")
        else:
            ok = False
            reasons.append(
                f"{key} {mine:.3f} does not beat {best} {theirs:.3f} with confidence: paired 95% "
                f"[{lo:+.3f}, {hi:+.3f}] reaches zero ({best} wins)"
            )
    champ = _get(metrics, "champion", gate.metric)
    mine = _get(metrics, "model", gate.metric)
    if np.isnan(champ):
        reasons.append("no comparable champion")
    elif mine >= champ + gate.margin:
        reasons.append(f"{gate.metric} {mine:.3f} beats champion {champ:.3f} by >= {gate.margin}")
    else:
        ok = False
        reasons.append(f"{gate.metric} {mine:.3f} does not beat champion {champ:.3f} by {gate.margin}")
    return ok, reasons


def seed_decisions(metrics: dict[str, float], gate: GateConfig) -> dict[str, tuple[bool, list[str]]]:
    """What :func:`decide` says of each seed's branches alone (models ``seed<k>``), by seed model name.

    Not read by the gate (it judges the ensemble, which is what is served); it shows whether one seed's
    decision would have differed.
    """
    seeds = sorted({k.split("/", 1)[0] for k in metrics if k.startswith(SEED_PREFIX)}, key=lambda m: int(m[4:]))
    out = {}
    for name in seeds:
        mine = {k: v for k, v in metrics.items() if not k.startswith(("model/", "paired/model-"))}
        for key, value in metrics.items():
            if key.startswith(f"{name}/"):
                mine["model/" + key.removeprefix(f"{name}/")] = value
            elif key.startswith(f"paired/{name}-"):
                mine["paired/model-" + key.removeprefix(f"paired/{name}-")] = value
        out[name] = decide(mine, gate)
    return out


def passes_baselines(metrics: dict[str, float], gate: GateConfig) -> tuple[bool, list[str]]:
    """The baseline half of :func:`decide` (no champion): does this run's model beat every baseline?"""
    ok, reasons = decide({k: v for k, v in metrics.items() if not k.startswith("champion/")}, gate)
    return ok, [r for r in reasons if r != "no comparable champion"]
