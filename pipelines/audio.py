"""Reading audio files safely: probing, hashing and classifying what is wrong with a bad file.

Catalogue import and the feature front end both need to tell "this is a track" from "this is junk", and
to say *why* a file was refused, so the reasons live here in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

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
    UNDECODABLE_NAME = "undecodable_name"


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


def looks_like_audio(head: bytes) -> bool:
    """True when the first bytes are a container the front end decodes (WAV/RF64, Ogg, FLAC, MP3, AIFF)."""
    return head.startswith(_MAGIC) or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0)


# Containers libsndfile would decode but the platform does not take (uploads refuse them too), by magic.
_OTHER_CONTAINERS = {b".snd": "Sun/NeXT AU", b"caff": "Apple CAF", b"wvpk": "WavPack", b"MThd": "MIDI"}


def other_container(head: bytes) -> str | None:
    """The name of a known audio container the platform does not take, from a file's first bytes."""
    return next((name for magic, name in _OTHER_CONTAINERS.items() if head.startswith(magic)), None)


def refuse_other_container(head: bytes) -> None:
    """Refuse (``unsupported_format``) a known container the platform does not take, whatever the file's name.

    The one check import, the feature build and uploads share, so a file is refused for the same reason on
    every path.
    """
    if not looks_like_audio(head) and (other := other_container(head)):
        detail = f"the content is {other}, whatever its name says; convert it to FLAC, WAV, Ogg or MP3"
        raise AudioRejected(RejectReason.UNSUPPORTED_FORMAT, detail)


def decode_failure(exc: BaseException, is_audio: bool) -> AudioRejected:
    """The rejection for a decoder error: damage when the bytes looked like audio, never audio otherwise;
    a channel count the decoder cannot hold is a format out of range."""
    message = decoder_message(exc)
    reason = RejectReason.CORRUPT if is_audio else RejectReason.NOT_AUDIO
    if "Too many channels" in message:
        reason = RejectReason.UNSUPPORTED_FORMAT
    return AudioRejected(reason, message)


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(4)


def wav_shortfall(fh: BinaryIO, size: int) -> int:
    """Bytes missing from a RIFF/WAVE file's data chunk; 0 if complete or not a WAV.

    libsndfile silently shortens a truncated WAV to what is on disk, so only the header can tell.
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return 0
    rf64_data: int | None = None  # RF64 keeps the real data size in its ds64 chunk (the data chunk says -1)
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        chunk = fh.read(8)
        chunk_size = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"ds64":
            ds64 = fh.read(16)
            rf64_data = int.from_bytes(ds64[8:16], "little") if len(ds64) == 16 else None
        if chunk[:4] == b"data":
            if head[:4] == b"RF64" and chunk_size == 0xFFFFFFFF and rf64_data is not None:
                chunk_size = rf64_data
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
        head = _head(path)
    except OSError as exc:
        raise AudioRejected(RejectReason.UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    refuse_other_container(head)
    is_audio = looks_like_audio(head)
    if is_audio and (shortfall := _wav_missing_bytes(path, size)):
        raise AudioRejected(RejectReason.CORRUPT, f"WAV data chunk is {shortfall} bytes shorter than its header says")
    try:
        # A file object, not the name: libsndfile refuses names over its own limit (about 1,000 bytes)
        # that the OS takes (up to 4,096), and such a file would be classed corrupt.
        with decoder_output(str(path)), path.open("rb") as raw, sf.SoundFile(raw) as snd:
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
        raise decode_failure(exc, is_audio) from exc
    return info


# ------------------------------------------------------------------ what C decoders print on the process's fd 2

# Set by the CLI for the length of one command: a file its processes append one JSON line per decoder report to.
DECODER_TALLY_ENV = "MUSICREC_DECODER_TALLY"

# mpg123 (libsndfile's MP3 decoder) prints "[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: ..." and a
# few unprefixed notes ("Note: Illegal Audio-MPEG-Header ...", "Skipped 12 bytes in input.").
_DECODER_LINE = re.compile(
    rb"^\[[^\]\s]*\.c:[^\]]*\]|^(?:Note|Warning|Error): |^Skipped \d+ bytes in input|^Big trouble"
)
_DECODER_PREFIX = re.compile(r"^\[[^\]]*\]\s*(?:error:\s*)?")
_CAPTURE_LIMIT = 1 << 20  # bytes of captured output looked at per decode
_capture_lock = threading.RLock()
_capture_depth = 0
_capture_sink: int | None = None
_reported: set[str] = set()


def _reset_after_fork() -> None:
    """A forked child gets its own lock and capture file: the parent's may be held, or in use, at the fork."""
    global _capture_lock, _capture_depth, _capture_sink
    _capture_lock, _capture_depth, _capture_sink = threading.RLock(), 0, None


os.register_at_fork(after_in_child=_reset_after_fork)


@contextlib.contextmanager
def decoder_output(name: str) -> Iterator[None]:
    """Collect what C decoders write straight to fd 2 while ``name`` decodes, and report it as one line.

    mpg123 (inside libsndfile) prints a line per damaged frame, common when seeking into an MP3, to the
    process's stderr, past Python's logging. Inside this block fd 2 goes to a private file; afterwards its
    decoder lines become one report (:func:`report_decoder_lines`) and anything else is written back to
    stderr unchanged. fd 2 is the whole process's, so blocks run one at a time; nested blocks share one.
    """
    global _capture_depth
    with _capture_lock:
        saved = _redirect_fd2() if _capture_depth == 0 else None
        _capture_depth += 1
        try:
            yield
        finally:
            _capture_depth -= 1
            if saved is not None and (captured := _restore_fd2(saved)):
                report_decoder_lines(name, captured)


def _redirect_fd2() -> int | None:
    """Point fd 2 at the (emptied) capture file; the saved fd 2, or None when there is none to redirect."""
    global _capture_sink
    try:
        if _capture_sink is None:
            with tempfile.TemporaryFile(buffering=0) as fh:  # an unlinked file: a pipe could fill and block
                _capture_sink = os.dup(fh.fileno())
        saved = os.dup(2)
    except OSError:
        return None
    os.ftruncate(_capture_sink, 0)
    os.lseek(_capture_sink, 0, os.SEEK_SET)
    _flush_stderr()
    os.dup2(_capture_sink, 2)
    return saved


def _restore_fd2(saved: int) -> bytes:
    """Give fd 2 back and return what was written to it meanwhile (its first ``_CAPTURE_LIMIT`` bytes)."""
    _flush_stderr()
    os.dup2(saved, 2)
    os.close(saved)
    assert _capture_sink is not None
    return os.pread(_capture_sink, _CAPTURE_LIMIT, 0)


def _flush_stderr() -> None:
    with contextlib.suppress(Exception):  # a closed or replaced sys.stderr has nothing of ours to flush
        if sys.stderr is not None:
            sys.stderr.flush()


def report_decoder_lines(name: str, output: bytes) -> int:
    """Report the decoder lines in ``output`` (written to fd 2 while ``name`` decoded); the rest goes to stderr.

    Under the CLI (``MUSICREC_DECODER_TALLY`` names an existing file) the count is appended there for the
    command's one summary line and logged at INFO; elsewhere (Airflow tasks, the API) it is logged as one
    WARNING per file and process, further reports at INFO. Returns the number of decoder lines.
    """
    lines = output.splitlines()
    noise = [line for line in lines if _DECODER_LINE.match(line)]
    other = [line for line in lines if line.strip() and not _DECODER_LINE.match(line)]
    if other:
        with contextlib.suppress(OSError):
            os.write(2, b"\n".join(other) + b"\n")
    if not noise:
        return 0
    first = _DECODER_PREFIX.sub("", noise[0].decode(errors="replace")).strip()
    tallied = _tally(name, len(noise), first)
    level = logging.INFO if tallied or name in _reported else logging.WARNING
    _reported.add(name)
    log.log(level, "%s: %d audio decoder message(s), the first: %s", name, len(noise), first)
    return len(noise)


def _tally(name: str, count: int, first: str) -> bool:
    """Append one report to the command's tally file; False when there is none (not under the CLI)."""
    path = os.environ.get(DECODER_TALLY_ENV)
    if not path:
        return False
    record = json.dumps({"file": name, "count": count, "first": first[:300]}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # no O_CREAT: a command that ended removed it
    except OSError:
        return False
    try:
        os.write(fd, record.encode())
    finally:
        os.close(fd)
    return True


def decoder_summary(tally: Path) -> str | None:
    """One line for every decoder report in ``tally``, or None when there were none.

    Reports of the same file (several decodes, several processes) count once as a file.
    """
    try:
        text = tally.read_text(errors="replace")
    except OSError:
        return None
    per_file: dict[str, int] = {}
    first: dict[str, str] = {}
    for line in text.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            per_file[record["file"]] = per_file.get(record["file"], 0) + int(record["count"])
            first.setdefault(record["file"], str(record["first"]))
    if not per_file:
        return None
    name = next(iter(per_file))
    files = len(per_file)
    more = f" and {files - 1} more file{'s' if files > 2 else ''}" if files > 1 else ""
    total = sum(per_file.values())
    return (
        f"the audio decoder reported {total} problem{'s' if total > 1 else ''} in {files} "
        f"file{'s' if files > 1 else ''}: {name}: {first[name]}{more} (damaged frames, or frames cut by a "
        "seek; a file that does not decode is counted as rejected or quarantined)"
    )


def decoder_message(exc: BaseException) -> str:
    """A decoder error as one plain line: no object reprs, no libsndfile guesses such as "possibly a pipe?"."""
    text = re.sub(r"Error opening <[^>]*>: ", "", str(exc))
    text = re.sub(r"Error opening '[^']*': ", "", text)
    text = text.replace(" (possibly a pipe?)", "").replace("possibly a pipe?", "")
    # libsndfile says this of a file it cannot recognise, though the file exists and is regular
    text = text.replace("File does not exist or is not a regular file.", "not decodable audio (no format recognised)")
    return f"{type(exc).__name__}: {' '.join(text.split())}"
