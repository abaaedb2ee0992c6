"""The catalogue map at scale: exact PCA for small catalogues, a sampled fit and batched projection above."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipelines.index import catalogue_map
from pipelines.index.catalogue_map import build_map, fit_axes, project


def _vectors(n: int, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim)) + np.outer(np.linspace(-3, 3, n), rng.standard_normal(dim))
    return {f"t{i:04d}": base[i] for i in range(n)}


def _source(vectors: dict[str, np.ndarray], calls: list[int]):
    def batches(ids: list[str]) -> Iterator[tuple[list[str], np.ndarray]]:
        for start in range(0, len(ids), 7):
            batch = ids[start : start + 7]
            calls.append(len(batch))
            yield batch, np.asarray([vectors[t] for t in batch])

    return batches


def test_truncated_svd_gives_the_full_svd_axes() -> None:
    x = np.asarray(list(_vectors(300, 400).values()))
    mean, axes, explained = fit_axes(x)  # 300 x 400: above the size where the truncated SVD is used
    _, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(axes.T), np.abs(vt[:2]), atol=1e-8)
    np.testing.assert_allclose(explained, (s[:2] ** 2) / (s**2).sum(), rtol=1e-9)
    np.testing.assert_allclose(mean, x.mean(axis=0))


def test_small_catalogue_map_is_the_exact_projection() -> None:
    vectors = _vectors(40, 16)
    labels = {t: ("style", f"title {t}") for t in vectors}
    cmap = build_map("c", "raw", list(vectors), labels, _source(vectors, []))
    xy, explained = project(np.asarray([vectors[t] for t in sorted(vectors)]))
    got = {p.track_id: (p.x, p.y) for p in cmap.points}
    assert len(cmap.points) == 40 and cmap.explained == explained
    np.testing.assert_allclose([got[t] for t in sorted(vectors)], xy, atol=1e-5)


def test_large_catalogue_fits_on_a_sample_and_projects_every_track_in_batches(monkeypatch) -> None:
    monkeypatch.setattr(catalogue_map, "FIT_SAMPLE", 10)
    vectors = _vectors(60, 16)
    labels = {t: ("style", t) for t in vectors}
    calls: list[int] = []
    cmap = build_map("c", "raw", list(vectors), labels, _source(vectors, calls))

    assert sorted(p.track_id for p in cmap.points) == sorted(vectors)
    assert max(calls) <= 7 and sum(calls) == 10 + 60, "the sample, then every track, a batch at a time"
    sample = sorted(str(t) for t in np.random.default_rng(0).choice(sorted(vectors), 10, replace=False))
    mean, axes, _ = fit_axes(np.asarray([vectors[t] for t in sample]))
    got = {p.track_id: (p.x, p.y) for p in cmap.points}
    want = (np.asarray([vectors[t] for t in sorted(vectors)]) - mean) @ axes
    np.testing.assert_allclose([got[t] for t in sorted(vectors)], want, atol=1e-5)
