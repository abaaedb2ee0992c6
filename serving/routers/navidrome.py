"""Navidrome's SonicSimilarity plugin calls these: songs in and out as Navidrome's ``SongRef``.

The plugin (integrations/navidrome) forwards ``nd_get_sonic_similar_tracks`` and ``nd_find_sonic_path``
here unchanged. Navidrome's songs are resolved to catalogue tracks by :mod:`serving.songref` (404 with
the reason when none matches, 409 when several match equally well); the answers carry the manifest's
name, artist, album, MusicBrainz id and duration, which Navidrome maps back to its own songs.
"""

from __future__ import annotations

import logging
from threading import Lock
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from serving.deps import RecommenderDep, require_api_key
from serving.errors import Conflict, InvalidInput, NotFound
from serving.schemas import error_responses
from serving.service import Recommender
from serving.songref import SongIndex, SongQuery, Unresolved
from serving.subsonic import PATH_MAX, scored_path, similarity

log = logging.getLogger(__name__)

router = APIRouter(prefix="/navidrome", tags=["navidrome"], dependencies=[Depends(require_api_key)])

_ERRORS = error_responses((401, 403, 404, 409, 422, 503))
_Text = Annotated[str, Field(max_length=500)]


class ArtistRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: _Text | None = None
    name: _Text = ""
    mbid: _Text | None = None


class SongRef(BaseModel):
    """Navidrome's SongRef (plugins/capabilities/sonic_similarity.yaml): only ``name`` is required."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    id: _Text | None = Field(None, description="Navidrome's own mediafile id (echoed back, never matched).")
    name: _Text = Field(description="The song's title.")
    mbid: _Text | None = Field(None, description="MusicBrainz recording id.")
    isrc: _Text | None = None
    artist: _Text | None = None
    artistMbid: _Text | None = None
    artists: list[ArtistRef] | None = Field(default=None, max_length=50)
    album: _Text | None = None
    albumMbid: _Text | None = None
    duration: float | None = Field(None, ge=0, description="Seconds (deprecated by Navidrome).")
    durationMs: int | None = Field(None, ge=0, description="Milliseconds; wins when non-zero.")

    def query(self) -> SongQuery:
        seconds = self.durationMs / 1000 if self.durationMs else (self.duration or None)
        artist = self.artist or (self.artists[0].name if self.artists else None)
        return SongQuery(self.name, artist, self.album, self.mbid, seconds)


class SimilarRequest(BaseModel):
    song: SongRef
    count: int = Field(10, ge=1, le=1000, description="How many songs (cut to MUSICREC_SERVING_MAX_K).")


class PathRequest(BaseModel):
    startSong: SongRef
    endSong: SongRef
    count: int = Field(
        25, ge=3, le=1000, description=f"Songs on the path, both ends included (at most {PATH_MAX} given)."
    )


class SonicMatch(BaseModel):
    song: SongRef
    similarity: float = Field(ge=0, le=1)


class SonicResponse(BaseModel):
    matches: list[SonicMatch]


_index_lock = Lock()
_index: tuple[object, SongIndex] | None = None  # (the library frame it was built from, the index)


def _song_index(recommender: Recommender) -> SongIndex:
    """The SongIndex of the current manifest, rebuilt when ``library()`` returns a new frame."""
    global _index
    df = recommender.library()
    with _index_lock:
        if _index is not None and _index[0] is df:
            return _index[1]
    columns = [c for c in ("track_id", "title", "artist", "album", "mbid", "duration_s") if c in df.columns]
    built = SongIndex(df[columns].to_dict("records"))
    with _index_lock:
        _index = (df, built)
    return built


def _resolve(recommender: Recommender, song: SongRef, role: str = "song") -> str:
    try:
        return _song_index(recommender).resolve(song.query())
    except Unresolved as exc:
        cls = Conflict if exc.ambiguous else NotFound
        raise cls(f"{role} {song.name!r}: {exc}") from None


def _song(row: dict[str, Any], track_id: str, navidrome_id: str | None = None) -> SongRef:
    duration = row.get("duration_s")
    seconds = float(duration) if isinstance(duration, int | float) and duration == duration and duration > 0 else None

    def text(key: str) -> str | None:
        value = row.get(key)
        return value if isinstance(value, str) and value else None  # the manifest's gaps may be NaN

    return SongRef(
        id=navidrome_id,
        name=text("title") or track_id,
        artist=text("artist"),
        album=text("album"),
        mbid=text("mbid"),
        duration=round(seconds, 3) if seconds else None,
        durationMs=round(seconds * 1000) if seconds else None,
    )


def _matches(recommender: Recommender, scored: list[tuple[str, float]], known: dict[str, str]) -> SonicResponse:
    df = recommender.library()
    rows = {t: (df.loc[t].to_dict() if t in df.index else {}) for t, _ in scored}
    return SonicResponse(
        matches=[SonicMatch(song=_song(rows[t], t, known.get(t)), similarity=similarity(d)) for t, d in scored]
    )


@router.post("/similar", response_model=SonicResponse, response_model_exclude_none=True, responses=_ERRORS)
def similar(body: SimilarRequest, recommender: RecommenderDep) -> SonicResponse:
    """``nd_get_sonic_similar_tracks``: the ``count`` songs that sound most like ``song``, most similar first.

    A ``count`` above the server's cap is cut to it rather than refused: Navidrome picks the count.
    """
    track_id = _resolve(recommender, body.song)
    answer = recommender.similar(track_id, min(body.count, recommender.serving.serving_max_k))
    log.debug("navidrome similar %r -> %s: %d matches", body.song.name, track_id, len(answer.results))
    return _matches(recommender, [(r.track_id, r.distance) for r in answer.results], {})


@router.post("/path", response_model=SonicResponse, response_model_exclude_none=True, responses=_ERRORS)
def path(body: PathRequest, recommender: RecommenderDep) -> SonicResponse:
    """``nd_find_sonic_path``: a walk from ``startSong`` to ``endSong`` (both included), at most ``count`` songs.

    Each song's similarity is to ``startSong``; the two ends carry the Navidrome ids they came with.
    """
    start = _resolve(recommender, body.startSong, "startSong")
    end = _resolve(recommender, body.endSong, "endSong")
    if start == end:
        raise InvalidInput("startSong and endSong are the same catalogue track")
    known = {t: i for t, i in ((start, body.startSong.id), (end, body.endSong.id)) if i}
    return _matches(recommender, scored_path(recommender, start, end, min(body.count, PATH_MAX)), known)
