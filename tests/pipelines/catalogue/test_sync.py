"""Library sync on a tagged library: added, changed, moved and removed files; ids, features and index follow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.catalogue.importer import import_catalogue, sync_catalogue
from pipelines.catalogue.manifest import REMOVED, read_manifest
from pipelines.features.build import FeatureBuild
from pipelines.features.store import read_features
from pipelines.index.milvus import CatalogueIndex
from pipelines.index.refresh import RefreshReport, refresh_collection
from pipelines.model.embedder import RawEmbedder
from pipelines.settings import IndexSettings, Settings
from tests import synth, tagged
from tests.pipelines.index.helpers import PARAMS_A

MOVED_FROM = "Bee Sharp/High Notes/02 High 1.ogg"
MOVED_TO = "Bee Sharp/Live/02 High 1.ogg"
CHANGED = "Ann Arbor/Low Hum/02 Low 1.flac"
ADDED = "Ann Arbor/Low Hum/05 Low 5.flac"


def _refresh(settings: Settings) -> RefreshReport:
    index = CatalogueIndex(settings.milvus_uri, IndexSettings(collections_kept=1, embed_batch_size=4))
    try:
        embedder = RawEmbedder(feature_version=PARAMS_A.version, dim=PARAMS_A.dim)
        features = read_features(settings, PARAMS_A)
        return refresh_collection(index, embedder, features, read_manifest(settings.manifest_path))
    finally:
        index.close()


def _indexed(settings: Settings, collection: str) -> dict[str, str]:
    index = CatalogueIndex(settings.milvus_uri, IndexSettings())
    try:
        return index.fingerprints(collection)
    finally:
        index.close()


def _ids(settings: Settings, music: Path) -> dict[str, str]:
    df = read_manifest(settings.manifest_path)
    return {Path(p).relative_to(music).as_posix(): t for p, t in zip(df["path"], df["track_id"], strict=True)}


def test_sync_keeps_ids_across_moves_and_embeds_only_what_changed(tmp_path: Path) -> None:
    music = (tmp_path / "Music").resolve()
    tagged.tagged_library(music, seconds=3.0)
    removed_rel = next(p.relative_to(music).as_posix() for p in sorted((music / "Cee Noise").rglob("01 *")))
    settings = Settings(data_root=tmp_path / "data", milvus_uri=str(tmp_path / "milvus.db"))
    genres = tagged.genre_map(tmp_path / "genres.csv")
    first = import_catalogue(music, settings, genre_map=genres)
    assert first.added == 10 and first.hashed == 10
    before = _ids(settings, music)
    assert FeatureBuild(settings=settings, params=PARAMS_A, shards=1).run().embedded == 10
    built = _refresh(settings)
    assert (built.mode, built.embedded, built.total) == ("built", 10, 10)

    # Move (same bytes, new album folder), change (new audio in place), add, remove.
    (music / MOVED_TO).parent.mkdir(parents=True)
    os.rename(music / MOVED_FROM, music / MOVED_TO)
    synth.write(music / CHANGED, synth.tone(240, 3.0, harmonics=2))
    st = (music / CHANGED).stat()
    os.utime(music / CHANGED, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    synth.write(music / ADDED, synth.tone(130, 3.0, harmonics=4))
    (music / removed_rel).unlink()

    report = sync_catalogue(music, settings, genre_map=genres)
    counts = (report.added, report.updated, report.moved, report.removed, report.unchanged)
    assert counts == (1, 1, 1, 1, 7), report.line()
    assert report.hashed == 3  # the new, the changed and the moved file; the other seven cost a stat

    after = _ids(settings, music)
    assert after[MOVED_TO] == before[MOVED_FROM] and MOVED_FROM not in after
    assert after[CHANGED] == before[CHANGED]
    assert removed_rel not in after
    every = read_manifest(settings.manifest_path, active_only=False)
    assert every["track_id"].is_unique
    gone = every[every["track_id"] == before[removed_rel]]
    assert list(gone["status"]) == [REMOVED]
    moved_row = every[every["track_id"] == before[MOVED_FROM]]
    assert list(moved_row["path"]) == [str(music / MOVED_TO)] and list(moved_row["album"]) == ["High Notes"]

    features = FeatureBuild(settings=settings, params=PARAMS_A, shards=1).run()
    assert (features.embedded, features.skipped) == (2, 8), features.line()  # the moved file is stored already

    updated = _refresh(settings)
    assert (updated.mode, updated.embedded, updated.removed, updated.total) == ("updated", 2, 1, 10), updated.line()
    assert updated.collection == built.collection  # updated in place, not rebuilt
    indexed = _indexed(settings, updated.collection)
    assert before[removed_rel] not in indexed and after[ADDED] in indexed and after[MOVED_TO] in indexed
    assert len(indexed) == 10

    again = sync_catalogue(music, settings, genre_map=genres)
    assert (again.unchanged, again.hashed, again.added + again.updated + again.moved + again.removed) == (10, 0, 0)


def test_sync_cli_needs_an_imported_path(tmp_path: Path) -> None:
    folder = tmp_path / "never-imported"
    folder.mkdir()
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(tmp_path / "data")}
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", "catalogue", "sync", str(folder)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "never imported" in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_sync_cli_with_refresh_embeds_and_indexes_only_the_change(tmp_path: Path) -> None:
    music = (tmp_path / "Music").resolve()
    tagged.tagged_library(music, seconds=1.5)
    settings = Settings(data_root=tmp_path / "data", milvus_uri=str(tmp_path / "milvus.db"))
    import_catalogue(music, settings)
    env = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.data_root),
        "MUSICREC_MILVUS_URI": settings.milvus_uri,
        "MUSICREC_FEATURES__N_FRAMES": str(PARAMS_A.n_frames),
        "MUSICREC_FEATURES__N_MFCC": str(PARAMS_A.n_mfcc),
    }
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", "catalogue", "sync", str(music)]
    cmd += ["--refresh", "--model-version", "raw"]

    def sync() -> str:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    first = sync()
    assert "0 added, 0 updated, 0 moved, 10 unchanged" in first and "0 files hashed" in first, first
    assert "10 embedded, 0 skipped" in first and "built tracks__raw__" in first, first
    (music / MOVED_TO).parent.mkdir(parents=True)
    os.rename(music / MOVED_FROM, music / MOVED_TO)
    (music / CHANGED).unlink()
    second = sync()
    assert "1 moved, 8 unchanged, 1 removed" in second and "1 files hashed" in second, second
    assert "0 embedded, 9 skipped" in second, second
    assert "updated tracks__raw__" in second and "9 tracks, 0 embedded, 1 removed" in second, second
