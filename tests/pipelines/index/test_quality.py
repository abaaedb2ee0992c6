"""The index's offline quality number on a case small enough to count by hand."""

from __future__ import annotations

import numpy as np

from pipelines.index.quality import exact_style_agreement


def test_exact_style_agreement_excludes_self_and_copies() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    styles = np.array(["a", "a", "b", "b", "b"])
    sha = np.array(["x", "x", "y", "z", "w"])  # rows 0 and 1 are copies of one file
    # top-1: row0 -> row2 (b, wrong; row1 is its copy), row1 -> row2 (wrong), row2 -> row0 (wrong),
    # row3 -> row4 (right), row4 -> row3 (right)
    assert exact_style_agreement(vectors, styles, sha, 1) == 2 / 5
