"""The /navidrome routes over the tagged library: SongRefs in and out, 404/409/422 and the API key."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipelines.settings import ServingSettings
from serving.api import create_app
from serving.service import Recommender
from tests import tagged
from tests.serving.conftest import TaggedServed, tagged_served

__all__ = ["tagged_served"]


def test_similar_by_mbid_returns_songrefs_from_the_manifest(tagged_served: TaggedServed) -> None:
    r = tagged_served.client.post(
        "/navidrome/similar", json={"song": {"id": "nd-1", "name": "whatever", "mbid": tagged.MBID_LOW_1}, "count": 3}
    )
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert len(matches) == 3
    df = tagged_served.recommender.library()
    titles = set(df["title"].dropna())
    for m in matches:
        assert m["song"]["name"] in titles and 0 <= m["similarity"] <= 1
        assert "id" not in m["song"]  # musicrec does not know Navidrome's ids of other songs
    assert matches[0]["song"]["artist"] == "Ann Arbor"  # low tones sound like low tones
    assert all(m["song"]["durationMs"] > 0 for m in matches)


def test_similar_by_tags(tagged_served: TaggedServed) -> None:
    song = {"name": "HIGH 1 (Remastered)", "artist": "bee sharp", "album": "High Notes", "durationMs": 3000}
    r = tagged_served.client.post("/navidrome/similar", json={"song": song, "count": 2})
    assert r.status_code == 200, r.text
    assert r.json()["matches"][0]["song"]["artist"] == "Bee Sharp"


def test_path_keeps_the_ends_navidrome_ids(tagged_served: TaggedServed) -> None:
    body = {
        "startSong": {"id": "nd-start", "name": "Low 0", "artist": "Ann Arbor"},
        "endSong": {"id": "nd-end", "name": "High 0", "artist": "Bee Sharp", "mbid": tagged.MBID_HIGH_1},
        "count": 5,
    }
    r = tagged_served.client.post("/navidrome/path", json=body)
    assert r.status_code == 200, r.text
    songs = [m["song"] for m in r.json()["matches"]]
    assert 2 <= len(songs) <= 5
    assert songs[0]["id"] == "nd-start" and songs[0]["name"] == "Low 0"
    assert songs[-1]["id"] == "nd-end" and songs[-1]["name"] == "High 0"
    assert r.json()["matches"][0]["similarity"] == 1.0


def test_unknown_song_is_404_with_the_reason(tagged_served: TaggedServed) -> None:
    r = tagged_served.client.post("/navidrome/similar", json={"song": {"name": "Nope", "artist": "Nobody"}, "count": 3})
    assert r.status_code == 404
    assert "Nope" in r.json()["detail"] and "no catalogue track" in r.json()["detail"]


def test_bad_input_is_422(tagged_served: TaggedServed) -> None:
    c = tagged_served.client
    assert c.post("/navidrome/similar", json={"song": {"artist": "x"}, "count": 3}).status_code == 422  # no name
    assert c.post("/navidrome/similar", json={"song": {"name": "Low 0"}, "count": 0}).status_code == 422
    assert c.post("/navidrome/path", json={"startSong": {"name": "Low 0"}, "count": 5}).status_code == 422
    same = {"startSong": {"name": "Low 0", "artist": "Ann Arbor"}, "endSong": {"name": "low 0", "artist": "ann arbor"}}
    assert c.post("/navidrome/path", json={**same, "count": 5}).status_code == 422


def test_api_key(tagged_served: TaggedServed) -> None:
    serving = ServingSettings(serving_alias_ttl_s=0, serving_api_key=SecretStr("k3y"))
    rec = Recommender(tagged_served.recommender.index, tagged_served.settings, serving)
    body = {"song": {"name": "Low 0", "artist": "Ann Arbor"}, "count": 2}
    with TestClient(create_app(tagged_served.settings, recommender=rec)) as client:
        assert client.post("/navidrome/similar", json=body).status_code == 401
        assert client.post("/navidrome/similar", json=body, headers={"X-API-Key": "wrong"}).status_code == 403
        assert client.post("/navidrome/similar", json=body, headers={"X-API-Key": "k3y"}).status_code == 200


def test_counts_above_the_caps_are_cut_not_refused(tagged_served: TaggedServed) -> None:
    c = tagged_served.client
    r = c.post("/navidrome/similar", json={"song": {"name": "Low 0", "artist": "Ann Arbor"}, "count": 1000})
    assert r.status_code == 200 and 1 <= len(r.json()["matches"]) <= tagged_served.recommender.serving.serving_max_k
    body = {"startSong": {"name": "Low 0", "artist": "Ann Arbor"}, "endSong": {"name": "High 0", "artist": "Bee Sharp"}}
    r = c.post("/navidrome/path", json={**body, "count": 500})
    assert r.status_code == 200 and len(r.json()["matches"]) <= 52
