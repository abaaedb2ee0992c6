"""What a folder import tells the user: files it ignores, and styles confounded with their source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import read_manifest
from pipelines.settings import Settings
from tests import synth


def _flat(root: Path) -> Path:
    """Two styles, tracks directly in each style folder: one source (the folder) for everything."""
    for style, freq in (("calm", 150), ("bright", 2000)):
        for i in range(2):
            synth.write(root / style / f"{style}{i}.wav", synth.tone(freq + 20 * i, 1.0))
    return root


def test_flat_folder_per_style_warns_that_style_and_source_are_confounded(tmp_path: Path, settings: Settings) -> None:
    root = _flat(tmp_path / "flat")
    report = import_catalogue(root, settings)
    assert report.added == 4
    confounded = [n for n in report.notes if "confounded" in n]
    assert len(confounded) == 1 and "no album sub-folders" in confounded[0] and str(root) in confounded[0]
    assert set(read_manifest(settings.manifest_path)["source"]) == {"flat"}


def test_a_single_source_style_is_named_and_albums_silence_the_warning(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "albums"
    for album in ("one", "two"):
        synth.write(root / "calm" / album / "a.wav", synth.tone(150 if album == "one" else 170, 1.0))
    synth.write(root / "bright" / "only" / "b.wav", synth.tone(2000, 1.0))
    synth.write(root / "bright" / "only" / "c.wav", synth.tone(2100, 1.0))
    report = import_catalogue(root, settings)
    assert report.notes == [
        "style(s) with a single source: bright (all from 'only'); their numbers may measure the "
        "source, not the style: add albums or artists of other sources to them"
    ]
    synth.write(root / "bright" / "other" / "d.wav", synth.tone(2200, 1.0))
    assert import_catalogue(root, settings).notes == []


def test_side_files_and_non_audio_folders_are_listed_as_ignored(tmp_path: Path, settings: Settings) -> None:
    root = _flat(tmp_path / "lib")
    (root / "labels.csv").write_text("path,style\ncalm/calm0.wav,calm\n")
    (root / "README.txt").write_text("my music\n")
    synth.write(root / "stray.wav", synth.tone(440, 1.0))
    (root / "artwork").mkdir()
    (root / "artwork" / "front.jpg").write_bytes(b"\xff\xd8\xff")
    (root / "calm" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    (root / "calm" / "playlist.m3u").write_text("calm0.wav\n")
    report = import_catalogue(root, settings)
    assert report.added == 4, "the stray top-level file and the side files are not imported"
    notes = "\n".join(report.notes)
    assert f"ignored 3 file(s) directly in {root}: README.txt, labels.csv, stray.wav" in notes
    assert f"musicrec catalogue import {root / 'labels.csv'}" in notes
    assert "ignored 1 folder(s) with no audio: artwork/" in notes
    assert "ignored 3 non-audio file(s) in the sub-folders: 2 .jpg (e.g. artwork/front.jpg), 1 .m3u" in notes


def test_the_cli_prints_the_notes(tmp_path: Path) -> None:
    root = _flat(tmp_path / "lib")
    (root / "labels.csv").write_text("path,style\n")
    musicrec = Path(sys.executable).with_name("musicrec")
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(tmp_path / "data")}
    proc = subprocess.run(
        [str(musicrec), "catalogue", "import", str(root)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("note: ") and "confounded" in line for line in lines), proc.stdout
    assert any(line.startswith(f"note: ignored 1 file(s) directly in {root}: labels.csv") for line in lines)
