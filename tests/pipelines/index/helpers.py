"""Fixtures over the small synthetic catalogue of :mod:`pipelines.synthetic`, for index and serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.index.lite_server import LiteServer
from pipelines.index.milvus import TrackIndex
from pipelines.settings import IndexSettings, Settings
from pipelines.synthetic import (
    PARAMS_A,
    PARAMS_B,
    PARAMS_C,
    Features,
    add_track,
    build_features,
    make_library,
    refresh,
    remove_track,
)

# The synthetic catalogue itself lives in the library (pipelines.synthetic) so the benchmarks can use it;
# the tests import it from here, beside the fixtures.
__all__ = [
    "PARAMS_A",
    "PARAMS_B",
    "PARAMS_C",
    "Features",
    "add_track",
    "build_features",
    "index",
    "lib",
    "lite_server",
    "make_library",
    "refresh",
    "remove_track",
]


@pytest.fixture
def lib(tmp_path: Path) -> Settings:
    """A fresh synthetic library with its manifest; Milvus Lite folder ``<tmp>/milvus.db`` (not built)."""
    return make_library(tmp_path)


@pytest.fixture
def index(lib: Settings) -> Iterator[TrackIndex]:
    idx = TrackIndex(lib.paths.milvus_uri, IndexSettings(collections_kept=1, embed_batch_size=4, verify_sample=8))
    yield idx
    idx.close()


@pytest.fixture
def lite_server(tmp_path: Path) -> Iterator[LiteServer]:
    """``milvus-lite server`` on a fresh folder and a free loopback port, stopped afterwards."""
    server = LiteServer(tmp_path / "served.db")
    server.start()
    yield server
    server.stop()
