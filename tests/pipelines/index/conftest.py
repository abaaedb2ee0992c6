"""Fixtures for index tests: a synthetic library, its Milvus Lite folder, a Milvus Lite server."""

from tests.pipelines.index.helpers import index, lib, lite_server

__all__ = ["index", "lib", "lite_server"]
