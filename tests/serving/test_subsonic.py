"""The OpenSubsonic sonicSimilarity face against its documented shapes, in JSON and XML, errors included."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from pipelines.catalogue.manifest import UNLABELLED
from pipelines.settings import ServingSettings
from serving.api import create_app
from serving.service import Recommender
from serving.subsonic import XMLNS
from tests import tagged
from tests.serving.conftest import TaggedServed

NS = {"s": XMLNS}
LOW0 = "Ann Arbor/Low Hum/01 Low 0.flac"
HIGH0 = "Bee Sharp/High Notes/01 High 0.ogg"


def _json(client: TestClient, endpoint: str, **params: Any) -> dict[str, Any]:
    resp = client.get(f"/rest/{endpoint}", params={**params, "f": "json"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    return resp.json()["subsonic-response"]


def _check_envelope(body: dict[str, Any], status: str) -> None:
    assert body["status"] == status and body["version"] == "1.16.1" and body["openSubsonic"] is True
    assert isinstance(body["type"], str) and isinstance(body["serverVersion"], str)


def _check_match(match: dict[str, Any]) -> None:
    assert set(match) == {"entry", "similarity"}
    assert 0.0 <= match["similarity"] <= 1.0
    entry = match["entry"]
    assert isinstance(entry["id"], str) and isinstance(entry["title"], str)
    assert entry["isDir"] is False and entry["type"] == "music"


def test_similar_tracks_json_shape_order_and_matching_by_path(tagged_served: TaggedServed) -> None:
    body = _json(tagged_served.client, "getSonicSimilarTracks", id=LOW0, count=4)
    _check_envelope(body, "ok")
    matches = body["sonicMatch"]
    assert len(matches) == 4
    for m in matches:
        _check_match(m)
    sims = [m["similarity"] for m in matches]
    assert sims == sorted(sims, reverse=True)
    # the nearest sounds are the other low tones, named by their paths in the music folder
    assert all(m["entry"]["path"].startswith("Ann Arbor/Low Hum/") for m in matches[:3])
    assert matches[0]["entry"]["artist"] == "Ann Arbor" and matches[0]["entry"]["album"] == "Low Hum"
    assert matches[0]["entry"]["suffix"] == "flac" and matches[0]["entry"]["contentType"] == "audio/flac"
    assert LOW0 not in [m["entry"]["path"] for m in matches]


def test_similarity_is_one_minus_half_the_cosine_distance(tagged_served: TaggedServed) -> None:
    start = tagged_served.track_id(LOW0)
    answer = tagged_served.recommender.similar(start, 3)
    body = _json(tagged_served.client, "getSonicSimilarTracks", id=start, count=3)
    got = {m["entry"]["id"]: m["similarity"] for m in body["sonicMatch"]}
    assert got == {r.track_id: pytest.approx(1 - r.distance / 2, abs=1e-6) for r in answer.results}


def test_matching_by_musicbrainz_id_and_view_suffix(tagged_served: TaggedServed) -> None:
    by_mbid = _json(tagged_served.client, "getSonicSimilarTracks.view", id=tagged.MBID_HIGH_1, count=2)
    by_path = _json(tagged_served.client, "getSonicSimilarTracks", id=HIGH0, count=2)
    assert by_mbid["sonicMatch"] == by_path["sonicMatch"]
    assert by_mbid["sonicMatch"][0]["entry"]["artist"] == "Bee Sharp"


def test_unlabelled_tracks_are_served_and_recommend(tagged_served: TaggedServed) -> None:
    df = tagged_served.recommender.library()
    unlabelled = df.index[df["style"] == UNLABELLED]
    assert len(unlabelled) == 3
    body = _json(tagged_served.client, "getSonicSimilarTracks", id=str(unlabelled[0]), count=2)
    assert {m["entry"]["id"] for m in body["sonicMatch"]} <= set(unlabelled)


def test_xml_is_the_default_and_has_the_same_content(tagged_served: TaggedServed) -> None:
    resp = tagged_served.client.get("/rest/getSonicSimilarTracks", params={"id": LOW0, "count": 3})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(resp.content)
    assert root.tag == f"{{{XMLNS}}}subsonic-response" and root.get("status") == "ok"
    assert root.get("version") == "1.16.1" and root.get("openSubsonic") == "true"
    matches = root.findall("s:sonicMatch", NS)
    body = _json(tagged_served.client, "getSonicSimilarTracks", id=LOW0, count=3)
    assert [float(m.get("similarity")) for m in matches] == [m["similarity"] for m in body["sonicMatch"]]
    assert [m.find("s:entry", NS).get("id") for m in matches] == [m["entry"]["id"] for m in body["sonicMatch"]]


def test_sonic_path_starts_and_ends_at_the_given_songs(tagged_served: TaggedServed) -> None:
    body = _json(tagged_served.client, "findSonicPath", startSongId=LOW0, endSongId=HIGH0, count=6)
    _check_envelope(body, "ok")
    path = body["sonicMatch"]
    for m in path:
        _check_match(m)
    ids = [m["entry"]["id"] for m in path]
    assert ids[0] == tagged_served.track_id(LOW0) and ids[-1] == tagged_served.track_id(HIGH0)
    assert 2 <= len(path) <= 6 and len(set(ids)) == len(ids)
    assert path[0]["similarity"] == 1.0 and path[-1]["similarity"] < 1.0


@pytest.mark.parametrize(
    ("endpoint", "params", "code", "words"),
    [
        ("getSonicSimilarTracks", {}, 10, "id"),
        ("getSonicSimilarTracks", {"id": "  "}, 10, "id"),
        ("getSonicSimilarTracks", {"id": "nope/not-there.flac"}, 70, "no catalogue track"),
        ("getSonicSimilarTracks", {"id": "00000000-0000-0000-0000-000000000000"}, 70, "no catalogue track"),
        ("getSonicSimilarTracks", {"id": LOW0, "count": "ten"}, 0, "whole number"),
        ("getSonicSimilarTracks", {"id": LOW0, "count": "0"}, 0, "between"),
        ("getSonicSimilarTracks.view", {"id": LOW0, "count": "100000"}, 0, "between"),
        ("findSonicPath", {"startSongId": LOW0}, 10, "endSongId"),
        ("findSonicPath", {"startSongId": LOW0, "endSongId": "missing"}, 70, "missing"),
        ("findSonicPath", {"startSongId": LOW0, "endSongId": LOW0}, 0, "same track"),
        ("findSonicPath", {"startSongId": LOW0, "endSongId": HIGH0, "count": "2"}, 0, "between"),
    ],
)
def test_errors_are_failed_responses_with_codes(
    tagged_served: TaggedServed, endpoint: str, params: dict[str, str], code: int, words: str
) -> None:
    body = _json(tagged_served.client, endpoint, **params)
    _check_envelope(body, "failed")
    assert body["error"]["code"] == code and words in body["error"]["message"]
    assert "sonicMatch" not in body
    xml = tagged_served.client.get(f"/rest/{endpoint}", params=params)
    root = ET.fromstring(xml.content)
    assert root.get("status") == "failed" and root.find("s:error", NS).get("code") == str(code)


def test_api_key_as_header_or_parameter(tagged_served: TaggedServed) -> None:
    serving = ServingSettings(serving_alias_ttl_s=0, music_folder=tagged_served.music, serving_api_key="s3cret")
    recommender = Recommender(tagged_served.recommender.index, tagged_served.settings, serving)
    with TestClient(create_app(tagged_served.settings, recommender=recommender)) as client:
        none = client.get("/rest/getSonicSimilarTracks", params={"id": LOW0, "f": "json"})
        wrong = client.get("/rest/getSonicSimilarTracks", params={"id": LOW0, "f": "json", "apiKey": "x"})
        by_param = client.get("/rest/getSonicSimilarTracks", params={"id": LOW0, "f": "json", "apiKey": "s3cret"})
        path = {"startSongId": LOW0, "endSongId": HIGH0, "f": "json"}
        by_header = client.get("/rest/findSonicPath.view", params=path, headers={"X-API-Key": "s3cret"})
    assert none.status_code == 200 and none.json()["subsonic-response"]["error"]["code"] == 10
    assert wrong.status_code == 200 and wrong.json()["subsonic-response"]["error"]["code"] == 44
    assert by_param.json()["subsonic-response"]["status"] == "ok"
    assert by_header.json()["subsonic-response"]["status"] == "ok"
