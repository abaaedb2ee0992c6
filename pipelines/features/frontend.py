"""The MFCC front end: decode only the audio the first N frames need, frame it, concatenate MFCCs.

The same function embeds catalogue files (feature store), training windows, and audio uploaded to the
serving API, so a query is always embedded exactly like the catalogue it is compared with.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr

from pipelines.audio import AudioRejected, RejectReason
from pipelines.features.params import FeatureParams

AudioSource = Path | str | bytes

# Below this RMS level (dB relative to full scale) a prefix is treated as silence, not music.
SILENCE_FLOOR_DB = -60.0


@dataclass(frozen=True)
class TrackVector:
    """One track's feature vector, frame-major: ``vector[f * n_mfcc + c]`` is coefficient c of frame f."""

    vector: np.ndarray  # float32, (n_frames * n_mfcc,)
    frames_real: int  # frames computed from real audio; the rest (up to n_frames) are padding


def _open(source: AudioSource) -> sf.SoundFile:
    if isinstance(source, bytes):
        if not source:
            raise AudioRejected(RejectReason.EMPTY_FILE, "no bytes")
        return sf.SoundFile(io.BytesIO(source))
    return sf.SoundFile(str(source))


def decode(
    source: AudioSource, sr: int, offset_s: float = 0.0, duration_s: float | None = None
) -> np.ndarray:
    """Mono float32 audio at ``sr`` from ``offset_s`` for ``duration_s`` seconds (None: to the end).

    Seeks and reads only the requested span, so embedding a 10 s prefix of an 8-minute file costs the
    decoding of 10 s, not 8 minutes.
    """
    try:
        with _open(source) as snd:
            native = snd.samplerate
            start = round(offset_s * native)
            if start >= snd.frames > 0:
                raise AudioRejected(
                    RejectReason.ZERO_LENGTH, f"offset {offset_s}s is past the end of the audio"
                )
            if start:
                snd.seek(start)
            count = -1 if duration_s is None else math.ceil(duration_s * native)
            audio = snd.read(count, dtype="float32", always_2d=True)
    except AudioRejected:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioRejected(RejectReason.CORRUPT, f"{type(exc).__name__}: {exc}") from exc
    if len(audio) == 0:
        raise AudioRejected(RejectReason.ZERO_LENGTH, "no samples decoded")
    mono = audio.mean(axis=1)
    if native != sr:
        mono = soxr.resample(mono, native, sr, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def rms_db(audio: np.ndarray) -> float:
    """Loudness of a signal in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


def mfcc_frames(audio: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Per-frame MFCCs, shape (frames, n_mfcc), float32."""
    mfcc = librosa.feature.mfcc(
        y=audio,
        sr=params.sr,
        n_mfcc=params.n_mfcc,
        n_fft=params.n_fft,
        hop_length=params.hop,
        n_mels=params.n_mels,
    )
    return np.ascontiguousarray(mfcc.T, dtype=np.float32)


def frames_to_vector(frames: np.ndarray, n_frames: int) -> TrackVector:
    """Concatenate the first ``n_frames`` frames; a short track is padded by looping its own frames.

    Looping keeps padded frames in the distribution of real music (zeros in MFCC space are not silence);
    ``frames_real`` records how many frames were real so consumers can weigh or filter short tracks.
    """
    real = min(len(frames), n_frames)
    if real == 0:
        raise AudioRejected(RejectReason.ZERO_LENGTH, "no frames")
    taken = frames[:real]
    if real < n_frames:
        taken = np.resize(taken, (n_frames, frames.shape[1]))
    return TrackVector(vector=taken.reshape(-1).astype(np.float32, copy=False), frames_real=real)


def track_vector(
    source: AudioSource, params: FeatureParams, silence_floor_db: float = SILENCE_FLOOR_DB
) -> TrackVector:
    """The feature vector of a file path or raw audio bytes: the method's step one, end to end."""
    audio = decode(source, params.sr, params.offset_s, params.duration_s)
    level = rms_db(audio)
    if level < silence_floor_db:
        raise AudioRejected(
            RejectReason.SILENT, f"level {level:.1f} dBFS is below the {silence_floor_db} dBFS floor"
        )
    return frames_to_vector(mfcc_frames(audio, params), params.n_frames)
