"""The OpenSubsonic face, ``/rest``: HTTP glue over :mod:`serving.subsonic`, where the answers are made.

Every endpoint answers at ``X`` and ``X.view``, to GET and to POST (parameters in the query string, a
form-encoded body, or both: the ``formPost`` extension), in XML or with ``f=json`` JSON. Each failure,
an unknown endpoint included, is a failed subsonic-response with HTTP 200, as Subsonic clients expect.
Credentials are checked as :func:`serving.subsonic.authenticate` says; with no Subsonic user and no API
key configured the face is open. ``stream`` and ``download`` are the web page's audio route (ranges: 206).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from pipelines.errors import Unavailable, UserError
from serving import subsonic
from serving.errors import shown
from serving.routers import web
from serving.service import Recommender
from serving.subsonic import Params, SubsonicError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/rest", tags=["opensubsonic"])

_XML_OR_JSON = {
    "application/xml": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}
_DOC = {
    "responses": {"200": {"description": "a subsonic-response (XML, or JSON with f=json)", "content": _XML_OR_JSON}}
}
_MEDIA_DOC = {
    "responses": {
        "200": {
            "description": "the song's audio file, or a failed subsonic-response",
            "content": {"audio/*": {}, **_XML_OR_JSON},
        },
        "206": {"description": "the requested byte range of the audio file", "content": {"audio/*": {}}},
    }
}

Answer = Callable[[Params, Recommender], dict[str, Any]]
ANSWERS: dict[str, Answer] = {
    "ping": subsonic.ping,
    "getLicense": subsonic.license_,
    "getOpenSubsonicExtensions": subsonic.extensions,
    "getSong": subsonic.song,
    "search3": subsonic.search3,
    "getSimilarSongs": subsonic.similar_songs1,
    "getSimilarSongs2": subsonic.similar_songs2,
    "getSonicSimilarTracks": subsonic.sonic_similar_tracks,
    "findSonicPath": subsonic.sonic_path,
    "getAlbum": subsonic.not_kept("albums"),
    "getArtist": subsonic.not_kept("artists"),
    "getCoverArt": subsonic.not_kept("cover art"),
}
MEDIA = ("stream", "download")
PUBLIC = frozenset({"getOpenSubsonicExtensions"})  # the spec has it answer without credentials


async def _params(request: Request) -> Params:
    """The query string, and a form-encoded POST body over it."""
    values = dict(request.query_params)
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        body = await request.body()
        values.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return Params(values)


class _RangeOnPost(Response):
    """The audio route's response, with a POSTed request's ``Range`` honoured as a GET's would be.

    Starlette serves ranges to GET only, and form-POST clients (py-opensonic's default) seek too.
    """

    def __init__(self, inner: Response) -> None:
        self.inner = inner
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner({**scope, "method": "GET"}, receive, send)


def _media(params: Params, recommender: Recommender) -> Response:
    return web.audio(recommender.resolve(params.required("id")), recommender)


async def _dispatch(request: Request, method: str) -> Response:
    name = method.removesuffix(".view")
    params = await _params(request)
    fmt = params.get("f")
    recommender: Recommender = request.app.state.recommender
    try:
        if name not in PUBLIC:
            subsonic.authenticate(params, request.headers.get("x-api-key"), recommender.serving)
        if name in MEDIA:
            audio = await run_in_threadpool(_media, params, recommender)
            return _RangeOnPost(audio) if request.method == "POST" else audio
        answer = ANSWERS.get(name)
        if answer is None:
            raise SubsonicError(subsonic.GENERIC, f"musicrec does not implement {shown(name)} (see docs/subsonic.md)")
        body = await run_in_threadpool(answer, params, recommender)
    except (UserError, Unavailable) as exc:
        return subsonic.render(subsonic.failed(subsonic.failure(exc)), fmt)
    except SubsonicError as exc:
        return subsonic.render(subsonic.failed(exc), fmt)
    return subsonic.render(subsonic.envelope(**body), fmt)


def _documented(name: str, summary: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _dispatch(request, name)

    endpoint.__doc__ = summary
    return endpoint


_SUMMARIES = {
    "ping": "Subsonic: checks that the server is up and the credentials are good.",
    "getLicense": "Subsonic: the license, always valid.",
    "getOpenSubsonicExtensions": "OpenSubsonic: the extensions served (no credentials needed).",
    "getSong": "Subsonic: the song `id` (track id, MusicBrainz id or path in the music folder).",
    "search3": f"Subsonic: songs matching `query` ('': all), `songCount` (<= {subsonic.SEARCH_MAX}) from `songOffset`",
    "getSimilarSongs": "Subsonic: songs that sound like song `id`, at most `count` (default 50).",
    "getSimilarSongs2": "Subsonic: songs that sound like song `id`, at most `count` (default 50).",
    "getSonicSimilarTracks": "OpenSubsonic: tracks that sound like song `id` (`count`, default 10), similarity 0..1.",
    "findSonicPath": "OpenSubsonic: similar-sounding songs from `startSongId` to `endSongId` "
    f"(`count` <= {subsonic.PATH_MAX}).",
    "getAlbum": "Subsonic: musicrec keeps no albums; always not found (70).",
    "getArtist": "Subsonic: musicrec keeps no artists; always not found (70).",
    "getCoverArt": "Subsonic: musicrec keeps no cover art; always not found (70).",
    "stream": "Subsonic: the audio file of song `id`, as stored (no transcoding); honours `Range` (206).",
    "download": "Subsonic: the audio file of song `id`; honours `Range` (206).",
}
for _name, _summary in _SUMMARIES.items():
    router.add_api_route(
        f"/{_name}",
        _documented(_name, _summary),
        methods=["GET"],
        summary=_summary,
        operation_id=f"subsonic_{_name}",
        response_class=Response,
        openapi_extra=_MEDIA_DOC if _name in MEDIA else _DOC,
    )


@router.api_route("/{method:path}", methods=["GET", "POST"], include_in_schema=False)
async def any_endpoint(request: Request, method: str) -> Response:
    """Every endpoint at ``X.view`` and by POST, and unknown ones (a failed response, code 0)."""
    return await _dispatch(request, method)
