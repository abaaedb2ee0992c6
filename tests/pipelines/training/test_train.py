"""The training loop on in-memory vectors: it learns, it is deterministic, it fails loudly on NaN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.model.encoder import EncoderConfig
from pipelines.training.metrics import retrieval_table, summarise
from pipelines.training.train import TrainConfig, TrainingFailed, WindowBank, embed, train_branch
from pipelines.training.triplets import build_triplets

N_FRAMES, N_MFCC = 16, 6


def _data(per_style: int = 10, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Three styles that differ in which coefficients fluctuate, at random times and loudness offsets."""
    rng = np.random.default_rng(seed)
    rows, vecs = [], []
    for s in range(3):
        for i in range(per_style):
            frames = rng.standard_normal((N_FRAMES, N_MFCC))
            frames[:, 1 + s] *= 4.0  # the style: one coefficient varies a lot
            frames[:, 0] += rng.uniform(-30, 30)  # loudness, unrelated to style
            rows.append({"track_id": f"s{s}-{i}", "style": f"style{s}"})
            vecs.append(frames.reshape(-1))
    return pd.DataFrame(rows), np.asarray(vecs, np.float32)


def _config(**kw: object) -> TrainConfig:
    base = {
        "encoder": EncoderConfig(
            n_frames=N_FRAMES, n_mfcc=N_MFCC, frame_layers=(16,), head_layers=(16,), dim=8, stats_weight=0.0
        ),
        "epochs": 8,
        "batches_per_epoch": 8,
        "tracks_per_style": 5,
        "triplets_per_batch": 60,
        "min_epochs": 8,
        "window_offsets_s": (),
        "lr": 3e-3,
    }
    return TrainConfig(**{**base, **kw})


def _setup(cfg: TrainConfig) -> tuple[WindowBank, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    tracks, x = _data()
    fit, val = tracks[~tracks.track_id.str.endswith(("-8", "-9"))], tracks[tracks.track_id.str.endswith(("-8", "-9"))]
    trip = build_triplets(
        fit, {}, cfg.epochs * cfg.batches_per_epoch, cfg.tracks_per_style, cfg.triplets_per_batch, seed=cfg.seed
    )
    return WindowBank.build(list(tracks.track_id), x), fit, val, trip


def _val_map(model: torch.nn.Module, bank: WindowBank, tracks: pd.DataFrame) -> float:
    e = embed(model, bank.matrix)
    ids, styles = list(tracks.track_id), list(tracks["style"])
    return summarise(retrieval_table(e, ids, styles, e, ids, styles))["map@10"]


@pytest.mark.parametrize("mining", ["random", "semi-hard", "batch-all"])
def test_training_learns_the_style_and_logs_every_epoch(mining: str) -> None:
    cfg = _config(mining=mining)
    bank, fit, val, trip = _setup(cfg)
    seen: list[dict] = []
    result = train_branch(cfg, bank, fit, val, trip, on_epoch=seen.append)
    tracks, _ = _data()
    raw = summarise(
        retrieval_table(
            bank.matrix / np.linalg.norm(bank.matrix, axis=1, keepdims=True),
            list(tracks.track_id),
            list(tracks["style"]),
            bank.matrix / np.linalg.norm(bank.matrix, axis=1, keepdims=True),
            list(tracks.track_id),
            list(tracks["style"]),
        )
    )["map@10"]
    assert len(seen) == len(result.history) == cfg.epochs
    assert set(result.history.columns) >= {"epoch", "loss", "active", "val_map@10", "val_p@10", "lr"}
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]
    assert _val_map(result.model, bank, tracks) > raw + 0.2
    assert 1 <= result.best_epoch <= cfg.epochs


def test_same_seed_same_model_other_seed_other_model() -> None:
    cfg = _config(epochs=3, min_epochs=3)
    bank, fit, val, trip = _setup(cfg)
    a = train_branch(cfg, bank, fit, val, trip)
    b = train_branch(cfg, bank, fit, val, trip)
    assert a.history.equals(b.history)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    c = train_branch(cfg.model_copy(update={"seed": 1}), bank, fit, val, trip)
    assert not torch.equal(a.model.out.weight, c.model.out.weight)


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    cfg = _config(epochs=30, min_epochs=2, patience_epochs=2, lr=3e-2)
    bank, fit, val, trip = _setup(cfg)
    result = train_branch(cfg, bank, fit, val, trip)
    h = result.history
    assert result.best_epoch == int(h.loc[h["val_map@10"].idxmax(), "epoch"])
    if result.stopped_early:
        assert len(h) == result.best_epoch + cfg.patience_epochs


def test_nan_loss_fails_the_run() -> None:
    cfg = _config(lr=1e30)
    bank, fit, val, trip = _setup(cfg)
    with pytest.raises(TrainingFailed, match="nan"):
        train_branch(cfg, bank, fit, val, trip)


def test_channel_augmentation_is_seeded_and_still_learns() -> None:
    cfg = _config(augment_channel=0.5)
    bank, fit, val, trip = _setup(cfg)
    a = train_branch(cfg, bank, fit, val, trip)
    b = train_branch(cfg, bank, fit, val, trip)
    plain = train_branch(_config(), bank, fit, val, trip)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert any(not torch.equal(v, plain.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    tracks, _ = _data()
    assert _val_map(a.model, bank, tracks) > 0.8  # three styles: chance is about 0.35


def test_statistics_appended_after_training_leave_the_learned_part_as_trained_alone() -> None:
    plain_cfg = _config()
    bank, fit, val, trip = _setup(plain_cfg)
    plain = train_branch(plain_cfg, bank, fit, val, trip)
    with_stats = _config(encoder=plain_cfg.encoder.model_copy(update={"stats_weight": 0.7}))
    after = train_branch(with_stats, bank, fit, val, trip)
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, after.model.state_dict()[k])
    e = embed(after.model, bank.matrix)
    assert e.shape[1] == with_stats.encoder.out_dim and after.model.with_stats
    np.testing.assert_allclose(e[:, :8] / 0.3**0.5, embed(plain.model, bank.matrix), atol=1e-5)
    # Trained with the statistics in the output, the learned part comes out different.
    during = train_branch(with_stats.model_copy(update={"stats_in_training": True}), bank, fit, val, trip)
    assert any(not torch.equal(v, during.model.state_dict()[k]) for k, v in plain.model.state_dict().items())


def test_random_crops_are_seeded_and_still_learn() -> None:
    cfg = _config(crop_frames=10)
    bank, fit, val, trip = _setup(cfg)
    a = train_branch(cfg, bank, fit, val, trip)
    b = train_branch(cfg, bank, fit, val, trip)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    whole = train_branch(_config(), bank, fit, val, trip)
    assert any(not torch.equal(v, whole.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    tracks, _ = _data()
    assert _val_map(a.model, bank, tracks) > 0.8  # three styles: chance is about 0.35
