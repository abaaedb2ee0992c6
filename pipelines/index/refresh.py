"""Blue/green index refresh: embed the feature store into a new collection, verify it, move ``tracks``.

Order is what makes it safe: the alias moves last, after the new collection holds every track and each
sampled track finds itself, so a crash anywhere before leaves serving on the old collection. Work is
keyed by (track_id, sha256): a re-run after a crash finds its half-built collection by name and adds only
what is missing, and a refresh under the same model version only embeds new or changed tracks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipelines.catalogue.manifest import read_manifest
from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.index.errors import IndexNotBuilt, RefreshFailed
from pipelines.index.index_map import build_map, map_file, save_map
from pipelines.index.metadata import CollectionMeta, clip, collection_name, now_iso
from pipelines.index.milvus import TrackIndex
from pipelines.model.embedder import Embedder
from pipelines.model.ref import CHAMPION, REFRESH_NAMES, ModelRef
from pipelines.progress import ItemProgress, ProgressLog, Sized, no_items
from pipelines.settings import IndexSettings, Settings
from pipelines.steps import StepJob

log = logging.getLogger(__name__)

Progress = ItemProgress  # the callback shape of pipelines.progress, under the name callers import
Step = Literal["created", "inserted", "verified", "switched"]
METADATA = ("style", "source", "artist", "album", "title")


no_progress = no_items  # the no-op default, under the name callers import


def no_step(step: Step) -> None:
    return None


class FeatureRows(Protocol):
    """What the refresh needs of the feature store (read-only): which content each track has, and its vectors.

    ``StoredFeatures`` (which reads vectors a batch at a time) and ``FeatureMatrix`` give vectors through
    ``iter_batches``; any object with a ``matrix`` (rows in ``track_ids`` order) does too.
    """

    @property
    def track_ids(self) -> list[str]: ...

    @property
    def sha256(self) -> list[str]: ...

    @property
    def version(self) -> str: ...

    @property
    def params(self) -> FeatureParams: ...


def _vector_batches(features: FeatureRows, track_ids: list[str], size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    batches = getattr(features, "iter_batches", None)
    if batches is not None:
        yield from batches(track_ids, size)
        return
    row = {t: i for i, t in enumerate(features.track_ids)}
    matrix = features.matrix  # type: ignore[attr-defined]  # rows without iter_batches are the matrix form
    for start in range(0, len(track_ids), size):
        batch = track_ids[start : start + size]
        yield batch, matrix[[row[t] for t in batch]]


@dataclass(frozen=True)
class RefreshReport:
    """What a refresh did, for logs, the CLI and Airflow's XCom (plain values only)."""

    collection: str
    model_version: str
    mode: Literal["built", "resumed", "updated", "unchanged"]
    embedded: int
    removed: int
    total: int
    previous: str | None
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        prev = f", previous {self.previous} kept for rollback" if self.previous else ""
        dropped = f", dropped {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"{self.mode} {self.collection} (model {self.model_version}): {self.total} tracks, "
            f"{self.embedded} embedded, {self.removed} removed in {self.seconds:.1f}s{prev}{dropped}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(index: TrackIndex, meta: CollectionMeta, expected: int, sample: Sequence[str]) -> None:
    """Raise :class:`RefreshFailed` unless the row count is ``expected`` and each sampled track finds itindex.

    "Finds itself" allows exact ties (two tracks with identical vectors), but never a nearer stranger; and
    if most sampled tracks tie with another, the vectors have collapsed and the collection is refused.
    """
    got = index.count(meta.name)
    if got != expected:
        raise RefreshFailed(f"{meta.name} holds {got} rows, the feature store {expected}")
    rows = {r["track_id"]: r["vector"] for r in index.get(meta.name, sample, ["track_id", "vector"], fresh=True)}
    missing = [t for t in sample if t not in rows]
    if missing:
        raise RefreshFailed(f"{meta.name} lacks sampled tracks {missing[:5]}")
    ids = list(rows)
    results = index.search(meta, np.asarray([rows[t] for t in ids]), limit=5, fields=("track_id",), fresh=True)
    tied = 0
    for track_id, hits in zip(ids, results, strict=True):
        best = hits[0].distance if hits else 1.0
        if best > 1e-3 or not any(h.track_id == track_id and h.distance <= best + 1e-4 for h in hits):
            found = [(h.track_id, round(h.distance, 5)) for h in hits[:3]]
            raise RefreshFailed(f"{meta.name}: nearest neighbours of {track_id} are {found}, not itself")
        tied += any(h.track_id != track_id and h.distance <= 1e-6 for h in hits)
    if len(ids) > 1 and tied > len(ids) // 2:
        raise RefreshFailed(
            f"{meta.name}: {tied} of {len(ids)} sampled tracks have a different track at distance 0; "
            "the model maps different tracks to the same vector (collapsed?)"
        )
    log.info("verified %s: %d rows, %d sampled tracks find themselves", meta.name, got, len(ids))


def _sample(ids: Sequence[str], fresh: Sequence[str], n: int) -> list[str]:
    """Tracks to verify: up to half from those written now, the rest spread over the whole catalogue."""
    rng = np.random.default_rng(0)
    picked = list(rng.choice(list(fresh), min(len(fresh), n // 2), replace=False)) if fresh else []
    rest = [t for t in ids if t not in set(picked)]
    picked += list(rng.choice(rest, min(len(rest), n - len(picked)), replace=False)) if rest else []
    return [str(t) for t in picked]


def _rows(
    track_ids: Sequence[str], vectors: np.ndarray, meta: pd.DataFrame, sha: dict[str, str], model: str, fv: str
) -> list[dict[str, Any]]:
    rows = []
    for tid, vec in zip(track_ids, vectors, strict=True):
        info = meta.loc[tid]
        row: dict[str, Any] = {name: clip(info[name], name) for name in METADATA}
        row.update(track_id=tid, sha256=sha[tid], model_version=model, feature_version=fv, vector=vec.tolist())
        rows.append(row)
    return rows


def prune(index: TrackIndex) -> list[str]:
    """Drop collections beyond the live one and ``collections_kept`` predecessors in its rollback chain.

    The collection a rollback left (``rolled_back_from``) is kept too, until a later refresh succeeds.
    """
    with index.writer("prune old collections"):
        return _prune(index)


def _prune(index: TrackIndex) -> list[str]:
    live = index.alias_target()
    if live is None:
        return []
    keep, current = {live}, live
    left = index.describe(live).rolled_back_from
    if left:
        keep.add(left)
    for _ in range(index.settings.collections_kept):
        previous = index.describe(current).previous
        if not previous or not index.exists(previous):
            break
        keep.add(previous)
        current = previous
    dropped = [m.name for m in index.managed() if m.name not in keep]
    for name in dropped:
        index.drop(name)
    return dropped


def refresh_collection(
    index: TrackIndex,
    embedder: Embedder,
    features: FeatureRows,
    manifest: pd.DataFrame,
    progress: Progress = no_progress,
    on_step: Callable[[Step], None] = no_step,
    map_root: Path | None = None,
) -> RefreshReport:
    """Make the collection for ``embedder``'s version hold exactly the active tracks, then serve it.

    ``manifest`` supplies style/source/artist/album/title; tracks in the feature store but no longer
    active in the manifest are left out. ``on_step`` is called after each step (tests crash there).
    With ``map_root`` (the data root), the collection's 2-D map is written there before the alias moves.
    The whole refresh holds the index writer lock, so two refreshes (or a refresh and a rollback) never
    interleave: none drops a collection another is building, and the previous pointers stay a chain.
    """
    with index.writer(f"refresh the index at {index.uri}"):
        return _refresh(index, embedder, features, manifest, progress, on_step, map_root)


def _refresh(
    index: TrackIndex,
    embedder: Embedder,
    features: FeatureRows,
    manifest: pd.DataFrame,
    progress: Progress,
    on_step: Callable[[Step], None],
    map_root: Path | None = None,
) -> RefreshReport:
    start = time.perf_counter()
    if embedder.feature_version != features.version:
        raise UserError(
            f"model {embedder.version} expects feature version {embedder.feature_version}, "
            f"the feature store holds {features.version}"
        )
    meta_rows = manifest.drop_duplicates("track_id").set_index("track_id")
    position = {t: i for i, t in enumerate(features.track_ids) if t in meta_rows.index}
    want = {t: features.sha256[i] for t, i in position.items()}
    if not want:
        raise UserError("the feature store holds no active tracks: import music and build features first")
    name = collection_name(index.alias, embedder.version, features.version)
    live = index.alias_target()

    if index.exists(name):
        have = index.stored(name, ("sha256", *METADATA))
        mode: Any = "updated" if live == name else "resumed"
    else:
        index.create(
            CollectionMeta(
                name=name,
                model_version=embedder.version,
                feature_version=features.version,
                dim=embedder.dim,
                index_type=index.settings.index_type,
                created_at=now_iso(),
                feature_params=features.params.model_dump(),
            )
        )
        have, mode = {}, "built"
    on_step("created")

    # A row is rewritten when its audio changed, and when only its tags or place did (a moved file keeps its
    # id and vector but may change artist, album or source, which the caps and filters read).
    written = {t: {"sha256": sha, **{n: clip(meta_rows.at[t, n], n) for n in METADATA}} for t, sha in want.items()}
    todo = [t for t, row in written.items() if have.get(t) != row]
    stale = [t for t in have if t not in want]
    size = index.settings.embed_batch_size
    # Vectors are read, embedded and inserted a batch at a time: memory stays flat however large the library.
    meter = ProgressLog(f"refresh {name}: embed and insert", len(todo), log)
    batches = progress(Sized(_vector_batches(features, todo, size), -(-len(todo) // size)))
    unflushed = 0  # bytes of vectors inserted since the last flush
    every = index.settings.flush_every_mb
    for batch, raw in batches:
        vectors = embedder.embed(raw)
        index.insert(name, _rows(batch, vectors, meta_rows, want, embedder.version, features.version))
        meter.add(len(batch))
        unflushed += len(batch) * embedder.dim * 4
        if every is not None and unflushed >= every * 2**20:
            # Milvus Lite's flush turns its whole write buffer into Python objects (~8x the vectors' bytes);
            # flushing often keeps that spike small, but Lite then compacts the many small files into one
            # large segment and indexes it, which at 20k raw vectors cost more (bench/results/scale.md).
            index.flush(name)
            unflushed = 0
    meter.finish()
    index.delete(name, stale)
    index.flush(name)
    on_step("inserted")

    meta = index.describe(name)
    verify(index, meta, expected=len(want), sample=_sample(list(want), todo, index.settings.verify_sample))
    previous = live if live is not None and live != name else meta.previous
    styles = sorted({str(s) for s in meta_rows.loc[list(want), "style"] if isinstance(s, str) and s})
    # An update in place keeps the collection a rollback left (to roll forward to); a switch forgets it.
    moved = {"rolled_back_from": ""} if live != name else {}
    index.set_properties(
        name, state="ready", previous=previous, styles=json.dumps(styles), updated_at=now_iso(), **moved
    )
    if map_root is not None and (todo or stale or not map_file(map_root, name).is_file()):
        # From the feature store through the same embedder (what the collection now holds): reading 8,600-value
        # vectors back out of Milvus Lite took minutes per thousand tracks.
        labels = {t: (written[t]["style"], written[t]["title"] or t) for t in want}

        def embedded(ids: list[str]) -> Iterator[tuple[list[str], np.ndarray]]:
            for batch, raw in _vector_batches(features, ids, size):
                yield batch, embedder.embed(raw)

        save_map(map_root, build_map(name, embedder.version, list(want), labels, embedded))
    on_step("verified")

    if live != name:
        index.switch_alias(name)
    on_step("switched")
    dropped = prune(index)
    if mode == "updated" and not todo and not stale:
        mode = "unchanged"
    report = RefreshReport(
        collection=name,
        model_version=embedder.version,
        mode=mode,
        embedded=len(todo),
        removed=len(stale),
        total=len(want),
        previous=previous or None,
        dropped=dropped,
        seconds=time.perf_counter() - start,
    )
    log.info("refresh: %s", report.line())
    return report


def rollback(index: TrackIndex) -> tuple[str, str]:
    """Point the alias back at the collection the live one replaced; returns (from, to)."""
    with index.writer(f"roll back the index at {index.uri}"):
        return _rollback(index)


def _rollback(index: TrackIndex) -> tuple[str, str]:
    live = index.alias_target()
    if live is None:
        raise IndexNotBuilt("nothing to roll back: the index has never been built")
    previous = index.describe(live).previous
    if not previous or not index.exists(previous):
        raise UserError(f"no earlier collection to roll back to from {live} (it replaced nothing still kept)")
    if index.describe(previous).state != "ready":
        raise UserError(f"refusing to roll back to {previous}: it was never verified")
    index.set_properties(previous, rolled_back_from=live)
    index.switch_alias(previous)
    log.info("rolled back %s -> %s", live, previous)
    return live, previous


class RefreshIndex(BaseModel):
    """The refresh step: resolve the model version, read features and manifest, refresh the collection."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: Settings
    index: IndexSettings | None = None  # default: the settings' own index section
    model_version: str = Field(default=CHAMPION, description="A model reference (pipelines.model.ref.REFRESH_NAMES).")

    def run(self, progress: Progress = no_progress, on_step: Callable[[Step], None] = no_step) -> RefreshReport:
        version = ModelRef.parse(self.model_version, REFRESH_NAMES).resolve(self.settings).text
        params = self.settings.features
        embedder = ModelRef.parse(version).load(self.settings, params)
        if embedder.version != version:  # serving reloads the model by the version recorded in the collection
            raise UserError(f"model loaded for version {version} calls itself {embedder.version}")
        from pipelines.features.store import stored_features

        features = stored_features(self.settings, params)
        manifest = read_manifest(self.settings.manifest_path)
        index = TrackIndex.from_settings(self.settings, self.index or self.settings.index)
        try:
            return refresh_collection(
                index, embedder, features, manifest, progress, on_step, map_root=self.settings.paths.data_root
            )
        finally:
            index.close()


class RefreshJob(StepJob):
    """Which model's embeddings the new collection holds: an alias, 'raw', 'meanstd', 'best' or a version."""

    model_version: str = CHAMPION


def run(settings: Settings, job: RefreshJob, inputs: None = None, progress: Progress = no_progress) -> RefreshReport:
    """The index refresh step: embed the feature store, verify the collection, move the alias."""
    return RefreshIndex(settings=settings, model_version=job.model_version).run(progress)
