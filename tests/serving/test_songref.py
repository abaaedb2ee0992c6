"""SongRef resolution (serving/songref.py): MBID first, then normalised tags, album preferred, ties refused."""

from __future__ import annotations

import pytest

from serving.songref import SongIndex, SongQuery, Unresolved, normalise

ROWS = [
    {"track_id": "a1", "title": "Hey Jude", "artist": "The Beatles", "album": "Past Masters", "mbid": "m-1", "duration_s": 431.0},
    {"track_id": "a2", "title": "Hey Jude", "artist": "The Beatles", "album": "1", "mbid": None, "duration_s": 425.0},
    {"track_id": "b1", "title": "Café", "artist": "Émile", "album": "X", "mbid": None, "duration_s": 200.0},
    {"track_id": "c1", "title": "Twin", "artist": "Dup", "album": "Same", "mbid": None, "duration_s": 100.0},
    {"track_id": "c2", "title": "Twin", "artist": "Dup", "album": "Same", "mbid": None, "duration_s": 100.0},
    {"track_id": "d1", "title": "Copy", "artist": "Z", "album": "One", "mbid": "m-2", "duration_s": 50.0},
    {"track_id": "d2", "title": "Copy", "artist": "Z", "album": "Two", "mbid": "M-2", "duration_s": 50.0},
]  # fmt: skip


@pytest.fixture(scope="module")
def index() -> SongIndex:
    return SongIndex(ROWS)


def test_normalise_drops_case_accents_punctuation_credits_and_version_notes() -> None:
    assert normalise("Song (feat. Bob) [Remastered 2011]", title=True) == "song"
    assert normalise("Hey Jude - Remastered 2009", title=True) == "hey jude"
    assert normalise("Beyoncé feat. Jay-Z") == "beyonce"
    assert normalise("The Beatles") == "beatles"
    assert normalise("Stay With Me", title=True) == "stay with me"  # "with" is not a credit
    assert normalise("Simon & Garfunkel") == normalise("simon and garfunkel")


def test_mbid_wins_over_tags(index: SongIndex) -> None:
    assert index.resolve(SongQuery("something else", "nobody", mbid="M-1")) == "a1"


def test_mbid_copies_prefer_album_then_smallest_id(index: SongIndex) -> None:
    assert index.resolve(SongQuery("Copy", "Z", album="Two", mbid="m-2")) == "d2"
    assert index.resolve(SongQuery("Copy", "Z", mbid="m-2")) == "d1"


def test_tags_with_album_duration_and_renames(index: SongIndex) -> None:
    assert index.resolve(SongQuery("hey jude (Remastered)", "BEATLES", album="1")) == "a2"
    assert index.resolve(SongQuery("Hey Jude", "The Beatles", duration_s=430.0)) == "a1"  # nearest duration
    assert index.resolve(SongQuery("cafe", "emile", duration_s=202.5)) == "b1"


def test_duration_outside_tolerance_is_no_match(index: SongIndex) -> None:
    with pytest.raises(Unresolved, match="no catalogue track"):
        index.resolve(SongQuery("Café", "Émile", duration_s=210.0))


def test_wrong_artist_is_no_match(index: SongIndex) -> None:
    with pytest.raises(Unresolved) as err:
        index.resolve(SongQuery("Café", "Somebody Else"))
    assert not err.value.ambiguous


def test_a_tie_is_refused(index: SongIndex) -> None:
    with pytest.raises(Unresolved, match="equally well") as err:
        index.resolve(SongQuery("Twin", "Dup", album="Same", duration_s=100.0))
    assert err.value.ambiguous
    with pytest.raises(Unresolved, match="equally well"):
        index.resolve(SongQuery("Hey Jude", "The Beatles"))  # two albums, no album, no duration


def test_no_title() -> None:
    with pytest.raises(Unresolved, match="no title"):
        SongIndex(ROWS).resolve(SongQuery("  "))
