"""SongRef resolution (serving/songref.py): MBID first, then normalised tags, album preferred, ties refused."""

from __future__ import annotations

import pytest

from serving.songref import SongIndex, SongQuery, Unresolved, normalise

_COLUMNS = ("track_id", "title", "artist", "album", "mbid", "duration_s")
ROWS = [
    dict(zip(_COLUMNS, row, strict=True))
    for row in [
        ("a1", "Hey Jude", "The Beatles", "Past Masters", "m-1", 431.0),
        ("a2", "Hey Jude", "The Beatles", "1", None, 425.0),
        ("b1", "Café", "Émile", "X", None, 200.0),
        ("c1", "Twin", "Dup", "Same", None, 100.0),
        ("c2", "Twin", "Dup", "Same", None, 100.0),
        ("d1", "Copy", "Z", "One", "m-2", 50.0),
        ("d2", "Copy", "Z", "Two", "M-2", 50.0),
    ]
]


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
