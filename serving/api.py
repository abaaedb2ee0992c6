"""The FastAPI app: built by :func:`create_app`, clients made in the lifespan, errors as ``{"detail"}``.

Run it with ``musicrec serve`` (which also starts Milvus Lite's server when needed) or any ASGI server:
``uvicorn --factory serving.api:create_app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from pipelines.errors import Unavailable, UserError
from pipelines.index.errors import IndexUnavailable
from pipelines.settings import ServingSettings, Settings, get_settings
from serving.deps import check_api_key
from serving.errors import RETRY_AFTER_S, status_of, validation_detail
from serving.limits import BodyGuard
from serving.observability import Metrics, ObservabilityMiddleware
from serving.routers import health, navidrome, ops, review, subsonic, tracks, web
from serving.service import Recommender

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    serving: ServingSettings | None = None,
    recommender: Recommender | None = None,
) -> FastAPI:
    """The API over ``recommender`` (default: one built from the settings when the app starts)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rec = recommender or Recommender.from_settings(settings or get_settings(), serving)
        meta = None
        try:
            meta = rec.collection(fresh=True)
            rec.embedder(meta)  # load the model now, not on the first upload
            log.info("serving %s (model %s)", meta.name, meta.model_version)
        except IndexUnavailable as exc:  # start anyway: /health says what is missing
            log.warning("index unavailable at start: %s", exc)
        rec.start_copy(meta)
        if rec.serving.serving_batch_searches:
            rec.batcher.on_batch = app.state.metrics.search_batch.observe
        app.state.recommender = rec
        yield
        if recommender is None:
            rec.close()

    app = FastAPI(
        title="musicrec",
        summary="Recommend music by how it sounds: nearest neighbours by cosine distance.",
        lifespan=lifespan,
    )
    app.include_router(tracks.router)
    app.include_router(subsonic.router)
    app.include_router(navidrome.router)
    app.include_router(health.router)
    app.include_router(ops.router)
    app.include_router(web.router)
    app.include_router(review.router)
    app.include_router(review.admin)
    app.include_router(web.pages)
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")
    app.state.metrics = Metrics(app)
    app.add_middleware(BodyGuard, check_key=check_api_key)  # inside the metrics: early refusals are counted
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)

    _document_limits(app, serving or (recommender.serving if recommender else (settings or get_settings()).serving))

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    return app


def _document_limits(app: FastAPI, serving: ServingSettings) -> None:
    """Make the OpenAPI document state the limits the server enforces (they are settings, so the route
    declarations carry only the hard caps): ``k`` and the search ``limit`` up to ``MUSICREC_SERVING_MAX_K``,
    a playlist's ``length`` up to ``MUSICREC_SERVING_MAX_PLAYLIST``."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        caps = {"k": serving.serving_max_k, "length": serving.serving_max_playlist}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                for param in operation.get("parameters", []):
                    cap = caps.get(param["name"]) or (
                        serving.serving_max_k if path == "/library/search" and param["name"] == "limit" else None
                    )
                    if cap is not None and "schema" in param:
                        param["schema"]["maximum"] = cap
        request = schema.get("components", {}).get("schemas", {}).get("PlaylistRequest", {})
        if "length" in request.get("properties", {}):
            request["properties"]["length"]["maximum"] = serving.serving_max_playlist
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
