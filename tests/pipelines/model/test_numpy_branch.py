"""The numpy forward pass of the branch gives the torch module's outputs, for each shape of branch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.model import numpy_branch
from pipelines.model.encoder import Encoder, EncoderConfig, Ensemble
from pipelines.model.numpy_branch import NumpyBranch, NumpyEmbedder
from pipelines.model.torch_embedder import TorchEmbedder

SHAPES = [
    {},
    {"context": 3, "pooling": "mean", "deltas": 2},
    {"kind": "flat", "head_layers": (32, 16), "n_frames": 20},
    {"pooling": "max", "stats_weight": 0.0, "frame_layers": (16, 8)},
    {"frame_layers": (), "head_layers": (), "deltas": 0, "dropout": 0.0},
]


def _encoder(shape: dict) -> Encoder:
    config = EncoderConfig(**{"n_frames": 40, "n_mfcc": 13, **shape})
    torch.manual_seed(0)
    encoder = Encoder(config)
    encoder.fit_scaler(torch.randn(64, config.input_dim) * 40.0)
    return encoder.eval()


@pytest.mark.parametrize("shape", SHAPES)
def test_numpy_forward_equals_torch(shape: dict, tmp_path: Path) -> None:
    encoder = _encoder(shape)
    branch = NumpyBranch.from_state(encoder.config, {k: v.numpy() for k, v in encoder.state_dict().items()})
    branch.save(tmp_path / "w.npz")
    loaded = NumpyBranch.load(encoder.config, tmp_path / "w.npz")
    x = torch.randn(9, encoder.config.input_dim, generator=torch.Generator().manual_seed(3)) * 40.0
    with torch.no_grad():
        want = encoder(x).numpy()
    np.testing.assert_allclose(branch(x.numpy()), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(loaded(x.numpy()), want, atol=1e-5, rtol=0)

    args = {"version": "1", "feature_version": "f", "dim": want.shape[1], "input_dim": encoder.config.input_dim}
    np.testing.assert_allclose(
        NumpyEmbedder(**args, branch=loaded, batch_size=4).embed(x.numpy()),
        TorchEmbedder(**args, module=encoder).embed(x.numpy()),
        atol=1e-5,
        rtol=0,
    )


def test_wrong_input_width_is_refused() -> None:
    encoder = _encoder({})
    branch = NumpyBranch.from_state(encoder.config, {k: v.numpy() for k, v in encoder.state_dict().items()})
    with pytest.raises(ValueError, match="expected input of shape"):
        branch(np.zeros((1, 7), np.float32))


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3]])
def test_numpy_ensemble_equals_torch(shape: dict, tmp_path: Path) -> None:
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(_encoder(shape))
    ensemble = Ensemble.of(members).eval()
    model = numpy_branch.from_state(ensemble.config, {k: v.numpy() for k, v in ensemble.state_dict().items()})
    assert isinstance(model, numpy_branch.NumpyEnsemble)
    numpy_branch.save(model, tmp_path / "w.npz")
    loaded = numpy_branch.load(ensemble.config, tmp_path / "w.npz")
    x = torch.randn(5, ensemble.config.input_dim, generator=torch.Generator().manual_seed(4)) * 40.0
    with torch.no_grad():
        want = ensemble(x).numpy()
    assert want.shape == (5, ensemble.config.out_dim)
    np.testing.assert_allclose(loaded(x.numpy()), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unexpected array"):
        numpy_branch.from_state(ensemble.config.model_copy(update={"members": 2}), model.arrays())
