"""Routes for operators and orchestrators: ``/livez``, ``/readyz`` and Prometheus ``/metrics``.

Liveness says only that the process answers (a failing liveness probe restarts the process, which does
not help when Milvus is down); readiness says whether this instance can answer recommendations now
(a failing readiness probe takes it out of the load balancer until it can).
"""

from __future__ import annotations

import logging
import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from serving.observability import Metrics

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


class Liveness(BaseModel):
    status: str = Field(description="Always 'alive' when the process answers.")
    pid: int = Field(description="The worker process that answered (tells workers apart).")


class Readiness(BaseModel):
    status: str = Field(description="'ready'.")
    collection: str = Field(description="The collection behind the alias, being served.")
    model_version: str
    feature_version: str


class NotReady(BaseModel):
    status: str = Field(description="'not ready'.")
    detail: str = Field(description="Why, and what to do.")


@router.get("/livez", response_model=Liveness)
async def livez() -> Liveness:
    """The process is up and its event loop answers; checks nothing else, so it is always cheap."""
    return Liveness(status="alive", pid=os.getpid())


@router.get("/readyz", response_model=Readiness, responses={503: {"model": NotReady}})
async def readyz(request: Request) -> Readiness | JSONResponse:
    """200 when Milvus answers, the catalogue is built and its model is loaded; 503 with the reason otherwise."""
    rec = getattr(request.app.state, "recommender", None)
    if rec is None:
        return _not_ready("the app is still starting")

    def check() -> Readiness:
        meta = rec.collection(fresh=True)  # a round trip to Milvus
        rec.embedder(meta)  # cached after the first load; loads the model a refresh switched to
        return Readiness(
            status="ready",
            collection=meta.name,
            model_version=meta.model_version,
            feature_version=meta.feature_version,
        )

    try:
        return await run_in_threadpool(check)
    except Exception as exc:  # any failure means "not ready", never a 500
        log.info("not ready: %s", exc)
        return _not_ready(str(exc))


def _not_ready(reason: str) -> JSONResponse:
    body = NotReady(status="not ready", detail=reason)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route template, search batch sizes, index size, model."""
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.exposition()
    return Response(body, media_type=content_type)
