"""Writers of the manifest at the same time: nothing one of them added may be lost."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import read_manifest
from pipelines.settings import PathSettings, Settings
from tests import synth


def _import_after(barrier: object, folder: str, data_root: str) -> None:
    settings = Settings(paths=PathSettings(data_root=Path(data_root)))
    barrier.wait()  # type: ignore[attr-defined]
    import_catalogue(Path(folder), settings)


def test_two_imports_at_once_keep_both_folders(tmp_path: Path) -> None:
    """Two processes import different folders into one data root, released at the same instant.

    Each reads the manifest, probes and hashes its files (long enough for the other to read the same
    old manifest), then writes: without a writer lock the second write drops the first import's tracks.
    """
    first, second = tmp_path / "first", tmp_path / "second"
    for root, base in ((first, 200.0), (second, 300.0)):
        for i in range(8):
            synth.write(root / "tones" / f"t{i}.flac", synth.tone(base + 13 * i, 12.0))
    data_root = tmp_path / "data"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_import_after, args=(barrier, str(f), str(data_root))) for f in (first, second)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    tracks = read_manifest(Settings(paths=PathSettings(data_root=data_root)).manifest_path)
    by_origin = tracks.groupby("origin").size().to_dict()
    assert by_origin == {str(first): 8, str(second): 8}, by_origin


def _hold(lock: str, ready: object, release: object) -> None:
    from pipelines.locks import writer_lock

    with writer_lock(Path(lock), 5.0, "hold the catalogue"):
        ready.set()  # type: ignore[attr-defined]
        release.wait(60)  # type: ignore[attr-defined]


def test_an_import_that_cannot_get_the_lock_says_who_holds_it_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    folder = tmp_path / "lib"
    synth.write(folder / "tones" / "a.flac", synth.tone(220.0, 3.0))
    data_root = tmp_path / "data"
    settings = Settings(paths=PathSettings(data_root=data_root))
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(settings.catalogue_lock_path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        env = {**os.environ, "MUSICREC_DATA_ROOT": str(data_root), "MUSICREC_CATALOGUE_LOCK_TIMEOUT_S": "1"}
        cli = Path(sys.executable).with_name("musicrec")
        done = subprocess.run(
            [str(cli), "catalogue", "import", str(folder)], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        release.set()
        holder.join(30)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "cannot change the catalogue" in line]
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not settings.manifest_path.exists(), "a refused import must not write the manifest"
