"""The feature store: Parquet files of front-end vectors, one folder per feature-parameter version.

Vectors are keyed by content (sha256), so no track is ever embedded twice, and part files appear atomically,
so readers and crashes never see half a build.
Design: docs/features.md#the-feature-store-pipelinesfeaturesstorepy
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.catalogue.manifest import read_manifest
from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def feature_schema(dim: int) -> pa.Schema:
    """Columns of a part file; ``vector`` is a fixed-size list so its length is part of the type."""
    return pa.schema(
        [
            ("track_id", pa.string()),
            ("style", pa.string()),
            ("source", pa.string()),
            ("sha256", pa.string()),
            ("frames_real", pa.int32()),
            ("vector", pa.list_(pa.float32(), dim)),
            ("params", pa.string()),
            ("computed_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def version_dir(settings: Settings, params: FeatureParams) -> Path:
    return settings.features_dir / f"version={params.version}"


def build_table(rows: list[dict], vectors: np.ndarray, params: FeatureParams) -> pa.Table:
    """A part-file table from row metadata (track_id, style, source, sha256, frames_real) and a matrix."""
    schema = feature_schema(params.dim)
    n = len(rows)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(n, params.dim)
    now = datetime.now(UTC)
    columns = {
        "track_id": pa.array([r["track_id"] for r in rows], pa.string()),
        "style": pa.array([r["style"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "sha256": pa.array([r["sha256"] for r in rows], pa.string()),
        "frames_real": pa.array([r["frames_real"] for r in rows], pa.int32()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), params.dim),
        "params": pa.array([params.model_dump_json()] * n, pa.string()),
        "computed_at": pa.array([r.get("computed_at", now) for r in rows], pa.timestamp("us", tz="UTC")),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def write_atomic(table: pa.Table | list[pa.Table], path: Path) -> None:
    """Write a Parquet file so that it appears whole or not at all (temp file + rename in the same folder).

    A list of tables (one schema) is written as one row group each, so a reader filtering on a column that
    is constant within each of them reads only its own. The temp name starts with a dot: pyarrow's dataset
    discovery ignores it while it is being written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if isinstance(table, pa.Table):
            pq.write_table(table, tmp, write_page_checksum=True)
        else:
            with pq.ParquetWriter(tmp, table[0].schema, write_page_checksum=True) as writer:
                for part in table:
                    writer.write_table(part, row_group_size=max(1, part.num_rows))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600, but serving or Airflow may read the store as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Rows per Parquet row group in the files the build writes: 512 vectors of the default 8,600 values are about
# 18 MB, so a reader going through a file row group by row group never holds more than that of it.
ROW_GROUP_ROWS = 512


class PartWriter:
    """Write a Parquet file row group by row group, so it never has to be whole in memory; atomic like
    :func:`write_atomic` (a temp file renamed on a clean exit, removed on an error)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = pq.ParquetWriter(tmp, schema, write_page_checksum=True)

    def write(self, table: pa.Table) -> None:
        """Queue rows; a row group is written each time ``ROW_GROUP_ROWS`` rows are queued."""
        if table.num_rows == 0:
            return
        self._pending.append(table.cast(self.schema) if table.schema != self.schema else table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        """Finish the file and move it into place."""
        try:
            self._flush()
            self._writer.close()
            os.chmod(self._tmp, 0o644)  # mkstemp makes 0600; serving or Airflow may read it as another user
            # The digest is recorded before the part appears: a part in place always has its checksum.
            _write_checksum(self.path, _digest(self._tmp))
            os.replace(self._tmp, self.path)
            _remember_verified(self.path)
        finally:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop the file: nothing appears at ``path``."""
        try:
            self._writer.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def iter_tables(path: Path, schema: pa.Schema, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of one Parquet file a row group at a time (a whole file written by ``write_table`` is one)."""
    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i, columns=columns)
        yield table.cast(schema if columns is None else pa.schema([schema.field(c) for c in columns]))


OnCorrupt = Literal["refuse", "rebuild"]


class CorruptFeatures(UserError):
    """A part of the feature store does not match its checksum or does not read: its vectors are not used."""


def checksum_path(part: Path) -> Path:
    """The sidecar holding a part's sha256 (``_part-X.parquet.sha256``), written before the part appears.

    Its leading underscore keeps it out of what pyarrow (and pandas) read when given the version folder.
    """
    return part.with_name(f"_{part.name}.sha256")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_checksum(part: Path, digest: str) -> None:
    side = checksum_path(part)
    tmp = side.with_name(f".{side.name}.tmp")
    tmp.write_text(f"{digest}  {part.name}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, side)


# Parts this process has verified, by (size, mtime, inode): a part is hashed once per process, not per read.
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def _file_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _remember_verified(part: Path) -> None:
    _VERIFIED[str(part)] = _file_key(part)


def verify_part(part: Path) -> str | None:
    """Why ``part`` cannot be trusted (checksum mismatch, unreadable), or None when it is intact.

    A part written before checksums existed has no sidecar: it is read in full (Parquet page checksums
    are verified where present) and, when that succeeds, its digest is recorded from then on.
    """
    key = _file_key(part)
    if _VERIFIED.get(str(part)) == key:
        return None
    side = checksum_path(part)
    if side.exists():
        expected = side.read_text().split(maxsplit=1)[0] if side.stat().st_size else ""
        actual = _digest(part)
        if actual != expected:
            return (
                f"its sha256 {actual[:12]}... is not the {expected[:12] or '(empty)'}... recorded when it was written"
            )
    else:
        try:
            pq.ParquetFile(part, page_checksum_verification=True).read()
        except (OSError, pa.ArrowException) as exc:
            return f"it does not read as Parquet ({str(exc).splitlines()[0][:160]})"
        _write_checksum(part, _digest(part))
        log.info("recorded the checksum of %s (written before parts had checksums)", part)
    _VERIFIED[str(part)] = key
    return None


def _move_aside(settings: Settings, part: Path) -> Path:
    """Move a damaged part (and its checksum) under ``features/corrupt/``, never deleting it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = settings.features_dir / "corrupt" / f"{part.parent.name}-{stamp}" / part.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(part), target)
    side = checksum_path(part)
    if side.exists():
        shutil.move(str(side), checksum_path(target))
    return target


def part_files(settings: Settings, params: FeatureParams, on_corrupt: OnCorrupt = "refuse") -> list[Path]:
    """The verified part files of one version.

    A damaged part is never read as if it were fine. ``refuse`` (every reader but the build) raises
    :class:`CorruptFeatures` naming it and leaves it in place; ``rebuild`` (the feature build) moves it
    under ``features/corrupt/`` with one warning, and its tracks, no longer stored, are embedded again.
    """
    folder = version_dir(settings, params)
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    good: list[Path] = []
    for part in parts:
        why = verify_part(part)
        if why is None:
            good.append(part)
        elif on_corrupt == "refuse":
            raise CorruptFeatures(
                f"feature store part {part} is corrupt: {why}; its vectors are not used. "
                "Run `musicrec features build` to move it aside and recompute its tracks"
            )
        else:
            aside = _move_aside(settings, part)
            log.warning(
                "feature store part %s is corrupt (%s): moved aside to %s; its tracks are recomputed",
                part.name,
                why,
                aside,
            )
    return good


def read_store(
    settings: Settings, params: FeatureParams, columns: list[str] | None = None, on_corrupt: OnCorrupt = "refuse"
) -> pa.Table:
    """Every stored row of one version (an empty table of the right schema when there is none)."""
    schema = feature_schema(params.dim)
    parts = part_files(settings, params, on_corrupt)
    if not parts:
        table = schema.empty_table()
        return table.select(columns) if columns else table
    return pa.concat_tables(pq.read_table(p, columns=columns, schema=schema) for p in parts)


def stored_shas(settings: Settings, params: FeatureParams, on_corrupt: OnCorrupt = "refuse") -> set[str]:
    """Content hashes already embedded under this version: the incremental build skips them."""
    return set(read_store(settings, params, ["sha256"], on_corrupt).column("sha256").to_pylist())


def add_part_from(tables: Iterable[pa.Table], settings: Settings, params: FeatureParams, run_id: str) -> Path | None:
    """Publish rows that arrive as a stream of tables as one part file (none when there are no rows)."""
    folder = version_dir(settings, params)
    writer = PartWriter(folder / f"part-{run_id}.parquet", feature_schema(params.dim))
    try:
        for table in tables:
            writer.write(table)
    except BaseException:
        writer.abort()
        raise
    if writer.rows == 0:
        writer.abort()
        return None
    meta = folder / "_params.json"
    if not meta.exists():
        meta.write_text(json.dumps({"version": params.version, **params.model_dump()}, indent=2) + "\n")
    writer.close()
    return writer.path


def stored_versions(settings: Settings) -> list[str]:
    """Versions present in the store, oldest first."""
    root = settings.features_dir
    if not root.is_dir():
        return []
    dirs = [d for d in root.glob("version=*") if d.is_dir() and any(d.glob("part-*.parquet"))]
    return [d.name.split("=", 1)[1] for d in sorted(dirs, key=lambda d: d.stat().st_mtime)]


@dataclass(frozen=True)
class FeatureMatrix:
    """Front-end vectors of many tracks, ready for training or indexing."""

    track_ids: list[str]
    matrix: np.ndarray  # float32 (n, n_frames * n_mfcc), frame-major, rows in track_id order
    frames_real: np.ndarray  # int32 (n,)
    sha256: list[str]
    version: str
    params: FeatureParams

    def iter_batches(self, track_ids: Iterable[str], size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(track ids, vectors)`` of ``track_ids`` in batches of at most ``size`` (as :class:`StoredFeatures`)."""
        row = {t: i for i, t in enumerate(self.track_ids)}
        ids = list(track_ids)
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            yield batch, self.matrix[[row[t] for t in batch]]


def _latest_manifest(settings: Settings) -> pd.DataFrame:
    manifest = read_manifest(settings.manifest_path, active_only=True)
    if "added_at" in manifest.columns:
        manifest = manifest.sort_values("added_at", kind="stable")
    return manifest.drop_duplicates("track_id", keep="last")


def read_features(settings: Settings, params: FeatureParams | None = None, active_only: bool = True) -> FeatureMatrix:
    """The stored vectors of one feature version as a matrix with ids.

    With ``active_only`` the rows are the tracks active in the manifest now (its current sha256 decides
    which vector is a track's), so removed tracks and stale content never leak into training or an index;
    tracks that were quarantined or not built yet are left out. Otherwise every stored row is returned.
    """
    params = params or settings.features
    table = read_store(settings, params, ["track_id", "sha256", "frames_real", "vector", "computed_at"])
    if table.num_rows:
        # One row per content hash; should a concurrent build ever have added a second, the newest wins.
        table = table.sort_by([("sha256", "ascending"), ("computed_at", "descending")])
        shas = table.column("sha256").to_pylist()
        keep = [i for i, sha in enumerate(shas) if i == 0 or shas[i - 1] != sha]
        table = table.take(keep)
    if active_only and table.num_rows:
        manifest = _latest_manifest(settings)
        row_of = {sha: i for i, sha in enumerate(table.column("sha256").to_pylist())}
        current = zip(manifest["track_id"], manifest["sha256"], strict=True)
        pairs = sorted((tid, row_of[sha]) for tid, sha in current if sha in row_of)
        missing = len(manifest) - len(pairs)
        if missing:
            log.info("%d active tracks have no vector under %s (quarantined or not built yet)", missing, params.version)
        track_ids = [tid for tid, _ in pairs]
        table = table.take(pa.array([i for _, i in pairs], pa.int64()))
    else:
        order = sorted(range(table.num_rows), key=table.column("track_id").to_pylist().__getitem__)
        table = table.take(pa.array(order, pa.int64()))
        track_ids = table.column("track_id").to_pylist()
    if table.num_rows == 0:
        raise UserError(f"no features for version {params.version}; run `musicrec features build`")
    vectors = table.column("vector").combine_chunks()
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return FeatureMatrix(
        track_ids=track_ids,
        matrix=matrix.reshape(table.num_rows, params.dim),
        frames_real=table.column("frames_real").to_numpy().astype(np.int32),
        sha256=table.column("sha256").to_pylist(),
        version=params.version,
        params=params,
    )


@dataclass(frozen=True)
class StoredFeatures:
    """Which stored vector each active track has, without the vectors: they are read batch by batch.

    What :func:`read_features` selects (the manifest's current sha256 decides a track's vector; of two rows
    with one content, the newest), for consumers that only need a slice of the vectors at a time: the
    index refresh embeds and inserts a batch at a time, so its memory does not grow with the library.
    """

    track_ids: list[str]
    sha256: list[str]
    version: str
    params: FeatureParams
    parts: list[Path]
    chosen: dict[str, tuple[int, int]]  # sha256 -> (part number, row in that part) of the row that wins

    def iter_batches(self, track_ids: Iterable[str], size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(track ids, vectors)`` of ``track_ids`` in batches of at most ``size``, in the store's order."""
        sha_of = dict(zip(self.track_ids, self.sha256, strict=True))
        wanted: dict[tuple[int, int], list[str]] = {}
        for tid in track_ids:
            wanted.setdefault(self.chosen[sha_of[tid]], []).append(tid)
        schema = feature_schema(self.params.dim)
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for part_no, part in enumerate(self.parts):
            offset = 0
            for table in iter_tables(part, schema, ["vector"]):
                keep = [i for i in range(table.num_rows) if (part_no, offset + i) in wanted]
                if keep:
                    sub = table.take(pa.array(keep, pa.int64())).column("vector").combine_chunks()
                    block = sub.flatten().to_numpy(zero_copy_only=False).reshape(len(keep), self.params.dim)
                    for j, i in enumerate(keep):
                        for tid in wanted[(part_no, offset + i)]:
                            ids.append(tid)
                            rows.append(block[j])
                            if len(ids) == size:
                                yield ids, np.asarray(rows, dtype=np.float32)
                                ids, rows = [], []
                offset += table.num_rows
        if ids:
            yield ids, np.asarray(rows, dtype=np.float32)


def stored_features(settings: Settings, params: FeatureParams | None = None) -> StoredFeatures:
    """The active tracks that have a vector under ``params``' version, reading only hashes and timestamps."""
    params = params or settings.features
    schema = feature_schema(params.dim)
    parts = part_files(settings, params)
    chosen: dict[str, tuple[int, int]] = {}
    newest: dict[str, datetime] = {}
    for part_no, part in enumerate(parts):
        table = pq.read_table(part, columns=["sha256", "computed_at"], schema=schema)
        shas = table.column("sha256").to_pylist()
        times = table.column("computed_at").to_pylist()
        for row, (sha, at) in enumerate(zip(shas, times, strict=True)):
            if sha not in newest or at > newest[sha]:
                newest[sha] = at
                chosen[sha] = (part_no, row)
    manifest = _latest_manifest(settings)
    pairs = sorted((t, sha) for t, sha in zip(manifest["track_id"], manifest["sha256"], strict=True) if sha in chosen)
    if len(pairs) < len(manifest):
        log.info(
            "%d active tracks have no vector under %s (quarantined or not built yet)",
            len(manifest) - len(pairs),
            params.version,
        )
    if not pairs:
        raise UserError(f"no features for version {params.version}; run `musicrec features build`")
    return StoredFeatures(
        track_ids=[t for t, _ in pairs],
        sha256=[sha for _, sha in pairs],
        version=params.version,
        params=params,
        parts=parts,
        chosen=chosen,
    )


def summary(settings: Settings) -> list[dict]:
    """One line per stored version: rows, quarantined tracks by reason, parameters; the current one marked."""
    from pipelines.features.quarantine import read_quarantine

    held = read_quarantine(settings)
    current = settings.features.version
    lines = []
    for version in sorted({*stored_versions(settings), current}):
        meta = settings.features_dir / f"version={version}" / "_params.json"
        params = json.loads(meta.read_text()) if meta.exists() else settings.features.model_dump()
        params = FeatureParams.model_validate({k: v for k, v in params.items() if k != "version"})
        rows = read_store(settings, params, ["sha256"]).num_rows
        mine = held[held["version"] == version]
        lines.append(
            {
                "version": version,
                "current": version == current,
                "rows": rows,
                "quarantined": mine["reason"].value_counts().to_dict(),
                "params": params,
            }
        )
    return lines
