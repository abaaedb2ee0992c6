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
