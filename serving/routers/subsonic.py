"""The OpenSubsonic ``sonicSimilarity`` face: ``/rest/getSonicSimilarTracks`` and ``/rest/findSonicPath``.

Subsonic clients and servers (a Navidrome plugin, for one) call these with the song's id: a musicrec track
id, a MusicBrainz recording id, or the path relative to the music folder (``MUSICREC_MUSIC_FOLDER``).
Answers and errors are subsonic-responses (XML by default, JSON with ``f=json``), HTTP 200 as Subsonic
clients expect. When the server has an API key, it is sent as ``X-API-Key`` or, as OpenSubsonic clients
do, the ``apiKey`` parameter; a missing or wrong key is a failed response with HTTP 401 or 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.errors import UserError
from pipelines.index.errors import IndexUnavailable
from serving import subsonic
from serving.errors import NotFound
from serving.service import Recommender
from serving.subsonic import SubsonicError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/rest", tags=["opensubsonic"])

_DOC = {
    "responses": {
        "200": {
            "description": "a subsonic-response (XML, or JSON with f=json)",
            "content": {
                "application/xml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        "401": {
            "description": "the server has an API key and none was sent: a failed subsonic-response (code 44)",
            "content": {
                "application/xml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        "403": {
            "description": "a wrong API key: a failed subsonic-response (code 44)",
            "content": {
                "application/xml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
    }
}


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        raise SubsonicError(subsonic.MISSING_PARAMETER, f"required parameter is missing: {name}")
    return value


def _count(request: Request, default: int, low: int, high: int) -> int:
    raw = request.query_params.get("count")
    if raw is None or raw == "":
        return default
    try:
        count = int(raw)
    except ValueError:
        raise SubsonicError(subsonic.GENERIC, f"count must be a whole number, got {raw[:40]!r}") from None
    if not low <= count <= high:
        raise SubsonicError(subsonic.GENERIC, f"count must be between {low} and {high}, got {count}")
    return count


def _check_key(request: Request, recommender: Recommender) -> None:
    key = recommender.serving.serving_api_key
    if key is None:
        return
    given = request.headers.get("x-api-key") or request.query_params.get("apiKey")
    if not given:
        raise SubsonicError(subsonic.MISSING_PARAMETER, "this server needs an API key: send apiKey or X-API-Key")
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise SubsonicError(subsonic.INVALID_API_KEY, "invalid API key")


async def _answer(request: Request, work: Callable[[Recommender], dict[str, Any]]) -> Response:
    fmt = request.query_params.get("f")
    recommender: Recommender = request.app.state.recommender
    try:
        _check_key(request, recommender)
    except SubsonicError as exc:
        status = 401 if exc.code == subsonic.MISSING_PARAMETER else 403
        return subsonic.render(subsonic.failed(exc), fmt, status)
    try:
        body = await run_in_threadpool(work, recommender)
    except SubsonicError as exc:
        return subsonic.render(subsonic.failed(exc), fmt)
    except NotFound as exc:
        return subsonic.render(subsonic.failed(SubsonicError(subsonic.NOT_FOUND, str(exc))), fmt)
    except IndexUnavailable as exc:
        log.warning("subsonic request while the index is unavailable: %s", exc)
        return subsonic.render(subsonic.failed(SubsonicError(subsonic.GENERIC, str(exc))), fmt, 503)
    except UserError as exc:
        return subsonic.render(subsonic.failed(SubsonicError(subsonic.GENERIC, str(exc))), fmt)
    return subsonic.render(subsonic.envelope(**body), fmt)


def _entries(recommender: Recommender, ids: list[str]) -> dict[str, dict[str, Any]]:
    df = recommender.library()
    folder = recommender.serving.music_folder
    return {t: subsonic.child(t, df.loc[t].to_dict() if t in df.index else {}, folder) for t in ids}


def similar_tracks(request: Request, recommender: Recommender) -> dict[str, Any]:
    """Nearest tracks to the song ``id``, most similar first."""
    ref = _param(request, "id")
    count = _count(request, 10, 1, recommender.serving.serving_max_k)
    track_id = recommender.resolve(ref)
    answer = recommender.similar(track_id, count)
    entries = _entries(recommender, [r.track_id for r in answer.results])
    matches = [{"entry": entries[r.track_id], "similarity": subsonic.similarity(r.distance)} for r in answer.results]
    return {"sonicMatch": matches}


def sonic_path(request: Request, recommender: Recommender) -> dict[str, Any]:
    """A walk from ``startSongId`` to ``endSongId`` (both included) of at most ``count`` songs."""
    start_ref, end_ref = _param(request, "startSongId"), _param(request, "endSongId")
    count = _count(request, 25, 3, 52)
    start, end = recommender.resolve(start_ref), recommender.resolve(end_ref)
    if start == end:
        raise SubsonicError(subsonic.GENERIC, "startSongId and endSongId name the same track")
    path = recommender.path(start, end, steps=count - 2)
    ids = [step.track.track_id for step in path.steps]
    distances = recommender.distances_from(start, ids)
    entries = _entries(recommender, ids)
    matches = [{"entry": entries[t], "similarity": subsonic.similarity(distances.get(t, 2.0))} for t in ids]
    return {"sonicMatch": matches}


@router.get("/getSonicSimilarTracks", openapi_extra=_DOC)
@router.get("/getSonicSimilarTracks.view", include_in_schema=False)
async def get_sonic_similar_tracks(request: Request) -> Response:
    """OpenSubsonic: tracks that sound like song ``id`` (``count``, default 10), with similarity 0..1."""
    return await _answer(request, lambda rec: similar_tracks(request, rec))


@router.get("/findSonicPath", openapi_extra=_DOC)
@router.get("/findSonicPath.view", include_in_schema=False)
async def find_sonic_path(request: Request) -> Response:
    """OpenSubsonic: a path of similar-sounding songs from ``startSongId`` to ``endSongId`` (``count`` <= 52)."""
    return await _answer(request, lambda rec: sonic_path(request, rec))
