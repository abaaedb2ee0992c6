"""Reading audio files safely: probing, hashing and classifying what is wrong with a bad file.

Catalogue import and the feature front end both need to tell "this is a track" from "this is junk", and
to say *why* a file was refused, so the reasons live here in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3"})

# Leading bytes of the containers libsndfile reads; used to tell a damaged audio file from a non-audio one.
# A container with headers but no samples is a few hundred bytes; more than this and no samples is damage.
_EMPTY_CONTAINER_BYTES = 8192
_MAGIC = (b"RIFF", b"RF64", b"OggS", b"fLaC", b"ID3", b"FORM")


class RejectReason(StrEnum):
    """Why a file did not become a track. Stored verbatim in the rejects table."""

    EMPTY_FILE = "empty_file"
    NOT_AUDIO = "not_audio"
    CORRUPT = "corrupt_or_truncated"
    ZERO_LENGTH = "zero_length_audio"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    DUPLICATE = "duplicate"
    INVALID_STYLE = "invalid_style"
    SILENT = "silent"
    TIMEOUT = "decode_timeout"
    TOO_SHORT = "too_short"
    DOUBTFUL_STYLE = "doubtful_style"


@dataclass(frozen=True)
class AudioInfo:
    """What a successful probe learned about a file."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int


class AudioRejected(Exception):
    """A file that cannot be used as a track, with a machine-readable reason and a human detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash: the identity of a recording, whatever its path."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_audio(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4)
    return head.startswith(_MAGIC) or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0)


def wav_shortfall(fh: BinaryIO, size: int) -> int:
    """Bytes missing from a RIFF/WAVE file's data chunk; 0 if complete or not a WAV.

    libsndfile silently shortens a truncated WAV to what is on disk, so only the header can tell.
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        chunk = fh.read(8)
        chunk_size = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"data":
            return max(0, pos + 8 + chunk_size - size)
        pos += 8 + chunk_size + (chunk_size & 1)
    return 0


def _wav_missing_bytes(path: Path, size: int) -> int:
    with path.open("rb") as fh:
        return wav_shortfall(fh, size)


def probe(path: Path, max_bytes: int | None = None) -> AudioInfo:
    """Check that ``path`` is decodable audio from start to end and return its shape.

    A header alone is not enough: truncated files often have valid headers, so one block at the start and
    one at the end are actually decoded. Raises :class:`AudioRejected` with the reason otherwise.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            raise AudioRejected(RejectReason.EMPTY_FILE, "file has 0 bytes")
        if max_bytes is not None and size > max_bytes:
            raise AudioRejected(RejectReason.TOO_LARGE, f"{size} bytes exceeds the limit of {max_bytes}")
        looks_like_audio = _looks_like_audio(path)
    except OSError as exc:
        raise AudioRejected(RejectReason.UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if looks_like_audio and (shortfall := _wav_missing_bytes(path, size)):
        raise AudioRejected(RejectReason.CORRUPT, f"WAV data chunk is {shortfall} bytes shorter than its header says")
    try:
        with sf.SoundFile(str(path)) as snd:
            info = AudioInfo(
                duration_s=snd.frames / snd.samplerate if snd.samplerate else 0.0,
                sample_rate=int(snd.samplerate),
                channels=int(snd.channels),
                frames=int(snd.frames),
            )
            if info.frames <= 0:
                if size > _EMPTY_CONTAINER_BYTES:
                    raise AudioRejected(RejectReason.CORRUPT, f"no decodable samples in {size} bytes")
                raise AudioRejected(RejectReason.ZERO_LENGTH, "the file holds no audio samples")
            head = snd.read(min(info.frames, 4096), dtype="float32", always_2d=True)
            # Decode the last two seconds too: damage at the end is the common case (interrupted copies).
            # Ogg and MP3 headers may overstate the length by a few milliseconds, so up to one second of
            # shortfall is tolerated; a truncated file falls short by far more or fails to decode at all.
            block = min(info.frames, 2 * info.sample_rate)
            snd.seek(info.frames - block)
            tail = snd.read(block, dtype="float32", always_2d=True)
            if len(head) == 0 or block - len(tail) > info.sample_rate:
                raise AudioRejected(
                    RejectReason.CORRUPT,
                    f"decoding stops before the {info.frames} samples the header announces",
                )
    except AudioRejected:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        reason = RejectReason.CORRUPT if looks_like_audio else RejectReason.NOT_AUDIO
        raise AudioRejected(reason, f"{type(exc).__name__}: {exc}") from exc
    return info
