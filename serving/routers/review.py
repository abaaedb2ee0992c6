"""Model review routes, and the admin routes that move the champion (always behind the API key)."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from pipelines.index.quality import example_tracks
from serving.deps import RecommenderDep, require_api_key
from serving.errors import Forbidden, Unauthorized
from serving.review import ModelReview
from serving.schemas import error_responses

_ERRORS = error_responses((401, 403, 404, 422, 503))

router = APIRouter(tags=["model review"], dependencies=[Depends(require_api_key)])
admin = APIRouter(tags=["admin"])


def require_admin_key(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="The server's API key (always required here).")] = None,
) -> str:
    """401 without the key, 403 with a wrong one, and 403 when the server has no key: admin is never open."""
    if not x_api_key:
        raise Unauthorized("admin routes need the API key: send it in the X-API-Key header")
    key = request.app.state.recommender.serving.serving_api_key
    if key is None:
        raise Forbidden("admin routes are disabled: the server has no MUSICREC_SERVING_API_KEY")
    if not hmac.compare_digest(x_api_key.encode(), key.get_secret_value().encode()):
        raise Forbidden("the X-API-Key header does not hold this server's API key")
    return "api-key@" + (request.client.host if request.client else "unknown")


def review_of(recommender: RecommenderDep) -> ModelReview:
    return ModelReview(recommender.settings, recommender.index)


ReviewDep = Annotated[ModelReview, Depends(review_of)]


@router.get("/models/review", responses=_ERRORS)
def review(review: ReviewDep) -> dict[str, Any]:
    """Every registered version (aliases, gate decision and reasons); champion and challenger side by side."""
    sides = review.compare()
    return {
        "versions": [asdict(v) for v in review.versions()],
        **{name: asdict(side) if side else None for name, side in sides.items()},
    }


@router.get("/models/examples", responses=_ERRORS)
def examples(
    review: ReviewDep,
    recommender: RecommenderDep,
    version: Annotated[list[str], Query(min_length=1, max_length=4, description="Model versions, repeated.")],
    n: Annotated[int, Query(ge=1, le=12, description="How many example queries.")] = 4,
    k: Annotated[int, Query(ge=1, le=20, description="Neighbours per query and model.")] = 5,
) -> dict[str, Any]:
    """The same example queries (each style in turn) answered by each version, from its own collection."""
    versions = [review.version(v).version for v in dict.fromkeys(version)]
    queries = example_tracks(recommender.index, recommender.catalogue(fresh=True), n)
    found = review.examples(queries, versions, k)
    return {"versions": versions, "examples": [asdict(e) for e in found]}


@router.get(
    "/models/{version}/artifacts/{name}",
    response_class=Response,
    responses=error_responses((401, 403, 404, 422, 503), {200: {"content": {"image/png": {}, "text/csv": {}}}}),
)
def artifact(
    review: ReviewDep,
    version: Annotated[str, Path(max_length=20)],
    name: Annotated[str, Path(max_length=200, description="A file name the run lists under review/.")],
) -> Response:
    """A review artifact (per-style table, confusion image, ...) of a version's training run."""
    data, media_type = review.artifact(version, name)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=600"})


class PromoteResponse(BaseModel):
    champion: str
    previous: str | None = Field(description="The champion before; roll back returns to it.")
    note: str


NOTE = "the registry moved; serving switches when the catalogue is refreshed (`musicrec catalogue refresh`)"


@admin.post("/admin/models/{version}/promote", response_model=PromoteResponse, responses=_ERRORS)
async def promote(
    review: ReviewDep, by: Annotated[str, Depends(require_admin_key)], version: Annotated[str, Path(max_length=20)]
) -> PromoteResponse:
    """Make ``version`` the champion (audit tags say who and when)."""
    previous = await run_in_threadpool(review.promote, version, by)
    return PromoteResponse(champion=version, previous=previous, note=NOTE)


@admin.post("/admin/models/rollback", response_model=PromoteResponse, responses=_ERRORS)
async def rollback(review: ReviewDep, by: Annotated[str, Depends(require_admin_key)]) -> PromoteResponse:
    """Give ``champion`` back to the version it replaced."""
    demoted, restored = await run_in_threadpool(review.rollback, by)
    return PromoteResponse(champion=restored, previous=demoted, note=NOTE)
