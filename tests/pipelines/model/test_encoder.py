"""The branch: shapes, unit-length output, standardisation kept in the weights, time-shift behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.model.encoder import Dropout, Encoder, EncoderConfig, Ensemble, build_encoder, std_over, with_deltas

# The learned part alone; the statistics path appended to it is tested on its own below.
SMALL = {"n_frames": 12, "n_mfcc": 5, "frame_layers": (8,), "head_layers": (8,), "dim": 4, "stats_weight": 0.0}


def _x(n: int = 6, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.standard_normal((n, 60)) * 50 + 10).astype(np.float32))


@pytest.mark.parametrize(
    "extra",
    [
        {"kind": "frames", "pooling": "meanstd", "deltas": 1},
        {"kind": "frames", "pooling": "mean", "deltas": 2, "context": 3},
        {"kind": "frames", "pooling": "max", "deltas": 0},
        {"kind": "flat", "deltas": 0},
    ],
)
def test_output_is_unit_length_with_configured_size(extra: dict) -> None:
    model = Encoder(EncoderConfig(**SMALL, **extra)).eval()
    model.fit_scaler(_x(20))
    for n in (1, 2, 7):
        out = model(_x(n))
        assert out.shape == (n, 4)
        assert torch.allclose(out.norm(dim=1), torch.ones(n), atol=1e-5)


def test_standardisation_statistics_travel_with_the_weights() -> None:
    cfg = EncoderConfig(**SMALL)
    model = Encoder(cfg).eval()
    model.fit_scaler(_x(30, seed=1))
    assert model.mean.abs().sum() > 0 and not torch.allclose(model.std, torch.ones_like(model.std))
    clone = Encoder(cfg).eval()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(_x(3)), model(_x(3)))


def test_scaler_makes_the_output_independent_of_input_scale_of_training() -> None:
    """Raw MFCCs span hundreds (c0) to units: after fit_scaler, the first layer sees ~unit-variance input."""
    model = Encoder(EncoderConfig(**SMALL, deltas=0))
    x = _x(200, seed=2)
    model.fit_scaler(x)
    frames = x.reshape(-1, 5)
    z = (frames - model.mean) / model.std
    assert torch.allclose(z.mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(5), atol=1e-3)


def test_pooled_branch_ignores_frame_order_and_flat_branch_does_not() -> None:
    """Why per-frame layers + pooling: moving frames in time leaves the embedding unchanged."""
    x = _x(4, seed=3)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    shuffled = x.reshape(4, 12, 5)[:, perm].reshape(4, 60)
    pooled = Encoder(EncoderConfig(**SMALL, deltas=0, context=1, pooling="mean")).eval()
    assert torch.allclose(pooled(x), pooled(shuffled), atol=1e-5)
    flat = Encoder(EncoderConfig(**SMALL, kind="flat", deltas=0)).eval()
    assert not torch.allclose(flat(x), flat(shuffled), atol=1e-3)


def test_deltas_are_centred_differences() -> None:
    frames = torch.arange(10, dtype=torch.float32).reshape(1, 5, 2) ** 2
    d = with_deltas(frames, 1)
    assert d.shape == (1, 5, 4)
    # interior frame 2: (f3 - f1) / 2
    assert torch.allclose(d[0, 2, 2:], (frames[0, 3] - frames[0, 1]) / 2)


def test_bad_input_shape_and_even_context_are_refused() -> None:
    model = Encoder(EncoderConfig(**SMALL))
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.zeros(2, 59))
    with pytest.raises(ValueError, match="odd"):
        Encoder(EncoderConfig(**SMALL, context=2))


def test_statistics_path_keeps_unit_length_and_splits_the_cosine() -> None:
    from pipelines.training.evaluate import baseline_embeddings

    cfg = EncoderConfig(n_frames=12, n_mfcc=5, frame_layers=(8,), head_layers=(8,), dim=4, stats_weight=0.3)
    model = Encoder(cfg).eval()
    x = torch.randn(6, 60) * 5
    with torch.no_grad():
        out = model(x)
    assert out.shape == (6, cfg.out_dim) == (6, 4 + 10)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(6))
    # The appended part is the mean+std baseline's own embedding, scaled by sqrt(w).
    stats = out[:, 4:].numpy() / 0.3**0.5
    np.testing.assert_allclose(stats, baseline_embeddings("meanstd", x.numpy(), 5), atol=1e-5)
    cos = (out @ out.T).numpy()
    learned = out[:, :4].numpy() / 0.7**0.5
    np.testing.assert_allclose(cos, 0.7 * learned @ learned.T + 0.3 * stats @ stats.T, atol=1e-5)


def test_two_pass_std_agrees_with_torch_and_has_no_nan_gradient_where_it_is_zero() -> None:
    torch.manual_seed(0)
    h = torch.relu(torch.randn(4, 50, 8))
    h[:, :, 2] = 0.0  # a unit that is off in every frame
    h.requires_grad_()
    ours, theirs = std_over(h, 1), h.std(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(ours.sum(), h)
    (want,) = torch.autograd.grad(theirs.sum(), h)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-6)


def test_dropout_drops_about_p_and_keeps_the_mean_and_is_off_in_eval() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.1)
    x = torch.ones(200, 500)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.01
    assert torch.equal(drop.eval()(x), x)


def test_frames_of_any_length_embed_like_the_vector_of_that_many() -> None:
    model = Encoder(EncoderConfig(n_frames=12, n_mfcc=5, dim=4, stats_weight=0.5)).eval()
    x = torch.randn(3, 12 * 5)
    torch.testing.assert_close(model.forward_frames(x.reshape(3, 12, 5)), model(x), rtol=0, atol=0)
    assert model.forward_frames(x.reshape(3, 12, 5)[:, 2:9]).shape == (3, model.config.out_dim)


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_an_ensembles_cosine_is_the_mean_of_its_members_and_the_statistics(weight: float) -> None:
    config = EncoderConfig(**{**SMALL, "stats_weight": weight})
    torch.manual_seed(0)
    members = [Encoder(config).eval() for _ in range(3)]
    for m in members:
        m.fit_scaler(_x(32, seed=9))
    ensemble = Ensemble.of(members).eval()
    assert ensemble.config.members == 3 and ensemble.config.out_dim == 3 * 4 + (10 if weight else 0)
    a, b = _x(5, seed=1), _x(5, seed=2)
    with torch.no_grad():
        ya, yb = ensemble(a), ensemble(b)
        torch.testing.assert_close(ya.norm(dim=1), torch.ones(5))
        parts = [
            (m.learned_frames(a.reshape(5, 12, 5)) * m.learned_frames(b.reshape(5, 12, 5))).sum(1) for m in members
        ]
        learned = torch.stack(parts).mean(0)
        stats = Encoder(config.model_copy(update={"stats_weight": 1.0})).eval()  # statistics only, weight 1
        cos_stats = (stats(a)[:, -10:] * stats(b)[:, -10:]).sum(1)
    want = (1 - weight) * learned + weight * cos_stats
    torch.testing.assert_close((ya * yb).sum(1), want, atol=1e-5, rtol=0)


def test_one_member_is_the_branch_itself_and_the_ensemble_exports() -> None:
    config = EncoderConfig(**{**SMALL, "stats_weight": 0.5})
    assert isinstance(build_encoder(config), Encoder)
    ensemble = build_encoder(config.model_copy(update={"members": 2})).eval()
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    with pytest.raises(ValueError, match="one branch"):
        Encoder(config.model_copy(update={"members": 2}))
    x = _x(4)
    program = torch.export.export(ensemble, (x,)).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), ensemble(x), rtol=0, atol=1e-6)
