"""The index's offline quality numbers: same-style share of the top k, for the model and the raw MFCC baseline.

``musicrec recommend --examples`` (the end of ``make run``) prints them; the review page picks its example
queries here too.
"""

from __future__ import annotations

import numpy as np

from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.index.metadata import CollectionMeta
from pipelines.index.milvus import CatalogueIndex
from pipelines.settings import Settings


def style_agreement(index: CatalogueIndex, meta: CollectionMeta, k: int = 10) -> tuple[float, int]:
    """Same-style share of every track's top ``k`` (itself and copies excluded), and the track count.

    The headline quality number: how often a recommendation has the query's style label.
    """
    ids = list(index.fingerprints(meta.name))
    rows = {r["track_id"]: r for r in index.get(meta.name, ids, ("track_id", "sha256", "vector"))}
    styles = {r["track_id"]: r for r in index.get(meta.name, ids, ("track_id", "style"))}
    vectors = np.asarray([rows[t]["vector"] for t in ids], dtype=np.float32)
    same = total = 0
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        hits = index.search(meta, vectors[start : start + 256], k + 5, "", ("track_id", "sha256", "style"))
        for tid, found in zip(chunk, hits, strict=True):
            top = [h for h in found if h.track_id != tid and h.fields["sha256"] != rows[tid]["sha256"]][:k]
            same += sum(h.fields["style"] == styles[tid]["style"] for h in top)
            total += len(top)
    return (same / total if total else 0.0), len(ids)


def raw_baseline_agreement(settings: Settings, meta: CollectionMeta, k: int = 10) -> float | None:
    """The same number as :func:`style_agreement` for the untrained raw MFCC vectors (exact cosine).

    Read from the feature store of the live collection's front end, so the two numbers describe the
    same tracks with and without the trained branch; None when that feature version is not stored.
    """
    from pipelines.catalogue.manifest import read_manifest
    from pipelines.features.store import read_features
    from pipelines.model.embedder import l2_normalise

    try:
        features = read_features(settings, FeatureParams(**meta.feature_params))
    except UserError:
        return None
    manifest = read_manifest(settings.manifest_path).set_index("track_id")
    styles = manifest.loc[features.track_ids, "style"].to_numpy()
    return exact_style_agreement(l2_normalise(features.matrix), styles, np.asarray(features.sha256), k)


def example_tracks(index: CatalogueIndex, meta: CollectionMeta, n: int) -> list[str]:
    """``n`` catalogue tracks for a demonstration: each style in turn (styles and ids sorted)."""
    ids = sorted(index.fingerprints(meta.name))
    by_style: dict[str, list[str]] = {}
    for row in sorted(index.get(meta.name, ids, ("track_id", "style")), key=lambda r: r["track_id"]):
        by_style.setdefault(row["style"], []).append(row["track_id"])
    queues = [by_style[s] for s in sorted(by_style)]
    picked: list[str] = []
    while len(picked) < min(n, len(ids)):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def exact_style_agreement(unit_vectors: np.ndarray, styles: np.ndarray, sha256: np.ndarray, k: int) -> float:
    """Same-style share of each row's top ``k`` by exact cosine, itself and copies (same sha256) excluded."""
    sims = unit_vectors @ unit_vectors.T
    sims[sha256[:, None] == sha256[None, :]] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float((styles[top] == styles[:, None]).mean())
