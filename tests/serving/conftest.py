"""A served synthetic catalogue: library, manifest, one refreshed collection, the API over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.index.milvus import CatalogueIndex
from pipelines.settings import Settings
from serving.api import create_app
from serving.service import Recommender, ServingSettings
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


__all__ = ["Served", "lib", "lite_server", "serve", "served"]
