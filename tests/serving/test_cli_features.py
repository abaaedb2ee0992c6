"""``musicrec features build|show`` as a user runs them: a subprocess, what it prints, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests import synth


def _musicrec(args: list[str], data_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(data_root), **env}
    cmd = [sys.executable, "-c", "from serving.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=300)


def test_build_prints_counts_and_a_rerun_skips_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synth.style_tree(tmp_path / "lib", per_style=2, seconds=2.0)
    synth.write(tmp_path / "lib" / "noise" / "quiet.wav", np.zeros(22050, np.float32))
    assert _musicrec(["catalogue", "import", str(tmp_path / "lib")], data).returncode == 0

    first = _musicrec(["features", "build", "--shards", "2"], data)
    assert first.returncode == 0, first.stderr
    assert "6 embedded, 0 skipped (already stored), 1 quarantined (1 silent)" in first.stdout
    again = _musicrec(["features", "build"], data)
    assert "0 embedded, 6 skipped (already stored), 0 quarantined, 1 still quarantined" in again.stdout

    show = _musicrec(["features", "show"], data, MUSICREC_FEATURES__N_MFCC="13")
    old, new = sorted(show.stdout.splitlines()[1:], key=lambda line: "n_mfcc=13" in line)
    assert old.startswith("  ") and "6 rows; quarantined: 1 silent; N=430 n_mfcc=20" in old
    assert new.startswith("* ") and "0 rows; quarantined: none" in new, "the current version is marked"


def test_build_without_a_catalogue_is_a_one_line_error(tmp_path: Path) -> None:
    out = _musicrec(["features", "build"], tmp_path / "data")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no catalogue manifest" in out.stderr
