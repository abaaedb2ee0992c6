"""A damaged feature store is never read as if it were fine: checked, refused, moved aside and rebuilt.

Bytes flipped inside a part's vector data leave a Parquet file that still reads (snappy stores random
floats as literals), so only a checksum catches them; a truncated part does not read at all. Each must
give one line and a non-zero exit, never a traceback, and never changed vectors in an index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.catalogue.importer import import_catalogue
from pipelines.features.params import FeatureParams
from pipelines.features.store import part_files, read_features
from pipelines.settings import PathSettings, Settings
from tests import synth
from tests.fs import alias_target

PARAMS = FeatureParams(n_frames=64)
_MAIN = "from serving.cli_serve import main; main()"


def _settings(root: Path) -> Settings:
    return Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "milvus.db")), features=PARAMS)


def _musicrec(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICREC_", "MLFLOW_"))}
    env |= {
        "MUSICREC_DATA_ROOT": str(root / "data"),
        "MUSICREC_MILVUS_URI": str(root / "milvus.db"),
        "MUSICREC_FEATURES__N_FRAMES": str(PARAMS.n_frames),
    }
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args], capture_output=True, text=True, env=env, check=False, timeout=600
    )


def _flip_middle(path: Path, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 - n // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if all(w in line for w in words)]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Settings, np.ndarray]:
    library = tmp_path / "lib"
    for i in range(6):
        synth.write(library / "low" / f"a{i}" / f"l{i}.flac", synth.tone(110.0 + 7 * i, 3.0, harmonics=3))
        synth.write(library / "noisy" / f"b{i}" / f"n{i}.flac", synth.noise(3.0, seed=i, colour=0.5))
    settings = _settings(tmp_path)
    import_catalogue(library, settings)
    done = _musicrec(tmp_path, "features", "build")
    assert done.returncode == 0, done.stderr
    done = _musicrec(tmp_path, "index", "refresh", "--model-version", "meanstd")
    assert done.returncode == 0, done.stderr
    return tmp_path, settings, read_features(settings).matrix.copy()


@pytest.mark.parametrize("damage", [_flip_middle, _truncate], ids=["flipped-4kb", "truncated"])
def test_a_damaged_part_is_refused_then_moved_aside_and_rebuilt(built, damage) -> None:
    root, settings, before = built
    (part,) = part_files(settings, PARAMS)
    alias_before = alias_target(root / "milvus.db")
    assert alias_before is not None and "meanstd" in alias_before
    damage(part)

    line = _one_error_line(_musicrec(root, "features", "show"), "corrupt", part.name)
    assert "musicrec features build" in line
    _one_error_line(_musicrec(root, "index", "refresh", "--model-version", "meanstd"), "corrupt", part.name)
    assert alias_target(root / "milvus.db") == alias_before, "a refused refresh must leave the index as it was"
    assert part.exists(), "only a build moves a damaged part aside"

    done = _musicrec(root, "features", "build")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    moved = [line for line in (done.stdout + done.stderr).splitlines() if "moved aside" in line]
    assert len(moved) == 1 and part.name in moved[0], done.stdout + done.stderr
    aside = list((settings.features_dir / "corrupt").rglob(part.name))
    assert len(aside) == 1, "the damaged file is kept for inspection, not deleted"
    after = read_features(settings).matrix
    np.testing.assert_array_equal(after, before)  # recomputed on the same machine: the same vectors
    assert _musicrec(root, "index", "refresh", "--model-version", "meanstd").returncode == 0
