"""Ids, styles, sources and artists with quotes, backslashes, newlines, unicode and long values, end to end.

A CSV library whose labels would break a filter expression built by string splicing goes through the CLI
(import, refresh, recommend, playlist) and the HTTP API (similar, style filter, caps, playlist); every id
must come back as itself and no request may fail with a server error.
"""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from pipelines.catalogue.manifest import REJECTS_SCHEMA, read_manifest, read_table
from pipelines.features.build import FeatureBuild
from pipelines.index.metadata import literal
from pipelines.index.milvus import TrackIndex
from pipelines.settings import PathSettings, ServingSettings, Settings
from serving.api import create_app
from serving.service import Recommender
from tests import synth
from tests.pipelines.index.helpers import PARAMS_A
from tests.serving.test_cli_serve import _musicrec, _one_line_error

IDS = [
    "Don't Stop",
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "new\nline",
    "tab\tand\rcr",
    "ünïcødé ♫ 日本語 🎵",
    'x" or track_id != "',
    "a/b/c",
    "?q=1&x=y#frag 100%",  # (a %XX escape would be decoded twice by TestClient, not by uvicorn)
    "{ids}",
    "L" * 500,
]
STYLES = ["rock'n'roll", 'the "best"', "back\\slash ♫"]
ARTISTS = ["O'Brien", 'Q"uote', "tab\tartist"]
ALBUMS = ["new\nline album", "Ålbüm \\ 1", "it's"]


def _library(root: Path) -> Path:
    music = root / "music"
    music.mkdir(parents=True)
    with (music / "library.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "style", "track_id", "artist", "album", "title"])
        for i, track_id in enumerate(IDS):
            style = STYLES[i % 3]
            audio = {
                0: synth.tone(110 + 20 * i, 1.5, harmonics=3),
                1: synth.tone(1800 + 90 * i, 1.5),
                2: synth.noise(1.5, seed=i, colour=0.5),
            }[i % 3]
            synth.write(music / f"t{i}.wav", audio)
            out.writerow([f"t{i}.wav", style, track_id, ARTISTS[i % 3], ALBUMS[(i // 3) % 3], track_id])
        synth.write(music / "long.wav", synth.tone(500, 1.5))
        out.writerow(["long.wav", STYLES[0], "Z" * 600, "", "", ""])  # longer than an index key can be
    return music / "library.csv"


def test_literal_escapes_what_would_end_or_bend_a_string() -> None:
    assert literal('a"b') == '"a\\"b"' and literal("a\\b") == '"a\\\\b"'
    assert literal("x\ny\tz\r") == '"x\\ny\\tz\\r"' and literal("Don't") == '"Don\'t"'


@pytest.mark.integration
def test_hostile_labels_work_through_the_cli_and_http(tmp_path: Path) -> None:
    settings = Settings(
        paths=PathSettings(data_root=tmp_path / "data", milvus_uri=str(tmp_path / "milvus.db")), features=PARAMS_A
    )
    csv_path = _library(tmp_path)
    env = {"MUSICREC_FEATURES__N_FRAMES": "24", "MUSICREC_FEATURES__N_MFCC": "13"}

    out = _musicrec(["catalogue", "import", str(csv_path)], settings, **env)
    assert out.returncode == 0, out.stderr
    manifest = read_manifest(settings.manifest_path)
    assert sorted(manifest["track_id"]) == sorted(IDS)  # every id stored as given, nothing rewritten
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    assert rejects["reason"].tolist() == ["invalid_track_id"]  # the 600-byte id, with a reason
    FeatureBuild(settings=settings, shards=1).run()
    out = _musicrec(["index", "refresh", "--model-version", "raw"], settings, **env)
    assert out.returncode == 0, out.stderr
    assert f": {len(IDS)} tracks, {len(IDS)} embedded" in out.stdout

    out = _musicrec(["recommend", IDS[0], "-k", "3", "--style", STYLES[0]], settings, **env)
    assert out.returncode == 0, out.stderr
    assert [line.split()[2] for line in out.stdout.splitlines()[1:]] == [STYLES[0]] * 3
    out = _musicrec(["playlist", 'say "hi"', "back\\slash", "-n", "4", "--max-per-source", "2"], settings, **env)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 5
    _one_line_error(_musicrec(["recommend", "Don't Stop!"], settings, **env), 'unknown track id "Don\'t Stop!"')

    index = TrackIndex(settings.paths.milvus_uri)
    recommender = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    try:
        with TestClient(create_app(settings, recommender=recommender)) as client:
            _check_http(client)
    finally:
        index.close()


def _check_http(client: TestClient) -> None:
    by_style = {t: STYLES[i % 3] for i, t in enumerate(IDS)}
    for track_id in IDS:
        res = client.get(f"/tracks/{quote(track_id, safe='')}/similar", params={"k": len(IDS)})
        assert res.status_code == 200, (track_id, res.text)
        body = res.json()
        assert body["query"] == track_id
        got = {r["track_id"] for r in body["results"]}
        assert got == set(IDS) - {track_id}, track_id  # every other id, each exactly as stored

        style = by_style[track_id]
        same = client.get(f"/tracks/{quote(track_id, safe='')}/similar", params={"k": 20, "style": style})
        assert same.status_code == 200, same.text
        assert {r["track_id"] for r in same.json()["results"]} == {t for t, s in by_style.items() if s == style} - {
            track_id
        }

    capped = client.get(f"/tracks/{quote(IDS[1], safe='')}/similar", params={"k": 20, "max_per_source": 1})
    sources = [r["source"] for r in capped.json()["results"]]
    # one track per source, sources with quotes and backslashes included; a CSV's text fields are cleaned to
    # one printable line at import, as tags are
    assert sorted(sources) == sorted(" ".join(a.split()) for a in ALBUMS)
    playlist = client.post("/playlist", json={"seeds": IDS[:4], "length": 6, "style": STYLES[1]})
    assert playlist.status_code == 200, playlist.text
    tracks = playlist.json()["tracks"]
    assert {t["style"] for t in tracks} == {STYLES[1]} and not {t["track_id"] for t in tracks} & set(IDS[:4])
    for bad in ("a\\b", "Don't", 'a"b', "x\ny", "'; drop", "\\"):
        assert client.get(f"/tracks/{quote(bad, safe='')}/similar").status_code == 404
        res = client.post("/playlist", json={"seeds": [IDS[0], bad]})
        assert res.status_code == 404 and repr(bad) in res.json()["detail"]
    assert client.get("/tracks/x/similar", params={"style": 'no"pe'}).status_code in (404, 422)
