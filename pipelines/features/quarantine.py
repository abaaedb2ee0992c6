"""The quarantine table: files the front end could not turn into a vector, and why.

One row per (track, feature version): the latest verdict. A row remembers the file's sha256, size and
mtime, so a quarantined file is not decoded again while it stays the same (a decoder that hung once will
hang again), but is retried as soon as it changes: a fixed file gets a new sha256 on re-import. Reasons
that describe the surroundings rather than the bytes (an unreadable or moved file) are retried every run.
A track that is later embedded loses its row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.audio import RejectReason
from pipelines.catalogue.manifest import read_table, write_table
from pipelines.settings import Settings

QUARANTINE_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("version", pa.string()),
        ("reason", pa.string()),
        ("error_type", pa.string()),
        ("detail", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)

# Verdicts about the environment, not the content: tried again on every build.
RETRIED_EVERY_RUN = frozenset({str(RejectReason.UNREADABLE)})


def quarantine_row(
    item: dict, version: str, reason: str, error_type: str, detail: str, at: datetime | None = None
) -> dict:
    """A quarantine row for a planned item (track_id, path, sha256, size, mtime_ns)."""
    return {
        "track_id": item["track_id"],
        "path": item["path"],
        "sha256": item["sha256"],
        "size": item.get("size"),
        "mtime_ns": item.get("mtime_ns"),
        "version": version,
        "reason": str(reason),
        "error_type": error_type,
        "detail": detail,
        "at": at or datetime.now(UTC),
    }


def read_quarantine(settings: Settings, version: str | None = None) -> pd.DataFrame:
    df = read_table(settings.quarantine_path, QUARANTINE_SCHEMA)
    return df[df["version"] == version].reset_index(drop=True) if version is not None else df


def settled(settings: Settings, version: str) -> dict[str, tuple[str, int | None, int | None]]:
    """track_id -> (sha256, size, mtime_ns) of files whose quarantine stands until they change."""
    df = read_quarantine(settings, version)
    df = df[~df["reason"].isin(RETRIED_EVERY_RUN)]
    return {r.track_id: (r.sha256, _int(r.size), _int(r.mtime_ns)) for r in df.itertuples(index=False)}


def _int(value: Any) -> int | None:
    """A nullable integer column's cell (pandas gives NaN, NA or a numpy integer) as int or None."""
    return None if pd.isna(value) else int(value)


def update_quarantine(settings: Settings, version: str, decided: set[str], new_rows: list[dict]) -> None:
    """Replace the verdicts of ``decided`` track ids under ``version`` with ``new_rows`` (atomic write).

    ``decided`` holds every track this build tried, embedded or not, so an embedded track's old row goes.
    """
    old = read_table(settings.quarantine_path, QUARANTINE_SCHEMA)
    if not new_rows and not (old["track_id"].isin(decided) & (old["version"] == version)).any():
        return
    kept = old[~(old["track_id"].isin(decided) & (old["version"] == version))]
    parts = [df for df in (kept, pd.DataFrame(new_rows)) if not df.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=QUARANTINE_SCHEMA.names)
    write_table(merged.sort_values(["version", "track_id"], kind="stable"), QUARANTINE_SCHEMA, settings.quarantine_path)
