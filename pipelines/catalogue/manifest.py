"""The manifest (Parquet): one row per track, shared by the demo fetcher and every import.

Rows are never deleted: a file that disappears is marked ``removed`` so downstream steps (features,
indexes) can notice, and a file that comes back is active again under the same ``track_id``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Longest track id and style, in UTF-8 bytes: what the index can store as a key and filter on exactly.
from pipelines.catalogue.limits import STYLE_MAX_BYTES as STYLE_MAX_BYTES
from pipelines.catalogue.limits import TRACK_ID_MAX_BYTES

ACTIVE = "active"
UNLABELLED = ""  # the style of a track with no style label: indexed and recommended, never trained on
REMOVED = "removed"

MANIFEST_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("path", pa.string()),
        ("style", pa.string()),
        ("source", pa.string()),
        ("artist", pa.string()),
        ("album", pa.string()),
        ("title", pa.string()),
        ("genre", pa.string()),
        ("track_number", pa.int32()),
        ("mbid", pa.string()),  # MusicBrainz recording id, from the tags
        ("licence", pa.string()),
        ("licence_file", pa.string()),
        ("label_confidence", pa.float64()),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int16()),
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("origin", pa.string()),
        ("status", pa.string()),
        ("added_at", pa.timestamp("us", tz="UTC")),
        ("removed_at", pa.timestamp("us", tz="UTC")),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        ("origin", pa.string()),
        ("path", pa.string()),
        ("style", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("duplicate_of", pa.string()),
        ("seen_at", pa.timestamp("us", tz="UTC")),
    ]
)


def write_table(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    """Write ``df`` as Parquet atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema, preserve_index=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the tables are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """Read a table written by :func:`write_table`; a missing file is an empty table of the right columns."""
    if not path.exists():
        return schema.empty_table().to_pandas()
    return pq.read_table(path, schema=schema).to_pandas()


def read_manifest(path: Path, active_only: bool = True) -> pd.DataFrame:
    """The catalogue as a DataFrame; by default only tracks whose file is still there."""
    df = read_table(path, MANIFEST_SCHEMA)
    return df[df["status"] == ACTIVE].reset_index(drop=True) if active_only else df


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """Lower-case, URL-safe form of a name: ``Metal madness/song`` -> ``metal-madness-song``."""
    return _SLUG.sub("-", text.lower()).strip("-")


def make_track_id(label: str, relative: str) -> str:
    """A readable id that is the same on every run for the same file: ``<label>.<relative path slug>``."""
    stem = relative.rsplit(".", 1)[0] if "." in Path(relative).name else relative
    return fit_track_id(f"{slug(label)}.{slug(stem)}")


def fit_track_id(track_id: str) -> str:
    """A generated id cut to :data:`TRACK_ID_MAX_BYTES`, kept unique by a hash of the whole id."""
    raw = track_id.encode()
    if len(raw) <= TRACK_ID_MAX_BYTES:
        return track_id
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return raw[: TRACK_ID_MAX_BYTES - 17].decode(errors="ignore") + "-" + digest
