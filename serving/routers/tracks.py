"""Recommendation routes. Plain ``def`` routes: pymilvus and the models block, so they run in threads.

The upload route is the one ``async`` route: it reads the body itself, stopping at the size limit, so an
oversized upload is refused without being stored anywhere; a whole upload is spooled to one file for
the decoding child (docs/serving.md). The blocking work then runs in the thread pool like the others.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from serving.deps import FiltersDep, K, RecommenderDep, require_api_key
from serving.errors import InvalidInput, RequestTimeout, TooLarge
from serving.schemas import PlaylistRequest, PlaylistResponse, SimilarResponse, error_responses
from serving.service import Filters

router = APIRouter(tags=["recommendations"], dependencies=[Depends(require_api_key)])


class _AnyText(Convertor[str]):
    """A path parameter that may hold any character: track ids are data, slashes and newlines included."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("track_id", _AnyText())

_ERRORS = error_responses((400, 401, 403, 404, 408, 413, 415, 422, 503))
_UPLOAD_ERRORS = error_responses((400, 401, 403, 404, 408, 413, 415, 422, 503, 507))
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


_JSON = "application/json"


@router.get("/tracks/{track_id:track_id}/similar", response_model=SimilarResponse, responses=_ERRORS)
def similar_to_track(
    track_id: Annotated[str, Path(description="A catalogue track id.")],
    recommender: RecommenderDep,
    filters: FiltersDep,
    k: K = 10,
) -> Response:
    """The k catalogue tracks that sound most like ``track_id``, nearest first."""
    # the body is serialised here directly (the most requested route); OpenAPI still documents SimilarResponse
    return Response(SimilarResponse.json_of(recommender.similar(track_id, k, filters)), media_type=_JSON)


async def _read_upload(request: Request, limit: int, timeout_s: float) -> bytes:
    """The uploaded file's bytes: the raw body, or the ``file`` part of a multipart form; at most ``limit``.

    The whole body must arrive within ``timeout_s``: a client trickling bytes cannot hold a worker.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise TooLarge(f"the upload has {declared} bytes; the limit is {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit + 64 * 1024:  # room for multipart headers
                    raise TooLarge(f"the upload exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(f"the upload did not arrive within {timeout_s:g} s ({len(body)} bytes came)") from None
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return bytes(body)

    async def replay() -> dict:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    try:
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise InvalidInput("the multipart upload has no file part named 'file'")
        return await part.read()
    finally:
        await form.close()


@router.post("/similar", response_model=SimilarResponse, responses=_UPLOAD_ERRORS, openapi_extra=_UPLOAD_BODY)
async def similar_to_audio(
    request: Request, recommender: RecommenderDep, filters: FiltersDep, k: K = 10
) -> SimilarResponse:
    """The k catalogue tracks that sound most like the uploaded audio (raw body or multipart ``file``).

    The upload is embedded with the front end and the model version of the collection being served.
    """
    serving = recommender.serving
    data = await _read_upload(request, serving.serving_max_upload_bytes, serving.serving_upload_timeout_s)
    answer = await run_in_threadpool(recommender.similar_audio, data, k, filters)
    return SimilarResponse.of(answer)


@router.post("/playlist", response_model=PlaylistResponse, responses=_ERRORS)
def playlist(body: PlaylistRequest, recommender: RecommenderDep) -> PlaylistResponse:
    """A playlist from seed tracks: each seed in turn adds its nearest unused track; no repeats."""
    filters = Filters(body.style, body.exclude_duplicates, body.max_per_source, body.max_per_artist)
    return PlaylistResponse.of(recommender.playlist(body.seeds, body.length, filters), body.seeds)
