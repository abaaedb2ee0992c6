"""A synthetic Artist/Album/track library with real tags (FLAC, Ogg Vorbis, ID3), made by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tests import synth

MBID_LOW_1 = "0f6b1e43-1a2b-4c3d-8e9f-0123456789ab"
MBID_HIGH_1 = "1e7c2f54-2b3c-4d4e-9fa0-123456789abc"


@dataclass(frozen=True)
class TaggedTrack:
    rel: str  # path relative to the library root
    artist: str | None
    album: str | None
    title: str | None
    genre: str | None
    track_number: int | None
    mbid: str | None


def mp3_supported() -> bool:
    """True when this libsndfile can write MP3 (1.1 and later)."""
    return "MP3" in sf.available_formats()


def _vorbis_tags(path: Path, tags: dict[str, str]) -> None:
    import mutagen

    audio = mutagen.File(str(path))
    assert audio is not None, path
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def _id3_tags(path: Path, tags: dict[str, str]) -> None:
    import mutagen
    from mutagen.id3 import TALB, TCON, TIT2, TPE1, TRCK, UFID

    audio = mutagen.File(str(path))
    assert audio is not None, path
    if audio.tags is None:
        audio.add_tags()
    frames = {"artist": TPE1, "album": TALB, "title": TIT2, "genre": TCON, "tracknumber": TRCK}
    for key, value in tags.items():
        if key == "musicbrainz_trackid":
            audio.tags.add(UFID(owner="http://musicbrainz.org", data=value.encode()))
        else:
            audio.tags.add(frames[key](encoding=3, text=[value]))
    audio.save()


def _tags(artist: str, album: str, title: str, genre: str, number: str, mbid: str | None = None) -> dict[str, str]:
    out = {"artist": artist, "album": album, "title": title, "genre": genre, "tracknumber": number}
    if mbid:
        out["musicbrainz_trackid"] = mbid
    return out


def tagged_library(root: Path, seconds: float = 3.0) -> list[TaggedTrack]:
    """Three artists, one album each, three audibly different timbres; some tags odd or missing.

    Ann Arbor (FLAC, genre Drone): low tones. Bee Sharp (Ogg Vorbis, genre Chiptune): high tones.
    Cee Noise (ID3, in MP3 where libsndfile writes it, else WAV; genre Noise): noise, one file untagged.
    One FLAC has a track number ``x/y``, a title with control characters and a malformed MusicBrainz id.
    """
    tracks: list[TaggedTrack] = []
    id3_ext = "mp3" if mp3_supported() else "wav"
    for i in range(3):
        rel = f"Ann Arbor/Low Hum/{i + 1:02d} Low {i}.flac"
        synth.write(root / rel, synth.tone(110 + 15 * i, seconds, harmonics=3))
        mbid = MBID_LOW_1 if i == 0 else None
        _vorbis_tags(root / rel, _tags("Ann Arbor", "Low Hum", f"Low {i}", "Drone", f"{i + 1}/3", mbid))
        tracks.append(TaggedTrack(rel, "Ann Arbor", "Low Hum", f"Low {i}", "Drone", i + 1, mbid))
    odd = "Ann Arbor/Low Hum/04 odd.flac"
    synth.write(root / odd, synth.tone(160, seconds, harmonics=3))
    _vorbis_tags(
        root / odd,
        {"artist": "Ann Arbor", "album": "Low Hum", "title": "Odd\x00\ttitle\n", "genre": "drone ",
         "tracknumber": "x/y", "musicbrainz_trackid": "not-a-uuid"},
    )  # fmt: skip
    tracks.append(TaggedTrack(odd, "Ann Arbor", "Low Hum", "Odd title", "drone", None, None))
    for i in range(3):
        rel = f"Bee Sharp/High Notes/{i + 1:02d} High {i}.ogg"
        synth.write(root / rel, synth.tone(1800 + 90 * i, seconds))
        mbid = MBID_HIGH_1 if i == 0 else None
        _vorbis_tags(root / rel, _tags("Bee Sharp", "High Notes", f"High {i}", "Chiptune", str(i + 1), mbid))
        tracks.append(TaggedTrack(rel, "Bee Sharp", "High Notes", f"High {i}", "Chiptune", i + 1, mbid))
    for i in range(3):
        rel = f"Cee Noise/Static/{i + 1:02d} Noise {i}.{id3_ext}"
        _write_any(root / rel, synth.noise(seconds, seed=i, colour=0.5))
        if i < 2:
            _id3_tags(root / rel, _tags("Cee Noise", "Static", f"Noise {i}", "Noise", f"{i + 1}"))
            tracks.append(TaggedTrack(rel, "Cee Noise", "Static", f"Noise {i}", "Noise", i + 1, None))
        else:  # no tags at all: names come from the folders
            tracks.append(TaggedTrack(rel, None, None, None, None, None, None))
    return tracks


def _write_any(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, synth.SR, format="MP3" if path.suffix == ".mp3" else None)


def genre_map(path: Path) -> Path:
    """Drone -> low_tones, Chiptune -> high_tones; Noise is not mapped (those tracks stay unlabelled)."""
    path.write_text("genre,style\nDrone,low_tones\nchiptune,high_tones\n", encoding="utf-8")
    return path
