"""The gate cannot be fooled by a weak baseline: it must beat the strongest one, with an interval above zero.

The tie test runs the real evaluation (evaluate_models -> summary -> logged keys -> intervals -> decide)
on a catalogue where the model's embeddings are exactly the mean+std statistics.
"""

from __future__ import annotations

import numpy as np

from pipelines.evaluation.gate import decide, gate_intervals, passes_baselines, strongest_baseline
from pipelines.training.config import GateConfig
from pipelines.training.evaluate import baseline_embeddings, evaluate_models, summary
from pipelines.training.steps.evaluate import table_metrics

STYLES, SOURCES_PER_STYLE, TRACKS, N_MFCC, FRAMES = 3, 3, 6, 4, 8


def _catalogue(seed: int = 0) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """Front-end vectors whose per-coefficient statistics carry the style (and a source fingerprint)."""
    rng = np.random.default_rng(seed)
    ids, styles, sources, rows = [], [], [], []
    for s in range(STYLES):
        level = rng.standard_normal(N_MFCC) * 2
        for k in range(SOURCES_PER_STYLE):
            fingerprint = rng.standard_normal(N_MFCC)
            for i in range(TRACKS):
                frames = level + fingerprint + rng.standard_normal((FRAMES, N_MFCC))
                ids.append(f"s{s}k{k}t{i}")
                styles.append(f"style{s}")
                sources.append(f"style{s}-src{k}")
                rows.append(frames.reshape(-1))
    return ids, styles, sources, np.asarray(rows, np.float32)


def _metrics(model: np.ndarray) -> dict[str, float]:
    ids, styles, sources, x = _catalogue()
    names = sorted(set(sources))
    folds = np.array([names.index(s) for s in sources])
    embedders = {"model": dict.fromkeys(range(len(names)), model)}
    for b in ("raw", "meanstd", "random"):
        embedders[b] = dict.fromkeys(range(len(names)), baseline_embeddings(b, x, N_MFCC))
    per_query = evaluate_models(embedders, x, ids, styles, folds, sources)
    metrics = table_metrics(summary(per_query)) | gate_intervals(per_query, GateConfig())
    return {k.replace("@", "_at_"): v for k, v in metrics.items()}


def test_a_model_that_ties_the_strongest_baseline_is_refused() -> None:
    x = _catalogue()[3]
    metrics = _metrics(baseline_embeddings("meanstd", x, N_MFCC))
    gate = GateConfig()
    for key in gate.beat_on:
        assert metrics[f"model/{key}".replace("@", "_at_")] > metrics[f"raw/{key}".replace("@", "_at_")]
    promoted, reasons = decide(metrics, gate)
    assert not promoted
    for key in gate.beat_on:
        best, _ = strongest_baseline(metrics, gate.baselines, key)
        assert best == "meanstd"
        assert any(r.startswith(key) and "does not beat meanstd" in r and "(meanstd wins)" in r for r in reasons)
    # The old rule (beat raw only) would have promoted this copy of the statistics.
    assert decide(metrics, GateConfig(baselines=("raw",), interval=False))[0]
    assert not passes_baselines(metrics, gate)[0]


def _lead(lo: float) -> dict[str, float]:
    out = {}
    for key in ("catalogue/p_at_10", "cross_source/map_at_10"):
        out |= {f"model/{key}": 0.40, f"raw/{key}": 0.20, f"meanstd/{key}": 0.35, f"random/{key}": 0.10}
        out |= {f"paired/model-meanstd/{key}/lo": lo, f"paired/model-meanstd/{key}/hi": 0.09}
    return out


def test_a_mean_lead_needs_its_interval_above_zero_and_the_champion_margin() -> None:
    ok, reasons = decide(_lead(-0.01), GateConfig())
    assert not ok and any("reaches zero (meanstd wins)" in r for r in reasons)
    ok, reasons = decide(_lead(0.01), GateConfig())
    assert ok and "no comparable champion" in reasons
    assert not decide(_lead(0.01) | {"champion/cross_source/map_at_10": 0.395}, GateConfig())[0]
    without = {k: v for k, v in _lead(0.01).items() if not k.startswith("paired/")}
    ok, reasons = decide(without, GateConfig())
    assert not ok and any("no paired interval" in r for r in reasons)
