"""The OpenSubsonic face's logic: credentials, parameters, songs, search and similarity as subsonic-responses.

Subsonic clients (players, and servers such as a Navidrome plugin) talk to ``/rest``; the router there is
HTTP glue only and everything it answers is built here, in JSON or XML. A song is a Subsonic ``Child`` for
a manifest row. A ``sonicMatch`` is ``{"entry": <Child>, "similarity": s}`` with ``s`` in 0..1 (1 = the
same sound), made from cosine distance ``d`` (0..2) as ``1 - d / 2``. Errors are ``status="failed"`` with an
``error`` holding one of the Subsonic codes below, always with HTTP 200, as Subsonic clients expect.

Credentials (:func:`authenticate`) follow the Subsonic and OpenSubsonic ``apiKeyAuthentication`` rules:
``u`` with ``p`` (plain or ``enc:`` hex) or ``t`` = md5(password + ``s``) against ``MUSICREC_SUBSONIC_USER``
and ``MUSICREC_SUBSONIC_PASSWORD``, or ``apiKey`` (or the ``X-API-Key`` header) against
``MUSICREC_SERVING_API_KEY``. When none of these is configured the face is open: any request is answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from fastapi.responses import Response

from pipelines.errors import Unavailable, UserError
from pipelines.settings import ServingSettings
from serving.errors import NotFound, shown

if TYPE_CHECKING:
    from serving.service import Recommender

log = logging.getLogger(__name__)

API_VERSION = "1.16.1"
SERVER_TYPE = "musicrec"
SERVER_VERSION = "0.1.0"
XMLNS = "http://subsonic.org/restapi"

GENERIC = 0
MISSING_PARAMETER = 10
WRONG_CREDENTIALS = 40
MECHANISM_NOT_SUPPORTED = 42
CONFLICTING_MECHANISMS = 43
INVALID_API_KEY = 44
NOT_AUTHORIZED = 50
NOT_FOUND = 70

# What getOpenSubsonicExtensions advertises: the names and versions of the OpenSubsonic spec.
EXTENSIONS = {"sonicSimilarity": [1], "formPost": [1], "apiKeyAuthentication": [1]}
SEARCH_MAX = 5000  # the most songs one search3 page holds; a larger songCount is cut to it
SIMILAR_DEFAULT = 50  # getSimilarSongs(2)'s default count, as the spec has it
PATH_MAX = 52  # the most songs on a sonic path, both ends included (the walk takes at most 50 steps between)

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


def failure(exc: UserError | Unavailable) -> SubsonicError:
    """A musicrec error as the client is told of it: not found is 70, anything else the generic 0."""
    if isinstance(exc, NotFound):
        return SubsonicError(NOT_FOUND, str(exc))
    if isinstance(exc, Unavailable):
        log.warning("subsonic request during an outage: %s", exc)
    return SubsonicError(GENERIC, str(exc))


class Params:
    """A request's parameters: the query string and a form-encoded body merged (``formPost``)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def required(self, name: str) -> str:
        value = self.values.get(name)
        if value is None or not value.strip():
            raise SubsonicError(MISSING_PARAMETER, f"required parameter is missing: {name}")
        return value

    def integer(self, name: str, default: int, low: int, high: int, clamp: bool = False) -> int:
        """Whole number ``name`` in ``low..high`` (``clamp``: a larger one is cut to ``high``)."""
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        try:
            number = int(raw)
        except ValueError:
            raise SubsonicError(GENERIC, f"{name} must be a whole number, got {shown(raw[:40])}") from None
        if clamp and number > high:
            return high
        if not low <= number <= high:
            raise SubsonicError(GENERIC, f"{name} must be between {low} and {high}, got {number}")
        return number


def _equal(given: str, secret: str) -> bool:
    return hmac.compare_digest(given.encode(), secret.encode())


def authenticate(params: Params, header_key: str | None, serving: ServingSettings) -> None:
    """Raise the Subsonic error for missing, conflicting or wrong credentials; open when none is configured."""
    api_key = params.get("apiKey") or header_key
    user = params.get("u")
    if api_key and user is not None:
        raise SubsonicError(CONFLICTING_MECHANISMS, "Multiple conflicting authentication mechanisms provided")
    key, name, password = serving.serving_api_key, serving.subsonic_user, serving.subsonic_password
    if key is None and password is None:
        return  # nothing configured: the face is open
    if api_key:
        if key is None:
            raise SubsonicError(MECHANISM_NOT_SUPPORTED, "this server has no API key: log in with u and p or t+s")
        if not _equal(api_key, key.get_secret_value()):
            raise SubsonicError(INVALID_API_KEY, "Invalid API key")
        return
    if user is None:
        raise SubsonicError(MISSING_PARAMETER, "required parameter is missing: u (or apiKey)")
    if name is None or password is None:
        raise SubsonicError(MECHANISM_NOT_SUPPORTED, "Password authentication not supported. Use API keys")
    secret = password.get_secret_value()
    plain, token, salt = params.get("p"), params.get("t"), params.get("s")
    if plain is not None and token is not None:
        raise SubsonicError(CONFLICTING_MECHANISMS, "Multiple conflicting authentication mechanisms provided")
    if token is not None:
        if not salt:
            raise SubsonicError(MISSING_PARAMETER, "required parameter is missing: s")
        good = _equal(token.lower(), hashlib.md5((secret + salt).encode()).hexdigest())
    elif plain is not None:
        decoded = _decoded(plain)
        good = decoded is not None and _equal(decoded, secret)
    else:
        raise SubsonicError(MISSING_PARAMETER, "required parameter is missing: p (or t and s)")
    if not _equal(user, name) or not good:  # both compared, whatever the first says
        raise SubsonicError(WRONG_CREDENTIALS, "Wrong username or password")


def _decoded(password: str) -> str | None:
    """``p`` as sent: plain, or ``enc:`` and the UTF-8 bytes in hex (``None`` when that is not hex of UTF-8)."""
    if not password.startswith("enc:"):
        return password
    try:
        return bytes.fromhex(password[4:]).decode()
    except ValueError:
        return None


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
                if isinstance(item, dict):
                    _fill(ET.SubElement(element, key), item)
                else:  # a list of numbers or words: one element each, the value as its text
                    ET.SubElement(element, key).text = str(item)
        elif isinstance(value, bool):
            element.set(key, "true" if value else "false")
        else:
            element.set(key, str(value))


# ---- the answers: each takes the request's parameters and the recommender, and returns the body ------


def ping(params: Params, recommender: Recommender) -> dict[str, Any]:
    return {}


def license_(params: Params, recommender: Recommender) -> dict[str, Any]:
    return {"license": {"valid": True}}


def extensions(params: Params, recommender: Recommender) -> dict[str, Any]:
    return {"openSubsonicExtensions": [{"name": n, "versions": v} for n, v in EXTENSIONS.items()]}


def songs(recommender: Recommender, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The ``Child`` of each catalogue track id (an id the manifest lacks gets only its id and title)."""
    df = recommender.library()
    folder = recommender.serving.music_folder
    return {t: child(t, df.loc[t].to_dict() if t in df.index else {}, folder) for t in ids}


def song(params: Params, recommender: Recommender) -> dict[str, Any]:
    """``getSong``: the song ``id`` (track id, MusicBrainz id or path in the music folder)."""
    track_id = recommender.resolve(params.required("id"))
    return {"song": songs(recommender, [track_id])[track_id]}


def search3(params: Params, recommender: Recommender) -> dict[str, Any]:
    """``search3``: songs matching every word of ``query``, ``songCount`` from ``songOffset``.

    An empty query (``""`` or ``'""'``, as clients send it to sync a whole library) pages through every
    song. musicrec has no artist or album entities, so ``artistCount``/``albumCount`` find nothing.
    """
    query = params.get("query") or ""
    query = query.strip().strip('"').strip("*").strip()
    count = params.integer("songCount", 20, 0, SEARCH_MAX, clamp=True)
    offset = params.integer("songOffset", 0, 0, 2**31 - 1)
    page = recommender.matching(query).iloc[offset : offset + count]
    folder = recommender.serving.music_folder
    hits = [child(str(t), row, folder) for t, row in zip(page.index, page.to_dict("records"), strict=True)]
    return {"searchResult3": {"song": hits}}


def similar_songs(params: Params, recommender: Recommender) -> list[dict[str, Any]]:
    """Songs that sound like song ``id``, nearest first; ``count`` (default 50) is cut to the server's k."""
    top = recommender.serving.serving_max_k
    count = params.integer("count", min(SIMILAR_DEFAULT, top), 1, top, clamp=True)
    track_id = recommender.resolve(params.required("id"))
    answer = recommender.similar(track_id, count)
    entries = songs(recommender, [r.track_id for r in answer.results])
    return [entries[r.track_id] for r in answer.results]


def similar_songs1(params: Params, recommender: Recommender) -> dict[str, Any]:
    """``getSimilarSongs``: :func:`similar_songs` as ``similarSongs``."""
    return {"similarSongs": {"song": similar_songs(params, recommender)}}


def similar_songs2(params: Params, recommender: Recommender) -> dict[str, Any]:
    """``getSimilarSongs2``: :func:`similar_songs` as ``similarSongs2``."""
    return {"similarSongs2": {"song": similar_songs(params, recommender)}}


def sonic_similar_tracks(params: Params, recommender: Recommender) -> dict[str, Any]:
    """``getSonicSimilarTracks``: nearest tracks to the song ``id`` (``count``, default 10), most similar first."""
    count = params.integer("count", 10, 1, recommender.serving.serving_max_k)
    track_id = recommender.resolve(params.required("id"))
    answer = recommender.similar(track_id, count)
    entries = songs(recommender, [r.track_id for r in answer.results])
    matches = [{"entry": entries[r.track_id], "similarity": similarity(r.distance)} for r in answer.results]
    return {"sonicMatch": matches}


def sonic_path(params: Params, recommender: Recommender) -> dict[str, Any]:
    """``findSonicPath``: a walk from ``startSongId`` to ``endSongId`` (both included) of at most ``count`` songs."""
    start_ref, end_ref = params.required("startSongId"), params.required("endSongId")
    count = params.integer("count", 25, 3, PATH_MAX)
    start, end = recommender.resolve(start_ref), recommender.resolve(end_ref)
    if start == end:
        raise SubsonicError(GENERIC, "startSongId and endSongId name the same track")
    scored = scored_path(recommender, start, end, count)
    entries = songs(recommender, [t for t, _ in scored])
    return {"sonicMatch": [{"entry": entries[t], "similarity": similarity(d)} for t, d in scored]}


def scored_path(recommender: Recommender, start: str, end: str, count: int) -> list[tuple[str, float]]:
    """The walk from ``start`` to ``end`` (both included, at most ``count`` songs), each with its cosine
    distance from ``start``: what a sonic path answers, on this face and Navidrome's alike."""
    walk = recommender.path(start, end, steps=count - 2)
    ids = [step.track.track_id for step in walk.steps]
    distances = recommender.distances_from(start, ids)
    return [(t, distances.get(t, 0.0 if t == start else 2.0)) for t in ids]


def not_kept(what: str) -> Callable[[Params, Recommender], dict[str, Any]]:
    """An answer for what musicrec has no data for (albums, artists, cover art): not found, code 70."""

    def answer(params: Params, recommender: Recommender) -> dict[str, Any]:
        raise SubsonicError(NOT_FOUND, f"musicrec keeps no {what}: {shown(params.get('id') or '')} not found")

    return answer
