"""The old index commands `musicrec catalogue refresh|rollback`: hidden, still working, with a note on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.features.build import FeatureBuild
from pipelines.index.milvus import TrackIndex
from pipelines.settings import PathSettings, Settings
from tests.pipelines.index.helpers import PARAMS_A, PARAMS_B, lib, refresh

__all__ = ["lib"]  # the fixture, imported for these tests

_MAIN = "from pipelines.cli.app import run; run()"


def _musicrec(args: list[str], settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.paths.data_root),
        "MUSICREC_MILVUS_URI": settings.paths.milvus_uri,
    }
    cmd = [sys.executable, "-c", _MAIN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**full, **env}, check=False, timeout=180)


def test_catalogue_refresh_runs_index_refresh_with_a_note(lib: Settings) -> None:
    settings = Settings(
        paths=PathSettings(data_root=lib.paths.data_root, milvus_uri=lib.paths.milvus_uri), features=PARAMS_A
    )
    FeatureBuild(settings=settings, shards=1).run()
    params = {"MUSICREC_FEATURES__N_FRAMES": "24", "MUSICREC_FEATURES__N_MFCC": "13"}
    out = _musicrec(["catalogue", "refresh", "--model-version", "raw"], settings, **params)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "note: `musicrec catalogue refresh` is deprecated; use `musicrec index refresh`"
    assert out.stdout.strip().startswith(f"built tracks__raw__{PARAMS_A.version} (model raw): 15 tracks")
    assert TrackIndex(lib.paths.milvus_uri).alias_target() == f"tracks__raw__{PARAMS_A.version}"


def test_catalogue_rollback_runs_index_rollback_with_a_note(lib: Settings) -> None:
    note = "note: `musicrec catalogue rollback` is deprecated; use `musicrec index rollback`"
    a = refresh(lib, PARAMS_A).collection
    refused = _musicrec(["catalogue", "rollback"], lib)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[0] == note and "no earlier collection" in refused.stderr.splitlines()[1]
    b = refresh(lib, PARAMS_B).collection
    out = _musicrec(["catalogue", "rollback"], lib)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == note
    assert out.stdout.strip() == f"alias tracks: {b} -> {a}"


def test_old_names_are_hidden_and_the_index_group_is_listed(tmp_path: Path) -> None:
    settings = Settings(paths=PathSettings(data_root=tmp_path))
    group = _musicrec(["catalogue", "--help"], settings)
    assert group.returncode == 0 and "import" in group.stdout
    assert "refresh" not in group.stdout and "rollback" not in group.stdout
    top = _musicrec(["--help"], settings)
    assert top.returncode == 0 and "index" in top.stdout
    index = _musicrec(["index", "--help"], settings)
    assert index.returncode == 0 and "refresh" in index.stdout and "rollback" in index.stdout
    # the alias takes the same options as the command it stands for
    assert "--model-version" in _musicrec(["catalogue", "refresh", "--help"], settings).stdout
