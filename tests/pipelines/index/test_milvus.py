"""The Milvus service and Milvus Lite's server mode: sharing a folder, and clear errors when Milvus is away."""

from __future__ import annotations

import time

import pytest

from pipelines.index.errors import CatalogueNotBuilt, MilvusUnavailable
from pipelines.index.lite_server import LiteServer, MilvusServerError, endpoint_file, free_port, resolve_uri
from pipelines.index.metadata import clip, collection_name
from pipelines.index.milvus import CatalogueIndex


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
    index = CatalogueIndex(str(folder))  # configured with the folder, talks to the server
    with pytest.raises(CatalogueNotBuilt, match="run `musicrec catalogue refresh`"):
        index.live()
    with pytest.raises(MilvusServerError, match="another process"):
        LiteServer(folder).start()
    index.close()
    lite_server.stop()
    assert not endpoint_file(folder).exists()
    assert resolve_uri(str(folder)) == str(folder)


def test_milvus_down_says_what_to_do() -> None:
    index = CatalogueIndex(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MilvusUnavailable, match=r"not reachable.*start the Milvus server"):
        index.live()
    with pytest.raises(MilvusUnavailable) as err:
        index.live()
    assert "\n" not in str(err.value)


@pytest.mark.integration
def test_a_server_that_goes_away_is_unavailable_and_reconnects_when_back(lite_server: LiteServer) -> None:
    index = CatalogueIndex(lite_server.uri)
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
