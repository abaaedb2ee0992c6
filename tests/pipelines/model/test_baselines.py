"""The servable mean+std baseline embeds exactly as the evaluation's ``meanstd`` baseline scores."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.model.baselines import MeanStdEmbedder
from pipelines.training.evaluate import baseline_embeddings


def test_meanstd_embedder_matches_the_evaluated_baseline() -> None:
    x = np.random.default_rng(0).standard_normal((5, 8 * 20)).astype(np.float32)
    e = MeanStdEmbedder(feature_version="fv", input_dim=160, n_mfcc=20)
    out = e.embed(x)
    assert out.shape == (5, 40) == (5, e.dim) and e.version == "meanstd"
    np.testing.assert_allclose(out, baseline_embeddings("meanstd", x, 20), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, 160\)"):
        e.embed(x[:, :100])
