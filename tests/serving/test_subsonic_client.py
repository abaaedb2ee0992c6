"""A real OpenSubsonic client library (py-opensonic) against the API on a real socket.

py-opensonic sends every call as a form POST to ``<method>.view`` with ``f=json`` (its defaults), so this
exercises the ``formPost`` path and the ``.view`` names; one run also uses its GET mode with bare names.
It logs in with a token and salt, and with an API key; a wrong password must reach it as error 40.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from libopensonic import AsyncConnection, Extensions, errors
from pydantic import SecretStr

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import free_port
from tests.pipelines.index.helpers import PARAMS_A, make_library, refresh
from tests.serving.conftest import Served, live_server

pytestmark = pytest.mark.integration

USER, PASSWORD, KEY = "ann", "s3cret pass", "the-api-key"


@pytest.fixture(scope="module")
def port(served: Served) -> Iterator[int]:
    yield from live_server(
        served, subsonic_user=USER, subsonic_password=SecretStr(PASSWORD), serving_api_key=SecretStr(KEY)
    )


def _connection(port: int, **kw: Any) -> AsyncConnection:
    return AsyncConnection("http://127.0.0.1", port=port, app_name="musicrec-tests", **kw)


def _nearest(served: Served) -> Callable[[str, int], list[str]]:
    return lambda track, k: [r.track_id for r in served.recommender.similar(track, k).results]


async def _session(library: pd.DataFrame, nearest: Callable[[str, int], list[str]], conn: AsyncConnection) -> None:
    """ping, extensions, search3, getSong, stream (whole and ranged), getSimilarSongs2, the sonic pair.

    ``library`` is the served manifest and ``nearest(track, k)`` the API's own answer, to compare with.
    """
    try:
        assert await conn.ping() is True
        names = {e.name: e.versions for e in await conn.get_open_subsonic_extensions()}
        assert names[Extensions.SONIC_SIMILARITY] == [1] and names[Extensions.FORM_POST] == [1]

        found = await conn.search3("high_tones", artist_count=0, album_count=0, song_count=3)
        assert found.song is not None and len(found.song) == 3
        assert all(s.title.startswith("high_tones") for s in found.song)
        synced: list[str] = []
        for offset in range(0, 20, 6):
            page = await conn.search3('""', artist_count=0, album_count=0, song_count=6, song_offset=offset)
            synced += [s.id for s in page.song or []]
        assert sorted(synced) == sorted(library.index)

        track = found.song[0].id
        song = await conn.get_song(track)
        assert song.id == track and song.title == library.loc[track, "title"] and song.suffix == "wav"

        data = Path(library.loc[track, "path"]).read_bytes()
        whole = await conn.stream(track)
        assert whole.status == 200 and await whole.read() == data
        ranged = await conn.stream(track, byte_range="bytes=100-199")
        assert ranged.status == 206 and await ranged.read() == data[100:200]

        similar = await conn.get_similar_songs2(track, count=4)
        assert [s.id for s in similar] == nearest(track, 4)

        matches = await conn.get_sonic_similar_tracks(track, count=3)
        assert [m.entry.id for m in matches] == [s.id for s in similar[:3]]
        assert all(0.0 <= m.similarity <= 1.0 for m in matches)
        end = str(library.index[library["style"] == "low_tones"][0])
        path = await conn.find_sonic_path(track, end, count=6)
        assert path[0].entry.id == track and path[-1].entry.id == end and len(path) <= 6
    finally:
        await conn.cleanup()


def test_token_and_salt_by_form_post(served: Served, port: int) -> None:
    asyncio.run(
        _session(served.recommender.library(), _nearest(served), _connection(port, username=USER, password=PASSWORD))
    )


def test_api_key_by_get_without_view(served: Served, port: int) -> None:
    conn = _connection(port, api_key=KEY, use_get=True, use_views=False)
    asyncio.run(_session(served.recommender.library(), _nearest(served), conn))


def test_wrong_credentials_are_raised_by_the_client(port: int) -> None:
    async def attempt(conn: AsyncConnection) -> None:
        try:
            await conn.ping()
        finally:
            await conn.cleanup()

    with pytest.raises(errors.CredentialError, match="Wrong username or password"):
        asyncio.run(attempt(_connection(port, username=USER, password="not it")))
    asyncio.run(attempt(_connection(port, username=USER, password=PASSWORD, legacy_auth=True)))  # p=enc:<hex>
    with pytest.raises(errors.CredentialError):
        asyncio.run(attempt(_connection(port, username=USER, password="not it", legacy_auth=True)))
    with pytest.raises(errors.SonicError, match="Invalid API key"):
        asyncio.run(attempt(_connection(port, api_key="not the key")))


def test_hand_made_requests_post_form_view_and_range(served: Served, port: int) -> None:
    track = str(served.recommender.library().index[0])
    data = Path(served.recommender.library().loc[track, "path"]).read_bytes()
    salt = "a1b2c3"
    auth = {"u": USER, "t": hashlib.md5((PASSWORD + salt).encode()).hexdigest(), "s": salt, "v": "1.16.1", "c": "t"}
    base = f"http://127.0.0.1:{port}/rest"
    with httpx.Client(timeout=10) as http:
        form = http.post(f"{base}/getSong", params={"f": "json"}, data={**auth, "id": track})
        assert form.status_code == 200 and form.json()["subsonic-response"]["song"]["id"] == track
        view = http.get(f"{base}/getSong.view", params={**auth, "id": track})
        assert view.status_code == 200 and f'id="{track}"' in view.text
        part = http.get(f"{base}/stream", params={**auth, "id": track}, headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == data[:10]
        assert part.headers["content-range"] == f"bytes 0-9/{len(data)}"
        unknown = http.post(f"{base}/getPlaylists.view", data={**auth, "f": "json"})
        assert unknown.status_code == 200 and unknown.json()["subsonic-response"]["error"]["code"] == 0


def test_the_client_against_the_musicrec_serve_command(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same session against ``musicrec serve`` itself, configured only through its environment."""
    settings = make_library(tmp_path_factory.mktemp("serve-cli"))
    refresh(settings, PARAMS_A)
    port = free_port()
    env = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.paths.data_root),
        "MUSICREC_MILVUS_URI": settings.paths.milvus_uri,
        "MUSICREC_SUBSONIC_USER": USER,
        "MUSICREC_SUBSONIC_PASSWORD": PASSWORD,
    }
    log = settings.paths.data_root / "serve.log"
    with log.open("w") as out:
        cmd = [sys.executable, "-c", "from serving.cli_serve import main; main()", "serve", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                httpx.get(f"{base}/livez", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)

        def nearest(track: str, k: int) -> list[str]:
            answer = httpx.get(f"{base}/tracks/{track}/similar", params={"k": k}, timeout=10).json()
            return [r["track_id"] for r in answer["results"]]

        library = read_manifest(settings.manifest_path).set_index("track_id")
        asyncio.run(_session(library, nearest, _connection(port, username=USER, password=PASSWORD)))
        with pytest.raises(errors.CredentialError):
            asyncio.run(_session(library, nearest, _connection(port, username=USER, password="wrong")))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
