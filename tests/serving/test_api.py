"""The HTTP API over a real Milvus Lite collection: answers, filters, and every bad input's status and reason."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import free_port
from pipelines.index.milvus import TrackIndex
from pipelines.index.refresh import refresh_collection
from pipelines.model.embedder import RawEmbedder
from pipelines.settings import ServingSettings, Settings
from serving.schemas import SimilarResponse
from serving.service import Answer, Filters, Recommendation
from tests import synth
from tests.fs import tmpfs
from tests.pipelines.index.helpers import PARAMS_A, build_features
from tests.serving.conftest import Served, serve


def _wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, synth.SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _ids(served: Served) -> dict[str, str]:
    """title -> track_id of the catalogue."""
    m = read_manifest(served.settings.manifest_path)
    return dict(zip(m["title"], m["track_id"], strict=True))


def test_health_reports_what_is_served(served: Served) -> None:
    res = served.client.get("/health")
    assert res.status_code == 200
    body = res.json()
    assert body["collection"] == served.collection and body["alias"] == "tracks"
    assert (body["model_version"], body["feature_version"]) == ("raw", PARAMS_A.version)
    assert body["tracks"] == 15 and body["index_type"] == "HNSW" and body["dim"] == PARAMS_A.dim


def test_similar_to_a_track_is_nearest_first_and_leaves_out_the_query(served: Served) -> None:
    query = _ids(served)["low_tones 2"]
    res = served.client.get(f"/tracks/{query}/similar", params={"k": 5})
    assert res.status_code == 200
    body = res.json()
    assert body["query"] == query and body["collection"] == served.collection and body["model_version"] == "raw"
    results = body["results"]
    assert len(results) == 5 and query not in [r["track_id"] for r in results]
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances) and all(0 <= d <= 2 for d in distances)
    assert set(results[0]) == {"track_id", "style", "source", "artist", "title", "distance"}
    assert results[0]["style"] == "low_tones"  # harmonic low tones sound alike

    everything = served.client.get(f"/tracks/{query}/similar", params={"k": 100}).json()["results"]
    assert len(everything) == 14  # k larger than the catalogue: every other track once


def test_k_outside_its_range_is_422_with_the_reason(served: Served) -> None:
    query = _ids(served)["noise 0"]
    res = served.client.get(f"/tracks/{query}/similar", params={"k": 101})  # the schema allows 1000, the server 100
    assert res.status_code == 422 and res.json()["detail"] == "k must be between 1 and 100, got 101"
    for k in (0, -3, 1001):  # outside the limits the OpenAPI schema declares: the same one-line detail string
        res = served.client.get(f"/tracks/{query}/similar", params={"k": k})
        assert res.status_code == 422 and res.json()["detail"].startswith("k: Input should be")
    assert served.client.get(f"/tracks/{query}/similar", params={"k": "ten"}).status_code == 422


def test_unknown_track_is_404(served: Served) -> None:
    res = served.client.get("/tracks/no.such-track/similar")
    assert res.status_code == 404 and res.json()["detail"] == "unknown track id 'no.such-track'"


def test_style_filter_and_unknown_style(served: Served) -> None:
    query = _ids(served)["low_tones 0"]
    res = served.client.get(f"/tracks/{query}/similar", params={"k": 4, "style": "noise"})
    assert res.status_code == 200 and [r["style"] for r in res.json()["results"]] == ["noise"] * 4
    bad = served.client.get(f"/tracks/{query}/similar", params={"style": "jazz"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == "unknown style 'jazz'; styles: high_tones, low_tones, noise"


def test_at_most_m_per_source_and_artist(served: Served) -> None:
    query = _ids(served)["high_tones 0"]
    url = f"/tracks/{query}/similar"
    plain = served.client.get(url, params={"k": 6}).json()["results"]
    per_source = served.client.get(url, params={"k": 6, "max_per_source": 1}).json()["results"]
    sources = [r["source"] for r in per_source]
    assert len(set(sources)) == len(sources) == 6  # six albums in the catalogue, one track each
    assert len({r["source"] for r in plain}) < 6  # without the cap, neighbours cluster in a few albums
    per_artist = served.client.get(url, params={"k": 14, "max_per_artist": 2}).json()["results"]
    artists = [r["artist"] for r in per_artist]
    assert len(per_artist) == 12 and all(artists.count(a) <= 2 for a in artists)  # 6 artists x 2
    dists = [r["distance"] for r in per_artist]
    assert dists == sorted(dists)
    zero = served.client.get(url, params={"max_per_source": 0})
    assert zero.status_code == 422
    assert zero.json()["detail"] == "max_per_source: Input should be greater than or equal to 1"


def test_upload_as_raw_body_or_multipart_and_copies_of_it_are_left_out(served: Served) -> None:
    path = served.music / "noise" / "noise_3.wav"
    track = _ids(served)["noise 3"]
    raw = served.client.post("/similar", params={"k": 3}, content=path.read_bytes())
    assert raw.status_code == 200
    body = raw.json()
    assert body["query"].startswith("upload:") and body["model_version"] == "raw"
    assert track not in [r["track_id"] for r in body["results"]]  # same bytes = same sha256: excluded
    assert body["results"][0]["style"] == "noise"
    multipart = served.client.post("/similar", params={"k": 3}, files={"file": ("x.wav", path.read_bytes())})
    assert multipart.status_code == 200 and multipart.json()["results"] == body["results"]

    with_copy = served.client.post(
        "/similar", params={"k": 1, "exclude_duplicates": "false"}, content=path.read_bytes()
    ).json()["results"]
    assert with_copy[0]["track_id"] == track and with_copy[0]["distance"] < 1e-4


def test_uploads_that_are_not_usable_get_their_status_and_reason(served: Served) -> None:
    cases = [
        (b"", 422, "the upload is empty"),
        (b"%PDF-1.7 this is a document, not music", 415, "the upload is not audio"),
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 50, 422, "the upload could not be decoded as audio"),
        (_wav(synth.tone(440, 0.2)), 422, "the upload is too short"),
        (_wav(np.zeros(3 * synth.SR, dtype=np.float32)), 422, "the upload is silent"),
    ]
    for data, status, reason in cases:
        res = served.client.post("/similar", content=data)
        assert res.status_code == status, (reason, res.json())
        assert res.json()["detail"].startswith(reason)
    missing_part = served.client.post("/similar", files={"audio": ("x.wav", b"RIFF")})
    assert missing_part.status_code == 422 and "no file part named 'file'" in missing_part.json()["detail"]


def test_upload_too_large_is_413_raw_and_multipart(served: Served) -> None:
    small = serve(served.settings, served.index, ServingSettings(serving_max_upload_bytes=100_000))
    data = _wav(synth.tone(220, 5.0))  # 220 kB
    with small:
        raw = small.post("/similar", content=data)
        assert raw.status_code == 413 and raw.json()["detail"].startswith("the upload has")
        assert "the limit is 100000" in raw.json()["detail"]
        multipart = small.post("/similar", files={"file": ("big.wav", data)})
        assert multipart.status_code == 413


def test_uploads_leave_no_temporary_file(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    spool = served.recommender.decoder.spool()  # the pool's private upload folder lives as long as the pool
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    big = _wav(synth.tone(330, 45.0, harmonics=2))  # ~2 MB: a multipart parser would spool it to disk
    assert served.client.post("/similar", files={"file": ("big.wav", big)}).status_code == 200
    assert served.client.post("/similar", content=big).status_code == 200
    assert served.client.post("/similar", content=b"not audio at all").status_code == 415
    assert served.client.post("/similar", files={"file": ("x.wav", _wav(synth.tone(440, 0.1)))}).status_code == 422
    assert list(scratch.iterdir()) == [] and list(spool.iterdir()) == []


def test_playlist_takes_turns_between_seeds_without_repeats(served: Served) -> None:
    ids = _ids(served)
    seeds = [ids["low_tones 0"], ids["noise 0"]]
    res = served.client.post("/playlist", json={"seeds": seeds, "length": 8})
    assert res.status_code == 200
    body = res.json()
    tracks = [t["track_id"] for t in body["tracks"]]
    assert len(tracks) == 8 == len(set(tracks)) and not set(tracks) & set(seeds)
    assert [t["seed"] for t in body["tracks"]] == seeds * 4
    assert [t["style"] for t in body["tracks"]][:2] == ["low_tones", "noise"]

    capped = served.client.post("/playlist", json={"seeds": seeds, "length": 13, "max_per_artist": 1}).json()
    artists = [t["artist"] for t in capped["tracks"]]
    assert len(artists) == len(set(artists)) == 6
    whole = served.client.post("/playlist", json={"seeds": seeds, "length": 200}).json()["tracks"]
    assert len(whole) == 13  # every other track exactly once


def test_playlist_bad_input(served: Served) -> None:
    ids = _ids(served)
    unknown = served.client.post("/playlist", json={"seeds": [ids["noise 1"], "nope"]})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "unknown seed track id(s): 'nope'"
    length = served.client.post("/playlist", json={"seeds": [ids["noise 1"]], "length": 0})
    assert length.status_code == 422 and length.json()["detail"] == "length: Input should be greater than or equal to 1"
    empty = served.client.post("/playlist", json={"seeds": []})
    assert empty.status_code == 422 and "at least 1 item" in str(empty.json()["detail"])
    style = served.client.post("/playlist", json={"seeds": [ids["noise 1"]], "style": "polka"})
    assert style.status_code == 422 and style.json()["detail"].startswith("unknown style 'polka'")


def test_index_not_built_is_503_with_what_to_do(served: Served, tmp_path: Path) -> None:
    empty = TrackIndex(str(tmp_path / "empty.db"))
    with serve(served.settings, empty) as client:
        upload = _wav(synth.tone(440, 3.0))
        for res in (client.get("/health"), client.get("/tracks/x/similar"), client.post("/similar", content=upload)):
            assert res.status_code == 503, res.json()
            assert "not built yet" in res.json()["detail"]
            assert "run `musicrec index refresh`" in res.json()["detail"]
    empty.close()


def test_milvus_down_is_503_with_what_to_do(served: Served) -> None:
    down = TrackIndex(f"http://127.0.0.1:{free_port()}")
    with serve(served.settings, down) as client:
        res = client.get("/tracks/x/similar")
        assert res.status_code == 503 and res.headers["retry-after"] == "30"
        assert "not reachable" in res.json()["detail"] and "start the Milvus server" in res.json()["detail"]
        assert client.get("/health").status_code == 503


def test_similar_body_built_directly_is_what_the_response_model_gives(served: Served) -> None:
    rec = served.client.app.state.recommender
    for query, k, filters in [
        (_ids(served)["noise 1"], 7, Filters()),
        (_ids(served)["high_tones 0"], 3, Filters(style="high_tones", max_per_source=1)),
    ]:
        answer = rec.similar(query, k, filters)
        assert json.loads(SimilarResponse.json_of(answer)) == SimilarResponse.of(answer).model_dump(mode="json")
        got = served.client.get(f"/tracks/{query}/similar", params={"k": k, **_params(filters)})
        assert got.headers["content-type"] == "application/json"
        assert got.json() == SimilarResponse.of(rec.similar(query, k, filters)).model_dump(mode="json")
    odd = Answer("q", "c", "raw", [Recommendation('t\u00e9"\n', "s", "src", None, "ti\u2603tle", 0.125)])
    assert json.loads(SimilarResponse.json_of(odd)) == SimilarResponse.of(odd).model_dump(mode="json")


def _params(filters: Filters) -> dict[str, object]:
    out: dict[str, object] = {}
    if filters.style is not None:
        out["style"] = filters.style
    if filters.max_per_source is not None:
        out["max_per_source"] = filters.max_per_source
    return out


def test_openapi_documents_every_route(served: Served) -> None:
    spec = served.client.get("/openapi.json").json()
    assert {"/tracks/{track_id}/similar", "/similar", "/playlist", "/health"} <= set(spec["paths"])
    ok = spec["paths"]["/tracks/{track_id}/similar"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/SimilarResponse"}
    upload = spec["paths"]["/similar"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"404", "413", "415", "422", "503"} <= set(upload["responses"])


def test_upload_needs_the_collections_own_model_and_says_so_when_it_cannot_be_loaded(lib: Settings) -> None:
    """A collection made by model version 7: queries by id work, uploads need version 7 itself."""
    features = build_features(lib, PARAMS_A)
    seven = RawEmbedder(feature_version=PARAMS_A.version, dim=PARAMS_A.dim, version="7")
    index = TrackIndex(lib.paths.milvus_uri)
    refresh_collection(index, seven, features, read_manifest(lib.manifest_path))
    with serve(lib, index) as client:
        assert client.get(f"/tracks/{features.track_ids[0]}/similar", params={"k": 3}).status_code == 200
        res = client.post("/similar", content=_wav(synth.tone(440, 3.0)))
        assert res.status_code == 503
        assert res.json()["detail"].startswith("model version 7 (which made collection tracks__7__")
        assert "roll back with `musicrec index rollback`" in res.json()["detail"]
    index.close()


@pytest.fixture
def tiny_spool(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MB file system for the upload spool (tmpfs; needs the right to mount, as root has)."""
    with tmpfs(tmp_path / "spool", "1m") as folder:
        yield folder


def test_a_full_upload_spool_is_507_with_the_reason_and_leaves_nothing(served: Served, tiny_spool: Path) -> None:
    serving = ServingSettings(serving_alias_ttl_s=0, serving_upload_dir=tiny_spool)
    client = serve(served.settings, served.index, serving)
    with client:
        big = _wav(synth.tone(330, 45.0, harmonics=2))  # ~2 MB: more than the spool holds
        got = client.post("/similar", content=big)
        assert got.status_code == 507, got.text
        assert "disk is full" in got.json()["detail"] and "MUSICREC_SERVING_UPLOAD_DIR" in got.json()["detail"]
        assert list(tiny_spool.iterdir()) == [], "the partial spool file is removed"
        small = _wav(synth.tone(330, 3.0, harmonics=2))
        assert client.post("/similar", content=small).status_code == 200, "a smaller upload still fits"


def test_an_outage_of_any_service_is_503_and_bad_input_is_not(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each family has one HTTP face: any Unavailable (here MLflow's, not the index's) is 503 with the reason
    and Retry-After; a UserError is its 4xx without Retry-After."""
    from pipelines.registry import RegistryUnavailable
    from serving.errors import NotFound

    def down(*args: object, **kw: object) -> None:
        raise RegistryUnavailable("MLflow at http://x is not reachable (ConnectError); start the server")

    def unknown(*args: object, **kw: object) -> None:
        raise NotFound("unknown track id 'x'")

    monkeypatch.setattr(served.recommender, "similar", down)
    res = served.client.get("/tracks/x/similar")
    assert res.status_code == 503 and res.headers["retry-after"] == "30"
    assert res.json() == {"detail": "MLflow at http://x is not reachable (ConnectError); start the server"}
    monkeypatch.setattr(served.recommender, "similar", unknown)
    res = served.client.get("/tracks/x/similar")
    assert res.status_code == 404 and "retry-after" not in res.headers
    assert res.json() == {"detail": "unknown track id 'x'"}
