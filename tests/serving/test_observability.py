"""Metrics, request ids, access logs, liveness and readiness of the API over a real Milvus Lite collection."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import free_port
from pipelines.index.milvus import CatalogueIndex
from pipelines.index.refresh import refresh_collection
from pipelines.model.embedder import RawEmbedder
from pipelines.settings import ServingSettings, Settings
from serving.api import create_app
from serving.observability import MULTIPROC_ENV, UNMATCHED, prepare_multiprocess_dir, sane_request_id
from serving.service import Recommender
from tests.pipelines.index.helpers import PARAMS_A, build_features
from tests.serving.conftest import Served, serve

SIMILAR = "/tracks/{track_id}/similar"


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics scrape: (name, sorted labels) -> value."""
    res = client.get("/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.text)
        for s in family.samples
    }


def requests_of(values: dict, route: str, method: str = "GET", status: str = "200") -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return values.get(("musicrec_http_requests_total", labels), 0.0)


def _ids(served: Served) -> list[str]:
    return list(read_manifest(served.settings.manifest_path)["track_id"])


def test_request_counter_and_latency_count_by_route_template_exactly(served: Served) -> None:
    ids = _ids(served)
    with serve(served.settings, served.index) as client:
        for track in ids[:5]:  # five different raw paths, one route template
            assert client.get(f"/tracks/{track}/similar", params={"k": 3}).status_code == 200
        assert client.get("/tracks/no.such/similar").status_code == 404
        assert client.get("/tracks/x/similar", params={"k": 0}).status_code == 422
        assert client.post("/playlist", json={"seeds": ids[:2], "length": 3}).status_code == 200
        values = samples(client)

    assert requests_of(values, SIMILAR) == 5
    assert requests_of(values, SIMILAR, status="404") == 1
    assert requests_of(values, SIMILAR, status="422") == 1
    assert requests_of(values, "/playlist", "POST") == 1
    assert values[("musicrec_http_request_duration_seconds_count", (("route", SIMILAR),))] == 7
    assert values[("musicrec_http_request_duration_seconds_sum", (("route", SIMILAR),))] > 0
    routes = {dict(labels)["route"] for name, labels in values if name == "musicrec_http_requests_total"}
    assert not any("no.such" in r or ids[0] in r for r in routes)  # never raw paths as labels


def test_unknown_paths_share_one_label_and_scrapes_count_themselves(served: Served) -> None:
    with serve(served.settings, served.index) as client:
        for path in ("/nope", "/nope/again", "/tracks"):
            assert client.get(path).status_code == 404
        assert client.delete("/playlist").status_code == 405  # a known route, wrong method: its template
        first = samples(client)
        second = samples(client)
    assert requests_of(first, UNMATCHED, status="404") == 3
    assert requests_of(first, "/playlist", "DELETE", "405") == 1
    # a scrape is counted once its response is sent: the first scrape sees none, the second the first
    assert (requests_of(first, "/metrics"), requests_of(second, "/metrics")) == (0, 1)


def test_index_size_model_and_search_batches_are_reported(served: Served) -> None:
    track = _ids(served)[0]
    with serve(served.settings, served.index) as client:
        for _ in range(3):
            assert client.get(f"/tracks/{track}/similar", params={"k": 2}).status_code == 200
        values = samples(client)
    assert values[("musicrec_catalogue_available", ())] == 1
    assert values[("musicrec_index_tracks", (("alias", "tracks"), ("collection", served.collection)))] == 15
    info = [dict(labels) for name, labels in values if name == "musicrec_model_info"]
    assert info == [
        {
            "model_version": "raw",
            "feature_version": PARAMS_A.version,
            "collection": served.collection,
            "index_type": "HNSW",
        }
    ]
    # three sequential searches: three Milvus calls of one query vector each
    assert values[("musicrec_search_batch_size_count", ())] == 3
    assert values[("musicrec_search_batch_size_sum", ())] == 3
    assert values[("musicrec_search_batch_size_bucket", (("le", "1.0"),))] == 3


def test_request_id_round_trips_and_is_in_the_access_log(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    track = _ids(served)[0]
    with serve(served.settings, served.index) as client, caplog.at_level(logging.INFO, logger="musicrec.access"):
        ok = client.get(f"/tracks/{track}/similar", headers={"X-Request-ID": "abc-123.X:y"})
        missing = client.get("/tracks/no.such/similar", headers={"X-Request-ID": "req-404"})
        fresh = client.get("/livez")
    assert ok.headers["x-request-id"] == "abc-123.X:y" and missing.headers["x-request-id"] == "req-404"
    generated = fresh.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0

    lines = {r.request_id: r for r in caplog.records if r.name == "musicrec.access"}  # type: ignore[attr-defined]
    assert set(lines) == {"abc-123.X:y", "req-404", generated}
    line = lines["req-404"]
    assert (line.method, line.route, line.status) == ("GET", SIMILAR, 404)  # type: ignore[attr-defined]
    assert line.getMessage().startswith(f"GET {SIMILAR} 404 ") and line.getMessage().endswith("request_id=req-404")
    assert line.duration_ms > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "given", ["", "has space", "x" * 129, "new\nline", "semi;colon", "ünïcode"], ids=lambda v: repr(v)[:12]
)
def test_insane_request_ids_are_replaced(given: str) -> None:
    replaced = sane_request_id(given)
    assert replaced != given and len(replaced) == 32


def test_insane_request_id_header_is_replaced_in_the_response(served: Served) -> None:
    with serve(served.settings, served.index) as client:
        res = client.get("/livez", headers={"X-Request-ID": "x" * 200})
    assert res.status_code == 200 and len(res.headers["x-request-id"]) == 32


def test_unhandled_error_is_500_with_its_request_id_and_counted(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    recommender = Recommender(served.index, served.settings, ServingSettings(serving_alias_ttl_s=0))
    app: FastAPI = create_app(served.settings, recommender=recommender)

    @app.get("/boom/{n}")
    def boom(n: int) -> None:
        raise RuntimeError(f"bug {n}")

    with TestClient(app) as client, caplog.at_level(logging.INFO):
        res = client.get("/boom/1", headers={"X-Request-ID": "trace-me"})
        values = samples(client)
    assert res.status_code == 500 and res.headers["x-request-id"] == "trace-me"
    assert res.json() == {"detail": "internal error; quote request id trace-me"}
    assert requests_of(values, "/boom/{n}", status="500") == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "trace-me" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_live_and_ready_when_everything_is_up(served: Served) -> None:
    live = served.client.get("/livez")
    assert live.status_code == 200 and live.json()["status"] == "alive" and live.json()["pid"] > 0
    ready = served.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "collection": served.collection,
        "model_version": "raw",
        "feature_version": PARAMS_A.version,
    }


def test_milvus_down_is_live_but_not_ready_and_metrics_still_answer(served: Served) -> None:
    down = CatalogueIndex(f"http://127.0.0.1:{free_port()}")
    with serve(served.settings, down) as client:
        assert client.get("/livez").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        assert ready.json()["status"] == "not ready" and "not reachable" in ready.json()["detail"]
        values = samples(client)
    assert values[("musicrec_catalogue_available", ())] == 0
    assert not any(name == "musicrec_index_tracks" for name, _ in values)
    assert requests_of(values, "/readyz", status="503") == 1
    down.close()


def test_catalogue_not_built_is_not_ready(served: Served, tmp_path: Path) -> None:
    empty = CatalogueIndex(str(tmp_path / "empty.db"))
    with serve(served.settings, empty) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503 and "not built yet" in ready.json()["detail"]
    empty.close()


def test_model_that_cannot_be_loaded_is_not_ready(lib: Settings) -> None:
    """A collection made by model version 7, which no registry holds: ids could be served, uploads not."""
    features = build_features(lib, PARAMS_A)
    seven = RawEmbedder(feature_version=PARAMS_A.version, dim=PARAMS_A.dim, version="7")
    index = CatalogueIndex(lib.milvus_uri)
    refresh_collection(index, seven, features, read_manifest(lib.manifest_path))
    with serve(lib, index) as client:
        ready = client.get("/readyz")
        assert client.get("/health").status_code == 200  # /health is unchanged: it does not check the model
    assert ready.status_code == 503 and ready.json()["detail"].startswith("model version 7 (which made collection")
    index.close()


def test_openapi_documents_the_operations_routes(served: Served) -> None:
    spec = served.client.get("/openapi.json").json()
    assert {"/livez", "/readyz", "/metrics"} <= set(spec["paths"])
    ready = spec["paths"]["/readyz"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/NotReady")
    assert ready["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")


def test_configured_metrics_folder_is_emptied_of_an_earlier_runs_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"old counts")
    (folder / "README").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    cleanup = prepare_multiprocess_dir(workers=3)
    cleanup()
    assert [p.name for p in folder.iterdir()] == ["README"]
    assert os.environ[MULTIPROC_ENV] == str(folder)  # the user's setting stays


def test_several_workers_get_a_temporary_metrics_folder_removed_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    cleanup = prepare_multiprocess_dir(workers=2)
    folder = Path(os.environ[MULTIPROC_ENV])
    assert folder.is_dir() and not any(folder.iterdir())
    cleanup()
    assert not folder.exists() and MULTIPROC_ENV not in os.environ
    assert prepare_multiprocess_dir(workers=1) is not None and MULTIPROC_ENV not in os.environ
