"""Training windows: the front end at later offsets, cached by content and offset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.features.frontend import track_vector
from pipelines.features.params import FeatureParams
from pipelines.training.windows import build_windows, window_vector, windows_path
from tests.pipelines.training.synth_styles import track
from tests.synth import write

PARAMS = FeatureParams(n_frames=32)


def _library(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for i, (style, seconds) in enumerate([("plucks", 4.0), ("pads", 2.5)]):
        p = write(tmp_path / f"{style}.wav", track(style, seconds, seed=i))
        rows.append({"track_id": style, "path": str(p), "sha256": f"sha-{style}", "duration_s": seconds})
    return pd.DataFrame(rows)


def test_a_window_is_the_front_end_at_that_offset(tmp_path: Path) -> None:
    path = _library(tmp_path)["path"][0]
    got = window_vector(path, PARAMS, 1.5)
    expected = track_vector(path, PARAMS.model_copy(update={"offset_s": 1.5})).vector
    np.testing.assert_array_equal(got, expected)
    assert window_vector(path, PARAMS, 3.9) is None  # runs past the end: no padded windows for training


def test_windows_are_cached_and_missing_ones_skipped(tmp_path: Path) -> None:
    tracks = _library(tmp_path)
    root = tmp_path / "windows"
    first = build_windows(tracks, PARAMS, (1.0, 2.0), root)
    # pads is 2.5 s: 2.0 + 0.76 s of frames does not fit; plucks has both
    assert sorted(zip(first.track_ids, first.offsets.tolist(), strict=True)) == [
        ("pads", 1.0),
        ("plucks", 1.0),
        ("plucks", 2.0),
    ]
    path = windows_path(root, PARAMS)
    mtime = path.stat().st_mtime_ns
    again = build_windows(tracks, PARAMS, (1.0, 2.0), root)
    assert path.stat().st_mtime_ns == mtime  # nothing computed, nothing written
    np.testing.assert_array_equal(again.matrix, first.matrix)
    fewer = build_windows(tracks, PARAMS, (1.0,), root)
    assert len(fewer.track_ids) == 2
    # changed audio (new sha256) is a different window set
    changed = tracks.assign(sha256=["sha-new", "sha-pads"])
    assert "plucks" in build_windows(changed, PARAMS, (2.0,), root).track_ids
    assert path.stat().st_mtime_ns != mtime


def test_windows_computed_by_two_workers_equal_one(tmp_path: Path) -> None:
    tracks = _library(tmp_path)
    one = build_windows(tracks, PARAMS, (0.5, 1.0, 1.5), tmp_path / "one", workers=1)
    two = build_windows(tracks, PARAMS, (0.5, 1.0, 1.5), tmp_path / "two", workers=2)
    assert one.track_ids == two.track_ids and len(one.track_ids) >= 4
    np.testing.assert_array_equal(one.matrix, two.matrix)
    np.testing.assert_array_equal(one.offsets, two.offsets)
