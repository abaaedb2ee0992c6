"""The audio route serves the file the catalogue imported, and nothing else put in its place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.milvus import TrackIndex
from pipelines.settings import ServingSettings
from serving.api import create_app
from serving.service import Recommender
from tests.pipelines.index.helpers import make_library

pytestmark = pytest.mark.integration


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, Path]]]:
    settings = make_library(tmp_path, per_style=1)
    paths = {r.track_id: Path(r.path) for r in read_manifest(settings.manifest_path).itertuples()}
    index = TrackIndex(settings.paths.milvus_uri)
    recommender = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    with TestClient(create_app(settings, recommender=recommender)) as client:
        yield client, paths
    index.close()


def _get(client: TestClient, track: str):
    return client.get(f"/tracks/{quote(track, safe='')}/audio")


def test_a_file_swapped_for_a_link_to_a_system_file_is_not_served(catalogue) -> None:
    client, paths = catalogue
    track, path = sorted(paths.items())[0]
    assert _get(client, track).status_code == 200
    path.unlink()
    path.symlink_to("/etc/passwd")
    got = _get(client, track)
    assert got.status_code == 409, got.content[:200]
    assert "changed since it was imported" in got.json()["detail"] and b"root:" not in got.content


def test_a_rewritten_file_is_not_served_until_the_catalogue_is_synced(catalogue) -> None:
    client, paths = catalogue
    track, path = sorted(paths.items())[1]
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    got = _get(client, track)
    assert got.status_code == 409 and "musicrec catalogue sync" in got.json()["detail"]


def test_a_moved_away_file_is_404_and_a_fifo_is_refused(catalogue, tmp_path: Path) -> None:
    client, paths = catalogue
    (a, pa), (b, pb) = sorted(paths.items())[:2]
    shutil.move(pa, tmp_path / "elsewhere.wav")
    assert _get(client, a).status_code == 404
    pb.unlink()
    os.mkfifo(pb)
    got = _get(client, b)
    assert got.status_code == 409 and "not a regular file" in got.json()["detail"]
