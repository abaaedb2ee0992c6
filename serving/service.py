"""The one implementation of recommendations; the HTTP API and the CLI are thin fronts over it.

Every query is answered from the collection behind the alias ``tracks`` and embedded with the model
version and front-end parameters recorded in that collection, never with whatever model is newest: a
query vector and the catalogue it is compared with always come from the same model.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.audio import AudioRejected, RejectReason, looks_like_audio, other_container, regular_file_size
from pipelines.errors import Unavailable, UserError
from pipelines.features.frontend import TrackVector
from pipelines.features.params import FeatureParams
from pipelines.index.errors import CollectionGone, IndexUnavailable
from pipelines.index.index_map import TrackMap, load_map, refresh_map
from pipelines.index.metadata import RESULT_FIELDS, CollectionMeta, Hit, literal
from pipelines.index.milvus import TrackIndex
from pipelines.model.embedder import Embedder
from pipelines.model.ref import ModelRef
from pipelines.settings import IndexSettings, ServingSettings, Settings
from serving.batching import SearchBatcher
from serving.decoding import DecodePool
from serving.errors import Conflict, InvalidInput, NotAudio, NotFound, TooLarge, shown
from serving.vectors import CopySearch, VectorCopy

if TYPE_CHECKING:  # pandas costs seconds to import; only the library routes need it, and they import it
    import pandas as pd

log = logging.getLogger(__name__)

MAX_FETCH = 16384  # Milvus's largest top-k
# Leading bytes of the containers the front end decodes (WAV, RF64, Ogg, FLAC, MP3 with ID3, AIFF).


@dataclass(frozen=True)
class Filters:
    """Which neighbours count: one style only, no copies of the query, at most M per source/artist."""

    style: str | None = None
    exclude_duplicates: bool = True
    max_per_source: int | None = None
    max_per_artist: int | None = None


@dataclass(frozen=True)
class Recommendation:
    track_id: str
    style: str
    source: str
    artist: str | None
    title: str | None
    distance: float  # cosine distance, 0 = same direction

    @classmethod
    def from_hit(cls, hit: Hit) -> Recommendation:
        f = hit.fields
        return cls(
            track_id=hit.track_id,
            style=f.get("style", ""),
            source=f.get("source", ""),
            artist=f.get("artist") or None,
            title=f.get("title") or None,
            distance=round(hit.distance, 6),
        )


@dataclass(frozen=True)
class LibraryTrack:
    """A catalogue track as the web page lists it (from the manifest)."""

    track_id: str
    style: str
    source: str
    artist: str | None
    album: str | None
    title: str | None
    duration_s: float | None


@dataclass(frozen=True)
class PathStep:
    """One track on a path between two tracks, and its cosine distance to the track before it."""

    track: Recommendation  # its ``distance`` is to the track before it (0 for the first)
    to_end: float  # cosine distance to the end track


@dataclass(frozen=True)
class TrackPath:
    start: str
    end: str
    collection: str
    model_version: str
    steps: list[PathStep]
    reached: bool  # True when the end track was a near neighbour of the last track before it


@dataclass(frozen=True)
class Answer:
    """Recommendations and where they came from."""

    query: str
    collection: str
    model_version: str
    results: list[Recommendation]
    seeds: tuple[str, ...] = ()  # playlists: the seed each result was drawn for


EmbedderLoader = Callable[[CollectionMeta], Embedder]


_UPLOAD_PROBLEMS = {
    RejectReason.EMPTY_FILE: "the upload holds no audio samples",
    RejectReason.ZERO_LENGTH: "the upload holds no audio samples",
    RejectReason.SILENT: "the upload is silent",
    RejectReason.TOO_SHORT: "the upload is too short",
    RejectReason.NON_FINITE: "the upload has samples that are not finite numbers",
    RejectReason.UNSUPPORTED_FORMAT: "the upload's audio format is out of range",
    RejectReason.TIMEOUT: "the upload took too long to decode",
    RejectReason.NOT_AUDIO: "the upload is not audio",
}


def upload_rejected(exc: AudioRejected) -> InvalidInput:
    """The 422 for audio that fails the shared audio rule: what is wrong, then the reason code and detail."""
    problem = _UPLOAD_PROBLEMS.get(exc.reason, "the upload could not be decoded as audio")
    return InvalidInput(f"{problem} ({exc.reason}: {exc.detail})")


class _Caps:
    """At most M tracks per source and per artist (tracks with no artist are not capped by artist)."""

    def __init__(self, filters: Filters) -> None:
        self.caps = {"source": filters.max_per_source, "artist": filters.max_per_artist}
        self.counts: dict[tuple[str, str], int] = {}

    def admit(self, rec: Recommendation) -> bool:
        groups = {"source": rec.source, "artist": rec.artist}
        keys = [(n, g) for n, cap in self.caps.items() if cap is not None and (g := groups[n])]
        if any(self.counts.get(key, 0) >= (self.caps[key[0]] or 0) for key in keys):
            return False
        for key in keys:
            self.counts[key] = self.counts.get(key, 0) + 1
        return True


class Recommender:
    """Nearest neighbours in the live collection, by track id, audio bytes or seed tracks."""

    def __init__(
        self,
        index: TrackIndex,
        settings: Settings,
        serving: ServingSettings | None = None,
        loader: EmbedderLoader | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.serving = serving or settings.serving
        self.loader = loader or self._load_registered
        self.vectors = VectorCopy(index) if self.serving.serving_vector_copy else None
        self.searcher: Any = CopySearch(self.vectors, index) if self.vectors else index
        self.batcher = SearchBatcher(self.searcher, self.serving.serving_max_batch, self.serving.serving_max_inflight)
        self._lock = threading.Lock()
        self._meta: CollectionMeta | None = None
        self._meta_at = 0.0
        self._embedders: dict[tuple[str, str], Embedder] = {}
        self._library: tuple[tuple[int, int], pd.DataFrame] | None = None
        self._maps: dict[str, TrackMap] = {}
        self.decoder = DecodePool(
            self.serving.serving_max_upload_bytes,
            self.serving.serving_decode_timeout_s,
            self.serving.serving_decode_workers,
            self.serving.serving_upload_dir,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, serving: ServingSettings | None = None, index: IndexSettings | None = None
    ) -> Recommender:
        return cls(TrackIndex.from_settings(settings, index), settings, serving)

    def close(self) -> None:
        if self.vectors is not None:
            self.vectors.close()
        self.decoder.close()
        self.index.close()

    def start_copy(self, meta: CollectionMeta | None) -> None:
        """Serve searches from an in-process copy of the live collection from now on (the API's start)."""
        if self.vectors is not None:
            self.vectors.start(meta)

    # ---- which collection, which model ---------------------------------------------------------------

    def collection(self, fresh: bool = False) -> CollectionMeta:
        """The live collection's description, cached for ``serving_alias_ttl_s``."""
        with self._lock:
            now = time.monotonic()
            if not fresh and self._meta and now - self._meta_at < self.serving.serving_alias_ttl_s:
                return self._meta
        meta = self.index.live()
        with self._lock:
            self._meta, self._meta_at = meta, time.monotonic()
        return meta

    def _load_registered(self, meta: CollectionMeta) -> Embedder:
        return ModelRef.parse(meta.model_version).load(self.settings, FeatureParams(**meta.feature_params))

    def embedder(self, meta: CollectionMeta) -> Embedder:
        """The embedder that made ``meta``'s vectors (cached; loading a model is slow)."""
        key = (meta.model_version, meta.feature_version)
        with self._lock:
            if key in self._embedders:
                return self._embedders[key]
        try:
            embedder = self.loader(meta)
        except Exception as exc:
            if not isinstance(exc, UserError | Unavailable):
                log.exception("cannot load model version %s", meta.model_version)
            raise IndexUnavailable(
                f"model version {meta.model_version} (which made collection {meta.name}) cannot be loaded: "
                f"{exc}; check the model registry (MUSICREC_MLFLOW_TRACKING_URI) or roll back with "
                "`musicrec index rollback`"
            ) from exc
        if embedder.version != meta.model_version or embedder.dim != meta.dim:
            raise IndexUnavailable(
                f"loaded model {embedder.version} (dim {embedder.dim}) does not match collection {meta.name} "
                f"(model {meta.model_version}, dim {meta.dim}); run `musicrec index refresh`"
            )
        with self._lock:
            self._embedders[key] = embedder
        return embedder

    def _embedder_soon(self, meta: CollectionMeta) -> Callable[[], Embedder]:
        """:meth:`embedder` of ``meta``, loading in a thread meanwhile when it is not loaded yet.

        A one-shot ``recommend --audio`` then imports torch and loads the model while the child process
        decodes the file, instead of after it.
        """
        with self._lock:
            loaded = (meta.model_version, meta.feature_version) in self._embedders
        if loaded:
            return lambda: self.embedder(meta)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        future = pool.submit(self.embedder, meta)
        pool.shutdown(wait=False)
        return future.result

    def _retrying(self, fn: Callable[[CollectionMeta], Any]) -> Any:
        """Run ``fn`` on the live collection; if a refresh dropped it meanwhile, look the alias up again.

        Milvus's own "no such collection" arrives as :class:`CollectionGone`; a second one (the fresh alias
        names a dropped collection too) reaches the caller as the outage it is (503).
        """
        meta = self.collection()
        try:
            return fn(meta)
        except CollectionGone as exc:
            log.info("collection %s went away (%s); re-reading the alias", meta.name, exc)
            return fn(self.collection(fresh=True))

    # ---- validation ----------------------------------------------------------------------------------

    def _check(self, meta: CollectionMeta, k: int, filters: Filters, limit: int | None = None, name: str = "k") -> None:
        top = limit or self.serving.serving_max_k
        if not 1 <= k <= top:
            raise InvalidInput(f"{name} must be between 1 and {top}, got {k}")
        if filters.style is not None and filters.style not in meta.styles:
            raise InvalidInput(f"unknown style {shown(filters.style)}; styles: {', '.join(meta.styles)}")
        for cap in ("max_per_source", "max_per_artist"):
            value = getattr(filters, cap)
            if value is not None and value < 1:
                raise InvalidInput(f"{cap} must be at least 1, got {value}")

    # ---- searching -----------------------------------------------------------------------------------

    def _search(self, meta: CollectionMeta, vector: np.ndarray, limit: int, expr: str) -> list[Hit]:
        if self.serving.serving_batch_searches:
            return self.batcher.search(meta, vector, limit, expr)
        return self.searcher.search(meta, vector.reshape(1, -1), limit, expr, RESULT_FIELDS)[0]

    def _neighbours(
        self,
        meta: CollectionMeta,
        vector: np.ndarray,
        k: int,
        filters: Filters,
        skip_ids: set[str],
        skip_sha: set[str],
    ) -> list[tuple[Recommendation, str]]:
        """Top ``k`` (with their sha256) after exclusions and caps; fetches more when filters leave too few."""
        expr = f"style == {literal(filters.style)}" if filters.style else ""
        capped = filters.max_per_source is not None or filters.max_per_artist is not None
        fetch = min(MAX_FETCH, k + len(skip_ids) + (4 * k if capped else 2))
        while True:
            hits = self._search(meta, vector, fetch, expr)
            picked: list[tuple[Recommendation, str]] = []
            caps = _Caps(filters)
            for hit in hits:
                sha = str(hit.fields.get("sha256", ""))
                if hit.track_id in skip_ids or (filters.exclude_duplicates and sha in skip_sha):
                    continue
                rec = Recommendation.from_hit(hit)
                if caps.admit(rec):
                    picked.append((rec, sha))
                    if len(picked) == k:
                        return picked
            if len(hits) < fetch or fetch >= MAX_FETCH:
                return picked  # the collection has no more candidates
            fetch = min(MAX_FETCH, fetch * 4)

    def _rows(self, meta: CollectionMeta, track_ids: Sequence[str]) -> dict[str, dict]:
        snap = self.vectors.current(meta) if self.vectors is not None else None
        if snap is not None:
            return snap.rows(track_ids)
        rows = self.index.get(meta.name, track_ids, ("track_id", "sha256", "vector"))
        return {r["track_id"]: r for r in rows}

    def similar(self, track_id: str, k: int = 10, filters: Filters | None = None) -> Answer:
        """Tracks that sound like catalogue track ``track_id``, nearest first."""
        filters = filters or Filters()

        def run(meta: CollectionMeta) -> Answer:
            self._check(meta, k, filters)
            row = self._rows(meta, [track_id]).get(track_id)
            if row is None:
                raise NotFound(f"unknown track id {shown(track_id)}")
            vec = np.asarray(row["vector"], dtype=np.float32)
            found = self._neighbours(meta, vec, k, filters, {track_id}, {row["sha256"]})
            return Answer(track_id, meta.name, meta.model_version, [rec for rec, _ in found])

        return self._retrying(run)

    def similar_audio(self, data: bytes, k: int = 10, filters: Filters | None = None) -> Answer:
        """Tracks that sound like the uploaded audio, embedded exactly like the live collection's tracks."""
        filters = filters or Filters()
        limit = self.serving.serving_max_upload_bytes
        if not data:
            raise InvalidInput("the upload is empty: send the audio file's bytes")
        if len(data) > limit:
            raise TooLarge(f"the upload has {len(data)} bytes; the limit is {limit}")
        if not looks_like_audio(data[:4]):
            other = other_container(data[:4])
            what = f"{other}, which is not taken here" if other else "not audio"
            raise NotAudio(f"the upload is {what}: send WAV, FLAC, Ogg/Opus or MP3")

        return self._similar_decoded(
            lambda params: self.decoder.vector_of_bytes(data, params), lambda: data, k, filters
        )

    def _similar_decoded(
        self,
        decode: Callable[[FeatureParams], TrackVector],
        content: Callable[[], bytes],
        k: int,
        filters: Filters,
    ) -> Answer:
        """Neighbours of audio decoded by ``decode`` (in a child process); ``content`` gives its bytes after."""

        def run(meta: CollectionMeta) -> Answer:
            self._check(meta, k, filters)
            params = FeatureParams(**meta.feature_params)
            model = self._embedder_soon(meta)
            try:
                tv = decode(params)
            except AudioRejected as exc:
                raise upload_rejected(exc) from None
            vec = model().embed(tv.vector[None, :])[0]
            sha = hashlib.sha256(content()).hexdigest()
            found = self._neighbours(meta, vec, k, filters, set(), {sha})
            return Answer("upload:" + sha[:12], meta.name, meta.model_version, [rec for rec, _ in found])

        return self._retrying(run)

    def similar_file(self, path: Path, k: int = 10, filters: Filters | None = None) -> Answer:
        """:meth:`similar_audio` for a local file (the CLI's ``--audio``); the file is only read.

        The child decodes the file itself, so a file that blocks on open costs the deadline, not a hang.
        """
        if not path.exists():
            raise InvalidInput(f"no such file: {path}")
        try:
            size = regular_file_size(path)
        except AudioRejected as exc:
            raise InvalidInput(f"{path}: {exc.reason} ({exc.detail})") from None
        if size > self.serving.serving_max_upload_bytes:
            raise TooLarge(f"{path} has {size} bytes; the limit is {self.serving.serving_max_upload_bytes}")
        if size == 0:
            raise InvalidInput("the upload is empty: send the audio file's bytes")
        filters = filters or Filters()
        return self._similar_decoded(
            lambda params: self.decoder.vector_of_file(path, params), path.read_bytes, k, filters
        )

    def playlist(self, seeds: Sequence[str], length: int = 20, filters: Filters | None = None) -> Answer:
        """A playlist of ``length`` tracks near the seeds, taking turns between seeds; no track twice.

        Seeds themselves and copies of any track already chosen (same sha256) are never repeated.
        """
        filters = filters or Filters()
        order = list(dict.fromkeys(seeds))
        if not order:
            raise InvalidInput("a playlist needs at least one seed track")

        def run(meta: CollectionMeta) -> Answer:
            self._check(meta, length, filters, self.serving.serving_max_playlist, "length")
            rows = self._rows(meta, order)
            missing = [s for s in order if s not in rows]
            if missing:
                raise NotFound(f"unknown seed track id(s): {', '.join(repr(m) for m in missing)}")
            skip_ids, skip_sha = set(order), {rows[s]["sha256"] for s in order}
            uncapped = Filters(filters.style, filters.exclude_duplicates)
            fetch = min(MAX_FETCH, 3 * length + len(order))
            per_seed = [
                self._neighbours(
                    meta, np.asarray(rows[s]["vector"], dtype=np.float32), fetch, uncapped, skip_ids, skip_sha
                )
                for s in order
            ]
            chosen: list[Recommendation] = []
            drawn_for: list[str] = []
            seen_ids, seen_sha, caps = set(skip_ids), set(skip_sha), _Caps(filters)
            cursors = [0] * len(order)
            while len(chosen) < length and any(c < len(x) for c, x in zip(cursors, per_seed, strict=True)):
                for i, candidates in enumerate(per_seed):  # each seed in turn adds its nearest unused track
                    while cursors[i] < len(candidates) and len(chosen) < length:
                        rec, sha = candidates[cursors[i]]
                        cursors[i] += 1
                        duplicate = filters.exclude_duplicates and sha in seen_sha
                        if rec.track_id in seen_ids or duplicate or not caps.admit(rec):
                            continue
                        seen_ids.add(rec.track_id)
                        seen_sha.add(sha)
                        chosen.append(rec)
                        drawn_for.append(order[i])
                        break
            return Answer(",".join(order), meta.name, meta.model_version, chosen, tuple(drawn_for))

        return self._retrying(run)

    def path(self, start: str, end: str, steps: int = 8, breadth: int = 12) -> TrackPath:
        """A walk from ``start`` to ``end`` through nearest neighbours, no track twice.

        Each step moves to one of the current track's ``breadth`` nearest unvisited neighbours: the one
        nearest to the next of ``steps + 1`` evenly spaced waypoints on the line (in embedding space) from
        ``start`` to ``end``, so every step sounds like the last and the walk drifts towards ``end``. It
        ends when ``end`` is that choice, or after ``steps`` tracks in between (``end`` comes next).
        """
        if start == end:
            raise InvalidInput("a path needs two different tracks")
        if not 1 <= steps <= 50:
            raise InvalidInput(f"steps must be between 1 and 50, got {steps}")
        if not 2 <= breadth <= 100:
            raise InvalidInput(f"breadth must be between 2 and 100, got {breadth}")

        def unit(v: Any) -> np.ndarray:
            vec = np.asarray(v, dtype=np.float64)
            norm = np.linalg.norm(vec)
            return vec / norm if norm else vec

        def run(meta: CollectionMeta) -> TrackPath:
            rows = self._rows(meta, [start, end])
            missing = [t for t in (start, end) if t not in rows]
            if missing:
                raise NotFound(f"unknown track id(s): {', '.join(repr(m) for m in missing)}")
            first = self.index.get(meta.name, [start], RESULT_FIELDS)[0]
            a, b = unit(rows[start]["vector"]), unit(rows[end]["vector"])
            visited, seen_sha = {start}, {rows[start]["sha256"]}
            current, here = start, a
            walk = [PathStep(Recommendation.from_hit(Hit(start, 0.0, first)), _cosine(a, b))]
            reached = False
            for i in range(1, steps + 2):
                near = self._neighbours(meta, here.astype(np.float32), breadth, Filters(), visited, seen_sha)
                if not near:
                    break
                waypoint = unit((1 - i / (steps + 1)) * a + (i / (steps + 1)) * b)
                vectors = self._rows(meta, [rec.track_id for rec, _ in near])
                best, sha = min(near, key=lambda n: _cosine(unit(vectors[n[0].track_id]["vector"]), waypoint))
                if best.track_id == end or i == steps + 1:
                    reached = best.track_id == end or any(rec.track_id == end for rec, _ in near)
                    if best.track_id != end:  # out of steps: the end comes next, near or not
                        best = Recommendation.from_hit(Hit(end, 0.0, self.index.get(meta.name, [end])[0]))
                    walk.append(PathStep(replace(best, distance=_cosine(here, b)), 0.0))
                    break
                vec = unit(vectors[best.track_id]["vector"])
                walk.append(PathStep(replace(best, distance=_cosine(here, vec)), _cosine(vec, b)))
                visited.add(best.track_id)
                seen_sha.add(sha)
                current, here = best.track_id, vec
            log.debug("path %s -> %s ended at %s", start, end, current)
            return TrackPath(start, end, meta.name, meta.model_version, walk, reached)

        return self._retrying(run)

    # ---- the library: search, audio files, the map ---------------------------------------------------

    def library(self) -> pd.DataFrame:
        """The active manifest's tracks with a lower-case search text; re-read when the manifest changes."""
        import pandas as pd

        from pipelines.catalogue.manifest import read_manifest
        from pipelines.catalogue.tags import clean_text

        path = self.settings.manifest_path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IndexUnavailable(
                f"no catalogue manifest at {path}; run `musicrec catalogue import` or `musicrec data fetch-demo`"
            ) from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._library and self._library[0] == stamp:
                return self._library[1]
        df = read_manifest(path).drop_duplicates("track_id").set_index("track_id", drop=False)
        # Missing tags are None (never NaN, which reaches callers as a float) and every text field is one
        # printable line, whatever a CSV or an older manifest holds: M3U, XML and JSON print them as is.
        for column in ("title", "artist", "album", "genre"):
            if column in df.columns:
                df[column] = pd.Series(
                    [clean_text(v) if isinstance(v, str) else None for v in df[column]], index=df.index, dtype=object
                )
        text = df[["title", "artist", "album", "style", "source", "track_id"]].fillna("").astype(str)
        df = df.assign(_search=text.agg(" ".join, axis=1).str.lower())
        with self._lock:
            self._library = (stamp, df)
        return df

    def search(self, query: str, limit: int = 20, style: str | None = None) -> tuple[int, list[LibraryTrack]]:
        """Tracks whose title, artist, album, style or source contain every word of ``query``.

        Returns how many match and the first ``limit`` of them (by title); an empty query lists tracks.
        """
        if not 1 <= limit <= self.serving.serving_max_k:
            raise InvalidInput(f"limit must be between 1 and {self.serving.serving_max_k}, got {limit}")
        found = self.matching(query, style)
        return len(found), [_library_track(row) for row in found.head(limit).to_dict("records")]

    def matching(self, query: str, style: str | None = None) -> pd.DataFrame:
        """The manifest rows :meth:`search` finds for ``query``, all of them, by title (ties in manifest order).

        The order is stable, so pages of it (the Subsonic ``search3`` sync) neither repeat nor skip a track.
        """
        if len(query) > 200:
            raise InvalidInput("the search text is longer than 200 characters")
        df = self.library()
        mask = np.ones(len(df), dtype=bool)
        for word in query.lower().split():
            mask &= df["_search"].str.contains(word, regex=False).to_numpy()
        if style:
            mask &= (df["style"] == style).to_numpy()
        found = df[mask]
        key = found["title"].fillna(found["track_id"]).str.lower()
        return found.assign(_key=key).sort_values("_key", kind="stable").drop(columns="_key")

    def audio_file(self, track_id: str) -> Path:
        """The file of catalogue track ``track_id``, found by id in the manifest; 404 for anything else."""
        df = self.library()
        if track_id not in df.index:
            raise NotFound(f"unknown track id {shown(track_id)}")
        row = df.loc[track_id]
        path = Path(str(row["path"]))
        return checked_file(path, int(row["size"]), int(row["mtime_ns"]), str(row["origin"]), shown(track_id))

    def index_map(self) -> TrackMap:
        """The 2-D map of the live collection: stored at refresh, computed and stored here if missing."""
        meta = self.collection()
        with self._lock:
            if meta.name in self._maps:
                return self._maps[meta.name]
        cmap = load_map(self.settings.paths.data_root, meta.name)
        if cmap is None:
            log.info("no stored map for %s; computing it", meta.name)
            cmap = refresh_map(self.index, meta, self.settings.paths.data_root)
        with self._lock:
            self._maps = {meta.name: cmap}
        return cmap

    def resolve(self, ref: str) -> str:
        """The track id for ``ref``: a track id, a MusicBrainz recording id, or a path relative to the music folder.

        A music server knows its tracks by path or MusicBrainz id, not by musicrec's ids; 404 when none matches.
        """
        df = self.library()
        if ref in df.index:
            return ref
        if "mbid" in df and (hit := df.index[df["mbid"] == ref.strip().lower()]).size:
            return str(hit[0])
        folder = self.serving.music_folder
        if folder is not None and ref and not Path(ref).is_absolute():
            want = str(Path(folder).expanduser().resolve() / ref)
            if (hit := df.index[df["path"] == want]).size:
                return str(hit[0])
        raise NotFound(
            f"no catalogue track matches {shown(ref)} (by track id, MusicBrainz id or path in the music folder)"
        )

    def distances_from(self, track_id: str, others: Sequence[str]) -> dict[str, float]:
        """Cosine distance from ``track_id`` to each of ``others`` in the live collection."""

        def run(meta: CollectionMeta) -> dict[str, float]:
            rows = self._rows(meta, [track_id, *others])
            if track_id not in rows:
                raise NotFound(f"unknown track id {shown(track_id)}")
            origin = np.asarray(rows[track_id]["vector"], dtype=np.float64)
            origin /= np.linalg.norm(origin) or 1.0
            out = {}
            for other in others:
                if other in rows:
                    vec = np.asarray(rows[other]["vector"], dtype=np.float64)
                    out[other] = _cosine(origin, vec / (np.linalg.norm(vec) or 1.0))
            return out

        return self._retrying(run)

    # ---- status and evaluation -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Model version, collection, track count and index type of what is being served."""
        meta = self.collection(fresh=True)
        return {
            "status": "ok",
            "alias": self.index.alias,
            "collection": meta.name,
            "model_version": meta.model_version,
            "feature_version": meta.feature_version,
            "tracks": self.index.count(meta.name),
            "index_type": meta.index_type,
            "dim": meta.dim,
            "styles": list(meta.styles),
            "milvus": self.index.uri,
        }


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine distance between two unit vectors."""
    return round(max(0.0, 1.0 - float(np.dot(u, v))), 6)


def checked_file(path: Path, size: int, mtime_ns: int, origin: str, name: str) -> Path:
    """``path`` if it is still the regular file the catalogue imported (same size and mtime), else an error.

    A file replaced, rewritten or swapped for a link to something else (a system file, a FIFO) is not
    served: 409 until `musicrec catalogue sync` looks at it again; a file gone is 404. A link that now
    leads out of the folder the track was imported from is refused even when the numbers match.
    """
    sync = "run `musicrec catalogue sync` to take the new file in"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFound(f"the audio file of track {name} is missing; {sync} or re-import the catalogue") from None
    except OSError as exc:
        raise Conflict(f"the audio file of track {name} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Conflict(f"the audio file of track {name} is not a regular file any more; {sync}")
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        raise Conflict(f"the audio file of track {name} changed since it was imported; {sync}")
    root = Path(origin)
    linked_out = path.is_symlink() and root.is_absolute() and root.is_dir()
    if linked_out and not path.resolve().is_relative_to(root.resolve()):
        raise Conflict(f"the audio file of track {name} is a link out of {root}; it is not served")
    return path


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value == "" else str(value)


def _library_track(row: dict[str, Any]) -> LibraryTrack:
    duration = row.get("duration_s")
    return LibraryTrack(
        track_id=str(row["track_id"]),
        style=str(row["style"]),
        source=str(row.get("source") or ""),
        artist=_text(row.get("artist")),
        album=_text(row.get("album")),
        title=_text(row.get("title")),
        duration_s=None if duration is None or np.isnan(duration) else round(float(duration), 1),
    )
