"""Reading a file's tags (ID3, Vorbis comments, FLAC) with mutagen, and mapping genres to styles.

Tags are hints, never requirements: a file whose tags are missing, odd or unreadable gives empty
:class:`Tags`, and the import goes on with names from the path.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import UserError

log = logging.getLogger(__name__)

TAG_MAX_CHARS = 512
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Tags:
    """What a file says about itself; every field may be missing."""

    artist: str | None = None
    album: str | None = None
    title: str | None = None
    genres: tuple[str, ...] = ()
    track_number: int | None = None
    duration_s: float | None = None
    mbid: str | None = None  # MusicBrainz recording id
    problem: str | None = None  # why the tags could not be read (the scan reports these in one note)

    @property
    def empty(self) -> bool:
        return not (self.artist or self.album or self.title or self.genres or self.mbid)


def clean_text(raw: object) -> str | None:
    """One printable line of at most :data:`TAG_MAX_CHARS` characters, or None."""
    if raw is None:
        return None
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(raw)).split())
    return text[:TAG_MAX_CHARS] or None


def _first(values: object) -> str | None:
    if isinstance(values, list | tuple):
        for value in values:
            if (text := clean_text(value)) is not None:
                return text
        return None
    return clean_text(values)


def _track_number(raw: str | None) -> int | None:
    """``3``, ``03`` or ``3/12`` -> 3; anything else -> None."""
    if raw is None:
        return None
    match = re.match(r"^\s*(\d{1,6})", raw)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _genres(values: object) -> tuple[str, ...]:
    items = values if isinstance(values, list | tuple) else [values] if values else []
    out: list[str] = []
    for item in items:
        for part in re.split(r"[;/,]", str(item)):
            if (text := clean_text(part)) is not None and text not in out:
                out.append(text)
    return tuple(out)


def read_tags(path: Path) -> Tags:
    """The tags of ``path`` (MP3/ID3, Ogg Vorbis, Opus, FLAC, WAV with ID3); empty when there are none."""
    import mutagen
    from mutagen.id3 import ID3

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return Tags()  # a FIFO would block and a device never ends; the audio rule refuses them later
        audio = mutagen.File(str(path), easy=True)
    except Exception as exc:  # mutagen raises many kinds on damaged headers; tags are only hints
        log.debug("cannot read tags of %s: %s: %s", path, type(exc).__name__, exc)
        return Tags(problem=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    if audio is None:
        return Tags()
    length = getattr(getattr(audio, "info", None), "length", None)
    duration = float(length) if isinstance(length, int | float) and 0 < length < 1e7 else None
    tags = audio.tags
    if not tags:
        return Tags(duration_s=duration)

    def get(key: str) -> object:
        try:
            if isinstance(tags, ID3):  # ID3 in a container mutagen has no "easy" view of (WAV, AIFF)
                return _id3_get(tags, key)
            return tags.get(key)
        except Exception:  # an easy-ID3 key can fail on a malformed frame
            return None

    mbid = _first(get("musicbrainz_trackid"))
    return Tags(
        artist=_first(get("artist")) or _first(get("albumartist")),
        album=_first(get("album")),
        title=_first(get("title")),
        genres=_genres(get("genre")),
        track_number=_track_number(_first(get("tracknumber"))),
        duration_s=duration,
        mbid=mbid.lower() if mbid and _UUID.match(mbid.lower()) else None,
    )


_ID3_FRAMES = {
    "artist": "TPE1",
    "albumartist": "TPE2",
    "album": "TALB",
    "title": "TIT2",
    "genre": "TCON",
    "tracknumber": "TRCK",
}


def _id3_get(tags: Any, key: str) -> object:
    """An easy-style value from raw ID3 frames (``tags``: mutagen's ID3, which has no type hints)."""
    if key == "musicbrainz_trackid":
        frame = tags.get("UFID:http://musicbrainz.org")
        return frame.data.decode("ascii", "replace") if frame is not None else None
    frame = tags.get(_ID3_FRAMES.get(key, ""))
    return [str(t) for t in frame.text] if frame is not None else None


class GenreMap:
    """Genre tag -> style, from a CSV with columns ``genre,style`` (case and spacing of genres ignored)."""

    def __init__(self, pairs: dict[str, str], origin: str = "") -> None:
        self.pairs = {_key(g): s for g, s in pairs.items()}
        self.origin = origin

    @classmethod
    def read(cls, path: Path) -> GenreMap:
        from pipelines.catalogue.scan import clean_style

        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"genre map not found: {path}")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise UserError(f"{path}: the genre map is not UTF-8 text") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "genre" not in columns or "style" not in columns:
            raise UserError(f"{path}: a genre map needs columns genre,style; found {', '.join(columns) or 'none'}")
        reader.fieldnames = columns
        pairs: dict[str, str] = {}
        for n, row in enumerate(reader, 2):
            genre, style = clean_text(row.get("genre")), clean_style(row.get("style"))
            if genre is None or style is None:
                raise UserError(f"{path}, line {n}: needs a genre and a printable style")
            pairs[genre] = style
        if not pairs:
            raise UserError(f"{path}: the genre map has no rows")
        return cls(pairs, str(path))

    def style(self, genres: tuple[str, ...]) -> str | None:
        """The style of the first genre the map knows, or None."""
        for genre in genres:
            if (style := self.pairs.get(_key(genre))) is not None:
                return style
        return None


def _key(genre: str) -> str:
    return " ".join(genre.casefold().split())
