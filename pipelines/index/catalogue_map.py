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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.index.metadata import CollectionMeta
from pipelines.index.milvus import CatalogueIndex

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
class CatalogueMap:
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


def project(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """PCA to two dimensions (centred, by SVD) and the share of variance each axis explains."""
    if len(vectors) == 0:
        return np.zeros((0, 2)), (0.0, 0.0)
    centred = vectors - vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((vectors.shape[1], 2))
    axes[:, : min(2, vt.shape[0])] = vt[:2].T
    total = float((s**2).sum()) or 1.0
    share = [float(v**2) / total for v in s[:2]] + [0.0, 0.0]
    return centred @ axes, (share[0], share[1])


def compute_map(index: CatalogueIndex, meta: CollectionMeta) -> CatalogueMap:
    """The map of ``meta``'s collection, from the vectors stored in it."""
    ids = sorted(index.fingerprints(meta.name))
    rows = {r["track_id"]: r for r in index.get(meta.name, ids, ("track_id", "style", "title", "vector"))}
    ids = [t for t in ids if t in rows]
    vectors = np.asarray([rows[t]["vector"] for t in ids], dtype=np.float64).reshape(len(ids), -1)
    xy, explained = project(vectors)
    order = np.random.default_rng(0).permutation(len(ids))
    points = [
        MapPoint(
            ids[i],
            round(float(xy[i, 0]), 5),
            round(float(xy[i, 1]), 5),
            str(rows[ids[i]]["style"]),
            str(rows[ids[i]]["title"] or ids[i]),
        )
        for i in order
    ]
    return CatalogueMap(meta.name, meta.model_version, explained, points)


def save_map(data_root: Path, cmap: CatalogueMap) -> Path:
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


def load_map(data_root: Path, collection: str) -> CatalogueMap | None:
    """The stored map of ``collection``, or None when there is none."""
    path = map_file(data_root, collection)
    if not path.is_file():
        return None
    body = json.loads(path.read_text())
    points = [MapPoint(str(t), float(x), float(y), str(s), str(title)) for t, x, y, s, title in body["points"]]
    return CatalogueMap(body["collection"], body["model_version"], tuple(body["explained"]), points)


def refresh_map(index: CatalogueIndex, meta: CollectionMeta, data_root: Path) -> CatalogueMap:
    cmap = compute_map(index, meta)
    save_map(data_root, cmap)
    return cmap
