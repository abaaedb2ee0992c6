"""Tagged libraries: tags read with mutagen, Artist/Album trees recognised, genre maps, unlabelled tracks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import UNLABELLED, read_manifest
from pipelines.catalogue.summary import format_summary
from pipelines.catalogue.tags import GenreMap, read_tags
from pipelines.errors import UserError
from pipelines.settings import Settings
from pipelines.training.split import check_styles, make_split
from tests import synth, tagged


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tagged.TaggedTrack]]:
    root = tmp_path_factory.mktemp("tagged") / "Music"
    return root, tagged.tagged_library(root, seconds=2.0)


def test_tags_of_each_container_are_read(library: tuple[Path, list[tagged.TaggedTrack]]) -> None:
    root, tracks = library
    for t in tracks:
        tags = read_tags(root / t.rel)
        assert (tags.artist, tags.album, tags.title) == (t.artist, t.album, t.title), t.rel
        assert tags.track_number == t.track_number and tags.mbid == t.mbid, t.rel
        assert (tags.genres[0] if tags.genres else None) == t.genre, t.rel
        assert tags.duration_s is not None and 1.9 < tags.duration_s < 2.2, t.rel
    suffixes = {Path(t.rel).suffix for t in tracks}
    assert {".flac", ".ogg"} <= suffixes and (".mp3" in suffixes) == tagged.mp3_supported()


def test_damaged_file_gives_empty_tags(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + b"\x00" * 40)
    assert read_tags(bad).empty
    assert read_tags(synth.write(tmp_path / "plain.wav", synth.tone(200, 0.5))).empty


def test_artist_album_library_without_genre_map_is_unlabelled(
    library: tuple[Path, list[tagged.TaggedTrack]], settings: Settings
) -> None:
    root, tracks = library
    report = import_catalogue(root, settings)
    assert report.added == len(tracks) and report.rejected == 0 and report.unlabelled == len(tracks)
    assert len(report.notes) == 1 and "Artist/Album" in report.notes[0] and "unlabelled" in report.notes[0]
    df = read_manifest(settings.manifest_path).set_index("path")
    for t in tracks:
        row = df.loc[str(root / t.rel)]
        assert row["style"] == UNLABELLED
        folders = t.rel.split("/")
        assert row["artist"] == (t.artist or folders[0]) and row["album"] == (t.album or folders[1])
        assert row["source"] == row["album"]
        assert row["title"] == (t.title or Path(t.rel).stem)
        assert (None if pd.isna(row["mbid"]) else row["mbid"]) == t.mbid
        assert (None if pd.isna(row["track_number"]) else int(row["track_number"])) == t.track_number
    assert "(unlabelled)" in format_summary(settings)


def test_genre_map_labels_tracks_and_leaves_unmapped_unlabelled(
    library: tuple[Path, list[tagged.TaggedTrack]], settings: Settings, tmp_path: Path
) -> None:
    root, _ = library
    report = import_catalogue(root, settings, genre_map=tagged.genre_map(tmp_path / "map.csv"))
    df = read_manifest(settings.manifest_path)
    by_artist = df.groupby("artist")["style"].agg(set).to_dict()
    assert by_artist == {"Ann Arbor": {"low_tones"}, "Bee Sharp": {"high_tones"}, "Cee Noise": {UNLABELLED}}
    assert report.unlabelled == 3 and "7 of 10" in report.notes[0]
    # training sees only labelled tracks: the split and the style check ignore the unlabelled ones
    split = make_split(df, n_folds=2, seed=0, group_by="track")
    assert set(split["track_id"]) == set(df.loc[df["style"] != UNLABELLED, "track_id"])


def test_style_folders_keep_their_style_and_take_source_from_album_tag(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "by-style"
    for style, freq in (("calm", 150), ("bright", 2000)):
        for i in range(2):
            path = synth.write(root / style / f"{style}{i}.flac", synth.tone(freq + 20 * i, 1.0))
            tagged._vorbis_tags(path, {"artist": f"Artist {i}", "album": f"Album {i}", "title": f"T{i}"})
    report = import_catalogue(root, settings)
    assert report.notes == [] and report.unlabelled == 0
    df = read_manifest(settings.manifest_path).sort_values("path")
    assert df["style"].tolist() == ["bright", "bright", "calm", "calm"]
    assert df["source"].tolist() == ["Album 0", "Album 1", "Album 0", "Album 1"]
    assert df["artist"].tolist() == ["Artist 0", "Artist 1", "Artist 0", "Artist 1"]


def test_csv_without_style_column_uses_genre_map(
    library: tuple[Path, list[tagged.TaggedTrack]], settings: Settings, tmp_path: Path
) -> None:
    root, tracks = library
    listing = tmp_path / "list.csv"
    listing.write_text("path,artist\n" + "".join(f"{root / t.rel},Given\n" for t in tracks[:5]), encoding="utf-8")
    mapped = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"genre_map": tagged.genre_map(tmp_path / "m.csv")})}
    )
    report = import_catalogue(listing, mapped)
    df = read_manifest(settings.manifest_path)
    assert report.added == 5 and set(df["artist"]) == {"Given"}  # CSV columns win over tags
    assert sorted(df["style"]) == ["high_tones", "low_tones", "low_tones", "low_tones", "low_tones"]


def test_bad_genre_maps_are_user_errors(tmp_path: Path, settings: Settings) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("genre,colour\nrock,red\n", encoding="utf-8")
    with pytest.raises(UserError, match="genre,style"):
        GenreMap.read(bad)
    with pytest.raises(UserError, match="not found"):
        import_catalogue(tmp_path, settings, genre_map=tmp_path / "missing.csv")


def test_check_styles_counts_only_labelled_tracks() -> None:
    tracks = pd.DataFrame({"track_id": ["a", "b", "c", "d"], "style": ["x", "x", UNLABELLED, UNLABELLED]})
    with pytest.raises(UserError, match="at least two styles"):
        check_styles(tracks)
