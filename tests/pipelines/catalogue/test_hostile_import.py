"""Hostile names and listings at import: one reject or one line each, never a traceback, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import REJECTS_SCHEMA, read_manifest, read_table
from pipelines.settings import PathSettings, Settings
from tests import synth


def _cli(data_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    env["MUSICREC_DATA_ROOT"] = str(data_root)
    cli = Path(sys.executable).with_name("musicrec")
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_file_name_that_is_not_utf8_is_a_reject_and_the_rest_imports(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    good = synth.write(lib / "tones" / "good.wav", synth.tone(220.0, 3.0))
    synth.write(lib / "tones" / "other.wav", synth.tone(330.0, 3.0))
    odd = Path(os.fsdecode(bytes(lib / "tones") + b"/caf\xe9-\xff\xfe.wav"))
    odd.write_bytes(synth.write(tmp_path / "src.wav", synth.tone(440.0, 3.0)).read_bytes())
    data_root = tmp_path / "data"
    for _ in range(2):  # and again: a re-run must not fail either
        done = _cli(data_root, "catalogue", "import", str(lib))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "1 undecodable_name" in done.stdout + done.stderr
    settings = Settings(paths=PathSettings(data_root=data_root))
    assert sorted(Path(p).name for p in read_manifest(settings.manifest_path)["path"]) == ["good.wav", "other.wav"]
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    (row,) = rejects.itertuples()
    assert row.reason == "undecodable_name" and row.path.endswith("caf\\xe9-\\xff\\xfe.wav") and "UTF-8" in row.detail
    assert good.exists() and odd.exists(), "inputs are never moved or renamed"


def test_a_csv_field_over_the_csv_limit_is_one_line(tmp_path: Path) -> None:
    synth.write(tmp_path / "a.wav", synth.tone(220.0, 3.0))
    listing = tmp_path / "list.csv"
    listing.write_text("path,style,title\na.wav,tones,ok\na.wav,tones," + "x" * 140_000 + "\n", encoding="utf-8")
    done = _cli(tmp_path / "data", "catalogue", "import", str(listing))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert "line 3" in line and "field larger than field limit" in line


def test_csv_paths_with_spaces(tmp_path: Path, settings: Settings) -> None:
    synth.write(tmp_path / "music" / "plain.wav", synth.tone(220.0, 3.0))
    synth.write(tmp_path / "music" / " spaced .wav", synth.tone(330.0, 3.0))
    listing = tmp_path / "list.csv"
    listing.write_text("path,style\n  music/plain.wav ,tones\nmusic/ spaced .wav,tones\n", encoding="utf-8")
    report = import_catalogue(listing, settings)
    names = sorted(Path(p).name for p in read_manifest(settings.manifest_path)["path"])
    assert report.added == 2 and names == [" spaced .wav", "plain.wav"]


def _channels_wav(path: Path, channels: int) -> None:
    import struct

    fmt = struct.pack("<IHHIIHH", 16, 1, channels, 22050, 22050 * channels, channels, 8)
    data = b"\x80" * (channels * 20)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVE"
        + b"fmt "
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def _rf64_claiming(path: Path, data_bytes: int) -> None:
    import struct

    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16)
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, data_bytes + 36, data_bytes, data_bytes // 2, 0)
    path.write_bytes(b"RF64" + b"\xff" * 4 + b"WAVE" + ds64 + b"fmt " + fmt + b"data" + b"\xff" * 4 + b"\0" * 50_000)


def test_misleading_files_get_the_reason_they_deserve(tmp_path: Path, settings: Settings) -> None:
    import soundfile as sf

    folder = tmp_path / "lib" / "tones"
    folder.mkdir(parents=True)
    tone = synth.tone(220.0, 3.0)
    sf.write(folder / "sun.wav", tone, synth.SR, format="AU")  # AU content named .wav
    sf.write(folder / "apple.flac", tone, synth.SR, format="CAF")  # CAF content named .flac
    _channels_wav(folder / "many.wav", 65535)
    (folder / "random.mp3").write_bytes(b"\xff\xfb\x90\x64" + os.urandom(100_000))
    _rf64_claiming(folder / "huge.wav", 1 << 62)
    synth.write(folder / "good.wav", tone)
    import_catalogue(tmp_path / "lib", settings)
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA).set_index("path")
    got = {Path(p).name: (r.reason, r.detail) for p, r in rejects.iterrows()}
    assert got["sun.wav"][0] == "unsupported_format" and "Sun/NeXT AU" in got["sun.wav"][1]
    assert got["apple.flac"][0] == "unsupported_format" and "Apple CAF" in got["apple.flac"][1]
    assert got["many.wav"][0] == "unsupported_format" and "channels" in got["many.wav"][1]
    assert got["random.mp3"][0] == "corrupt_or_truncated" and "not decodable audio" in got["random.mp3"][1]
    assert "not a regular file" not in got["random.mp3"][1]
    assert got["huge.wav"][0] == "corrupt_or_truncated" and "shorter than its header says" in got["huge.wav"][1]
    assert list(read_manifest(settings.manifest_path)["path"].map(lambda p: Path(p).name)) == ["good.wav"]


def test_many_files_with_unreadable_tags_give_one_note_not_a_line_each(tmp_path: Path) -> None:
    folder = tmp_path / "lib" / "tones"
    folder.mkdir(parents=True)
    for i in range(400):
        (folder / f"empty{i}.wav").write_bytes(b"")
    synth.write(folder / "good.wav", synth.tone(220.0, 3.0))
    done = _cli(tmp_path / "data", "catalogue", "import", str(tmp_path / "lib"))
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) < 16, done.stderr[:3000]
    assert sum("could not read the tags of 400 file(s)" in line for line in lines if line.startswith("note:")) == 1
    assert "rejected: 400 empty_file" in done.stdout + done.stderr


def test_a_track_id_already_taken_is_renamed_with_a_note(tmp_path: Path, settings: Settings) -> None:
    synth.write(tmp_path / "a.wav", synth.tone(220.0, 3.0))
    synth.write(tmp_path / "b.wav", synth.tone(330.0, 3.0))
    first, second = tmp_path / "one.csv", tmp_path / "two.csv"
    first.write_text("path,style,track_id\na.wav,tones,my-id\n", encoding="utf-8")
    second.write_text("path,style,track_id\nb.wav,tones,my-id\n", encoding="utf-8")
    import_catalogue(first, settings)
    report = import_catalogue(second, settings)
    ids = sorted(read_manifest(settings.manifest_path)["track_id"])
    assert ids[0] == "my-id" and ids[1].startswith("my-id-")
    assert any(f"my-id -> {ids[1]}" in note for note in report.notes), report.notes


def test_a_path_near_the_os_limit_imports(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "lib" / "tones"
    deep = folder.joinpath(*["d" * 240] * 15)  # about 3,700 characters: the OS takes it, libsndfile's names do not
    deep.mkdir(parents=True)
    source = synth.write(tmp_path / "t.wav", synth.tone(220.0, 3.0))
    target = deep / "long-way-down.wav"
    os.rename(source, target)
    assert len(str(target)) > 3600
    report = import_catalogue(tmp_path / "lib", settings)
    assert report.added == 1 and report.rejected == 0, report.line()


def test_a_folder_past_the_path_limit_is_skipped_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "lib" / "tones"
    synth.write(folder / "near.wav", synth.tone(220.0, 3.0))
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(18):  # about 4,400 characters: past PATH_MAX, made one folder at a time
            os.mkdir("d" * 240, dir_fd=fd)
            inner = os.open("d" * 240, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    done = _cli(tmp_path / "data", "catalogue", "import", str(tmp_path / "lib"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "skipping" in done.stderr and "File name too long" in done.stderr, done.stderr[-2000:]
