"""Bring-your-own catalogue: folder-per-style and CSV imports, rejects, duplicates, idempotence."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, read_manifest, read_table
from pipelines.errors import UserError
from pipelines.settings import Settings
from tests import synth


def _digests(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under root, to prove imports leave inputs untouched."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A folder-per-style library with good files in three formats plus every kind of broken file."""
    root = tmp_path / "library"
    synth.style_tree(root, per_style=2, seconds=2.0)
    synth.write(root / "noise" / "album_x" / "deep.flac", synth.noise(2.0, seed=7, colour=0.8))
    synth.write(root / "high_tones" / "bright.ogg", synth.tone(2500, 2.0))
    good = synth.write(tmp_path / "src" / "long.flac", synth.tone(330, 4.0))
    broken = root / "low_tones" / "broken"
    broken.mkdir(parents=True)
    (broken / "empty.wav").write_bytes(b"")
    (broken / "notes.mp3").write_text("these are my notes, not an mp3\n" * 20)
    synth.truncated(broken / "cut.flac", good, keep=0.4)
    synth.truncated(broken / "cut.wav", synth.write(tmp_path / "src" / "long.wav", synth.tone(330, 4.0)), keep=0.5)
    synth.write(broken / "nothing.wav", synth.tone(440, 0.0))
    shutil.copy(root / "low_tones" / "low_0.wav", root / "noise" / "copy_of_low.wav")
    return root


def test_folder_import_tracks_rejects_and_untouched_inputs(library: Path, settings: Settings) -> None:
    before = _digests(library)
    report = import_catalogue(library, settings)
    after = _digests(library)
    assert before == after, "import must not change, move or delete any input file"

    tracks = read_manifest(settings.manifest_path)
    assert report.added == len(tracks) == 8
    assert sorted(tracks["style"].value_counts().items()) == [("high_tones", 3), ("low_tones", 2), ("noise", 3)]
    deep = tracks[tracks["path"].str.endswith("deep.flac")].iloc[0]
    assert (deep["album"], deep["source"]) == ("album_x", "album_x")
    assert tracks["sha256"].str.len().eq(64).all()
    assert (tracks["duration_s"] > 1.9).all() and (tracks["sample_rate"] == synth.SR).all()

    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    by_name = {Path(p).name: r for p, r in zip(rejects["path"], rejects["reason"], strict=True)}
    assert by_name == {
        "empty.wav": "empty_file",
        "notes.mp3": "not_audio",
        "cut.flac": "corrupt_or_truncated",
        "cut.wav": "corrupt_or_truncated",
        "nothing.wav": "zero_length_audio",
        "copy_of_low.wav": "duplicate",
    }
    dup = rejects[rejects["reason"] == "duplicate"].iloc[0]
    low0 = tracks[tracks["path"].str.endswith("low_tones/low_0.wav")].iloc[0]
    assert dup["duplicate_of"] == low0["track_id"]


def test_reimport_is_idempotent_and_tracks_additions_and_removals(library: Path, settings: Settings) -> None:
    import_catalogue(library, settings)
    first = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    again = import_catalogue(library, settings)
    second = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    assert (again.added, again.removed, again.unchanged) == (0, 0, 8)
    assert first.equals(second), "a second import of the same folder must leave the manifest identical"

    (library / "high_tones" / "high_1.wav").unlink()
    synth.write(library / "noise" / "new.wav", synth.noise(2.0, seed=99))
    third = import_catalogue(library, settings)
    assert (third.added, third.removed) == (1, 1)
    full = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    gone = full[full["path"].str.endswith("high_1.wav")].iloc[0]
    assert gone["status"] == "removed" and gone["removed_at"] is not None
    assert len(read_manifest(settings.manifest_path)) == 8
    kept = full[full["status"] == "active"].set_index("path")["track_id"]
    before_ids = first.set_index("path")["track_id"]
    assert all(before_ids[path] == track_id for path, track_id in kept.items() if path in before_ids)


def test_track_ids_are_stable_across_data_roots(library: Path, tmp_path: Path) -> None:
    a = Settings(data_root=tmp_path / "a")
    b = Settings(data_root=tmp_path / "b")
    import_catalogue(library, a)
    import_catalogue(library, b)
    ids_a = read_manifest(a.manifest_path).set_index("path")["track_id"].to_dict()
    ids_b = read_manifest(b.manifest_path).set_index("path")["track_id"].to_dict()
    assert ids_a == ids_b
    assert ids_a[str(library / "low_tones" / "low_0.wav")] == "library.low-tones-low-0"


def test_csv_import_with_optional_columns(tmp_path: Path, settings: Settings) -> None:
    music = tmp_path / "music"
    synth.write(music / "a.wav", synth.tone(200, 2.0))
    synth.write(music / "b.flac", synth.noise(2.0, seed=3))
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,style,track_id,artist,album,title\n"
        "music/a.wav, Ambient ,my-a,Ann,First,Tone A\n"
        f"{music / 'b.flac'},Noise,,,,\n"
        "music/missing.wav,Noise,,,,\n"
        "music/a.wav,,,,,\n",
        encoding="utf-8",
    )
    report = import_catalogue(csv, settings)
    tracks = read_manifest(settings.manifest_path).set_index("track_id")
    assert report.added == 2
    assert tracks.loc["my-a", ["style", "artist", "album", "title", "source"]].tolist() == [
        "Ambient",
        "Ann",
        "First",
        "Tone A",
        "First",
    ]
    b = tracks[tracks["path"] == str(music / "b.flac")]
    assert b["style"].tolist() == ["Noise"] and b.index[0].startswith("list.") and b.index[0].endswith("music-b")
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    assert sorted(rejects["reason"]) == ["invalid_style", "unreadable"]


@pytest.mark.parametrize(
    ("content", "encoding", "message"),
    [
        ("file,genre\nx.wav,rock\n", "utf-8", "missing column(s) path; found file, genre"),
        ("path,style\n", "utf-8", "no rows with a path"),
        ("path,style\nx.wav,caf\xe9\n", "latin-1", "cannot decode the CSV"),
    ],
)
def test_bad_csv_is_a_user_error(tmp_path: Path, settings: Settings, content: str, encoding: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_bytes(content.encode(encoding))
    with pytest.raises(UserError, match=re.escape(message)):
        import_catalogue(csv, settings)
    assert not settings.manifest_path.exists(), "a refused import writes nothing"


def test_bad_paths_are_user_errors(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(UserError, match="does not exist"):
        import_catalogue(tmp_path / "nope", settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no style sub-folders"):
        import_catalogue(tmp_path / "empty", settings)
    (tmp_path / "hollow" / "rock").mkdir(parents=True)
    with pytest.raises(UserError, match="no audio files"):
        import_catalogue(tmp_path / "hollow", settings)
    (tmp_path / "song.txt").write_text("x")
    with pytest.raises(UserError, match=r"not a folder or a \.csv"):
        import_catalogue(tmp_path / "song.txt", settings)


def test_symlink_loop_does_not_hang(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "lib"
    synth.write(root / "rock" / "a.wav", synth.tone(300, 1.5))
    os.symlink(root / "rock", root / "rock" / "loop")
    os.symlink(root, root / "rock" / "up")
    report = import_catalogue(root, settings)
    assert report.added == 1


def test_whitespace_style_folder_is_rejected_with_reason(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "lib"
    synth.write(root / "  " / "a.wav", synth.tone(300, 1.5))
    synth.write(root / "Rock " / "b.wav", synth.tone(500, 1.5))
    report = import_catalogue(root, settings)
    assert report.added == 1 and report.rejects == {"invalid_style": 1}
    assert read_manifest(settings.manifest_path)["style"].tolist() == ["Rock"]


def test_reading_files_in_worker_processes_gives_the_same_catalogue(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A large import probes and hashes on every core; the manifest and rejects are those of a serial import."""
    from pipelines.catalogue import ingest

    serial = Settings(data_root=tmp_path / "serial")
    parallel = Settings(data_root=tmp_path / "parallel")
    monkeypatch.setattr(ingest, "PARALLEL_MIN_FILES", 10_000)
    import_catalogue(library, serial)
    monkeypatch.setattr(ingest, "PARALLEL_MIN_FILES", 1)  # this small library then goes through the workers
    caplog.set_level("INFO", logger="pipelines.catalogue.ingest")
    report = import_catalogue(library, parallel)

    columns = [c for c in MANIFEST_SCHEMA.names if c not in ("added_at",)]
    one = read_table(serial.manifest_path, MANIFEST_SCHEMA)[columns]
    two = read_table(parallel.manifest_path, MANIFEST_SCHEMA)[columns]
    assert one.equals(two) and len(two) == report.added == 8
    key = ["path", "reason", "detail"]
    rej_one = read_table(serial.rejects_path, REJECTS_SCHEMA)[key].sort_values("path").reset_index(drop=True)
    rej_two = read_table(parallel.rejects_path, REJECTS_SCHEMA)[key].sort_values("path").reset_index(drop=True)
    assert rej_one.equals(rej_two) and len(rej_two) == report.rejected > 0
    final = [r.getMessage() for r in caplog.records if "probe and hash" in r.getMessage()]
    assert final and re.search(r"probe and hash: \d+/\d+ files \(100%\), [\d.]+ files/s", final[-1])
