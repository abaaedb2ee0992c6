"""``musicrec catalogue import PATH`` and ``sync PATH``: bring-your-own library into the manifest."""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.catalogue.ingest import ImportReport, Progress, ingest, no_progress
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, read_table
from pipelines.catalogue.scan import scan_csv, scan_folder
from pipelines.catalogue.tags import GenreMap
from pipelines.errors import UserError
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def import_catalogue(
    path: Path, settings: Settings, progress: Progress = no_progress, genre_map: Path | None = None
) -> ImportReport:
    """Import a folder-per-style tree, an Artist/Album tree or a CSV listing; the resolved path is the origin.

    ``genre_map`` (default: the ``genre_map`` setting) maps genre tags to styles where no folder or CSV
    column gives one.
    """
    map_path = genre_map or settings.genre_map
    genres = GenreMap.read(map_path) if map_path else None
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"path does not exist: {path}")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"not a folder or a .csv file: {path}")
        scan, label = scan_csv(path, genres), path.stem
    else:
        scan, label = scan_folder(path, genres), path.name
    for note in scan.notes:
        log.warning("%s", note)
    report = ingest(scan.candidates, origin=str(path), label=label, settings=settings, progress=progress)
    report.notes = scan.notes
    return report


def sync_catalogue(
    path: Path, settings: Settings, progress: Progress = no_progress, genre_map: Path | None = None
) -> ImportReport:
    """Bring an imported library up to date: added, changed, moved and removed files.

    Unchanged files cost a ``stat`` (size and mtime); only new and changed files are hashed. A moved file
    keeps its track id. ``path`` must have been imported before (it is the origin being synced).
    """
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise UserError(f"path does not exist: {resolved}")
    origin = str(resolved.resolve())
    manifest = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    if not (manifest["origin"] == origin).any():
        raise UserError(f"{origin} was never imported: run `musicrec catalogue import {origin}` first")
    return import_catalogue(resolved, settings, progress, genre_map)
