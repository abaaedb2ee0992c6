"""A 2-D map of a collection: its embeddings projected by PCA, one file per collection under the data root.

Computed at refresh from the vectors the collection serves (so the map always shows what serving
searches) and stored as ``<data root>/maps/<collection>.json``; collection names are made of
``[A-Za-z0-9_]`` only (see :func:`pipelines.index.milvus.collection_name`), so the name is a safe file name.
Points are stored in a fixed random order: the first N points inside any box are a uniform sample of that
box, which is how a reader downsamples without ever sending every point.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.index.metadata import CollectionMeta
from pipelines.index.milvus import TrackIndex

log = logging.getLogger(__name__)

MAPS_DIR = "maps"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class MapPoint:
    track_id: str
    x: float
    y: float
    style: str
    title: str


@dataclass(frozen=True)
class TrackMap:
    """Every track of one collection at a 2-D position, in a fixed random order."""

    collection: str
    model_version: str
    explained: tuple[float, float]  # share of variance along each axis
    points: list[MapPoint]

    @property
    def styles(self) -> list[str]:
        return sorted({p.style for p in self.points})

    def bounds(self) -> tuple[float, float, float, float]:
        if not self.points:
            return (0.0, 0.0, 1.0, 1.0)
        xs = [p.x for p in self.points]
        ys = [p.y for p in self.points]
        return (min(xs), min(ys), max(xs), max(ys))

    def window(self, box: tuple[float, float, float, float] | None, limit: int) -> tuple[int, list[MapPoint]]:
        """How many points lie inside ``box`` (x0, y0, x1, y1; None = all) and a uniform sample of ``limit``."""
        inside = self.points
        if box is not None:
            x0, y0, x1, y1 = box
            inside = [p for p in self.points if x0 <= p.x <= x1 and y0 <= p.y <= y1]
        return len(inside), inside[:limit]


def map_file(data_root: Path, collection: str) -> Path:
    if not _SAFE_NAME.match(collection):
        raise ValueError(f"not a collection name: {collection!r}")
    return data_root / MAPS_DIR / f"{collection}.json"


# The axes are fitted on at most this many vectors (a fixed random sample); then every vector is projected a
# batch at a time. Below it the map is the exact PCA; above it, memory and time stop growing with the square
# of the catalogue (an exact SVD of 20,000 raw 8,600-value vectors takes minutes and gigabytes).
FIT_SAMPLE = 2000
_BATCH = 256


def fit_axes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """PCA of ``vectors`` to two dimensions: (mean, axes (dim, 2), share of variance along each axis).

    Only the top two components are needed: above a few hundred rows they come from a truncated SVD
    (ARPACK, fixed start vector), which is exact to rounding and far cheaper than a full SVD of a
    2000 x 8600 matrix; the total variance is the squared Frobenius norm either way.
    """
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    if min(centred.shape) > 256:
        from scipy.sparse.linalg import svds

        v0 = np.random.default_rng(0).standard_normal(min(centred.shape))
        _, s, vt = svds(centred, k=2, v0=v0)
        top = np.argsort(s)[::-1]
        s, vt = s[top], vt[top]
    else:
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((vectors.shape[1], 2))
    axes[:, : min(2, vt.shape[0])] = vt[:2].T
    total = float(np.square(centred).sum()) or 1.0
    share = [float(v**2) / total for v in s[:2]] + [0.0, 0.0]
    return mean, axes, (share[0], share[1])


def project(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """PCA to two dimensions (centred, by SVD) and the share of variance each axis explains."""
    if len(vectors) == 0:
        return np.zeros((0, 2)), (0.0, 0.0)
    mean, axes, explained = fit_axes(vectors)
    return (vectors - mean) @ axes, explained


VectorSource = Callable[[list[str]], Iterable[tuple[list[str], np.ndarray]]]


def build_map(
    collection: str, model_version: str, ids: Sequence[str], labels: dict[str, tuple[str, str]], vectors: VectorSource
) -> TrackMap:
    """The map of ``ids`` (``labels``: track id -> (style, title)) from ``vectors``, which yields batches.

    The axes come from every vector up to :data:`FIT_SAMPLE` tracks, else from a fixed random sample;
    then every vector is projected batch by batch, so memory stays bounded however large the catalogue.
    """
    ids = sorted(ids)
    if not ids:
        return TrackMap(collection, model_version, (0.0, 0.0), [])
    small = len(ids) <= FIT_SAMPLE  # then the one read serves both the fit and the projection
    rng = np.random.default_rng(0)
    fit_ids = ids if small else sorted(str(t) for t in rng.choice(ids, FIT_SAMPLE, replace=False))
    got: dict[str, np.ndarray] = {}
    for batch, block in vectors(fit_ids):
        got.update(zip(batch, np.asarray(block, dtype=np.float64), strict=True))
    sample_ids = [t for t in fit_ids if t in got]
    sample = np.asarray([got[t] for t in sample_ids]).reshape(len(sample_ids), -1)
    if not small:
        got.clear()  # the fit's rows are in ``sample`` now; every vector is read again for the projection
    mean, axes, explained = fit_axes(sample)
    del sample
    xy: dict[str, np.ndarray] = {}
    if small:
        xy = {t: (got[t] - mean) @ axes for t in sample_ids}
    else:
        for batch, block in vectors(ids):
            xy.update(zip(batch, (np.asarray(block, dtype=np.float64) - mean) @ axes, strict=True))
    kept = [t for t in ids if t in xy]
    order = np.random.default_rng(0).permutation(len(kept))
    points = [
        MapPoint(kept[i], round(float(xy[kept[i]][0]), 5), round(float(xy[kept[i]][1]), 5), *labels[kept[i]])
        for i in order
    ]
    return TrackMap(collection, model_version, explained, points)


def compute_map(index: TrackIndex, meta: CollectionMeta) -> TrackMap:
    """The map of ``meta``'s collection, from the vectors stored in it (fetched a batch at a time)."""
    labels: dict[str, tuple[str, str]] = {}

    def fetch(ids: list[str]) -> Iterator[tuple[list[str], np.ndarray]]:
        for start in range(0, len(ids), _BATCH):  # vectors arrive as Python floats: convert a batch at a time
            rows = index.get(meta.name, ids[start : start + _BATCH], ("track_id", "style", "title", "vector"))
            if rows:
                labels.update((r["track_id"], (str(r["style"]), str(r["title"] or r["track_id"]))) for r in rows)
                yield [r["track_id"] for r in rows], np.asarray([r["vector"] for r in rows], dtype=np.float64)

    ids = sorted(index.fingerprints(meta.name))
    return build_map(meta.name, meta.model_version, ids, labels, fetch)


def save_map(data_root: Path, cmap: TrackMap) -> Path:
    """Write the map next to nothing else: atomically, so a reader never sees half a file."""
    path = map_file(data_root, cmap.collection)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "collection": cmap.collection,
        "model_version": cmap.model_version,
        "explained": list(cmap.explained),
        "points": [[p.track_id, p.x, p.y, p.style, p.title] for p in cmap.points],
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, separators=(",", ":")))
    tmp.replace(path)
    log.info("map of %s: %d points -> %s", cmap.collection, len(cmap.points), path)
    return path


def load_map(data_root: Path, collection: str) -> TrackMap | None:
    """The stored map of ``collection``, or None when there is none."""
    path = map_file(data_root, collection)
    if not path.is_file():
        return None
    body = json.loads(path.read_text())
    points = [MapPoint(str(t), float(x), float(y), str(s), str(title)) for t, x, y, s, title in body["points"]]
    return TrackMap(body["collection"], body["model_version"], tuple(body["explained"]), points)


def refresh_map(index: TrackIndex, meta: CollectionMeta, data_root: Path) -> TrackMap:
    cmap = compute_map(index, meta)
    save_map(data_root, cmap)
    return cmap
