"""Response and request models of the HTTP API (what OpenAPI documents)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel, Field

from serving.service import Answer


class Recommendation(BaseModel):
    track_id: str
    style: str
    source: str
    artist: str | None = None
    title: str | None = None
    distance: float = Field(description="Cosine distance to the query, 0 = identical direction; ascending.")


class SimilarResponse(BaseModel):
    query: str = Field(description="The query track id, or upload:<sha256 prefix> for uploads.")
    collection: str
    model_version: str = Field(description="The model that embedded the catalogue and the query.")
    results: list[Recommendation]

    @classmethod
    def of(cls, answer: Answer) -> SimilarResponse:
        return cls(
            query=answer.query,
            collection=answer.collection,
            model_version=answer.model_version,
            results=[Recommendation(**vars(r)) for r in answer.results],
        )

    @staticmethod
    def json_of(answer: Answer) -> bytes:
        """What :meth:`of` serialises to, built directly: the hot route skips pydantic's model and validation.

        Every field comes typed from :class:`~serving.service.Answer` (built by the service, never from
        input), so the schema holds by construction; a test checks the bytes decode to :meth:`of`'s dump.
        """
        return orjson.dumps(
            {
                "query": answer.query,
                "collection": answer.collection,
                "model_version": answer.model_version,
                "results": [
                    {
                        "track_id": r.track_id,
                        "style": r.style,
                        "source": r.source,
                        "artist": r.artist,
                        "title": r.title,
                        "distance": float(r.distance),
                    }
                    for r in answer.results
                ],
            }
        )


class PlaylistItem(Recommendation):
    seed: str = Field(description="The seed this track was drawn for.")


class PlaylistRequest(BaseModel):
    seeds: list[str] = Field(min_length=1, max_length=1000, description="One or more catalogue track ids.")
    length: int = Field(
        default=20,
        ge=1,
        le=5000,
        description="Tracks in the playlist, seeds not included (<= MUSICREC_SERVING_MAX_PLAYLIST).",
    )
    style: str | None = None
    exclude_duplicates: bool = True
    max_per_source: int | None = Field(default=None, ge=1)
    max_per_artist: int | None = Field(default=None, ge=1)


class PlaylistResponse(BaseModel):
    seeds: list[str]
    collection: str
    model_version: str
    tracks: list[PlaylistItem]

    @classmethod
    def of(cls, answer: Answer, seeds: list[str]) -> PlaylistResponse:
        return cls(
            seeds=list(dict.fromkeys(seeds)),
            collection=answer.collection,
            model_version=answer.model_version,
            tracks=[PlaylistItem(**vars(r), seed=s) for r, s in zip(answer.results, answer.seeds, strict=True)],
        )


class Health(BaseModel):
    status: str
    alias: str
    collection: str
    model_version: str
    feature_version: str
    tracks: int
    index_type: str
    dim: int
    styles: list[str]
    milvus: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong and what to do.")


class LibraryTrack(BaseModel):
    track_id: str
    style: str
    source: str
    artist: str | None = None
    album: str | None = None
    title: str | None = None
    duration_s: float | None = None


class SearchResponse(BaseModel):
    query: str
    total: int = Field(description="How many tracks match; at most `limit` of them are listed.")
    tracks: list[LibraryTrack]


class PathStepOut(Recommendation):
    to_end: float = Field(description="Cosine distance to the end track.")


class PathResponse(BaseModel):
    start: str
    end: str
    collection: str
    model_version: str
    reached: bool = Field(description="True when the end track was a near neighbour of the step before it.")
    steps: list[PathStepOut] = Field(description="Start, the tracks in between, end; `distance` is to the step before.")


class MapResponse(BaseModel):
    collection: str
    model_version: str
    bounds: list[float] = Field(description="x0, y0, x1, y1 of the whole map.")
    explained: list[float] = Field(description="Share of variance along each axis (PCA).")
    styles: list[str]
    total: int = Field(description="Points inside the requested box; `points` holds at most `limit` of them.")
    points: list[list[str | float]] = Field(description="[track_id, x, y, style, title], a uniform sample.")


ResponsesDoc = dict[int | str, dict[str, Any]]  # FastAPI's `responses=`: extra OpenAPI responses by status


def error_responses(codes: Iterable[int], first: ResponsesDoc | None = None) -> ResponsesDoc:
    """``first`` (e.g. a 200 with its media types), then an :class:`ErrorResponse` body for each code."""
    out: ResponsesDoc = dict(first or {})
    out.update({code: {"model": ErrorResponse} for code in codes})
    return out
