"""The OpenSubsonic ``sonicSimilarity`` extension's answers: subsonic-response in JSON or XML.

A ``sonicMatch`` is ``{"entry": <Child>, "similarity": s}`` with ``s`` in 0..1 (1 = the same sound), made
here from cosine distance ``d`` (0..2) as ``1 - d / 2``. Errors are ``status="failed"`` with an ``error``
holding one of the Subsonic codes below.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from fastapi.responses import Response

API_VERSION = "1.16.1"
SERVER_TYPE = "musicrec"
SERVER_VERSION = "0.1.0"
XMLNS = "http://subsonic.org/restapi"

GENERIC = 0
MISSING_PARAMETER = 10
INVALID_API_KEY = 44
NOT_AUTHORIZED = 50
NOT_FOUND = 70

_CONTENT_TYPES = {
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".wav": "audio/wav",
}


class SubsonicError(Exception):
    """A failure the client is told about in a subsonic-response."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def similarity(distance: float) -> float:
    """Cosine distance (0 = same direction, 2 = opposite) as a similarity in 0..1, 1 = identical."""
    return round(min(1.0, max(0.0, 1.0 - distance / 2.0)), 6)


def child(track_id: str, row: dict[str, Any], music_folder: Path | None) -> dict[str, Any]:
    """A Subsonic ``Child`` (a song) for a manifest row; absent facts are left out."""
    path = Path(str(row.get("path") or ""))
    entry: dict[str, Any] = {
        "id": track_id,
        "parent": _text(row.get("album")) or _text(row.get("source")),
        "isDir": False,
        "isVideo": False,
        "type": "music",
        "title": _text(row.get("title")) or path.stem or track_id,
        "album": _text(row.get("album")),
        "artist": _text(row.get("artist")),
        "genre": _text(row.get("genre")),
        "track": _int(row.get("track_number")),
        "duration": _int(row.get("duration_s")),
        "size": _int(row.get("size")),
        "samplingRate": _int(row.get("sample_rate")),
        "channelCount": _int(row.get("channels")),
        "suffix": path.suffix.lstrip(".").lower() or None,
        "contentType": _CONTENT_TYPES.get(path.suffix.lower()),
        "musicBrainzId": _text(row.get("mbid")),
    }
    if music_folder is not None and path.is_absolute():
        with contextlib.suppress(ValueError):
            entry["path"] = path.relative_to(Path(music_folder).expanduser().resolve()).as_posix()
    return {k: v for k, v in entry.items() if v is not None}


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return str(value)


def _int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else round(number)


def envelope(status: str = "ok", **body: Any) -> dict[str, Any]:
    return {
        "status": status,
        "version": API_VERSION,
        "type": SERVER_TYPE,
        "serverVersion": SERVER_VERSION,
        "openSubsonic": True,
        **body,
    }


def failed(exc: SubsonicError) -> dict[str, Any]:
    return envelope("failed", error={"code": exc.code, "message": exc.message})


def render(payload: dict[str, Any], fmt: str | None, status_code: int = 200) -> Response:
    """``f=json`` gives JSON; anything else the default XML."""
    if fmt == "json":
        body = json.dumps({"subsonic-response": payload}, ensure_ascii=False)
        return Response(body, status_code=status_code, media_type="application/json")
    return Response(to_xml(payload), status_code=status_code, media_type="application/xml")


def to_xml(payload: dict[str, Any]) -> bytes:
    """The XML form: scalars are attributes, objects are child elements, lists repeat their element."""
    root = ET.Element("subsonic-response", {"xmlns": XMLNS})
    _fill(root, payload)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _fill(element: ET.Element, obj: dict[str, Any]) -> None:
    for key, value in obj.items():
        if isinstance(value, dict):
            _fill(ET.SubElement(element, key), value)
        elif isinstance(value, list):
            for item in value:
                _fill(ET.SubElement(element, key), item)
        elif isinstance(value, bool):
            element.set(key, "true" if value else "false")
        else:
            element.set(key, str(value))
