"""The MFCC front end on synthetic audio: the vector's layout, prefix decoding, padding, bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import scipy.signal

from pipelines.audio import AudioRejected, RejectReason
from pipelines.features import frontend
from pipelines.features.frontend import decode, frames_to_vector, mfcc_frames, track_vector
from pipelines.features.params import FeatureParams
from tests.pipelines.features.library import bad_files
from tests.synth import SR, noise, tone, write

PARAMS = FeatureParams()


@pytest.fixture(scope="module")
def long_tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("long")
    tracks = {}
    for fmt, sr in (("wav", SR), ("flac", SR), ("ogg", 44100)):  # Ogg at 44.1 kHz: the resampling path too
        music = tone(220, 14.0, sr=sr, harmonics=4) + noise(14.0, sr=sr, amp=0.05, seed=3)
        tracks[fmt] = write(root / f"music.{fmt}", music, sr=sr)
    return tracks


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_bytes_and_path_give_the_same_vector(long_tracks: dict[str, Path], fmt: str) -> None:
    path = long_tracks[fmt]
    from_path = track_vector(path, PARAMS)
    from_bytes = track_vector(path.read_bytes(), PARAMS)
    assert from_path.vector.dtype == np.float32 and from_path.vector.shape == (PARAMS.n_frames * PARAMS.n_mfcc,)
    assert from_path.frames_real == from_bytes.frames_real == PARAMS.n_frames
    np.testing.assert_array_equal(from_path.vector, from_bytes.vector)


@pytest.mark.parametrize("fmt", ["wav", "ogg"])
def test_prefix_decode_gives_the_full_decode_vector(long_tracks: dict[str, Path], fmt: str) -> None:
    """Reading only the prefix is an optimisation, never a different answer."""
    prefix = decode(long_tracks[fmt], PARAMS.sr, 0.0, PARAMS.duration_s)
    full = decode(long_tracks[fmt], PARAMS.sr)
    assert len(prefix) == pytest.approx(PARAMS.duration_s * PARAMS.sr, abs=2)
    assert len(full) == pytest.approx(14.0 * PARAMS.sr, abs=2)
    from_full = frames_to_vector(mfcc_frames(full, PARAMS), PARAMS.n_frames).vector
    np.testing.assert_allclose(track_vector(long_tracks[fmt], PARAMS).vector, from_full, atol=1e-3)


def test_vector_is_librosa_mfcc_frames_concatenated_frame_major(long_tracks: dict[str, Path]) -> None:
    audio = decode(long_tracks["wav"], PARAMS.sr, 0.0, PARAMS.duration_s)
    ref = librosa.feature.mfcc(
        y=audio, sr=PARAMS.sr, n_mfcc=PARAMS.n_mfcc, n_fft=PARAMS.n_fft, hop_length=PARAMS.hop, n_mels=PARAMS.n_mels
    )
    ref = ref[:, : PARAMS.n_frames]  # the prefix holds half a window more, so the last frame sees real audio
    assert ref.shape == (PARAMS.n_mfcc, PARAMS.n_frames)
    vec = track_vector(long_tracks["wav"], PARAMS).vector
    np.testing.assert_allclose(vec.reshape(PARAMS.n_frames, PARAMS.n_mfcc), ref.T, rtol=1e-4, atol=1e-3)


# Two float32 computations of the same MFCCs differ by the FFT and matrix-product kernels the CPU selects
# (and by float32 against float64 FFTs): measured at most 2 float32 ulps of the largest coefficient. A wrong
# mel basis, window or dB range moves them by 5,000 ulps or more (the perturbation tests below). 128 ulps,
# 1.5e-5 of the largest coefficient, sits between the two with a wide margin on both sides.
F32_EPS = float(np.finfo(np.float32).eps)
DRIFT_ULPS = 128
SMALL = FeatureParams(sr=16000, n_fft=1024, hop=256, n_mels=64, n_mfcc=13, n_frames=100)


def mfcc_tolerance(reference: np.ndarray) -> float:
    """The absolute tolerance for MFCCs like ``reference``: ``DRIFT_ULPS`` float32 ulps of its largest value."""
    return DRIFT_ULPS * F32_EPS * float(np.abs(reference).max())


def assert_same_mfcc(got: np.ndarray, want: np.ndarray) -> None:
    """The same front end, on any CPU: equal within float32 rounding of the MFCCs' scale, not bit for bit."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=mfcc_tolerance(want))


def _librosa_frames(
    audio: np.ndarray,
    params: FeatureParams,
    *,
    window: str | np.ndarray = "hann",
    htk: bool = False,
    fmax: float | None = None,
    n_mels: int | None = None,
    top_db: float | None = 80.0,
    ref: float | Callable[[np.ndarray], float] = 1.0,
    fft64: bool = False,
    mel64: bool = False,
) -> np.ndarray:
    """librosa's own steps, with the 80 dB range taken over the frames kept as the front end documents.

    The keywords change one step: a different window, mel basis or dB range (a wrong front end), or the
    same computation at a higher precision (``fft64``, ``mel64``: drift of the kind CPUs differ by).
    """
    signal = audio.astype(np.float64) if fft64 else audio
    stft = librosa.stft(signal, n_fft=params.n_fft, hop_length=params.hop, window=window)
    spec = (np.abs(stft[:, : params.n_frames]) ** 2).astype(np.float32)
    basis = librosa.filters.mel(sr=params.sr, n_fft=params.n_fft, n_mels=n_mels or params.n_mels, htk=htk, fmax=fmax)
    mel = (basis.astype(np.float64) @ spec.astype(np.float64)).astype(np.float32) if mel64 else basis @ spec
    db = librosa.power_to_db(mel, ref=ref, top_db=top_db)
    return librosa.feature.mfcc(S=db, n_mfcc=params.n_mfcc).T


@pytest.mark.parametrize("params", [PARAMS, SMALL])
@pytest.mark.parametrize("fmt", ["wav", "ogg"])
def test_mfcc_is_librosa_within_float32_rounding(long_tracks: dict[str, Path], fmt: str, params: FeatureParams) -> None:
    """The numpy/scipy.fft front end gives librosa's numbers, so vectors stored before it still match.

    Within ``DRIFT_ULPS`` of the MFCCs' scale, not bit for bit: the FFT and BLAS kernels differ by CPU.
    """
    basis = librosa.filters.mel(sr=params.sr, n_fft=params.n_fft, n_mels=params.n_mels)
    ours_basis = frontend._mel_basis(params.sr, params.n_fft, params.n_mels)
    np.testing.assert_allclose(ours_basis, basis, rtol=0, atol=4 * F32_EPS * float(basis.max()))
    for audio in (decode(long_tracks[fmt], params.sr, 0.0, params.duration_s), noise(0.3, sr=params.sr, seed=4)):
        ours = mfcc_frames(audio.astype(np.float32), params)
        assert ours.shape == (min(params.n_frames, 1 + len(audio) // params.hop), params.n_mfcc)
        assert_same_mfcc(ours, _librosa_frames(audio.astype(np.float32), params))


def _signals(params: FeatureParams) -> dict[str, np.ndarray]:
    """A pure tone (its spectrum spans more than 80 dB, so the dB floor acts) and a tone in noise."""
    return {
        "tone": tone(1000, 3.0, sr=params.sr, amp=0.9),
        "music": tone(220, 3.0, sr=params.sr, harmonics=4) + noise(3.0, sr=params.sr, amp=0.05, seed=3),
    }


@pytest.mark.parametrize("params", [PARAMS, SMALL])
@pytest.mark.parametrize(
    "drift", [{"fft64": True}, {"mel64": True}, {"fft64": True, "mel64": True}], ids=["fft64", "mel64", "both"]
)
def test_tolerance_admits_the_drift_between_cpus(params: FeatureParams, drift: dict[str, bool]) -> None:
    """A float64 FFT or mel product instead of float32 (more than any two CPUs' kernels differ) passes."""
    for audio in _signals(params).values():
        assert_same_mfcc(_librosa_frames(audio, params, **drift), _librosa_frames(audio, params))


WRONG_FRONT_ENDS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    # name: (the changed step, the signals on which it must fail the tolerance)
    "htk_mel_scale": ({"htk": True}, ("tone", "music")),
    "fmax_0.9_nyquist": ({"fmax": "0.9"}, ("tone", "music")),
    "n_mels_minus_8": ({"n_mels": -8}, ("tone", "music")),
    "hamming_window": ({"window": "hamming"}, ("tone", "music")),
    "symmetric_hann_window": ({"window": "symmetric_hann"}, ("tone", "music")),
    "top_db_79": ({"top_db": 79.0}, ("tone",)),
    "no_top_db": ({"top_db": None}, ("tone",)),
    "ref_max": ({"ref": np.max}, ("tone", "music")),
}


def _resolve(change: dict[str, Any], params: FeatureParams) -> dict[str, Any]:
    """Turn the relative settings of ``WRONG_FRONT_ENDS`` into librosa arguments for ``params``."""
    kwargs = dict(change)
    if kwargs.get("fmax") == "0.9":
        kwargs["fmax"] = 0.9 * params.sr / 2
    if "n_mels" in kwargs:
        kwargs["n_mels"] = params.n_mels + kwargs["n_mels"]
    if kwargs.get("window") == "symmetric_hann":
        kwargs["window"] = scipy.signal.windows.hann(params.n_fft, sym=True)
    return kwargs


@pytest.mark.parametrize("params", [PARAMS, SMALL])
@pytest.mark.parametrize("wrong", sorted(WRONG_FRONT_ENDS))
def test_tolerance_catches_a_wrong_front_end(params: FeatureParams, wrong: str) -> None:
    """The tolerance is tight enough: a wrong mel basis, window, dB range or reference fails it."""
    change, signals = WRONG_FRONT_ENDS[wrong]
    kwargs = _resolve(change, params)
    for name in signals:
        audio = _signals(params)[name]
        right, perturbed = _librosa_frames(audio, params), _librosa_frames(audio, params, **kwargs)
        ulps = np.abs(perturbed - right).max() / (F32_EPS * np.abs(right).max())
        assert ulps > DRIFT_ULPS, f"{wrong} on {name}: {ulps:.0f} ulps"
        with pytest.raises(AssertionError):
            assert_same_mfcc(perturbed, right)


def test_the_tone_exercises_the_db_floor_and_the_music_does_not() -> None:
    """Why the dB-range perturbations are checked on the tone only: the music spans less than 80 dB."""
    for params in (PARAMS, SMALL):
        signals = _signals(params)
        tone_right = _librosa_frames(signals["tone"], params)
        assert np.abs(_librosa_frames(signals["tone"], params, top_db=None) - tone_right).max() > 1.0
        music = signals["music"]
        np.testing.assert_array_equal(_librosa_frames(music, params, top_db=None), _librosa_frames(music, params))


def test_front_end_does_not_import_librosa() -> None:
    """A decoding child's first MFCC must not pay librosa's imports (scipy.signal, numba): seconds per query."""
    code = (
        "import sys, numpy as np; from pipelines.features.frontend import mfcc_frames;"
        "from pipelines.features.params import FeatureParams;"
        "mfcc_frames(np.ones(22050, np.float32), FeatureParams());"
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_offset_skips_the_start(tmp_path: Path) -> None:
    intro_then_music = np.concatenate([noise(5.0, seed=1), tone(440, 12.0, harmonics=2)])
    path = write(tmp_path / "intro.wav", intro_then_music)
    skipped = FeatureParams(offset_s=5.0, n_frames=100)
    music_only = write(tmp_path / "music.wav", tone(440, 12.0, harmonics=2))
    np.testing.assert_allclose(
        track_vector(path, skipped).vector,
        track_vector(music_only, skipped.model_copy(update={"offset_s": 0.0})).vector,
        atol=1e-2,
    )
    late = track_vector(music_only, FeatureParams(offset_s=60.0, n_frames=100))  # 12 s track: its last 2.3 s
    assert late.frames_real == 100
    end = FeatureParams(offset_s=12.0 - FeatureParams(n_frames=100).duration_s, n_frames=100)
    np.testing.assert_allclose(late.vector, track_vector(music_only, end).vector, atol=1e-2)


def test_short_track_is_padded_and_the_padding_recorded(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", tone(300, 2.0, harmonics=2))
    vec = track_vector(path, PARAMS)
    real = 1 + (2 * SR) // PARAMS.hop
    assert vec.frames_real == real < PARAMS.n_frames
    frames = vec.vector.reshape(PARAMS.n_frames, PARAMS.n_mfcc)
    np.testing.assert_array_equal(frames[real : 2 * real], frames[:real])  # padded by looping real frames
    assert np.isfinite(frames).all()


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, RejectReason]:
    return bad_files(tmp_path_factory.mktemp("bad"))


def test_each_kind_of_bad_input_gets_its_reason(broken: dict[Path, RejectReason]) -> None:
    for path, reason in broken.items():
        for source in (path, path.read_bytes()):
            with pytest.raises(AudioRejected) as err:
                track_vector(source, PARAMS)
            assert err.value.reason == reason, f"{path.name}: {err.value}"


def test_size_limit_and_unreadable_path(long_tracks: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(AudioRejected) as err:
        track_vector(long_tracks["flac"], PARAMS, max_bytes=1000)
    assert err.value.reason == RejectReason.TOO_LARGE
    with pytest.raises(AudioRejected) as err:
        track_vector(tmp_path / "missing.wav", PARAMS)
    assert err.value.reason == RejectReason.UNREADABLE


def test_vectors_of_a_style_are_closer_to_each_other_than_to_another_style(tmp_path: Path) -> None:
    """The raw vector already carries timbre: the method's premise, checked on clearly different sounds."""
    low = [
        track_vector(write(tmp_path / f"low{i}.wav", tone(110 + 20 * i, 11.0, harmonics=4)), PARAMS) for i in range(3)
    ]
    hiss = [track_vector(write(tmp_path / f"n{i}.wav", noise(11.0, seed=i)), PARAMS) for i in range(3)]
    unit = [v.vector / np.linalg.norm(v.vector) for v in low + hiss]
    sim = np.array([[a @ b for b in unit] for a in unit])
    within = min(sim[0, 1], sim[0, 2], sim[1, 2], sim[3, 4], sim[3, 5], sim[4, 5])
    across = sim[:3, 3:].max()
    assert within > across
