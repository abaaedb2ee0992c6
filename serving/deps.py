"""Dependencies shared by the routers: the recommender the lifespan built, and the common filters."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from pipelines.settings import ServingSettings
from serving.errors import Forbidden, Unauthorized
from serving.service import Filters, Recommender


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def get_filters(
    style: Annotated[str | None, Query(description="Only tracks of this style.")] = None,
    exclude_duplicates: Annotated[bool, Query(description="Leave out exact copies of the query (same sha256).")] = True,
    max_per_source: Annotated[int | None, Query(ge=1, description="At most this many tracks per source.")] = None,
    max_per_artist: Annotated[int | None, Query(ge=1, description="At most this many tracks per artist.")] = None,
) -> Filters:
    return Filters(style, exclude_duplicates, max_per_source, max_per_artist)


def check_api_key(serving: ServingSettings, given: str | None) -> None:
    """401 without the key, 403 with a wrong one; open when no key is configured (loopback only)."""
    key = serving.serving_api_key
    if key is None:
        return
    if not given:
        raise Unauthorized("this server needs an API key: send it in the X-API-Key header")
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise Forbidden("the X-API-Key header does not hold this server's API key")


def require_api_key(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="The API key, when the server has one.")] = None,
) -> None:
    """The API key check as a route dependency (requests with a body were checked before it was read)."""
    check_api_key(request.app.state.recommender.serving, x_api_key)


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
FiltersDep = Annotated[Filters, Depends(get_filters)]
K = Annotated[int, Query(ge=1, le=1000, description="How many recommendations (1..MUSICREC_SERVING_MAX_K, <= 1000).")]
