"""Finding candidate tracks in a user's library: a folder per style, or a CSV listing.

Scanning only reads names and CSV text; it decides *which files* to look at and with what labels.
Whether each file is real audio is decided later, in :mod:`pipelines.catalogue.ingest`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.audio import AUDIO_EXTENSIONS
from pipelines.catalogue.manifest import STYLE_MAX_BYTES
from pipelines.errors import UserError

log = logging.getLogger(__name__)

CSV_REQUIRED = ("path", "style")
CSV_OPTIONAL = ("track_id", "artist", "album", "title")


@dataclass(frozen=True)
class Candidate:
    """A file that may become a track, with the labels its scanner knows."""

    path: Path
    style: str
    source: str
    relative: str  # path relative to the import root, used for a stable readable id
    track_id: str | None = None
    artist: str | None = None
    album: str | None = None
    title: str | None = None
    licence: str | None = None
    licence_file: str | None = None
    label_confidence: float | None = None  # how sure the scanner is of ``style`` (None: taken as given)
    min_seconds: float = 0.0  # shorter files are left out (jingles, stingers)
    doubt: str | None = None  # set when the style label is doubtful: the file is left out with this reason


def clean_style(raw: str | None) -> str | None:
    """Validated style name (trimmed, non-empty, printable, at most 256 UTF-8 bytes) or None if unusable."""
    if raw is None:
        return None
    style = " ".join(str(raw).split())
    if not style or any(not ch.isprintable() for ch in style) or len(style.encode()) > STYLE_MAX_BYTES:
        return None
    return style


def walk_audio(root: Path) -> Iterator[Path]:
    """Audio files under ``root``, following symlinks but never entering the same directory twice.

    Following links lets users organise a library with them; remembering (device, inode) of every
    directory visited is what keeps a link loop from hanging the walk.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            log.warning("skipping %s: already visited (symlink loop?)", dirpath)
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(dirpath) / name


def scan_folder(root: Path) -> list[Candidate]:
    """A folder with one sub-folder per style; audio is found recursively inside each style folder."""
    if not root.exists():
        raise UserError(f"path does not exist: {root}")
    if not root.is_dir():
        raise UserError(f"not a folder or a .csv file: {root}")
    style_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not style_dirs:
        raise UserError(f"no style sub-folders in {root}: expected <root>/<style>/<audio files>")
    candidates: list[Candidate] = []
    for style_dir in style_dirs:
        style = clean_style(style_dir.name) or ""
        for path in walk_audio(style_dir):
            rel = path.relative_to(root).as_posix()
            album = path.parent.name if path.parent != style_dir else None
            candidates.append(
                Candidate(
                    path=path,
                    style=style,
                    source=album or root.name,
                    relative=rel,
                    album=album,
                    title=path.stem,
                )
            )
    if not candidates:
        exts = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
        raise UserError(f"no audio files ({exts}) under the style folders of {root}")
    return candidates


def _read_csv_text(path: Path) -> str:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            break
        return text
    raise UserError(f"{path}: cannot decode the CSV (use UTF-8 or UTF-16 with a byte-order mark)")


def scan_csv(path: Path) -> list[Candidate]:
    """A CSV with columns path, style (required) and track_id, artist, album, title (optional).

    Relative paths are resolved against the CSV's folder, so a CSV can travel with its library.
    """
    if not path.exists():
        raise UserError(f"path does not exist: {path}")
    text = _read_csv_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted fields may hold newlines
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
    reader.fieldnames = columns
    candidates: list[Candidate] = []
    for row in reader:
        rel = (row.get("path") or "").strip()
        if not rel:
            continue
        file_path = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        opt = {k: ((row.get(k) or "").strip() or None) for k in CSV_OPTIONAL}
        candidates.append(
            Candidate(
                path=file_path,
                style=clean_style(row.get("style")) or "",
                source=opt["album"] or opt["artist"] or path.stem,
                relative=rel,
                track_id=opt["track_id"],
                artist=opt["artist"],
                album=opt["album"],
                title=opt["title"] or file_path.stem,
            )
        )
    if not candidates:
        raise UserError(f"{path}: no rows with a path")
    return candidates
