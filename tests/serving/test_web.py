"""The web page's routes over a real served catalogue: search, audio ranges, M3U, paths, the map, security."""

from __future__ import annotations

import itertools
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.catalogue_map import load_map, map_file, project
from pipelines.settings import ServingSettings
from serving.api import create_app
from serving.service import Recommender
from tests.serving.conftest import Served

pytestmark = pytest.mark.integration


def _ids(served: Served) -> list[str]:
    return sorted(read_manifest(served.settings.manifest_path)["track_id"])


def test_pages_and_static_files_are_served(served: Served) -> None:
    page = served.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text
    assert served.client.get("/static/app.js").status_code == 200
    assert "review.js" in served.client.get("/review").text
    assert served.client.get("/static/../api.py").status_code == 404


def test_search_matches_every_word_and_stops_at_the_limit(served: Served) -> None:
    found = served.client.get("/library/search", params={"q": "low_tones 3"}).json()
    assert found["total"] == 1 and found["tracks"][0]["title"] == "low_tones 3"
    capped = served.client.get("/library/search", params={"q": "", "limit": 4}).json()
    assert capped["total"] == 15 and len(capped["tracks"]) == 4
    by_style = served.client.get("/library/search", params={"q": "artist-1", "style": "noise"}).json()
    assert by_style["total"] == 2 and {t["style"] for t in by_style["tracks"]} == {"noise"}
    assert served.client.get("/library/search", params={"limit": 0}).status_code == 422
    too_many = served.client.get("/library/search", params={"limit": 500})
    assert too_many.status_code == 422 and "limit" in too_many.json()["detail"]


def test_audio_is_the_catalogue_file_and_honours_ranges(served: Served) -> None:
    track = _ids(served)[0]
    path = read_manifest(served.settings.manifest_path).set_index("track_id").at[track, "path"]
    data = Path(path).read_bytes()
    whole = served.client.get(f"/tracks/{quote(track, safe='')}/audio")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/wav" and whole.headers["accept-ranges"] == "bytes"
    part = served.client.get(f"/tracks/{quote(track, safe='')}/audio", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"


@pytest.mark.parametrize(
    "raw",
    [
        "/tracks/..%2F..%2F..%2Fetc%2Fpasswd/audio",
        "/tracks/%2Fetc%2Fpasswd/audio",
        "/tracks/....//....//etc/passwd/audio",
        "/tracks/..%5C..%5Cwindows%5Cwin.ini/audio",
        "/tracks/%252e%252e%252fetc%252fpasswd/audio",
        "/tracks/library.csv/audio",
    ],
)
def test_path_traversal_on_the_audio_route_is_404(served: Served, raw: str) -> None:
    response = served.client.get(raw)
    assert response.status_code == 404, raw
    assert "unknown track id" in response.json()["detail"]


def test_a_file_path_is_not_a_track_id(served: Served) -> None:
    path = read_manifest(served.settings.manifest_path)["path"].iloc[0]
    response = served.client.get(f"/tracks/{quote(path, safe='')}/audio")
    assert response.status_code == 404


def test_m3u_lists_seeds_then_playlist_as_audio_urls(served: Served) -> None:
    seeds = [_ids(served)[0], _ids(served)[-1]]
    response = served.client.get("/playlist.m3u", params={"seed": seeds, "length": 5})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("audio/x-mpegurl")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert lines[0] == "#EXTM3U"
    urls = [line for line in lines if not line.startswith("#")]
    assert len(urls) == 7 and len(set(urls)) == 7
    assert urls[:2] == [f"http://testserver/tracks/{quote(s, safe='')}/audio" for s in seeds]
    assert all(line.startswith("#EXTINF:3,") for line in lines if line.startswith("#EXTINF"))
    for url in urls:  # every entry plays
        assert served.client.get(url, headers={"Range": "bytes=0-3"}).content == b"RIFF"
    unknown = served.client.get("/playlist.m3u", params={"seed": "no-such-track"})
    assert unknown.status_code == 404 and "no-such-track" in unknown.json()["detail"]
    assert served.client.get("/playlist.m3u").status_code == 422


def test_path_walks_through_neighbours_without_repeats(served: Served) -> None:
    manifest = read_manifest(served.settings.manifest_path).sort_values("track_id")
    low = manifest[manifest["style"] == "low_tones"]["track_id"].iloc[0]
    high = manifest[manifest["style"] == "high_tones"]["track_id"].iloc[0]
    found = served.client.get("/path", params={"start": low, "end": high, "steps": 6}).json()
    steps = [s["track_id"] for s in found["steps"]]
    assert steps[0] == low and steps[-1] == high
    assert len(steps) == len(set(steps)) and 3 <= len(steps) <= 8
    for s in found["steps"][1:]:  # each step is one of the previous track's nearest tracks
        assert 0 <= s["distance"] <= 1
    assert found["steps"][-1]["to_end"] == 0.0
    assert served.client.get("/path", params={"start": low, "end": low}).status_code == 422
    missing = served.client.get("/path", params={"start": low, "end": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_each_step_of_a_path_is_a_neighbour_of_the_step_before(served: Served) -> None:
    ids = _ids(served)
    start, end = ids[0], ids[-1]
    steps = [s["track_id"] for s in served.client.get("/path", params={"start": start, "end": end}).json()["steps"]]
    for before, after in itertools.pairwise(steps[:-1]):  # the last hop may be the end itself
        near = served.client.get(f"/tracks/{quote(before, safe='')}/similar", params={"k": 12}).json()["results"]
        assert after in {r["track_id"] for r in near}


def test_map_is_the_pca_of_the_served_vectors_and_is_sampled(served: Served) -> None:
    whole = served.client.get("/map").json()
    assert whole["collection"] == served.collection and whole["total"] == 15 and len(whole["points"]) == 15
    assert whole["styles"] == ["high_tones", "low_tones", "noise"]
    stored = load_map(served.settings.data_root, served.collection)
    assert stored is not None and map_file(served.settings.data_root, served.collection).is_file()
    sample = served.client.get("/map", params={"limit": 5}).json()
    assert sample["total"] == 15 and len(sample["points"]) == 5
    x0, y0, x1, y1 = whole["bounds"]
    left = served.client.get("/map", params={"x0": x0, "y0": y0, "x1": (x0 + x1) / 2, "y1": y1}).json()
    assert 0 < left["total"] < 15 and all(p[1] <= (x0 + x1) / 2 for p in left["points"])
    assert served.client.get("/map", params={"x0": 1}).status_code == 422
    # the stored coordinates are the projection of the collection's vectors
    ids = [p[0] for p in whole["points"]]
    rows = {r["track_id"]: r["vector"] for r in served.index.get(served.collection, ids, ("track_id", "vector"))}
    xy, _ = project(np.asarray([rows[t] for t in ids], dtype=np.float64))
    got = np.asarray([[p[1], p[2]] for p in whole["points"]])
    assert np.allclose(np.abs(got), np.abs(xy), atol=1e-4)


def test_library_routes_need_the_api_key_when_the_server_has_one(served: Served) -> None:
    serving = ServingSettings(serving_alias_ttl_s=0, serving_api_key="s3cret")
    app = create_app(served.settings, recommender=Recommender(served.index, served.settings, serving))
    with TestClient(app) as client:
        track = quote(_ids(served)[0], safe="")
        for path in ("/library/search", f"/tracks/{track}/audio", "/map", "/models/review"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 403, path
        assert client.get(f"/tracks/{track}/audio", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/").status_code == 200  # the page itself is open; its calls carry the key
