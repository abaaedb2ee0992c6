"""Finding candidate tracks in a user's library: a folder per style, an Artist/Album tree, or a CSV listing.

Scanning reads names, CSV text and tags; it decides *which files* to look at and with what labels.
Whether each file is real audio is decided later, in :mod:`pipelines.catalogue.ingest`. A track's style
comes from its style folder or CSV cell, else from its genre tag through a genre map; a track with none
is unlabelled (``style`` None): it is indexed and recommended, and left out of training and evaluation.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.audio import AUDIO_EXTENSIONS
from pipelines.catalogue.manifest import STYLE_MAX_BYTES
from pipelines.catalogue.tags import GenreMap, Tags, clean_text, read_tags
from pipelines.errors import UserError
from pipelines.progress import ProgressLog

log = logging.getLogger(__name__)

CSV_REQUIRED = ("path",)
CSV_OPTIONAL = ("track_id", "artist", "album", "title")


@dataclass(frozen=True)
class Candidate:
    """A file that may become a track, with the labels its scanner knows."""

    path: Path
    style: str | None  # None: unlabelled; "": an unusable label (rejected as invalid_style)
    source: str
    relative: str  # path relative to the import root, used for a stable readable id
    track_id: str | None = None
    artist: str | None = None
    album: str | None = None
    title: str | None = None
    genre: str | None = None
    track_number: int | None = None
    mbid: str | None = None  # MusicBrainz recording id
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

    def unreadable(exc: OSError) -> None:
        where = str(exc.filename or "")
        where = where if len(where) <= 160 else f"{where[:80]}...{where[-60:]} ({len(where)} characters)"
        log.warning("skipping %s and what is under it: %s", where, exc.strerror or exc)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as exc:
            unreadable(exc)  # for one, a folder deeper than the system's path limit
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


@dataclass
class Scan:
    """What a scan found: the candidates, how the folder was read, and what the user should be told."""

    candidates: list[Candidate]
    layout: str  # "styles" (a folder per style), "artist_album" or "csv"
    notes: list[str] = field(default_factory=list)


def _tagged(cand: Candidate, tags: Tags, genre_map: GenreMap | None, prefer_tags: bool) -> Candidate:
    """``cand`` with its tags filled in: tags win over names from the path, CSV columns win over tags."""

    def pick(given: str | None, tag: str | None) -> str | None:
        return (tag or given) if prefer_tags else (given or tag)

    artist, album = pick(cand.artist, tags.artist), pick(cand.album, tags.album)
    style = cand.style
    if style is None and genre_map is not None:
        style = genre_map.style(tags.genres)
    return replace(
        cand,
        style=style,
        artist=artist,
        album=album,
        title=pick(cand.title, tags.title) or cand.path.stem,
        source=album or artist or cand.source,
        genre=tags.genres[0] if tags.genres else None,
        track_number=tags.track_number,
        mbid=tags.mbid,
    )


def _same(a: str | None, b: str) -> bool:
    return a is not None and a.casefold().strip() == b.casefold().strip()


def is_artist_album(root: Path, files: list[Path], tags: list[Tags]) -> bool:
    """True when ``root`` looks like Artist/Album/track rather than Style/...

    Either the tags agree with the folder names (artist tag = first folder or album tag = second folder for
    at least half the tagged files), or every file sits two folders deep and at least half carry an album tag.
    """
    parts = [p.relative_to(root).parts for p in files]
    tagged = [(rel, t) for rel, t in zip(parts, tags, strict=True) if not t.empty]
    agree = sum(
        _same(t.artist, rel[0]) or (len(rel) > 2 and _same(t.album, rel[1])) for rel, t in tagged if len(rel) > 1
    )
    if tagged and agree * 2 >= len(tagged):
        return True
    two_deep = bool(parts) and all(len(rel) == 3 for rel in parts)
    return two_deep and sum(t.album is not None for t in tags) * 2 >= len(tags)


def scan_folder(root: Path, genre_map: GenreMap | None = None) -> Scan:
    """A folder with one sub-folder per style, or an Artist/Album/track library (recognised by its tags).

    In a style folder, audio is found recursively and a sub-folder is the album. In an Artist/Album
    library, styles come from the genre tags through ``genre_map``, or the tracks stay unlabelled.
    """
    if not root.exists():
        raise UserError(f"path does not exist: {root}")
    if not root.is_dir():
        raise UserError(f"not a folder or a .csv file: {root}")
    style_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not style_dirs:
        raise UserError(f"no style sub-folders in {root}: expected <root>/<style>/<audio files>")
    files = [path for style_dir in style_dirs for path in walk_audio(style_dir)]
    if not files:
        exts = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
        raise UserError(f"no audio files ({exts}) under the style folders of {root}")
    meter = ProgressLog(f"scan {root.name}: tags", len(files), log, unit="files")
    tags = [read_tags(path) for path in meter.iterate(files)]
    artist_album = is_artist_album(root, files, tags)
    notes: list[str] = unreadable_tags_notes(files, tags)
    candidates: list[Candidate] = []
    for path, tag in zip(files, tags, strict=True):
        rel = path.relative_to(root)
        folders = rel.parts[:-1]
        if artist_album:
            base = Candidate(
                path=path,
                style=None,
                source=folders[1] if len(folders) > 1 else folders[0],
                relative=rel.as_posix(),
                artist=folders[0],
                album=folders[1] if len(folders) > 1 else None,
            )
        else:
            album = path.parent.name if len(folders) > 1 else None
            base = Candidate(
                path=path,
                style=clean_style(folders[0]) or "",
                source=album or root.name,
                relative=rel.as_posix(),
                album=album,
            )
        candidates.append(_tagged(base, tag, genre_map, prefer_tags=True))
    if artist_album:
        labelled = sum(c.style is not None for c in candidates)
        how = (
            f"{labelled} of {len(candidates)} tracks got a style from the genre map {genre_map.origin}"
            if genre_map is not None
            else "no genre map given (--genre-map or MUSICREC_GENRE_MAP), so every track is unlabelled"
        )
        notes.append(
            f"{root} looks like an Artist/Album library (its tags agree with the folder names), not one "
            f"folder per style: {how}; unlabelled tracks are indexed and recommended but not trained on"
        )
    return Scan(candidates, "artist_album" if artist_album else "styles", notes)


def unreadable_tags_notes(files: list[Path], tags: list[Tags]) -> list[str]:
    """One note for every file whose tags could not be read (a line per file would flood a big import)."""
    bad = [(path, tag.problem) for path, tag in zip(files, tags, strict=True) if tag.problem]
    if not bad:
        return []
    path, problem = bad[0]
    return [
        f"could not read the tags of {len(bad)} file(s), e.g. {path} ({problem}); they are named from their "
        "folders, and a file whose audio is bad too is rejected with its reason"
    ]


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


def _rows(reader: csv.DictReader, path: Path) -> Iterator[dict[str, str]]:
    """The CSV's rows; a malformed one (a field over the csv module's limit, a NUL) is one clear error."""
    try:
        yield from reader
    except csv.Error as exc:
        raise UserError(f"{path}, line {reader.line_num + 1}: {exc}; no track was imported from this CSV") from None


def scan_csv(path: Path, genre_map: GenreMap | None = None) -> Scan:
    """A CSV with a ``path`` column and optional style, track_id, artist, album, title columns.

    Relative paths are resolved against the CSV's folder, so a CSV can travel with its library. Columns
    win over tags; without a style column, styles come from genre tags through ``genre_map``, or none.
    """
    if not path.exists():
        raise UserError(f"path does not exist: {path}")
    text = _read_csv_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted fields may hold newlines
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
    has_style = "style" in columns
    reader.fieldnames = columns
    candidates: list[Candidate] = []
    read: list[tuple[Path, Tags]] = []
    for row in _rows(reader, path):
        raw = row.get("path") or ""
        rel = raw.strip()
        if not rel:
            continue
        # A file whose name really starts or ends with spaces is found as written; otherwise spaces around
        # the value (as spreadsheets leave them) are not part of the path.
        if raw != rel and (Path(raw) if Path(raw).is_absolute() else path.parent / raw).exists():
            rel = raw
        file_path = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        opt = {k: ((row.get(k) or "").strip() or None) for k in CSV_OPTIONAL}
        # Tags are cleaned as they are read; CSV text is cleaned the same way (one printable line).
        opt |= {k: clean_text(opt[k]) for k in ("artist", "album", "title")}
        base = Candidate(
            path=file_path,
            style=(clean_style(row.get("style")) or "") if has_style else None,
            source=opt["album"] or opt["artist"] or path.stem,
            relative=rel,
            track_id=opt["track_id"],
            artist=opt["artist"],
            album=opt["album"],
            title=opt["title"],
        )
        tags = read_tags(file_path) if file_path.is_file() else Tags()
        read.append((file_path, tags))
        candidates.append(_tagged(base, tags, genre_map, prefer_tags=False))
    if not candidates:
        raise UserError(f"{path}: no rows with a path")
    notes = unreadable_tags_notes([p for p, _ in read], [t for _, t in read])
    if not has_style:
        notes.append("the CSV has no style column: styles come from the genre map, or tracks stay unlabelled")
    return Scan(candidates, "csv", notes)
