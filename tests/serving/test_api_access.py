"""Access control: the API key on recommendation routes, and no non-loopback bind without one."""

from __future__ import annotations

from pipelines.catalogue.manifest import read_manifest
from pipelines.settings import ServingSettings
from serving.cli_serve import is_loopback
from tests.serving.conftest import Served, serve
from tests.serving.test_cli_serve import _musicrec, _one_line_error


def test_routes_need_the_key_when_one_is_set(served: Served) -> None:
    track = read_manifest(served.settings.manifest_path)["track_id"][0]
    keyed = ServingSettings(serving_api_key="s3cret", serving_alias_ttl_s=0)
    with serve(served.settings, served.index, keyed) as client:
        missing = client.get(f"/tracks/{track}/similar")
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
        wrong = client.post("/playlist", json={"seeds": [track]}, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 403 and "does not hold" in wrong.json()["detail"]
        upload = client.post("/similar", content=b"RIFF" * 10, headers={"X-API-Key": "s3cre"})
        assert upload.status_code == 403  # refused before the body is read
        ok = client.get(f"/tracks/{track}/similar", params={"k": 2}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2
        assert client.get("/health").status_code == 200  # readiness probes need no key
    assert served.client.get(f"/tracks/{track}/similar").status_code == 200  # no key configured: open


def test_serve_refuses_a_public_address_without_a_key(served: Served) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    out = _musicrec(["serve", "--host", "0.0.0.0", "--port", "1"], served.settings)
    _one_line_error(out, "refusing to serve on 0.0.0.0 without an API key: set MUSICREC_SERVING_API_KEY")
