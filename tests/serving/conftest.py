"""A served synthetic catalogue: library, manifest, one refreshed collection, the API over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.catalogue.importer import import_catalogue
from pipelines.index.milvus import CatalogueIndex
from pipelines.settings import ServingSettings, Settings
from serving.api import create_app
from serving.service import Recommender
from tests import tagged
from tests.pipelines.index.helpers import PARAMS_A, lib, lite_server, make_library, refresh


@dataclass
class Served:
    settings: Settings
    index: CatalogueIndex
    recommender: Recommender
    client: TestClient
    collection: str

    @property
    def music(self) -> Path:
        return self.settings.data_root.parent / "music"


def serve(settings: Settings, index: CatalogueIndex, serving: ServingSettings | None = None) -> TestClient:
    recommender = Recommender(index, settings, serving or ServingSettings(serving_alias_ttl_s=0))
    return TestClient(create_app(settings, recommender=recommender))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = make_library(tmp_path_factory.mktemp("served"))
    index = CatalogueIndex(settings.milvus_uri)
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
    settings = Settings(data_root=root / "data", milvus_uri=str(root / "milvus.db"))
    import_catalogue(music, settings, genre_map=tagged.genre_map(root / "genres.csv"))
    index = CatalogueIndex(settings.milvus_uri)
    refresh(settings, PARAMS_A, index)
    serving = ServingSettings(serving_alias_ttl_s=0, music_folder=music, playlist_dir=root / "playlists")
    recommender = Recommender(index, settings, serving)
    with TestClient(create_app(settings, recommender=recommender)) as client:
        yield TaggedServed(settings, serving, recommender, client, music, tracks)
    index.close()


__all__ = ["Served", "TaggedServed", "lib", "lite_server", "serve", "served", "tagged_served"]
