"""Byte limits of catalogue fields, shared by the manifest and the index without importing either."""

TRACK_ID_MAX_BYTES = 512
STYLE_MAX_BYTES = 256
