"""The real demo corpus: six styles of game-soundtrack music from Debian packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.audio import probe
from pipelines.catalogue.demo import PACKAGES, fetch_demo
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, read_manifest, read_table
from pipelines.catalogue.summary import format_summary
from pipelines.settings import Settings

pytestmark = pytest.mark.slow


def test_demo_corpus_has_six_styles_all_decodable_with_licences(demo_settings: Settings) -> None:
    tracks = read_manifest(demo_settings.manifest_path)
    assert len(tracks) >= 200
    assert set(tracks["style"]) == {
        "metal",
        "electronic",
        "fantasy_orchestral",
        "ambient_scifi",
        "scifi_orchestral",
        "ambient",
    }
    assert set(tracks["source"]) == {p.name for p in PACKAGES}
    assert tracks["licence"].notna().all() and not tracks["licence"].isin(["unknown", ""]).any()
    for licence_file in tracks["licence_file"].unique():
        assert Path(licence_file).name == "copyright" and Path(licence_file).exists()
    for path in tracks["path"]:
        probe(Path(path))  # raises if any track is not decodable from start to end
    assert tracks["track_id"].is_unique and tracks["sha256"].is_unique
    # Frets on Fire songs are mixes of the backing and guitar tracks, so longer than neither is shorter.
    fof = tracks[tracks["source"].str.startswith("fretsonfire-songs")]
    assert len(fof) == 8 and fof["path"].str.endswith(".flac").all() and (fof["duration_s"] > 60).all()
    ufo = tracks[tracks["source"] == "ufoai-music"]
    assert {"CC-BY-3.0", "CC-BY-SA-3.0", "GPL-2"} <= set(ufo["licence"]), "per-file licences from DEP-5"


def test_second_fetch_downloads_nothing_and_changes_nothing(demo_settings: Settings) -> None:
    before = read_table(demo_settings.manifest_path, MANIFEST_SCHEMA)
    demo_dir = demo_settings.demo_dir
    mtimes = {p: p.stat().st_mtime_ns for p in demo_dir.glob("*/*")}
    report, downloaded = fetch_demo(demo_settings)
    assert downloaded == 0
    assert (report.added, report.removed, report.unchanged) == (0, 0, len(before))
    assert read_table(demo_settings.manifest_path, MANIFEST_SCHEMA).equals(before)
    assert {p: p.stat().st_mtime_ns for p in demo_dir.glob("*/*")} == mtimes
    summary = format_summary(demo_settings)
    assert summary.splitlines()[-2].split()[:2] == ["TOTAL", str(len(before))]


def test_extended_corpus_gives_every_style_four_sources(demo_settings: Settings) -> None:
    tracks = read_manifest(demo_settings.manifest_path)
    sources = tracks.groupby("style")["source"].nunique()
    assert len(sources) == 6 and (sources >= 4).all(), sources.to_dict()
    assert tracks["source"].value_counts().max() <= 24, "at most 24 tracks per source (the lock's cap)"
    assert tracks["label_confidence"].between(0, 1).all()
    assert (tracks["duration_s"][tracks["source"].isin({p.name for p in PACKAGES if p.extended})] >= 60).all()
    trackballs = tracks[tracks["source"] == "trackballs-data"].set_index("title")["style"]
    assert trackballs.get("c64revival") == "electronic" and set(trackballs) == {"electronic", "ambient_scifi"}
