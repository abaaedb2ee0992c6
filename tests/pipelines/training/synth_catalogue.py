"""A synthetic catalogue with its feature store, and a training job small enough for tests."""

from __future__ import annotations

from pathlib import Path

from pipelines.catalogue.importer import import_catalogue
from pipelines.features.build import FeatureBuild
from pipelines.features.params import FeatureParams
from pipelines.model.encoder import EncoderConfig
from pipelines.settings import PathSettings, Settings
from pipelines.training.config import GateConfig, TrainingJob
from pipelines.training.train import TrainConfig
from tests.pipelines.training.synth_styles import style_library

# 64 frames (~1.5 s) keep every step quick; the styles are separable by timbre, not by timing.
SYNTH_FEATURES = FeatureParams(n_frames=64)

# The synthetic styles differ in timbre alone, which the MFCC mean+std statistics already capture on six
# sources, so a model cannot beat them with an interval above zero here; these tests exercise training and
# the promotion mechanics, so they gate against raw only (the strict rule has its own tests in
# tests/pipelines/evaluation/test_strict_gate.py).
MECHANICS_GATE = GateConfig(baselines=("raw",), interval=False)

SMALL_JOB = TrainingJob(
    n_folds=3,
    workers=2,
    gate=MECHANICS_GATE,
    train=TrainConfig(
        encoder=EncoderConfig(frame_layers=(32,), head_layers=(32,), dim=16),
        epochs=6,
        batches_per_epoch=10,
        min_epochs=3,
        patience_epochs=3,
        tracks_per_style=4,
        triplets_per_batch=64,
        window_offsets_s=(1.0, 2.0),
        seeds=2,  # an ensemble of two seeds: the mechanics of the default three, at two thirds of the cost
    ),
)


def build_synthetic_catalogue(root: Path, per_style: int = 8, sources: int = 2) -> Settings:
    """Three synthetic styles from ``sources`` albums each, imported as a folder-per-style library, features built."""
    style_library(root / "library", per_style=per_style, seconds=4.0, sources=sources)
    settings = Settings(paths=PathSettings(data_root=root / "data"), features=SYNTH_FEATURES)
    import_catalogue(root / "library", settings)
    FeatureBuild(settings=settings, shards=1).run()
    return settings
