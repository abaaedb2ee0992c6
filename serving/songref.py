"""Resolve a music server's song reference (Navidrome's ``SongRef``) to one catalogue track.

Navidrome knows a song by its own id, its MusicBrainz recording id and its tags; musicrec knows it by
its own track id. The rules, in order (docs/navidrome.md):

1. A MusicBrainz recording id that the catalogue holds wins (several copies: the album match, then the
   nearest duration, then the smallest track id, since copies of one recording sound the same).
2. Otherwise the normalised title and artist must both match (case, accents, punctuation, ``feat.``
   credits and version suffixes such as ``(Remastered)`` do not count), and where both durations are
   known they must agree within :data:`DURATION_TOLERANCE_S`.
3. Of several such candidates, those on the same (normalised) album are preferred; of the rest the one
   nearest in duration wins, and a tie is refused as ambiguous rather than guessed.

Pure logic over the manifest's columns (track_id, title, artist, album, mbid, duration_s).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DURATION_TOLERANCE_S = 3.0
"""How far apart two durations may be for a title/artist match (tags and decoders differ by a second or two)."""

_VERSION_WORDS = (
    r"remaster(?:ed)?|\d{4}\s+remaster(?:ed)?|remaster(?:ed)?\s+\d{4}|\d{4}\s+version|"
    r"mono|stereo|deluxe(?:\s+edition)?|expanded(?:\s+edition)?|bonus\s+track|album\s+version|explicit|clean"
)
_VERSION = re.compile(rf"\s*[\(\[][^\)\]]*\b(?:{_VERSION_WORDS})\b[^\)\]]*[\)\]]\s*$", re.IGNORECASE)
_VERSION_DASH = re.compile(rf"\s+-\s+(?:\d{{4}}\s+)?(?:{_VERSION_WORDS})(?:\s+\d{{4}})?\s*$", re.IGNORECASE)
_FEAT = re.compile(r"\s*[\(\[]?\s*\b(?:feat\.?|ft\.|featuring)\s+[^\)\]]*[\)\]]?\s*$", re.IGNORECASE)
_PUNCT = re.compile(r"[^\w\s]+")


def normalise(text: str | None, *, title: bool = False) -> str:
    """A matching key: no accents, case-folded, ``&`` as ``and``, no punctuation, single spaces.

    ``title=True`` also drops a trailing version note (``(Remastered 2011)``, ``- Mono``) and a
    featured-artist credit; for artists a ``feat.`` credit is dropped too (the primary artist matches).
    """
    if not text:
        return ""
    out = unicodedata.normalize("NFKD", text)
    out = "".join(ch for ch in out if not unicodedata.combining(ch))
    for _ in range(3):  # "Song (feat. X) [Remastered]": peel trailing notes one by one
        before = out
        if title:
            out = _VERSION.sub("", out)
            out = _VERSION_DASH.sub("", out)
        out = _FEAT.sub("", out) if _FEAT.sub("", out).strip() else out
        if out == before:
            break
    out = out.casefold().replace("&", " and ")
    out = _PUNCT.sub(" ", out)
    words = out.split()
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(words)


@dataclass(frozen=True)
class SongQuery:
    """What a SongRef says about a song; every field may be missing except the title."""

    name: str
    artist: str | None = None
    album: str | None = None
    mbid: str | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class Candidate:
    track_id: str
    album: str  # normalised
    duration_s: float | None


class Unresolved(Exception):
    """No single catalogue track matches; ``ambiguous`` when several match equally well."""

    def __init__(self, message: str, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class SongIndex:
    """The catalogue's tracks keyed by MusicBrainz id and by normalised (title, artist)."""

    def __init__(self, rows: Iterable[Mapping[str, object]]) -> None:
        self._by_mbid: dict[str, list[Candidate]] = defaultdict(list)
        self._by_title: dict[str, list[tuple[str, Candidate]]] = defaultdict(list)
        for row in rows:
            track_id = str(row["track_id"])
            cand = Candidate(track_id, normalise(_text(row.get("album"))), _float(row.get("duration_s")))
            mbid = _text(row.get("mbid"))
            if mbid:
                self._by_mbid[mbid.strip().lower()].append(cand)
            title = normalise(_text(row.get("title")), title=True)
            if title:
                self._by_title[title].append((normalise(_text(row.get("artist"))), cand))

    def __len__(self) -> int:
        return len({c.track_id for cands in self._by_title.values() for _, c in cands})

    def resolve(self, query: SongQuery) -> str:
        """The one track id ``query`` names, by the rules in the module docstring; :class:`Unresolved` if none."""
        album = normalise(query.album)
        if query.mbid and (by_id := self._by_mbid.get(query.mbid.strip().lower())):
            return _best(by_id, album, query.duration_s, tie_ok=True)
        title = normalise(query.name, title=True)
        if not title:
            raise Unresolved("the song has no title to match")
        artist = normalise(query.artist)
        cands = [c for a, c in self._by_title.get(title, []) if not artist or a == artist]
        if query.duration_s is not None:
            cands = [
                c for c in cands if c.duration_s is None or abs(c.duration_s - query.duration_s) <= DURATION_TOLERANCE_S
            ]
        if not cands:
            who = f" by {query.artist!r}" if query.artist else ""
            raise Unresolved(f"no catalogue track is {query.name!r}{who}")
        return _best(cands, album, query.duration_s, tie_ok=False)


def _best(cands: list[Candidate], album: str, duration: float | None, tie_ok: bool) -> str:
    if album and (same := [c for c in cands if c.album == album]):
        cands = same
    if len(cands) == 1:
        return cands[0].track_id

    def gap(c: Candidate) -> float:
        return abs(c.duration_s - duration) if duration is not None and c.duration_s is not None else float("inf")

    ranked = sorted(cands, key=lambda c: (gap(c), c.track_id))
    if tie_ok or gap(ranked[0]) < gap(ranked[1]):
        return ranked[0].track_id
    raise Unresolved(
        f"{len(cands)} catalogue tracks match equally well ({', '.join(c.track_id for c in ranked[:3])}"
        f"{', ...' if len(cands) > 3 else ''}); send the album or the duration to tell them apart",
        ambiguous=True,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if out == out and out > 0 else None  # NaN and 0 are "unknown"
