"""``musicrec catalogue import PATH`` and ``sync PATH``: bring-your-own library into the manifest."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from pipelines.audio import AUDIO_EXTENSIONS
from pipelines.catalogue.ingest import ImportReport, Progress, ingest, no_progress
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, read_table
from pipelines.catalogue.scan import Scan, scan_csv, scan_folder
from pipelines.catalogue.tags import GenreMap
from pipelines.errors import UserError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

SHOWN = 5  # names listed per note before "and N more"


def _names(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def ignored_notes(root: Path) -> list[str]:
    """What a folder import leaves out, so that nothing is skipped silently.

    Files next to the style folders (a ``labels.csv``, a README, audio placed at the top) are not read:
    styles come from folder names. Folders without any audio, and non-audio files inside style folders
    (cover art, playlists), are counted by kind.
    """
    notes: list[str] = []
    top_files = sorted(p.name for p in root.iterdir() if not p.is_dir())
    if top_files:
        csvs = [n for n in top_files if n.lower().endswith(".csv")]
        hint = f"; a CSV listing is imported on its own: `musicrec catalogue import {root / csvs[0]}`" if csvs else ""
        notes.append(
            f"ignored {len(top_files)} file(s) directly in {root}: {_names(top_files)} "
            f"(styles come from the sub-folder names, not from side files{hint})"
        )
    empty: list[str] = []
    other: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        has_audio = False
        seen: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            for name in filenames:
                ext = Path(name).suffix.lower()
                if ext in AUDIO_EXTENSIONS:
                    has_audio = True
                else:
                    kind = ext or "(no extension)"
                    other[kind] += 1
                    examples.setdefault(kind, (Path(dirpath) / name).relative_to(root).as_posix())
        if not has_audio:
            empty.append(f"{folder.name}/")
    if empty:
        notes.append(f"ignored {len(empty)} folder(s) with no audio: {_names(empty)}")
    if other:
        kinds = ", ".join(f"{n} {kind} (e.g. {examples[kind]})" for kind, n in other.most_common())
        exts = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
        notes.append(f"ignored {sum(other.values())} non-audio file(s) in the sub-folders: {kinds}; audio is {exts}")
    return notes


def confounding_notes(root: Path, scan: Scan) -> list[str]:
    """Warn when a style's tracks all come from one source: its numbers would measure the source.

    A flat folder per style (no album sub-folders, no album or artist tags) makes every style one source,
    the import's folder: style and source are then the same thing, which training only reports later.
    """
    if scan.layout != "styles":
        return []
    sources: dict[str, set[str]] = {}
    for cand in scan.candidates:
        if cand.style:
            sources.setdefault(cand.style, set()).add(cand.source)
    single = sorted(style for style, srcs in sources.items() if len(srcs) == 1)
    if not single:
        return []
    if len(single) == len(sources) and len(set().union(*sources.values())) <= 1:
        return [
            f"every style folder of {root} holds its tracks directly (no album sub-folders, no album or artist "
            "tags), so style and source are confounded: a model can learn the recording rather than the style, "
            "and training can only evaluate on track folds; put each album in its own sub-folder of its style"
        ]
    named = ", ".join(f"{s} (all from '{next(iter(sources[s]))}')" for s in single[:SHOWN])
    more = f" and {len(single) - SHOWN} more" if len(single) > SHOWN else ""
    return [
        f"style(s) with a single source: {named}{more}; their numbers may measure the source, not the style: "
        "add albums or artists of other sources to them"
    ]


def import_catalogue(
    path: Path, settings: Settings, progress: Progress = no_progress, genre_map: Path | None = None
) -> ImportReport:
    """Import a folder-per-style tree, an Artist/Album tree or a CSV listing; the resolved path is the origin.

    ``genre_map`` (default: the ``genre_map`` setting) maps genre tags to styles where no folder or CSV
    column gives one.
    """
    map_path = genre_map or settings.paths.genre_map
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
        scan.notes.extend(confounding_notes(path, scan) + ignored_notes(path))
    for note in scan.notes:
        log.warning("%s", note)
    report = ingest(scan.candidates, origin=str(path), label=label, settings=settings, progress=progress)
    for note in report.notes:
        log.warning("%s", note)
    report.notes = scan.notes + report.notes
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
