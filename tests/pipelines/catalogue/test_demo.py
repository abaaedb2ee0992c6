"""The real demo corpus: six styles of game-soundtrack music from Debian packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.audio import probe
from pipelines.catalogue.demo import PACKAGES, fetch_demo
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, read_manifest, read_table
from pipelines.catalogue.summary import format_summary
from pipelines.catalogue.tags import read_tags
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
    trackballs = tracks[tracks["source"] == "trackballs-data"].set_index("track_id")["style"]
    assert trackballs.get("trackballs-data.c64revival") == "electronic" and set(trackballs) == {
        "electronic",
        "ambient_scifi",
    }


def test_every_demo_track_is_a_minute_long_and_shorter_files_are_listed_as_left_out(demo_settings: Settings) -> None:
    tracks = read_manifest(demo_settings.manifest_path)
    assert (tracks["duration_s"] >= 60).all(), tracks.loc[tracks["duration_s"] < 60, "track_id"].tolist()
    rejects = read_table(demo_settings.rejects_path, REJECTS_SCHEMA)
    short = rejects[rejects["reason"] == "too_short"]
    assert len(short) > 0 and not set(short["path"]) & set(tracks["path"])
    packages = {Path(p).relative_to(demo_settings.demo_dir).parts[0] for p in short["path"]}
    assert packages & {p.name for p in PACKAGES if not p.extended}, "the rule holds for the original six too"


def test_demo_tracks_carry_the_artists_their_files_are_tagged_with(demo_settings: Settings) -> None:
    tracks = read_manifest(demo_settings.manifest_path)
    tagged = {}
    for row in tracks.itertuples():
        artist = read_tags(Path(row.path)).artist
        if artist:
            tagged[row.track_id] = artist
    assert len(tagged) > 100, "the demo files carry artist tags"
    by_id = tracks.set_index("track_id")["artist"]
    missing = [t for t in tagged if not isinstance(by_id[t], str) or not by_id[t]]
    assert not missing, f"{len(missing)} tagged tracks without an artist, e.g. {missing[:3]}"
    assert set(tracks["source"]) == {p.name for p in PACKAGES}, "the source stays the package, whatever the tags say"
