"""The import step: a folder or CSV into the manifest (``musicrec catalogue import|sync``, DAG import_catalogue)."""

from __future__ import annotations

from pathlib import Path

from pipelines.catalogue.importer import import_catalogue, sync_catalogue
from pipelines.catalogue.ingest import ImportReport, Progress, no_progress
from pipelines.settings import Settings
from pipelines.steps import StepJob


class ImportJob(StepJob):
    """Import ``path``; ``sync``: it was imported before, pick up what changed (moved files keep their ids)."""

    path: Path
    sync: bool = False
    genre_map: Path | None = None


def run(settings: Settings, job: ImportJob, inputs: None = None, progress: Progress = no_progress) -> ImportReport:
    """Import or sync ``job.path`` into the manifest; the step has no inputs of an earlier step."""
    step = sync_catalogue if job.sync else import_catalogue
    return step(job.path, settings, progress=progress, genre_map=job.genre_map)
