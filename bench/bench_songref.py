"""How often a Navidrome SongRef resolves to the right catalogue track (serving/songref.py), and how often wrongly.

A generated Artist/Album library of short FLAC files with real Vorbis tags (mutagen) is imported by the
catalogue importer; its manifest is what musicrec matches against. Each track is then asked for as
Navidrome would send it: with its MusicBrainz id; without it (title, artist, album, duration); with the
tags renamed (case, punctuation, accents, ``feat.`` credits, ``(Remastered)``); renamed and without
album or duration. Songs that are not in the library are asked for too: any match of those is wrong.
The library has traps: one title on two albums of one artist, and one title by two artists.

Writes bench/results/songref.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
import tempfile
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from pipelines import synthetic as synth  # noqa: E402
from pipelines.catalogue.importer import import_catalogue  # noqa: E402
from pipelines.catalogue.manifest import read_manifest  # noqa: E402
from pipelines.settings import PathSettings, Settings  # noqa: E402
from serving.songref import SongIndex, SongQuery, Unresolved  # noqa: E402

log = logging.getLogger("bench_songref")

WORDS = ["Café", "Noir", "Señor", "Blue", "River", "Ghost", "Élan", "Night", "Über", "Summer", "Rain", "Fire", "Glass"]
ARTISTS = ["Émilie Simon", "The Low Hums", "Sigur Rós", "AC/DC Tribute", "Beyoncé Band", "Mötley Crew", "Zoë & Co"]


def _title(rng: random.Random) -> str:
    words = rng.sample(WORDS, rng.choice([1, 2, 3]))
    return " ".join(words) + rng.choice(["", "", "!", "?", " (Part 2)", "'s Song"])


def make_library(music: Path, n: int, rng: random.Random) -> list[dict]:
    """``n`` tagged FLAC files of 1-6 s; returns what was written (title, artist, album, mbid)."""
    import mutagen

    written: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    while len(written) < n:
        artist, album = rng.choice(ARTISTS), f"{rng.choice(WORDS)} {rng.choice(['EP', 'LP', 'Sessions'])}"
        title = _title(rng)
        if len(written) % 25 == 1:  # trap: the same title on another album of the same artist
            prev = written[-1]
            artist, title = prev["artist"], prev["title"]
        elif len(written) % 25 == 2:  # trap: the same title by another artist
            title = written[-2]["title"]
            artist = rng.choice([a for a in ARTISTS if a != written[-2]["artist"]])
        if (artist, album, title) in seen:
            continue
        seen.add((artist, album, title))
        seconds = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        rel = Path(artist.replace("/", "-")) / album / f"{len(written):03d}.flac"
        synth.write(music / rel, synth.tone(100 + 7 * len(written), seconds))
        audio = mutagen.File(str(music / rel))
        mbid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        audio["title"], audio["artist"], audio["album"], audio["musicbrainz_trackid"] = title, artist, album, mbid
        audio.save()
        written.append({"rel": str(rel), "title": title, "artist": artist, "album": album, "mbid": mbid})
    return written


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def renamed(title: str, artist: str, rng: random.Random) -> tuple[str, str]:
    """The same song as another tagger spells it."""
    t = rng.choice([str.upper, str.lower, str.title, _strip_accents])(title)
    t = rng.choice([t, t.replace("'", "\u2019"), t.replace("!", ""), t + " (Remastered)", t + " - 2011 Remaster"])
    t = rng.choice([t, t + " (feat. MC Guest)", t + " [Deluxe Edition]"])
    a = rng.choice([artist, artist.lower(), _strip_accents(artist), artist.replace("&", "and"), artist + " feat. X"])
    if a.startswith("The "):
        a = rng.choice([a, a[4:]])
    return t, a


def run(n: int, seed: int) -> str:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        written = make_library(root / "Music", n, rng)
        settings = Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "m.db")))
        import_catalogue(root / "Music", settings)
        df = read_manifest(settings.manifest_path)
        built = time.monotonic() - t0
    by_path = {Path(p).name: (tid, d) for p, tid, d in zip(df["path"], df["track_id"], df["duration_s"], strict=True)}
    index = SongIndex(df[["track_id", "title", "artist", "album", "mbid", "duration_s"]].to_dict("records"))
    truth = [(w, *by_path[Path(w["rel"]).name]) for w in written]

    def jitter(d: float) -> float:
        return float(d) + rng.uniform(-1.5, 1.5)

    cases: dict[str, Callable[[dict, float], SongQuery]] = {
        "MBID present (tags exact)": lambda w, d: SongQuery(w["title"], w["artist"], w["album"], w["mbid"], jitter(d)),
        "MBID absent: title, artist, album, duration": lambda w, d: SongQuery(
            w["title"], w["artist"], w["album"], None, jitter(d)
        ),
        "MBID absent, tags renamed, album and duration": lambda w, d: SongQuery(
            *renamed(w["title"], w["artist"], rng), w["album"].lower(), None, jitter(d)
        ),
        "MBID absent, tags renamed, no album, no duration": lambda w, d: SongQuery(
            *renamed(w["title"], w["artist"], rng), None, None, None
        ),
    }
    rows = []
    for name, make in cases.items():
        counts: Counter[str] = Counter()
        t1 = time.perf_counter()
        for w, track_id, duration in truth:
            try:
                got = index.resolve(make(w, duration))
                counts["right" if got == track_id else "wrong"] += 1
            except Unresolved as exc:
                counts["refused (ambiguous)" if exc.ambiguous else "not found"] += 1
        per = (time.perf_counter() - t1) / len(truth) * 1e6
        rows.append((name, counts, per))
    stranger: Counter[str] = Counter()
    for i in range(len(truth)):
        q = SongQuery(f"Unknown Song {i}", rng.choice(ARTISTS), None, str(uuid.uuid4()), 3.0)
        try:
            index.resolve(q)
            stranger["wrong"] += 1
        except Unresolved:
            stranger["not found"] += 1
    rows.append(("songs not in the library (random MBID)", stranger, 0.0))

    lines = [
        "# Navidrome SongRef -> catalogue track: match rate",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {platform.node()}, {os.cpu_count()} cores ({cpu_model()}), "
        f"Python {platform.python_version()}; `bench/bench_songref.py --tracks {n} --seed {seed}`. "
        f"{len(truth)} FLAC files with Vorbis tags written by mutagen, imported by the catalogue importer "
        f"({built:.0f} s); durations sent with up to ±1.5 s of jitter. Traps: every 25 tracks one title "
        "is on two albums of one artist and one title is by two artists.",
        "",
        "| query | right | wrong | refused (ambiguous) | not found | match rate | µs per lookup |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c, per in rows:
        total = sum(c.values())
        rate = f"{100 * c['right'] / total:.1f} %" if "not in" not in name else "n/a"
        lines.append(
            f"| {name} | {c['right']} | {c['wrong']} | {c['refused (ambiguous)']} | {c['not found']} | {rate} |"
            f" {per:.0f} |"
        )
    lines += [
        "",
        "Right: the track the query was made from. Wrong: another track (the failure that matters: Navidrome "
        "would play a different song). Refused: several tracks matched equally well (songref refuses a tie). "
        "Not found: nothing matched within the rules.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/songref.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = run(args.tracks, args.seed)
    args.out.write_text(text, encoding="utf-8")
    log.info("%s", text)


if __name__ == "__main__":
    main()
