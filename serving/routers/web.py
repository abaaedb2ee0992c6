"""The web page and the routes behind it: search, audio, M3U playlists, paths between tracks, the map.

Audio is served by track id: the id is looked up in the manifest and only that track's file is opened,
so no part of a request ever becomes a path. Range requests are answered with 206 (seeking, streaming).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, Response

import serving.routers.tracks  # noqa: F401  (registers the track_id path convertor the audio route uses)
from serving.deps import RecommenderDep, require_api_key
from serving.errors import InvalidInput
from serving.schemas import (
    LibraryTrack,
    MapResponse,
    PathResponse,
    PathStepOut,
    SearchResponse,
    error_responses,
)
from serving.service import Filters

STATIC = FilePath(__file__).resolve().parent.parent / "static"
AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
}
_ERRORS = error_responses((401, 403, 404, 422, 503))

pages = APIRouter(tags=["web page"], include_in_schema=False)
router = APIRouter(tags=["library"], dependencies=[Depends(require_api_key)])


@pages.get("/")
def index_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@pages.get("/review")
def review_page() -> FileResponse:
    return FileResponse(STATIC / "review.html", media_type="text/html")


@router.get("/library/search", response_model=SearchResponse, responses=_ERRORS)
def search(
    recommender: RecommenderDep,
    q: Annotated[str, Query(max_length=200, description="Words to find in title, artist, album, style, source.")] = "",
    style: Annotated[str | None, Query(description="Only tracks of this style.")] = None,
    limit: Annotated[
        int, Query(ge=1, le=1000, description="At most this many tracks (<= MUSICREC_SERVING_MAX_K).")
    ] = 20,
) -> SearchResponse:
    """Catalogue tracks matching every word of ``q``; never more than ``limit`` of them."""
    total, tracks = recommender.search(q, limit, style)
    return SearchResponse(query=q, total=total, tracks=[LibraryTrack(**vars(t)) for t in tracks])


@router.get(
    "/tracks/{track_id:track_id}/audio",
    response_class=FileResponse,
    responses=error_responses(
        (401, 403, 404, 409, 422, 503),
        {200: {"content": {"audio/*": {}}}, 206: {"description": "The requested byte range."}},
    ),
)
def audio(track_id: Annotated[str, Path(description="A catalogue track id.")], recommender: RecommenderDep) -> Response:
    """The track's audio file; honours ``Range`` (206)."""
    path = recommender.audio_file(track_id)
    media_type = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


def audio_url(request: Request, track_id: str) -> str:
    return str(request.base_url).rstrip("/") + f"/tracks/{quote(track_id, safe='')}/audio"


def _m3u_text(value: str | None) -> str:
    return " ".join((value or "").split())  # one line, whatever the metadata holds


@router.get(
    "/playlist.m3u",
    response_class=Response,
    responses=error_responses((401, 403, 404, 422, 503), {200: {"content": {"audio/x-mpegurl": {}}}}),
)
def playlist_m3u(
    request: Request,
    recommender: RecommenderDep,
    seed: Annotated[list[str], Query(min_length=1, max_length=100, description="Seed track ids, repeated.")],
    length: Annotated[int, Query(ge=1, le=5000, description="Tracks after the seeds.")] = 20,
    style: Annotated[str | None, Query()] = None,
    max_per_source: Annotated[int | None, Query(ge=1)] = None,
    max_per_artist: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The seeds, then a playlist drawn from them, as an extended M3U whose entries are audio URLs."""
    seeds = list(dict.fromkeys(seed))
    answer = recommender.playlist(seeds, length, Filters(style, True, max_per_source, max_per_artist))
    library = recommender.library()
    lines = ["#EXTM3U", f"#PLAYLIST:musicrec: {len(seeds)} seeds, model {answer.model_version}"]
    for track_id in [*seeds, *(r.track_id for r in answer.results)]:
        row = library.loc[track_id] if track_id in library.index else None
        duration = -1
        title = track_id
        if row is not None:
            if row["duration_s"] == row["duration_s"]:  # not NaN
                duration = round(float(row["duration_s"]))
            artist, name = _m3u_text(row["artist"]), _m3u_text(row["title"]) or track_id
            title = f"{artist} - {name}" if artist else name
        lines += [f"#EXTINF:{duration},{_m3u_text(title)}", audio_url(request, track_id)]
    return Response(
        "\n".join(lines) + "\n",
        media_type="audio/x-mpegurl",
        headers={"Content-Disposition": 'attachment; filename="musicrec-playlist.m3u"'},
    )


@router.get("/path", response_model=PathResponse, responses=_ERRORS)
def track_path(
    recommender: RecommenderDep,
    start: Annotated[str, Query(min_length=1, description="The first track's id.")],
    end: Annotated[str, Query(min_length=1, description="The last track's id.")],
    steps: Annotated[int, Query(ge=1, le=50, description="At most this many tracks in between.")] = 8,
) -> PathResponse:
    """A walk from ``start`` to ``end`` through nearest neighbours, each step close to the last."""
    found = recommender.path(start, end, steps)
    return PathResponse(
        start=found.start,
        end=found.end,
        collection=found.collection,
        model_version=found.model_version,
        reached=found.reached,
        steps=[PathStepOut(**vars(s.track), to_end=s.to_end) for s in found.steps],
    )


@router.get("/map", response_model=MapResponse, responses=_ERRORS)
def index_map(
    recommender: RecommenderDep,
    x0: float | None = None,
    y0: float | None = None,
    x1: float | None = None,
    y1: float | None = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="At most this many points (a uniform sample).")] = 2000,
) -> MapResponse:
    """The catalogue in 2-D (PCA of the served embeddings): points inside a box, at most ``limit``."""
    given = [v for v in (x0, y0, x1, y1) if v is not None]
    if given and len(given) != 4:
        raise InvalidInput("give all of x0, y0, x1, y1 for a box, or none of them")
    box = (x0, y0, x1, y1) if x0 is not None and y0 is not None and x1 is not None and y1 is not None else None
    if box is not None and (box[0] > box[2] or box[1] > box[3]):
        raise InvalidInput("the box needs x0 <= x1 and y0 <= y1")
    cmap = recommender.index_map()
    total, points = cmap.window(box, limit)
    return MapResponse(
        collection=cmap.collection,
        model_version=cmap.model_version,
        bounds=list(cmap.bounds()),
        explained=list(cmap.explained),
        styles=cmap.styles,
        total=total,
        points=[[p.track_id, p.x, p.y, p.style, p.title] for p in points],
    )
