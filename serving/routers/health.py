"""``GET /health``: what is being served, or 503 with what to do."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import RecommenderDep
from serving.schemas import ErrorResponse, Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": ErrorResponse}})
def health(recommender: RecommenderDep) -> Health:
    """Model version, collection, track count and index type; 503 if Milvus or the catalogue is missing."""
    return Health(**recommender.health())
