"""A served synthetic catalogue: library, manifest, one refreshed collection, the API over it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from pipelines.catalogue.importer import import_catalogue
from pipelines.index.lite_server import free_port
from pipelines.index.milvus import TrackIndex
from pipelines.settings import PathSettings, ServingSettings, Settings
from serving.api import create_app
from serving.cli_serve import server_config
from serving.service import Recommender
from tests import tagged
from tests.pipelines.index.helpers import PARAMS_A, lib, lite_server, make_library, refresh


@dataclass
class Served:
    settings: Settings
    index: TrackIndex
    recommender: Recommender
    client: TestClient
    collection: str

    @property
    def music(self) -> Path:
        return self.settings.paths.data_root.parent / "music"


def serve(settings: Settings, index: TrackIndex, serving: ServingSettings | None = None) -> TestClient:
    recommender = Recommender(index, settings, serving or ServingSettings(serving_alias_ttl_s=0))
    return TestClient(create_app(settings, recommender=recommender))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = make_library(tmp_path_factory.mktemp("served"))
    index = TrackIndex(settings.paths.milvus_uri)
    report = refresh(settings, PARAMS_A, index)
    recommender = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    with TestClient(create_app(settings, recommender=recommender)) as client:
        yield Served(settings, index, recommender, client, report.collection)
    index.close()


@dataclass
class TaggedServed:
    """A tagged Artist/Album library (some tracks unlabelled), refreshed and served with its music folder."""

    settings: Settings
    serving: ServingSettings
    recommender: Recommender
    client: TestClient
    music: Path
    tracks: list[tagged.TaggedTrack]

    def track_id(self, rel: str) -> str:
        df = self.recommender.library()
        return str(df.index[df["path"] == str(self.music / rel)][0])


@pytest.fixture(scope="module")
def tagged_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaggedServed]:
    root = tmp_path_factory.mktemp("tagged-served")
    music = (root / "Music").resolve()
    tracks = tagged.tagged_library(music, seconds=3.0)
    settings = Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "milvus.db")))
    import_catalogue(music, settings, genre_map=tagged.genre_map(root / "genres.csv"))
    index = TrackIndex(settings.paths.milvus_uri)
    refresh(settings, PARAMS_A, index)
    serving = ServingSettings(serving_alias_ttl_s=0, music_folder=music, playlist_dir=root / "playlists")
    recommender = Recommender(index, settings, serving)
    with TestClient(create_app(settings, recommender=recommender)) as client:
        yield TaggedServed(settings, serving, recommender, client, music, tracks)
    index.close()


def live_server(served: Served, **kw: object) -> Iterator[int]:
    """The API over ``served`` on a real uvicorn on a free port, serving settings from ``kw``; yields the port."""
    options: dict[str, object] = {"serving_alias_ttl_s": 0, "serving_upload_timeout_s": 1.0, **kw}
    serving = ServingSettings(**options)  # type: ignore[arg-type]
    app = create_app(served.settings, recommender=Recommender(served.index, served.settings, serving))
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, serving))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


__all__ = ["Served", "TaggedServed", "lib", "lite_server", "live_server", "serve", "served", "tagged_served"]
