"""A full disk under the data root: one line and a non-zero exit, and what was there before stays."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.catalogue.manifest import read_manifest
from pipelines.settings import PathSettings, Settings
from tests import synth
from tests.fs import alias_target, tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 MB file system (tmpfs; needs the right to mount, as root has)."""
    with tmpfs(tmp_path / "disk", "64m") as folder:
        yield folder


def _musicrec(data_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    env |= {
        "MUSICREC_DATA_ROOT": str(data_root),
        "MUSICREC_MILVUS_URI": str(data_root / "milvus.db"),
        "MUSICREC_FEATURES__N_FRAMES": "64",
    }
    cli = Path(sys.executable).with_name("musicrec")
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def _fill(disk: Path, leave: int) -> None:
    """Write a ballast file until only about ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "ballast", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], done.stderr[-3000:]
    return errors[0]


def test_import_and_feature_build_on_a_full_disk(tmp_path: Path, small_disk: Path) -> None:
    lib = tmp_path / "lib"
    for i in range(3):
        synth.write(lib / "tones" / f"a{i}" / f"t{i}.wav", synth.tone(200.0 + 50 * i, 3.0))
    data_root = small_disk / "data"
    assert _musicrec(data_root, "catalogue", "import", str(lib)).returncode == 0
    settings = Settings(paths=PathSettings(data_root=data_root))
    before = settings.manifest_path.read_bytes()

    for i in range(3):
        synth.write(lib / "tones" / f"b{i}" / f"u{i}.wav", synth.tone(600.0 + 50 * i, 3.0))
    _fill(small_disk, 4096)
    _one_line(_musicrec(data_root, "catalogue", "import", str(lib)))
    assert settings.manifest_path.read_bytes() == before, "the manifest is the one before the failed import"
    assert len(read_manifest(settings.manifest_path)) == 3

    _one_line(_musicrec(data_root, "features", "build"))
    (small_disk / "ballast").unlink()
    done = _musicrec(data_root, "features", "build")
    assert done.returncode == 0, done.stderr
    assert "3 embedded" in done.stdout


def test_a_refresh_on_a_full_disk_keeps_serving_the_previous_collection(tmp_path: Path, small_disk: Path) -> None:
    lib = tmp_path / "lib"
    for i in range(6):
        synth.write(lib / "tones" / f"a{i}" / f"t{i}.wav", synth.tone(200.0 + 40 * i, 3.0))
    data_root = small_disk / "data"
    for step in (
        ("catalogue", "import", str(lib)),
        ("features", "build"),
        ("index", "refresh", "--model-version", "meanstd"),
    ):
        done = _musicrec(data_root, *step)
        assert done.returncode == 0, done.stderr[-2000:]
    status = alias_target(data_root / "milvus.db")
    assert status is not None and "meanstd" in status
    _fill(small_disk, 8192)
    _one_line(_musicrec(data_root, "index", "refresh", "--model-version", "raw"))
    (small_disk / "ballast").unlink()
    assert alias_target(data_root / "milvus.db") == status, "the alias still names the previous collection"
