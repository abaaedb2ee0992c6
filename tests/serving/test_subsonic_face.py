"""The /rest face beyond sonic similarity: every endpoint's shape in XML and JSON, GET and form POST, X and
X.view, search3 paging, and each Subsonic error code (credentials included) as a failed response, HTTP 200."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipelines.settings import ServingSettings
from serving.subsonic import XMLNS
from tests.serving.conftest import Served, serve

NS = {"s": XMLNS}
USER, PASSWORD, KEY = "ann", "pässword", "k3y-for-tests"


def _token(password: str = PASSWORD, salt: str = "c0ffee42") -> dict[str, str]:
    return {"u": USER, "t": hashlib.md5((password + salt).encode()).hexdigest(), "s": salt}


def _serving(**kw: Any) -> ServingSettings:
    return ServingSettings(serving_alias_ttl_s=0, **kw)


@pytest.fixture(scope="module")
def locked(served: Served) -> Iterator[TestClient]:
    """The face with a Subsonic user and an API key."""
    serving = _serving(subsonic_user=USER, subsonic_password=SecretStr(PASSWORD), serving_api_key=SecretStr(KEY))
    with serve(served.settings, served.index, serving) as client:
        yield client


@pytest.fixture(scope="module")
def key_only(served: Served) -> Iterator[TestClient]:
    with serve(served.settings, served.index, _serving(serving_api_key=SecretStr(KEY))) as client:
        yield client


@pytest.fixture(scope="module")
def user_only(served: Served) -> Iterator[TestClient]:
    serving = _serving(subsonic_user=USER, subsonic_password=SecretStr(PASSWORD))
    with serve(served.settings, served.index, serving) as client:
        yield client


def _body(client: TestClient, endpoint: str, method: str = "GET", **params: Any) -> dict[str, Any]:
    if method == "POST":
        resp = client.post(f"/rest/{endpoint}", data={**params, "f": "json"})
    else:
        resp = client.get(f"/rest/{endpoint}", params={**params, "f": "json"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    return resp.json()["subsonic-response"]


def _code(body: dict[str, Any]) -> int | None:
    return body["error"]["code"] if body["status"] == "failed" else None


def _ids(served: Served) -> list[str]:
    return [str(t) for t in served.recommender.library().index]


# ---- shapes ---------------------------------------------------------------------------------------------


def test_ping_license_and_extensions_in_json_and_xml(served: Served) -> None:
    client = served.client
    assert _body(client, "ping")["status"] == "ok"
    assert _body(client, "getLicense")["license"] == {"valid": True}
    exts = {e["name"]: e["versions"] for e in _body(client, "getOpenSubsonicExtensions")["openSubsonicExtensions"]}
    assert exts == {"sonicSimilarity": [1], "formPost": [1], "apiKeyAuthentication": [1]}
    root = ET.fromstring(client.get("/rest/getOpenSubsonicExtensions.view").content)
    assert root.get("status") == "ok" and root.get("openSubsonic") == "true"
    xml_exts = {
        e.get("name"): [v.text for v in e.findall("s:versions", NS)]
        for e in root.findall("s:openSubsonicExtensions", NS)
    }
    assert xml_exts == {"sonicSimilarity": ["1"], "formPost": ["1"], "apiKeyAuthentication": ["1"]}
    lic = ET.fromstring(client.post("/rest/getLicense").content).find("s:license", NS)
    assert lic is not None and lic.get("valid") == "true"


def test_get_song_json_xml_by_get_and_post(served: Served) -> None:
    track = _ids(served)[0]
    row = served.recommender.library().loc[track]
    song = _body(served.client, "getSong", id=track)["song"]
    assert song["id"] == track and song["title"] == row["title"] and song["artist"] == row["artist"]
    assert song["suffix"] == "wav" and song["contentType"] == "audio/wav" and song["isDir"] is False
    assert _body(served.client, "getSong.view", "POST", id=track)["song"] == song
    xml = ET.fromstring(served.client.get("/rest/getSong", params={"id": track}).content).find("s:song", NS)
    assert xml is not None and xml.get("id") == track and xml.get("title") == row["title"]


def test_post_merges_the_query_string_and_the_form_body(served: Served) -> None:
    track = _ids(served)[1]
    resp = served.client.post("/rest/getSong.view", params={"f": "json"}, data={"id": track})
    assert resp.json()["subsonic-response"]["song"]["id"] == track


def test_search3_finds_words_and_pages_through_everything(served: Served) -> None:
    found = _body(served.client, "search3", query="low_tones", songCount=3, artistCount=0, albumCount=0)
    songs = found["searchResult3"]["song"]
    assert len(songs) == 3 and all(s["title"].startswith("low_tones") for s in songs)
    everything = set(_ids(served))
    for empty in ("", '""'):
        pages = [
            _body(served.client, "search3", "POST", query=empty, songCount=4, songOffset=o)["searchResult3"]["song"]
            for o in range(0, 20, 4)
        ]
        seen = [s["id"] for page in pages for s in page]
        assert len(seen) == len(everything) and set(seen) == everything  # no song twice, none left out
        assert [len(p) for p in pages] == [4, 4, 4, 3, 0]
    assert _body(served.client, "search3", query="no-such-words-here")["searchResult3"]["song"] == []
    xml = ET.fromstring(served.client.get("/rest/search3", params={"query": "noise", "songCount": 2}).content)
    result = xml.find("s:searchResult3", NS)
    assert result is not None and len(result.findall("s:song", NS)) == 2


def test_similar_songs_are_the_nearest_neighbours(served: Served) -> None:
    track = _ids(served)[0]
    want = [r.track_id for r in served.recommender.similar(track, 4).results]
    two = _body(served.client, "getSimilarSongs2", id=track, count=4)["similarSongs2"]["song"]
    one = _body(served.client, "getSimilarSongs.view", "POST", id=track, count=4)["similarSongs"]["song"]
    assert [s["id"] for s in two] == want == [s["id"] for s in one]
    assert len(_body(served.client, "getSimilarSongs2", id=track, count=100000)["similarSongs2"]["song"]) == 14


def test_stream_and_download_are_the_file_with_ranges(served: Served) -> None:
    track = _ids(served)[2]
    data = open(served.recommender.library().loc[track, "path"], "rb").read()  # noqa: SIM115
    for endpoint in ("stream", "download.view"):
        full = served.client.get(f"/rest/{endpoint}", params={"id": track})
        assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "audio/wav"
    part = served.client.get("/rest/stream", params={"id": track}, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    posted = served.client.post("/rest/stream.view", data={"id": track}, headers={"Range": "bytes=0-99"})
    assert posted.status_code == 206 and posted.content == data[:100]
    missing = served.client.get("/rest/stream", params={"id": "nope", "f": "json"})
    assert missing.status_code == 200 and missing.json()["subsonic-response"]["error"]["code"] == 70


# ---- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "params", "code", "words"),
    [
        ("getSong", {}, 10, "id"),
        ("getSong", {"id": "no-such-track"}, 70, "no catalogue track"),
        ("getSimilarSongs2", {}, 10, "id"),
        ("getSimilarSongs2", {"id": "no-such-track"}, 70, "no catalogue track"),
        ("getSimilarSongs", {"id": "x", "count": "many"}, 0, "whole number"),
        ("search3", {"query": "a", "songOffset": "-1"}, 0, "between"),
        ("search3", {"query": "x" * 300}, 0, "longer than 200"),
        ("stream", {}, 10, "id"),
        ("getAlbum", {"id": "1"}, 70, "albums"),
        ("getArtist.view", {"id": "1"}, 70, "artists"),
        ("getCoverArt", {"id": "1"}, 70, "cover art"),
        ("getPlaylists", {}, 0, "does not implement"),
        ("scrobble.view", {"id": "1"}, 0, "does not implement"),
        ("no/such/thing", {}, 0, "does not implement"),
    ],
)
def test_failures_are_subsonic_responses_with_http_200(
    served: Served, endpoint: str, params: dict[str, str], code: int, words: str
) -> None:
    for method in ("GET", "POST"):
        body = _body(served.client, endpoint, method, **params)
        assert body["status"] == "failed" and body["error"]["code"] == code and words in body["error"]["message"]
    xml = served.client.get(f"/rest/{endpoint}", params=params)
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/xml")
    error = ET.fromstring(xml.content).find("s:error", NS)
    assert error is not None and error.get("code") == str(code)


@pytest.mark.parametrize(
    ("params", "headers", "code"),
    [
        ({}, {}, 10),
        ({"u": USER}, {}, 10),
        ({"u": USER, "p": PASSWORD}, {}, None),
        ({"u": USER, "p": "enc:" + PASSWORD.encode().hex()}, {}, None),
        ({"u": USER, "p": "enc:" + PASSWORD.encode().hex().upper()}, {}, None),
        (_token(), {}, None),
        ({**_token(), "t": _token()["t"].upper()}, {}, None),
        ({"u": USER, "p": "wrong"}, {}, 40),
        ({"u": USER, "p": "enc:zz"}, {}, 40),
        ({"u": "bob", "p": PASSWORD}, {}, 40),
        (_token("wrong"), {}, 40),
        ({**_token(), "u": "bob"}, {}, 40),
        ({"u": USER, "t": _token()["t"]}, {}, 10),
        ({**_token(), "p": PASSWORD}, {}, 43),
        ({"apiKey": KEY}, {}, None),
        ({}, {"X-API-Key": KEY}, None),
        ({"apiKey": "wrong"}, {}, 44),
        ({}, {"X-API-Key": "wrong"}, 44),
        ({"apiKey": KEY, "u": USER}, {}, 43),
        ({"u": USER, "p": PASSWORD}, {"X-API-Key": KEY}, 43),
    ],
)
def test_credentials(locked: TestClient, params: dict[str, str], headers: dict[str, str], code: int | None) -> None:
    for method in ("GET", "POST"):
        if method == "GET":
            resp = locked.get("/rest/ping.view", params={**params, "f": "json"}, headers=headers)
        else:
            resp = locked.post("/rest/ping", data={**params, "f": "json"}, headers=headers)
        assert resp.status_code == 200
        assert _code(resp.json()["subsonic-response"]) == code


def test_extensions_need_no_credentials_everything_else_does(locked: TestClient) -> None:
    assert _body(locked, "getOpenSubsonicExtensions")["status"] == "ok"
    for endpoint in ("getLicense", "getSong", "search3", "stream", "getSonicSimilarTracks", "getAlbum", "nothing"):
        assert _code(_body(locked, endpoint, id="x")) == 10


def test_a_mechanism_the_server_does_not_have_is_42(key_only: TestClient, user_only: TestClient) -> None:
    assert _code(_body(key_only, "ping", u=USER, p=PASSWORD)) == 42
    assert _code(_body(key_only, "ping", apiKey=KEY)) is None
    assert _code(_body(user_only, "ping", apiKey=KEY)) == 42
    assert _code(_body(user_only, "ping", **_token())) is None


def test_open_face_takes_any_credentials_but_not_conflicting_ones(served: Served) -> None:
    assert _code(_body(served.client, "ping")) is None
    assert _code(_body(served.client, "ping", u="anyone", p="anything")) is None
    assert _code(_body(served.client, "ping", apiKey="whatever")) is None
    assert _code(_body(served.client, "ping", apiKey="whatever", u="anyone")) == 43


def test_user_and_password_come_as_a_pair() -> None:
    with pytest.raises(ValueError, match="MUSICREC_SUBSONIC_PASSWORD"):
        _serving(subsonic_user=USER)
    with pytest.raises(ValueError, match="MUSICREC_SUBSONIC_USER"):
        _serving(subsonic_password=SecretStr(PASSWORD))
