"""Tracks with missing tags and with control characters in their CSV fields, through every face that
prints them: the M3U download, OpenSubsonic XML and JSON, the library search, XSPF playlist files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from pipelines.catalogue.importer import import_catalogue
from pipelines.index.milvus import TrackIndex
from pipelines.settings import PathSettings, ServingSettings, Settings
from serving import playlists
from serving.api import create_app
from serving.service import Recommender
from tests import synth
from tests.pipelines.index.helpers import PARAMS_A, refresh

pytestmark = pytest.mark.integration

ODD = "Bell\x01 \x1b[31mred\x0b\x0c\x7f end"  # C0 controls, an ANSI escape, DEL: XML 1.0 forbids most of them


@dataclass
class Odd:
    recommender: Recommender
    client: TestClient
    ids: list[str]
    root: Path


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Odd]:
    root = tmp_path_factory.mktemp("odd-text")
    music = root / "music"
    rows = ["path,style,track_id,artist,album,title"]
    for i in range(4):
        synth.write(music / f"low{i}.wav", synth.tone(110 + 9 * i, 2.0, harmonics=3))
        synth.write(music / f"hi{i}.wav", synth.tone(2200 + 90 * i, 2.0))
        # no artist, no album, no title for the low tones; odd characters for the high ones
        rows.append(f"music/low{i}.wav,low,low-{i},,,")
        rows.append(f'music/hi{i}.wav,high,hi-{i},"{ODD}","{ODD}","{ODD} {i}"')
    (root / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    settings = Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "milvus.db")))
    import_catalogue(root / "list.csv", settings)
    index = TrackIndex(settings.paths.milvus_uri)
    refresh(settings, PARAMS_A, index)
    recommender = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    with TestClient(create_app(settings, recommender=recommender)) as client:
        yield Odd(recommender, client, [f"low-{i}" for i in range(4)] + [f"hi-{i}" for i in range(4)], root)
    index.close()


def test_m3u_download_with_untagged_and_odd_tracks(odd: Odd) -> None:
    got = odd.client.get("/playlist.m3u", params={"seed": ["low-0", "hi-0"], "length": 6})
    assert got.status_code == 200, got.text
    lines = got.text.splitlines()
    infos = [line for line in lines if line.startswith("#EXTINF:")]
    assert len(infos) == 8 and lines[0] == "#EXTM3U"
    assert "#EXTINF:2,low0" in lines, "an untagged track is named by its file, not 'nan'"
    assert not any("nan" in line.lower() or "\x1b" in line or "\x01" in line for line in infos)


@pytest.mark.parametrize("method", ["getSonicSimilarTracks", "findSonicPath"])
def test_subsonic_xml_stays_well_formed(odd: Odd, method: str) -> None:
    params = (
        {"id": "hi-0", "count": 7}
        if method == "getSonicSimilarTracks"
        else {"startSongId": "hi-0", "endSongId": "low-0", "count": 7}
    )
    got = odd.client.get(f"/rest/{method}", params=params)
    assert got.status_code == 200
    root = ET.fromstring(got.content)  # raises on a character XML 1.0 forbids
    assert root.get("status") == "ok", got.text
    titles = [e.get("title") for e in root.iter() if e.get("title")]
    assert any(t.startswith("Bell") and t.endswith("end 1") for t in titles), titles


def test_search_and_json_never_carry_nan_or_controls(odd: Odd) -> None:
    found = odd.client.get("/library/search", params={"q": "", "limit": 20}).json()
    assert found["total"] == 8
    for track in found["tracks"]:
        for key in ("artist", "album", "title"):
            value = track.get(key)
            assert value is None or (isinstance(value, str) and value.isprintable()), (key, value)


def test_xspf_file_parses(odd: Odd) -> None:
    items = playlists.entries(odd.recommender.library(), odd.ids)
    path = playlists.write_playlist(items, odd.root / "pl", "odd", "xspf", "absolute")
    root = ET.parse(path).getroot()
    names = [e.text for e in root.iter() if e.tag.endswith("creator")]
    assert len(names) == 4 and all(n and n.isprintable() for n in names)
