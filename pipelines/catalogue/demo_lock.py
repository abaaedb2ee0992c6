"""The demo corpus lock: each package's exact version and ``.deb`` hash, and the tracks they give.

The lock (``demo.lock.json`` next to this module) is what makes the demo corpus reproducible: the fetch
downloads exactly the pinned version and checks its sha256, and the catalogue it builds is compared with
the pinned track list, so a change in the input shows up as a difference instead of as silently
different numbers. ``python -m pipelines.catalogue.demo_lock update`` rewrites it (see docs/demo-corpus.md).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.errors import UserError

log = logging.getLogger(__name__)

LOCK_PATH = Path(__file__).with_name("demo.lock.json")
LOCK_FORMAT = 1
MARKER = ".musicrec-deb.json"  # written into each unpacked package: the version and hash it came from

# Packages kept for an independent evaluation on music the model has never heard: never in the demo corpus.
RESERVED = frozenset(
    {
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
)


@dataclass(frozen=True)
class PinnedPackage:
    """One package as pinned: the exact Debian version and the sha256 and size of its ``.deb``."""

    name: str
    version: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DemoLock:
    """The parsed lock file."""

    distribution: str
    max_tracks_per_source: int
    packages: dict[str, PinnedPackage]
    tracks: list[dict[str, str]]  # track_id, source, style, sha256, file of every track kept, by track_id
    left_out: list[dict[str, str]]  # file (relative to the demo cache) and reason of every track left out


def read_lock(path: Path = LOCK_PATH) -> DemoLock:
    """Parse the lock; a missing or malformed lock is a :class:`UserError` naming the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the demo corpus lock {path}: {exc}") from exc
    if raw.get("format") != LOCK_FORMAT:
        raise UserError(f"{path}: lock format {raw.get('format')!r}, expected {LOCK_FORMAT}")
    packages = {p["name"]: PinnedPackage(p["name"], p["version"], p["sha256"], int(p["size"])) for p in raw["packages"]}
    return DemoLock(
        distribution=raw["distribution"],
        max_tracks_per_source=int(raw["max_tracks_per_source"]),
        packages=packages,
        tracks=list(raw["tracks"]),
        left_out=list(raw["left_out"]),
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_deb(deb: Path, pin: PinnedPackage) -> None:
    """Refuse a downloaded ``.deb`` whose sha256 is not the pinned one."""
    got = sha256_of(deb)
    if got != pin.sha256:
        raise UserError(
            f"demo package {pin.name} {pin.version}: the downloaded .deb has sha256 {got}, "
            f"the lock pins {pin.sha256}; refusing to use it"
        )


def download_pinned(pin: PinnedPackage, into: Path) -> Path:
    """``apt-get download name=version`` into ``into``, then check the hash; returns the ``.deb``.

    A mirror that no longer carries the pinned version is an error naming the package: another version
    would silently change the corpus.
    """
    cmd = ["apt-get", "download", f"{pin.name}={pin.version}"]
    proc = subprocess.run(cmd, cwd=into, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if "was not found" in err or "Unable to locate" in err or "has no installation candidate" in err:
            raise UserError(
                f"demo package {pin.name}: the apt mirror no longer has the pinned version {pin.version} "
                f"({err.splitlines()[-1] if err else 'not found'}); update the lock with "
                "`python -m pipelines.catalogue.demo_lock update` and re-check the corpus"
            )
        raise UserError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {err[-400:]}")
    debs = list(into.glob(f"{pin.name}_*.deb"))
    if len(debs) != 1:
        raise UserError(f"apt-get download {pin.name}={pin.version} produced {len(debs)} .deb files")
    verify_deb(debs[0], pin)
    return debs[0]


def _upstream_of_binnmu(version: str) -> str:
    return re.sub(r"\+b\d+$", "", version)


def changelog_version(root: Path, name: str) -> str | None:
    """The version on the first line of an unpacked package's Debian changelog, if it has one."""
    changelog = root / "usr/share/doc" / name / "changelog.Debian.gz"
    try:
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return None
    match = re.match(r"\S+ \(([^)]+)\)", first)
    return match.group(1) if match else None


def unpacked_matches(root: Path, pin: PinnedPackage) -> bool:
    """Whether an unpacked package in the cache came from the pinned ``.deb``.

    Packages unpacked by this code carry a marker with the ``.deb``'s version and hash. Older caches have
    none; for them the version on the package's changelog is taken (the source version, so a binNMU
    suffix is ignored), and the marker is written so the next run reads it directly.
    """
    marker = root / MARKER
    if marker.exists():
        try:
            seen = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            return False
        return seen.get("version") == pin.version and seen.get("sha256") in (pin.sha256, None)
    version = changelog_version(root, pin.name)
    if version is None or version != _upstream_of_binnmu(pin.version):
        return False
    write_marker(root, pin, verified="changelog")
    return True


def write_marker(root: Path, pin: PinnedPackage, verified: str) -> None:
    sha = pin.sha256 if verified == "sha256" else None
    tmp = root / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"version": pin.version, "sha256": sha, "verified": verified}) + "\n")
    tmp.replace(root / MARKER)


def current_listing(manifest: pd.DataFrame, rejects: pd.DataFrame, demo_dir: Path, origin: str) -> dict[str, Any]:
    """The track list of the demo origin in the form the lock pins it."""
    mine = manifest[(manifest["origin"] == origin) & (manifest["status"] == "active")]
    tracks = [
        {
            "track_id": r.track_id,
            "source": r.source,
            "style": r.style,
            "sha256": r.sha256,
            "file": _relative(Path(r.path), demo_dir),
        }
        for r in mine.sort_values("track_id").itertuples(index=False)
    ]
    rej = rejects[rejects["origin"] == origin]
    left_out = sorted(
        ({"file": _relative(Path(r.path), demo_dir), "reason": r.reason} for r in rej.itertuples(index=False)),
        key=lambda d: d["file"],
    )
    return {"tracks": tracks, "left_out": left_out}


def _relative(path: Path, demo_dir: Path) -> str:
    try:
        return path.relative_to(demo_dir).as_posix()
    except ValueError:
        return path.as_posix()


def drift(lock: DemoLock, listing: dict[str, Any], limit: int = 8) -> list[str]:
    """Human-readable differences between the pinned track list and ``listing``; empty when identical."""
    out: list[str] = []
    pinned = {t["track_id"]: t for t in lock.tracks}
    built = {t["track_id"]: t for t in listing["tracks"]}
    missing, extra = sorted(set(pinned) - set(built)), sorted(set(built) - set(pinned))
    changed = sorted(k for k in set(pinned) & set(built) if pinned[k] != built[k])
    if missing:
        out.append(f"{len(missing)} pinned track(s) missing: {', '.join(missing[:limit])}")
    if extra:
        out.append(f"{len(extra)} track(s) not in the lock: {', '.join(extra[:limit])}")
    for key in changed[:limit]:
        was, now = pinned[key], built[key]
        diffs = [f"{f} {was[f]!r} -> {now.get(f)!r}" for f in was if was[f] != now.get(f)]
        out.append(f"{key}: {'; '.join(diffs)}")
    if len(changed) > limit:
        out.append(f"... and {len(changed) - limit} more changed track(s)")
    pinned_out = {(d["file"], d["reason"]) for d in lock.left_out}
    built_out = {(d["file"], d["reason"]) for d in listing["left_out"]}
    for file, reason in sorted(pinned_out - built_out)[:limit]:
        out.append(f"pinned as left out ({reason}) but not now: {file}")
    for file, reason in sorted(built_out - pinned_out)[:limit]:
        out.append(f"left out now ({reason}) but not in the lock: {file}")
    return out


def dumps(data: dict[str, Any]) -> str:
    """The lock as JSON with one package or track per line, so that a change reads as a one-line diff."""
    lines = ["{"]
    items = list(data.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value:
            rows = ",\n".join(f"  {json.dumps(v, ensure_ascii=False)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{rows}\n ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _apt_field(name: str, version: str | None) -> dict[str, str]:
    spec = f"{name}={version}" if version else name
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", spec], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise UserError(f"apt-cache show {spec} failed: {proc.stderr.strip()[-300:]}")
    fields: dict[str, str] = {}
    for line in proc.stdout.split("\n\n")[0].splitlines():
        if ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def update(lock_path: Path, pin_current: bool) -> None:
    """Rewrite the lock: pin every package (its current apt version, or the version already pinned), then
    build the corpus in a scratch data root and pin the tracks it gives."""
    from pipelines.catalogue.demo import DEMO_ORIGIN, MAX_TRACKS_PER_SOURCE, PACKAGES, fetch_demo
    from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, read_table
    from pipelines.settings import Settings

    old = read_lock(lock_path) if lock_path.exists() else None
    packages = []
    for pkg in PACKAGES:
        if pkg.name in RESERVED:
            raise UserError(f"{pkg.name} is reserved for independent evaluation and cannot be a demo package")
        version = None if pin_current or old is None or pkg.name not in old.packages else old.packages[pkg.name].version
        fields = _apt_field(pkg.name, version)
        packages.append(
            {
                "name": pkg.name,
                "version": fields["Version"],
                "sha256": fields["SHA256"],
                "size": int(fields["Size"]),
                "style": pkg.style,
            }
        )
    data = {
        "format": LOCK_FORMAT,
        "distribution": "Debian 12 (bookworm), main",
        "max_tracks_per_source": MAX_TRACKS_PER_SOURCE,
        "packages": packages,
        "tracks": [],
        "left_out": [],
    }
    lock_path.write_text(dumps(data), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="musicrec-lock.") as tmp:
        settings = Settings(data_root=Path(tmp) / "data")
        fetch_demo(settings, check_drift=False)
        listing = current_listing(
            read_table(settings.manifest_path, MANIFEST_SCHEMA),
            read_table(settings.rejects_path, REJECTS_SCHEMA),
            settings.demo_dir,
            DEMO_ORIGIN,
        )
    data.update(listing)
    lock_path.write_text(dumps(data), encoding="utf-8")
    log.info("wrote %s: %d packages, %d tracks", lock_path, len(packages), len(listing["tracks"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.catalogue.demo_lock", description=__doc__)
    parser.add_argument("command", choices=["update"])
    parser.add_argument("--current", action="store_true", help="pin the versions apt offers now")
    parser.add_argument("--lock", type=Path, default=LOCK_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        update(args.lock, pin_current=args.current)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
