"""``musicrec catalogue import PATH``: bring-your-own library into the manifest."""

from __future__ import annotations

from pathlib import Path

from pipelines.catalogue.ingest import ImportReport, Progress, ingest, no_progress
from pipelines.catalogue.scan import scan_csv, scan_folder
from pipelines.errors import UserError
from pipelines.settings import Settings


def import_catalogue(path: Path, settings: Settings, progress: Progress = no_progress) -> ImportReport:
    """Import a folder-per-style tree or a CSV listing; the resolved path is the import's origin."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"path does not exist: {path}")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"not a folder or a .csv file: {path}")
        candidates, label = scan_csv(path), path.stem
    else:
        candidates, label = scan_folder(path), path.name
    return ingest(candidates, origin=str(path), label=label, settings=settings, progress=progress)
