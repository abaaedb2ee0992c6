"""Metrics, request ids and access logs for the API: what an operator needs to run it as a service.

Prometheus metrics labelled by route template (bounded series, summed over workers in multiprocess mode),
an ``X-Request-ID`` on every request, and one access-log line per request.
Design: docs/serving.md#running-it-as-a-service
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
access_log = logging.getLogger("musicrec.access")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED = "<unmatched>"  # the route label of requests no route matched (404s for unknown paths)
# A client's request id is kept when it is short and made of characters that are safe in a log line.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

request_id: ContextVar[str] = ContextVar("request_id", default="-")


def multiprocess_mode() -> bool:
    """True when metrics are shared between worker processes through files (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(workers: int) -> Callable[[], None]:
    """Set up the metrics folder for ``workers`` processes before they start; returns the clean-up.

    With one worker and no folder configured nothing is needed (metrics live in the process). Otherwise
    the configured folder (or a new temporary one) is emptied of earlier runs' files, since counters of a
    previous run would otherwise be added to this run's.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if workers <= 1 and not configured:
        return lambda: None
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return lambda: None
    folder = Path(tempfile.mkdtemp(prefix="musicrec-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)

    def cleanup() -> None:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)

    return cleanup


def log_config(root_level: int = logging.WARNING) -> dict[str, Any]:
    """uvicorn's logging configuration plus the access log on stderr; applied in every worker process.

    uvicorn's own access log is turned off by ``musicrec serve``: ``musicrec.access`` replaces it, with
    route templates and request ids.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["musicrec"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["musicrec"] = {
        "class": "logging.StreamHandler",
        "formatter": "musicrec",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["musicrec.access"] = {"handlers": ["musicrec"], "level": "INFO", "propagate": False}
    config["root"] = {"handlers": ["musicrec"], "level": logging.getLevelName(root_level)}
    return config


def sane_request_id(value: str | None) -> str:
    """The client's request id if it is short and printable, else a new random one."""
    if value and _SANE_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request (``/tracks/{track_id}/similar``)."""
    route = scope.get("route")
    path = getattr(route, "path_format", None)  # the path without parameter convertors (``{id:path}``)
    return path if isinstance(path, str) else UNMATCHED


class IndexCollector(Collector):
    """Index size and served model, read from the worker's recommender at scrape time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: names are fixed and unique

    def collect(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            "musicrec_index_available", "1 when the served collection and Milvus answer, else 0."
        )
        rec = getattr(self.app.state, "recommender", None)
        try:
            if rec is None:
                raise RuntimeError("the app has not started")
            meta = rec.collection()
            tracks = rec.index.count(meta.name)
        except Exception as exc:  # a scrape must never fail: say "unavailable" instead
            log.info("metrics: index unavailable: %s", exc)
            available.add_metric([], 0)
            yield available
            return
        available.add_metric([], 1)
        yield available
        size = GaugeMetricFamily(
            "musicrec_index_tracks", "Tracks in the served collection.", labels=["alias", "collection"]
        )
        size.add_metric([rec.index.alias, meta.name], tracks)
        yield size
        info = GaugeMetricFamily(
            "musicrec_model_info",
            "The served model version and collection (value always 1).",
            labels=["model_version", "feature_version", "collection", "index_type"],
        )
        info.add_metric([meta.model_version, meta.feature_version, meta.name, meta.index_type], 1)
        yield info


class Metrics:
    """The app's Prometheus metrics and their exposition (per-process, or summed over workers)."""

    def __init__(self, app: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "musicrec_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "musicrec_http_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search_batch = Histogram(
            "musicrec_search_batch_size",
            "Query vectors per Milvus search call (concurrent requests coalesced into one call).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.index_collector = IndexCollector(app)
        if not multiprocess_mode():
            self.registry.register(self.index_collector)
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        if not multiprocess_mode():
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self.index_collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class ObservabilityMiddleware:
    """Request id in and out, one access-log line and the request metrics per HTTP request.

    A plain ASGI middleware (no response buffering, uploads stream through). It sits inside the error
    handlers that turn user errors into 4xx/503, so it sees the status the client gets; an exception
    nothing handled becomes a 500 here, with the request id, so the client can quote it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = sane_request_id(headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)", scope["method"], route_template(scope), rid)
            status = 500
            if not started:
                body = json.dumps({"detail": f"internal error; quote request id {rid}"}).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            seconds = time.perf_counter() - t0
            route = route_template(scope)
            self.metrics.observe(route, scope["method"], status, seconds)
            access_log.info(
                "%s %s %d %.1fms request_id=%s",
                scope["method"],
                route,
                status,
                seconds * 1000,
                rid,
                extra={
                    "request_id": rid,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
            request_id.reset(token)
