"""The Milvus service and Milvus Lite's server mode: sharing a folder, and clear errors when Milvus is away."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipelines.errors import Unavailable, UserError
from pipelines.index.errors import CollectionGone, IndexNotBuilt, MilvusUnavailable
from pipelines.index.lite_server import LiteServer, MilvusServerError, endpoint_file, free_port, resolve_uri
from pipelines.index.metadata import clip, collection_name
from pipelines.index.milvus import TrackIndex
from pipelines.settings import Settings
from tests.pipelines.index.helpers import PARAMS_A, PARAMS_B, refresh


def test_collection_names_and_stored_text() -> None:
    assert collection_name("tracks", "raw", "v3e851a40f2") == "tracks__raw__v3e851a40f2"
    assert collection_name("tracks", "7", "v1") == "tracks__7__v1"
    assert collection_name("tracks", "m-1.2", "v1") == "tracks__m_1_2__v1"
    assert clip(None, "title") == "" and clip(float("nan"), "artist") == ""
    long = "é" * 600  # 1200 bytes: cut at a character boundary within the 1024-byte field
    assert clip(long, "title") == "é" * 512


@pytest.mark.integration
def test_server_shares_its_folder_and_other_clients_find_it(lite_server: LiteServer) -> None:
    folder = lite_server.data_dir
    assert endpoint_file(folder).exists()
    assert resolve_uri(str(folder)) == lite_server.uri
    index = TrackIndex(str(folder))  # configured with the folder, talks to the server
    with pytest.raises(IndexNotBuilt, match="run `musicrec index refresh`"):
        index.live()
    with pytest.raises(MilvusServerError, match="another process"):
        LiteServer(folder).start()
    index.close()
    lite_server.stop()
    assert not endpoint_file(folder).exists()
    assert resolve_uri(str(folder)) == str(folder)


def test_milvus_down_says_what_to_do() -> None:
    index = TrackIndex(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MilvusUnavailable, match=r"not reachable.*start the Milvus server"):
        index.live()
    with pytest.raises(MilvusUnavailable) as err:
        index.live()
    assert "\n" not in str(err.value)


@pytest.mark.integration
def test_a_server_that_goes_away_is_unavailable_and_reconnects_when_back(lite_server: LiteServer) -> None:
    index = TrackIndex(lite_server.uri)
    assert index.alias_target() is None
    lite_server.stop()
    with pytest.raises(MilvusUnavailable, match=r"stopped answering|not reachable"):
        index.alias_target()
    again = LiteServer(lite_server.data_dir, port=lite_server.port)
    again.start()
    try:  # gRPC retries a refused address with backoff, so the first calls may still fail
        deadline = time.monotonic() + 15
        while True:
            try:
                assert index.alias_target() is None
                break
            except MilvusUnavailable:
                assert time.monotonic() < deadline, "no reconnection within 15 s"
                time.sleep(0.5)
    finally:
        again.stop()
        index.close()


@pytest.mark.integration
def test_a_dropped_collection_is_collection_gone_by_pymilvus_code_not_text(lib: Settings, index: TrackIndex) -> None:
    """Milvus Lite answers calls on a dropped collection with error code 100 (COLLECTION_NOT_FOUND); the
    connection turns that into CollectionGone, an outage (Unavailable), whatever the message says."""
    a = refresh(lib, PARAMS_A, index).collection
    meta = index.describe(a)
    refresh(lib, PARAMS_B, index)
    if index.exists(a):
        index.drop(a)
    query = np.ones((1, meta.dim), dtype=np.float32)
    for call in (lambda: index.search(meta, query, 3), lambda: index.count(a), lambda: index.describe(a)):
        with pytest.raises(CollectionGone) as err:
            call()
        assert isinstance(err.value, Unavailable) and not isinstance(err.value, UserError)
        assert "\n" not in str(err.value)
    assert index.count(index.live().name) > 0  # the connection is still fine for the live collection
