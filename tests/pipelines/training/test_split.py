"""Frozen splits: stratified, disjoint by track / album / source, reproducible, extended not reshuffled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.errors import UserError
from pipelines.training.split import check_styles, frozen_split, make_split, validation_carve


def _tracks(counts: dict[str, int], albums: int = 0) -> pd.DataFrame:
    rows = []
    for style, n in counts.items():
        for i in range(n):
            rows.append(
                {
                    "track_id": f"{style}.{i:02d}",
                    "style": style,
                    "source": f"{style}-pkg{i % 2}",
                    "album": f"{style}-album{i % albums}" if albums and i < n - 1 else None,
                }
            )
    return pd.DataFrame(rows)


def test_track_split_is_stratified_disjoint_and_seeded() -> None:
    tracks = _tracks({"a": 20, "b": 10, "c": 5})
    split = make_split(tracks, n_folds=5, seed=3)
    assert split["track_id"].is_unique and len(split) == 35
    per = split.groupby(["style", "fold"]).size().unstack(fill_value=0)
    assert (per.loc["a"] == 4).all() and (per.loc["b"] == 2).all() and (per.loc["c"] == 1).all()
    assert split.equals(make_split(tracks.sample(frac=1, random_state=1), n_folds=5, seed=3))
    assert not split["fold"].equals(make_split(tracks, n_folds=5, seed=4)["fold"])


def test_album_split_keeps_each_album_on_one_side() -> None:
    tracks = _tracks({"a": 12, "b": 9}, albums=3)
    split = make_split(tracks, n_folds=3, seed=0, group_by="album")
    merged = split.merge(tracks[["track_id", "album"]], on="track_id")
    assert (merged.dropna(subset=["album"]).groupby("album")["fold"].nunique() == 1).all()
    # tracks without an album are their own group and still spread over folds
    assert split.groupby("style")["fold"].nunique().min() >= 2


def test_source_split_is_source_disjoint() -> None:
    tracks = _tracks({"a": 8, "b": 8})
    split = make_split(tracks, n_folds=2, seed=0, group_by="source")
    merged = split.merge(tracks[["track_id", "source"]], on="track_id")
    assert (merged.groupby("source")["fold"].nunique() == 1).all()
    assert (split.groupby("style")["fold"].nunique() == 2).all()  # two sources per style: both sides


def test_style_with_one_track_is_named() -> None:
    with pytest.raises(UserError, match=r"'lonely' \(1 track\)"):
        check_styles(_tracks({"a": 5, "lonely": 1}))
    with pytest.raises(UserError, match="at least two styles"):
        make_split(_tracks({"a": 5}))


def test_frozen_split_is_reused_and_only_extended(tmp_path: Path) -> None:
    path = tmp_path / "split.parquet"
    tracks = _tracks({"a": 10, "b": 10})
    first = frozen_split(tracks, path, n_folds=5, seed=0)
    mtime = path.stat().st_mtime_ns
    again = frozen_split(tracks, path, n_folds=5, seed=0)
    assert again.equals(first) and path.stat().st_mtime_ns == mtime  # untouched when nothing is new
    more = pd.concat([tracks, _tracks({"c": 4})], ignore_index=True)
    grown = frozen_split(more, path, n_folds=5, seed=0)
    old = grown.set_index("track_id").loc[first["track_id"], "fold"]
    assert (old.to_numpy() == first["fold"].to_numpy()).all()  # nobody moved
    assert set(grown["track_id"]) == set(more["track_id"])
    # a removed track leaves the evaluation but stays in the file
    fewer = frozen_split(tracks.iloc[1:], path, n_folds=5, seed=0)
    assert "a.00" not in set(fewer["track_id"]) and len(pd.read_parquet(path)) == 24
    with pytest.raises(UserError, match="other settings"):
        frozen_split(tracks, path, n_folds=3, seed=0)


def test_validation_carve_is_stratified_and_keeps_small_styles_whole() -> None:
    split = make_split(_tracks({"a": 20, "b": 3}), n_folds=2, seed=0)
    fit, val = validation_carve(split, 0.2, seed=0)
    assert set(fit["track_id"]).isdisjoint(val["track_id"])
    assert len(val[val["style"] == "a"]) == 4 and len(val[val["style"] == "b"]) == 0


def test_leave_one_source_out_gives_each_source_its_own_fold(tmp_path: Path) -> None:
    tracks = _tracks({"a": 6, "b": 4})  # sources a-pkg0, a-pkg1, b-pkg0, b-pkg1
    split = make_split(tracks, n_folds=0, group_by="source")
    assert split.groupby("fold")["group"].nunique().eq(1).all()
    assert sorted(split.drop_duplicates("group")["group"]) == ["g:a-pkg0", "g:a-pkg1", "g:b-pkg0", "g:b-pkg1"]
    assert set(split["fold"]) == {0, 1, 2, 3}
    with pytest.raises(UserError, match="one fold per track"):
        make_split(tracks, n_folds=0, group_by="track")

    # Frozen: a new track of a known source joins its fold, a new source gets a fold of its own.
    path = tmp_path / "split.parquet"
    first = frozen_split(tracks, path, n_folds=0, group_by="source")
    more = pd.concat(
        [
            tracks,
            pd.DataFrame(
                [
                    {"track_id": "a.new", "style": "a", "source": "a-pkg1", "album": None},
                    {"track_id": "b.new", "style": "b", "source": "b-pkg9", "album": None},
                ]
            ),
        ]
    )
    grown = frozen_split(more, path, n_folds=0, group_by="source").set_index("track_id")["fold"]
    assert grown["a.new"] == grown["a.01"] and grown["b.new"] == 4
    assert grown.drop(["a.new", "b.new"]).to_dict() == first.set_index("track_id")["fold"].to_dict()


def test_validation_by_source_lends_the_smallest_source_of_styles_with_three() -> None:
    rows = [("a", "a-big", 6), ("a", "a-mid", 3), ("a", "a-tiny", 2), ("b", "b-one", 5), ("b", "b-two", 2)]
    train = pd.DataFrame(
        [{"track_id": f"{src}.{i}", "style": s, "source": src} for s, src, n in rows for i in range(n)]
    )
    fit, val = validation_carve(train, 0.2, seed=0, by="source")
    assert set(val["source"]) == {"a-tiny"}  # b has two sources: both stay for fitting
    assert not set(fit["source"]) & set(val["source"]) and len(fit) + len(val) == len(train)
