"""A long silent intro: the first N frames of the music are embedded, not refused as silent; a track silent
throughout still is, and a track with sound from the start gives the vector it always gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.audio import AudioRejected, RejectReason
from pipelines.features.frontend import track_vector
from pipelines.features.params import FeatureParams
from tests import synth

PARAMS = FeatureParams(n_frames=64)


def test_a_12_s_silent_intro_is_skipped(tmp_path: Path) -> None:
    music = synth.tone(330.0, 8.0, harmonics=4)
    plain = synth.write(tmp_path / "plain.wav", music)
    intro = synth.write(tmp_path / "intro.wav", np.concatenate([np.zeros(12 * synth.SR, np.float32), music]))
    skipped, direct = track_vector(intro, PARAMS), track_vector(plain, PARAMS)
    assert skipped.frames_real == PARAMS.n_frames
    np.testing.assert_array_equal(skipped.vector, direct.vector)  # the intro ends on a block boundary


def test_silence_throughout_is_still_refused(tmp_path: Path) -> None:
    quiet = synth.write(tmp_path / "quiet.wav", np.full(20 * synth.SR, 1e-5, np.float32))
    with pytest.raises(AudioRejected) as err:
        track_vector(quiet, PARAMS)
    assert err.value.reason == RejectReason.SILENT and "silent throughout" in err.value.detail


def test_a_track_with_sound_from_the_start_is_unchanged(tmp_path: Path) -> None:
    music = synth.noise(6.0, seed=3, colour=0.5)
    path = synth.write(tmp_path / "noise.wav", music)
    again = synth.write(
        tmp_path / "noise_then_silence.wav", np.concatenate([music, np.zeros(5 * synth.SR, np.float32)])
    )
    np.testing.assert_array_equal(track_vector(path, PARAMS).vector, track_vector(again, PARAMS).vector)
