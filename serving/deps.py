"""Dependencies shared by the routers: the recommender the lifespan built, and the common filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from serving.service import Filters, Recommender


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def get_filters(
    style: Annotated[str | None, Query(description="Only tracks of this style.")] = None,
    exclude_duplicates: Annotated[bool, Query(description="Leave out exact copies of the query (same sha256).")] = True,
    max_per_source: Annotated[int | None, Query(description="At most this many tracks per source.")] = None,
    max_per_artist: Annotated[int | None, Query(description="At most this many tracks per artist.")] = None,
) -> Filters:
    return Filters(style, exclude_duplicates, max_per_source, max_per_artist)


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
FiltersDep = Annotated[Filters, Depends(get_filters)]
K = Annotated[int, Query(description="How many recommendations (1..MUSICREC_SERVING_MAX_K).")]
