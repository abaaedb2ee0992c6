"""Playlist files players read: M3U8 and XSPF, written into a playlist folder that music servers scan.

Paths in a playlist are ``absolute``, ``relative`` to the playlist file's folder (what Navidrome and
Jellyfin resolve), or relative to the ``music`` folder (what MPD resolves). Left unsaid, the style is what
the format's player loads: ``music`` for ``m3u`` (MPD's playlist folder), ``relative`` otherwise.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote
from xml.etree import ElementTree as ET

import pandas as pd

from pipelines.errors import UserError

Format = Literal["m3u8", "m3u", "xspf"]  # m3u: the same UTF-8 text under the name MPD's playlist folder lists
PathStyle = Literal["absolute", "relative", "music"]
XSPF_NS = "http://xspf.org/ns/0/"


@dataclass(frozen=True)
class Entry:
    path: Path
    title: str | None
    artist: str | None
    album: str | None
    duration_s: float | None


def entries(library: pd.DataFrame, track_ids: list[str]) -> list[Entry]:
    """The manifest rows of ``track_ids``, in order."""

    def text(value: object) -> str | None:
        return None if value is None or (isinstance(value, float) and pd.isna(value)) or value == "" else str(value)

    out = []
    for t in track_ids:
        row = library.loc[t]
        duration = row.get("duration_s")
        out.append(
            Entry(
                Path(str(row["path"])),
                text(row.get("title")),
                text(row.get("artist")),
                text(row.get("album")),
                None if duration is None or pd.isna(duration) else float(duration),
            )
        )
    return out


def within_duration(items: list[Entry], target_s: float) -> list[Entry]:
    """The leading entries whose total duration reaches ``target_s`` (all of them when they fall short)."""
    total, kept = 0.0, []
    for item in items:
        if total >= target_s:
            break
        kept.append(item)
        total += item.duration_s or 0.0
    return kept


def playlist_file(folder: Path, name: str, fmt: Format) -> Path:
    """``folder/name.fmt``; ``name`` must be a plain file name."""
    clean = name.strip()
    if not clean or clean in (".", "..") or "/" in clean or "\\" in clean or any(not c.isprintable() for c in clean):
        raise UserError(f"playlist name {name!r} must be a plain file name (no slashes or control characters)")
    if len(clean.encode()) > 200:
        raise UserError("playlist name is longer than 200 bytes")
    suffix = f".{fmt}"
    return folder / (clean if clean.lower().endswith(suffix) else clean + suffix)


def default_style(fmt: Format, music_folder: Path | None) -> PathStyle:
    """What a player of ``fmt`` resolves: MPD (``m3u``) reads paths under its music folder, others the file's folder."""
    if fmt != "m3u":
        return "relative"
    if music_folder is None:
        raise UserError(
            "--format m3u is for MPD, which resolves paths under its music_directory: set MUSICREC_MUSIC_FOLDER "
            "to that folder, or choose --paths absolute or relative"
        )
    return "music"


def _location(path: Path, target: Path, style: PathStyle, music_folder: Path | None) -> str:
    if style == "absolute":
        return str(path)
    if style == "relative":
        return Path(os.path.relpath(path, target.parent)).as_posix()
    if music_folder is None:
        raise UserError("paths relative to the music folder need MUSICREC_MUSIC_FOLDER")
    try:
        return path.relative_to(Path(music_folder).expanduser().resolve()).as_posix()
    except ValueError:
        raise UserError(f"{path} is not inside the music folder {music_folder}") from None


def render_m3u8(items: list[Entry], target: Path, style: PathStyle, music_folder: Path | None = None) -> str:
    lines = ["#EXTM3U"]
    for item in items:
        name = " - ".join(x for x in (item.artist, item.title or item.path.stem) if x)
        seconds = round(item.duration_s) if item.duration_s is not None else -1
        lines += [f"#EXTINF:{seconds},{' '.join(name.split())}", _location(item.path, target, style, music_folder)]
    return "\n".join(lines) + "\n"


def render_xspf(
    items: list[Entry], target: Path, style: PathStyle, title: str, music_folder: Path | None = None
) -> bytes:
    root = ET.Element("playlist", {"version": "1", "xmlns": XSPF_NS})
    ET.SubElement(root, "title").text = title
    track_list = ET.SubElement(root, "trackList")
    for item in items:
        track = ET.SubElement(track_list, "track")
        location = _location(item.path, target, style, music_folder)
        uri = item.path.as_uri() if style == "absolute" else quote(location)
        ET.SubElement(track, "location").text = uri
        for tag, value in (("title", item.title), ("creator", item.artist), ("album", item.album)):
            if value:
                ET.SubElement(track, tag).text = value
        if item.duration_s is not None:
            ET.SubElement(track, "duration").text = str(round(item.duration_s * 1000))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_playlist(
    items: list[Entry],
    folder: Path | None,
    name: str,
    fmt: Format = "m3u8",
    style: PathStyle = "relative",
    music_folder: Path | None = None,
) -> Path:
    """Write the playlist atomically into ``folder`` (the playlist folder setting) and return its path."""
    if folder is None:
        raise UserError("no playlist folder: set MUSICREC_PLAYLIST_DIR (a folder your player scans)")
    if fmt not in ("m3u8", "m3u", "xspf"):
        raise UserError(f"unknown playlist format {fmt!r}: use m3u8, m3u or xspf")
    if not items:
        raise UserError("the playlist is empty: nothing to write")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    target = playlist_file(folder, name, fmt)
    if fmt in ("m3u8", "m3u"):
        data = render_m3u8(items, target, style, music_folder).encode()
    else:
        data = render_xspf(items, target, style, target.stem, music_folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
