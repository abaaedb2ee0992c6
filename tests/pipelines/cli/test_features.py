"""``musicrec features build|show`` as a user runs them: a subprocess, what it prints, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.catalogue.manifest import MANIFEST_SCHEMA, read_table
from pipelines.features.params import FeatureParams
from pipelines.settings import Settings
from tests import synth


def _musicrec(args: list[str], data_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(data_root), **env}
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=300)


def test_build_prints_counts_and_a_rerun_skips_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synth.style_tree(tmp_path / "lib", per_style=2, seconds=2.0)
    synth.write(tmp_path / "lib" / "noise" / "quiet.wav", np.zeros(22050, np.float32))
    assert _musicrec(["catalogue", "import", str(tmp_path / "lib")], data).returncode == 0

    first = _musicrec(["features", "build", "--shards", "2"], data)
    assert first.returncode == 0, first.stderr
    assert "6 embedded, 0 skipped (already stored), 1 quarantined (1 silent)" in first.stdout
    shown = _musicrec(["catalogue", "show"], data).stdout.splitlines()
    rows = {line.split()[0]: int(line.split()[1]) for line in shown[1:-1]}
    assert rows["noise"] == 2 and rows["TOTAL"] == 6, "a quarantined track is not listed as active"
    assert shown[-1].startswith("removed: 0; quarantined: 1 (1 silent; features "), shown[-1]
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
    assert not (tmp_path / "data" / "features" / "_staging").exists()


def test_a_killed_build_leaves_its_finished_shards_to_the_rerun_and_no_staging(tmp_path: Path) -> None:
    """SIGKILL a real build once one shard is finished while the other hangs on a file, then run it again."""
    data = tmp_path / "data"
    lib = tmp_path / "lib"
    tones = [synth.write(lib / "tones" / f"t{i}.wav", synth.tone(220 + 70 * i, 2.0)) for i in range(5)]
    assert _musicrec(["catalogue", "import", str(lib)], data).returncode == 0
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(data), "MUSICREC_DECODE_TIMEOUT_S": "120"}
    env["MUSICREC_FEATURES__N_FRAMES"] = "64"
    staging = data / "features" / "_staging"
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", "features", "build", "--shards", "2"]
    # Round robin over sorted track ids: the shard holding the middle file also holds the hanging one.
    with synth.hanging_open(tones[2]):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list(staging.glob("*/shard-*.done.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no shard finished"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = json.loads(next(staging.glob("*/shard-*.done.json")).read_text())
    assert len(list(staging.glob("*/shard-*.done.json"))) == 1 and finished["embedded"] >= 1

    again = _musicrec(["features", "build", "--shards", "2"], data, MUSICREC_FEATURES__N_FRAMES="64")
    assert again.returncode == 0, again.stderr
    recomputed = 5 - finished["embedded"]
    line = f"{recomputed} embedded, {finished['embedded']} reused from an interrupted run, 0 skipped"
    assert line in again.stdout, again.stdout
    assert not staging.exists(), list(staging.rglob("*"))

    store = pd.read_parquet(data / "features" / f"version={FeatureParams(n_frames=64).version}")
    manifest = read_table(Settings(data_root=data).manifest_path, MANIFEST_SCHEMA)
    assert sorted(store["track_id"]) == sorted(manifest["track_id"]), "every active track exactly once"
    third = _musicrec(["features", "build"], data, MUSICREC_FEATURES__N_FRAMES="64")
    assert "0 embedded, 5 skipped (already stored)" in third.stdout
