"""Reading audio files safely: probing, hashing and classifying what is wrong with a bad file.

Catalogue import and the feature front end both need to tell "this is a track" from "this is junk", and
to say *why* a file was refused, so the reasons live here in one place.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import numpy as np
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
    INVALID_TRACK_ID = "invalid_track_id"
    SILENT = "silent"
    TIMEOUT = "decode_timeout"
    TOO_SHORT = "too_short"
    DOUBTFUL_STYLE = "doubtful_style"
    NON_FINITE = "non_finite_samples"
    NOT_REGULAR_FILE = "not_regular_file"
    UNSUPPORTED_FORMAT = "unsupported_format"


@dataclass(frozen=True)
class AudioRule:
    """What every path (import, feature build, upload) requires of audio before it may become a vector.

    One rule so that a file accepted at import is never refused later for a reason import could have seen,
    and an upload is held to the same bar as the catalogue it is compared with.
    """

    min_duration_s: float = 1.0  # shorter audio gives too few frames to describe a timbre
    min_sample_rate: int = 4000
    max_sample_rate: int = 384_000
    max_channels: int = 16

    def check_shape(self, frames: int, sample_rate: int, channels: int) -> None:
        """Raise :class:`AudioRejected` unless the sample rate, channel count and duration are in range."""
        if not self.min_sample_rate <= sample_rate <= self.max_sample_rate:
            raise AudioRejected(
                RejectReason.UNSUPPORTED_FORMAT,
                f"sample rate {sample_rate} Hz is outside {self.min_sample_rate}..{self.max_sample_rate} Hz",
            )
        if not 1 <= channels <= self.max_channels:
            raise AudioRejected(
                RejectReason.UNSUPPORTED_FORMAT, f"{channels} channels; 1..{self.max_channels} are supported"
            )
        if frames / sample_rate < self.min_duration_s:
            raise AudioRejected(
                RejectReason.TOO_SHORT,
                f"{frames / sample_rate:.2f} s of audio, at least {self.min_duration_s:.2f} s are needed",
            )

    @staticmethod
    def check_finite(samples: np.ndarray) -> None:
        """Raise :class:`AudioRejected` if any decoded sample is NaN or infinite (float WAVs can hold them)."""
        if not np.isfinite(samples).all():
            bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
            raise AudioRejected(RejectReason.NON_FINITE, f"{bad} decoded samples are NaN or infinite")

    def check_finite_file(self, snd: sf.SoundFile, block: int = 1 << 16) -> None:
        """Check every sample of a float-coded file (only those can hold NaN or inf); leaves the position at 0.

        Integer PCM, FLAC, Vorbis, Opus and MP3 decode to finite numbers by construction, so for them this
        costs nothing; float WAV/AIFF are read at memory speed.
        """
        if snd.subtype not in FLOAT_SUBTYPES:
            return
        snd.seek(0)
        while len(chunk := snd.read(block, dtype="float32", always_2d=True)):
            self.check_finite(chunk)
        snd.seek(0)


AUDIO_RULE = AudioRule()
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_size(path: Path | str) -> int:
    """The size of ``path`` if it is (or links to) a regular file; raises :class:`AudioRejected` otherwise.

    Checked before anything opens the path: opening a FIFO blocks, and a device such as /dev/zero never ends.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AudioRejected(RejectReason.UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise AudioRejected(RejectReason.NOT_REGULAR_FILE, f"{_kind(st.st_mode)}, not a regular file")
    return st.st_size


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


def probe(path: Path, max_bytes: int | None = None, rule: AudioRule = AUDIO_RULE) -> AudioInfo:
    """Check that ``path`` is decodable audio from start to end that meets ``rule``, and return its shape.

    A header alone is not enough: truncated files often have valid headers, so one block at the start and
    one at the end are actually decoded (and must be finite). Raises :class:`AudioRejected` otherwise.
    """
    size = regular_file_size(path)
    try:
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
            rule.check_shape(info.frames, info.sample_rate, info.channels)
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
            rule.check_finite(head)
            rule.check_finite(tail)
            rule.check_finite_file(snd)
    except AudioRejected:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        reason = RejectReason.CORRUPT if looks_like_audio else RejectReason.NOT_AUDIO
        raise AudioRejected(reason, decoder_message(exc)) from exc
    return info


def decoder_message(exc: BaseException) -> str:
    """A decoder error as one plain line: no object reprs, no libsndfile guesses such as "possibly a pipe?"."""
    text = re.sub(r"Error opening <[^>]*>: ", "", str(exc))
    text = re.sub(r"Error opening '[^']*': ", "", text)
    text = text.replace(" (possibly a pipe?)", "").replace("possibly a pipe?", "")
    return f"{type(exc).__name__}: {' '.join(text.split())}"
