"""A trained branch behind the Embedder protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.model.encoder import Encoder, EncoderConfig
from pipelines.model.torch_embedder import TorchEmbedder


def _embedder(batch_size: int = 3) -> tuple[TorchEmbedder, Encoder]:
    # The default branch: 5 learned values with the 2 x 4 mean+std statistics appended (13).
    model = Encoder(EncoderConfig(n_frames=6, n_mfcc=4, frame_layers=(8,), head_layers=(8,), dim=5)).eval()
    model.fit_scaler(torch.randn(10, 24) * 20)
    return TorchEmbedder("7", "vabc", model.config.out_dim, 24, model, batch_size=batch_size), model


def test_embeds_in_batches_exactly_like_the_module() -> None:
    emb, model = _embedder()
    x = np.random.default_rng(0).standard_normal((8, 24)).astype(np.float32)
    x.setflags(write=False)  # feature-store matrices are read-only views of Arrow memory
    out = emb.embed(x)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.copy())).numpy()
    assert out.shape == (8, 13) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_protocol_fields_and_empty_input() -> None:
    emb, _ = _embedder()
    assert (emb.version, emb.feature_version, emb.dim) == ("7", "vabc", 13)
    assert emb.embed(np.zeros((0, 24), np.float32)).shape == (0, 13)


def test_wrong_width_is_a_clear_error() -> None:
    emb, _ = _embedder()
    with pytest.raises(ValueError, match=r"\(n, 24\)"):
        emb.embed(np.zeros((2, 23), np.float32))
