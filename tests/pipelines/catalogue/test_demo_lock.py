"""The demo corpus lock: pinned packages and tracks, hash and version checks, drift detection."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.catalogue.demo import DEMO_ORIGIN, PACKAGES, cap_per_source, fetch_package
from pipelines.catalogue.demo_lock import (
    LOCK_PATH,
    MARKER,
    RESERVED,
    PinnedPackage,
    current_listing,
    download_pinned,
    drift,
    dumps,
    read_lock,
    sha256_of,
    unpacked_matches,
    verify_deb,
    write_marker,
)
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, read_table, slug
from pipelines.catalogue.scan import Candidate
from pipelines.errors import UserError
from pipelines.settings import Settings
from tests import synth

# Reserved for an independent evaluation on music the model has never heard.
EVALUATION_ONLY = {
    "flare-game",
    "freedroidrpg-data",
    "gunroar-data",
    "megaglest-data",
    "mu-cade-data",
    "naev-data",
    "parsec47-data",
    "rrootage-data",
    "starfighter-data",
    "titanion-data",
    "torus-trooper-data",
    "0ad-data",
    "0ad-data-common",
}
STYLES = {"metal", "electronic", "fantasy_orchestral", "ambient_scifi", "scifi_orchestral", "ambient"}


def test_lock_pins_exactly_the_demo_packages() -> None:
    lock = read_lock()
    raw = json.loads(LOCK_PATH.read_text(encoding="utf-8"))
    assert set(lock.packages) == {p.name for p in PACKAGES}
    for pkg in PACKAGES:
        pin = lock.packages[pkg.name]
        assert pin.version and re.fullmatch(r"[0-9a-f]{64}", pin.sha256) and pin.size > 0, pin
    assert {p["name"]: p["style"] for p in raw["packages"]} == {p.name: p.style for p in PACKAGES}
    assert dumps(raw) == LOCK_PATH.read_text(encoding="utf-8"), "the lock is written by demo_lock.dumps"


def test_lock_holds_no_package_reserved_for_evaluation() -> None:
    lock = read_lock()
    assert RESERVED == EVALUATION_ONLY
    assert not set(lock.packages) & EVALUATION_ONLY
    assert not {t["source"] for t in lock.tracks} & EVALUATION_ONLY
    assert not {d["file"].split("/")[0] for d in lock.left_out} & EVALUATION_ONLY
    assert not {p.name for p in PACKAGES} & EVALUATION_ONLY


def test_pinned_tracks_are_consistent_and_give_every_style_four_sources() -> None:
    lock = read_lock()
    by_name = {p.name: p for p in PACKAGES}
    ids = [t["track_id"] for t in lock.tracks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert len({t["sha256"] for t in lock.tracks}) == len(ids), "no two pinned tracks share content"
    per_source: dict[str, int] = defaultdict(int)
    sources: dict[str, set[str]] = defaultdict(set)
    for t in lock.tracks:
        pkg = by_name[t["source"]]
        assert t["track_id"].startswith(f"{slug(pkg.name)}.")
        assert t["file"].startswith(f"{pkg.name}/")
        assert t["style"] in {pkg.style} | {style for _, style in pkg.style_of}
        assert re.fullmatch(r"[0-9a-f]{64}", t["sha256"])
        per_source[t["source"]] += 1
        sources[t["style"]].add(t["source"])
    assert set(sources) == STYLES
    assert all(len(s) >= 4 for s in sources.values()), {k: sorted(v) for k, v in sources.items()}
    assert max(per_source.values()) <= lock.max_tracks_per_source
    assert {d["reason"] for d in lock.left_out} <= {"doubtful_style", "too_short", "duplicate", "silent"}
    assert not {d["file"] for d in lock.left_out} & {t["file"] for t in lock.tracks}


def test_cached_files_have_the_pinned_hashes() -> None:
    """Where the demo packages are in the cache, every pinned track's file has the pinned content."""
    demo_dir = Settings().demo_dir
    lock = read_lock()
    cached = [t for t in lock.tracks if (demo_dir / t["source"] / MARKER).exists()]
    if not cached:
        pytest.skip(f"no pinned demo package is unpacked in {demo_dir}")
    wrong = [t["track_id"] for t in cached if sha256_of(demo_dir / t["file"]) != t["sha256"]]
    assert wrong == []


def test_a_deb_with_another_hash_is_refused_naming_the_package(tmp_path: Path) -> None:
    deb = tmp_path / "powermanga-data_0.93.1-5_all.deb"
    deb.write_bytes(b"not the pinned package")
    pin = PinnedPackage("powermanga-data", "0.93.1-5", "0" * 64, 22)
    with pytest.raises(UserError, match=r"powermanga-data 0\.93\.1-5: .* sha256 .* refusing"):
        verify_deb(deb, pin)
    verify_deb(deb, replace(pin, sha256=sha256_of(deb)))  # the right hash passes


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_a_version_the_mirror_lacks_is_a_clear_error_not_another_version(tmp_path: Path) -> None:
    pin = PinnedPackage("powermanga-data", "0.0.1-musicrec-test", "0" * 64, 1)
    with pytest.raises(UserError, match=r"powermanga-data: the apt mirror no longer has the pinned version 0\.0\.1"):
        download_pinned(pin, tmp_path)
    assert list(tmp_path.iterdir()) == [], "nothing downloaded"


def _changelog(root: Path, name: str, version: str) -> None:
    doc = root / "usr/share/doc" / name
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as fh:
        fh.write(f"{name} ({version}) unstable; urgency=medium\n\n  * Upload.\n")


def test_unpacked_package_is_checked_by_marker_or_changelog(tmp_path: Path) -> None:
    pin = PinnedPackage("demo-pkg", "1.2-3+b1", "a" * 64, 10)
    marked = tmp_path / "marked"
    marked.mkdir()
    write_marker(marked, pin, verified="sha256")
    assert unpacked_matches(marked, pin)
    assert not unpacked_matches(marked, replace(pin, version="1.2-4"))
    assert not unpacked_matches(marked, replace(pin, sha256="b" * 64))

    legacy = tmp_path / "legacy"
    _changelog(legacy, "demo-pkg", "1.2-3")  # a binNMU keeps its source's changelog version
    assert unpacked_matches(legacy, pin)
    assert json.loads((legacy / MARKER).read_text())["verified"] == "changelog"

    stale = tmp_path / "stale"
    _changelog(stale, "demo-pkg", "1.1-1")
    assert not unpacked_matches(stale, pin) and not (stale / MARKER).exists()
    assert not unpacked_matches(tmp_path / "none", pin)


def test_drift_names_every_kind_of_difference() -> None:
    lock = read_lock()
    listing = {"tracks": [dict(t) for t in lock.tracks], "left_out": [dict(d) for d in lock.left_out]}
    assert drift(lock, listing) == []
    gone = listing["tracks"].pop(0)
    listing["tracks"][0]["style"] = "polka"
    listing["tracks"].append({**gone, "track_id": "new-source.extra", "sha256": "f" * 64})
    listing["left_out"].append({"file": "new-source/x.ogg", "reason": "too_short"})
    text = "\n".join(drift(lock, listing))
    changed = lock.tracks[1]
    assert f"1 pinned track(s) missing: {gone['track_id']}" in text
    assert "1 track(s) not in the lock: new-source.extra" in text
    assert f"{changed['track_id']}: style '{changed['style']}' -> 'polka'" in text
    assert "left out now (too_short) but not in the lock: new-source/x.ogg" in text


def test_cap_per_source_keeps_a_stable_subset_and_spares_rejects(tmp_path: Path) -> None:
    cands = []
    for source in ("a", "b"):
        for i in range(5):
            path = synth.write(tmp_path / source / f"t{i}.wav", synth.tone(200 + 10 * i, 1.0))
            cands.append(Candidate(path=path, style="s", source=source, relative=path.name, track_id=f"{source}.{i}"))
    short = synth.write(tmp_path / "a" / "short.wav", synth.tone(300, 0.2))
    cands.append(Candidate(short, "s", "a", "short.wav", track_id="a.short", min_seconds=0.5))
    doubtful = synth.write(tmp_path / "a" / "doubtful.wav", synth.tone(900, 1.0))
    cands.append(Candidate(doubtful, "s", "a", "doubtful.wav", track_id="a.doubt", doubt="label disagrees"))
    kept = cap_per_source(cands, 3)
    usable = [c for c in kept if c.doubt is None and c.track_id != "a.short"]
    assert sorted(sum(c.source == s for c in usable) for s in ("a", "b")) == [3, 3]
    assert {"a.short", "a.doubt"} <= {c.track_id for c in kept}, "left-out tracks stay for the rejects table"
    assert cap_per_source(list(reversed(cands)), 3) == list(reversed(kept)), "order does not pick the tracks"
    assert cap_per_source(cands, 5) == cands


@pytest.mark.slow
def test_demo_corpus_matches_the_lock_exactly(demo_settings: Settings) -> None:
    listing = current_listing(
        read_table(demo_settings.manifest_path, MANIFEST_SCHEMA),
        read_table(demo_settings.rejects_path, REJECTS_SCHEMA),
        demo_settings.demo_dir,
        DEMO_ORIGIN,
    )
    assert drift(read_lock(), listing) == []
    assert listing["tracks"] == read_lock().tracks


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_fetch_downloads_the_pinned_version_and_refuses_another_hash(tmp_path: Path) -> None:
    """A real download of the smallest demo package (about 10 MB) into an empty cache."""
    pkg = next(p for p in PACKAGES if p.name == "powermanga-data")
    pin = read_lock().packages[pkg.name]
    with pytest.raises(UserError, match=r"powermanga-data .*sha256 .*refusing"):
        fetch_package(pkg, tmp_path / "bad", replace(pin, sha256="0" * 64))
    assert not (tmp_path / "bad" / pkg.name).exists(), "nothing unpacked from a refused .deb"
    root, downloaded = fetch_package(pkg, tmp_path / "demo", pin)
    assert downloaded and (root / pkg.copyright_path).exists()
    assert json.loads((root / MARKER).read_text()) == {
        "version": pin.version,
        "sha256": pin.sha256,
        "verified": "sha256",
    }
    assert fetch_package(pkg, tmp_path / "demo", pin) == (root, False)
    tracks = {t["file"]: t["sha256"] for t in read_lock().tracks if t["source"] == pkg.name}
    assert tracks and all(sha256_of(tmp_path / "demo" / f) == sha for f, sha in tracks.items())
