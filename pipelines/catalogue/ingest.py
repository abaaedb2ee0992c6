"""Turning scanned candidates into manifest rows and rejects, idempotently.

Every import is tied to an *origin* (the resolved folder or CSV path, or ``demo``). Re-importing an origin
replaces only that origin's view: files still there keep their ``track_id`` and ``added_at``, a file that
moved (a new path with the content of a vanished one) keeps its ``track_id`` under the new path, new files
are added, vanished files are marked removed. Input files are only ever opened for reading.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.audio import AudioRejected, RejectReason, probe, sha256_file
from pipelines.catalogue.manifest import (
    ACTIVE,
    MANIFEST_SCHEMA,
    REJECTS_SCHEMA,
    REMOVED,
    TRACK_ID_MAX_BYTES,
    UNLABELLED,
    fit_track_id,
    make_track_id,
    read_table,
    write_table,
)
from pipelines.catalogue.scan import Candidate
from pipelines.locks import Busy, writer_lock
from pipelines.parallel import imap
from pipelines.progress import ItemProgress, ProgressLog, Sized, no_items
from pipelines.settings import Settings

log = logging.getLogger(__name__)

Progress = ItemProgress  # the callback shape of pipelines.progress, under the name callers import


no_progress = no_items  # the no-op default, under the name callers import


@dataclass
class ImportReport:
    """What one import did; printed by the CLI and logged by Airflow tasks."""

    origin: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0  # same content at a new path: same track id, new path
    hashed: int = 0  # files read in full for their sha256 (new, or size/mtime changed)
    rejects: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0  # tracks kept without a style: indexed, not trained on
    notes: list[str] = field(default_factory=list)  # what the scan wants the user to know

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    def line(self) -> str:
        rej = ", ".join(f"{n} {r}" for r, n in sorted(self.rejects.items())) or "none"
        unlabelled = f"; {self.unlabelled} unlabelled (no style)" if self.unlabelled else ""
        return (
            f"{self.origin}: {self.added} added, {self.updated} updated, {self.moved} moved, "
            f"{self.unchanged} unchanged, {self.removed} removed; rejected: {rej}{unlabelled}"
        )


# Below this many files to read, worker processes cost more to start than they save.
PARALLEL_MIN_FILES = 32


def _probe_and_hash(job: tuple[str, int | None]) -> tuple:
    """``("ok", duration, rate, channels, sha256)`` of one file, or ``("rejected", reason, detail)``.

    Module-level and plain-valued, so worker processes can run it: the import reads every new file in full
    (probe and sha256), which is the import's whole cost, and it parallelises file by file.
    """
    path, max_bytes = job
    try:
        info = probe(Path(path), max_bytes)
        return ("ok", info.duration_s, info.sample_rate, info.channels, sha256_file(Path(path)))
    except AudioRejected as exc:
        return ("rejected", str(exc.reason), exc.detail)
    except OSError as exc:
        return ("rejected", str(RejectReason.UNREADABLE), f"{type(exc).__name__}: {exc}")


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _read_files(paths: list[str], max_bytes: int | None, label: str, progress: Progress) -> dict[str, tuple]:
    """Probe and hash ``paths`` (on every core when there are many), logging progress and throughput."""
    meter = ProgressLog(f"import {label}: probe and hash", len(paths), log, unit="files")
    jobs = [(p, max_bytes) for p in paths]
    workers = _workers() if len(jobs) >= PARALLEL_MIN_FILES else 1
    results: Iterator[tuple] = imap(_probe_and_hash, jobs, workers, chunk=8)
    out = {}
    for path, result in zip(paths, meter.iterate(progress(Sized(results, len(jobs)))), strict=True):
        out[path] = result
    return out


def utf8_name(path: Path | str) -> bool:
    """Whether ``path`` is valid UTF-8: the manifest, the rejects table and every face store names as text."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path: Path | str) -> str:
    """``path`` as storable text: bytes that are not UTF-8 written as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _reject(origin: str, cand: Candidate, reason: RejectReason, detail: str, dup: str | None = None) -> dict:
    return {
        "origin": origin,
        "path": shown_path(cand.path),
        "style": cand.style,
        "reason": str(reason),
        "detail": detail,
        "duplicate_of": dup,
        "seen_at": datetime.now(UTC),
    }


def ingest(
    candidates: list[Candidate],
    origin: str,
    label: str,
    settings: Settings,
    progress: Progress = no_progress,
) -> ImportReport:
    """Probe and hash every candidate, then merge them into the manifest as the current state of ``origin``.

    ``label`` prefixes generated track ids (the folder name, CSV name or package name). Hashes and probes
    are reused for files whose path, size and mtime are unchanged, so a re-import of a large library
    costs a ``stat`` per file; only new and changed files are read in full.
    """
    # A file name that is not UTF-8 cannot be stored or served by name: a reject with a reason, not a crash.
    named = [(c, utf8_name(c.path)) for c in candidates]
    misnamed = [c for c, ok in named if not ok]
    candidates = [c for c, ok in named if ok]
    # The files are read (the slow part) without holding the lock; the manifest is then read again, merged
    # and written under the writer lock, so that an import, sync or demo fetch running meanwhile neither
    # loses this one's tracks nor has its own lost. Files the fresh manifest wants read that the first pass
    # did not read (or that changed since) are read under the lock.
    snapshot = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    stats, to_read = _stat_candidates(candidates, _known(snapshot, origin))
    read = _read_files(to_read, settings.max_audio_bytes, label, progress)
    lock = settings.catalogue_lock_path
    with writer_lock(lock, settings.catalogue_lock_timeout_s, "change the catalogue", CatalogueBusy):
        return _merge(candidates, origin, label, settings, progress, stats, read, misnamed)


class CatalogueBusy(Busy):
    """Another import, sync or demo fetch holds the manifest's writer lock past the deadline."""


Stats = dict[str, os.stat_result | OSError]


def _known(manifest: pd.DataFrame, origin: str) -> dict[str, Any]:
    return {row.path: row for row in manifest[manifest["origin"] == origin].itertuples(index=False)}


def _stat_candidates(candidates: list[Candidate], known: dict[str, Any]) -> tuple[Stats, list[str]]:
    """A ``stat`` of every candidate, and the paths to read: new ones, and those whose size or mtime changed."""
    stats: Stats = {}
    to_read: list[str] = []
    for cand in candidates:
        if cand.style == "":
            continue
        key = str(cand.path)
        try:
            found = stats[key] = cand.path.stat()
        except OSError as exc:
            stats[key] = exc
            continue
        prev = known.get(key)
        if not (prev is not None and prev.size == found.st_size and prev.mtime_ns == found.st_mtime_ns):
            to_read.append(key)
    return stats, list(dict.fromkeys(to_read))


def _same_file(a: os.stat_result | OSError | None, b: os.stat_result | OSError) -> bool:
    if not isinstance(a, os.stat_result) or not isinstance(b, os.stat_result):
        return False
    return (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)


def _merge(
    candidates: list[Candidate],
    origin: str,
    label: str,
    settings: Settings,
    progress: Progress,
    first_stats: Stats,
    read: dict[str, tuple],
    misnamed: list[Candidate],
) -> ImportReport:
    now = datetime.now(UTC)
    manifest = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    mine = manifest[manifest["origin"] == origin]
    others = manifest[manifest["origin"] != origin]
    known = _known(manifest, origin)
    taken_ids = set(others["track_id"])
    sha_owner = {r.sha256: r.track_id for r in others.itertuples(index=False) if r.status == ACTIVE}
    present = {str(c.path) for c in candidates}
    # Rows whose file vanished, by content: a new path with the same sha256 is that track, moved.
    vanished: dict[str, Any] = {}
    for row in sorted(mine.itertuples(index=False), key=lambda r: r.status == ACTIVE):
        if row.path not in present:
            vanished[row.sha256] = row  # an active row wins over a removed one with the same content
    moved_ids: set[str] = set()
    report = ImportReport(origin=origin)
    rejects: list[dict] = []
    rows: list[dict] = []
    renamed: list[str] = []
    for cand in misnamed:
        detail = "the file name is not valid UTF-8; rename it (for example with `convmv -f latin1 -t utf8`)"
        rejects.append(_reject(origin, cand, RejectReason.UNDECODABLE_NAME, detail))

    ordered = sorted(candidates, key=lambda c: (str(c.path) not in known, str(c.path)))
    stats, to_read = _stat_candidates(ordered, known)
    late = [k for k in to_read if k not in read or not _same_file(first_stats.get(k), stats[k])]
    if late:
        log.info("import %s: %d file(s) changed while it ran or newly wanted; reading them again", label, len(late))
        read = {**read, **_read_files(late, settings.max_audio_bytes, label, progress)}
    # A file read in the first pass that the fresh manifest already describes unchanged keeps its stored row.
    still_wanted = set(to_read)
    read = {k: v for k, v in read.items() if k in still_wanted}

    for cand in ordered:
        if cand.style == "":
            rejects.append(_reject(origin, cand, RejectReason.INVALID_STYLE, "style is empty or not printable"))
            continue
        prev = known.get(str(cand.path))
        st = stats[str(cand.path)]
        if isinstance(st, OSError):
            rejects.append(_reject(origin, cand, RejectReason.UNREADABLE, f"{type(st).__name__}: {st}"))
            continue
        if str(cand.path) not in read:
            assert prev is not None  # not read again only when its manifest row has the same size and mtime
            sha, dur, sr, ch = prev.sha256, prev.duration_s, prev.sample_rate, prev.channels
        else:
            outcome = read[str(cand.path)]
            if outcome[0] == "rejected":
                rejects.append(_reject(origin, cand, RejectReason(outcome[1]), outcome[2]))
                continue
            _, dur, sr, ch, sha = outcome
            report.hashed += 1
        if dur < cand.min_seconds:
            rejects.append(_reject(origin, cand, RejectReason.TOO_SHORT, f"{dur:.0f} s < {cand.min_seconds:.0f} s"))
            continue
        if cand.doubt:
            rejects.append(_reject(origin, cand, RejectReason.DOUBTFUL_STYLE, cand.doubt))
            continue
        if sha in sha_owner:
            owner = sha_owner[sha]
            rejects.append(_reject(origin, cand, RejectReason.DUPLICATE, f"same content as {owner}", owner))
            continue
        if prev is None and sha in vanished:
            prev = vanished.pop(sha)
            moved_ids.add(prev.track_id)
            log.info("moved %s: %s -> %s", prev.track_id, prev.path, cand.path)
        track_id = prev.track_id if prev is not None else (cand.track_id or make_track_id(label, cand.relative))
        if len(track_id.encode()) > TRACK_ID_MAX_BYTES:
            detail = f"track_id has {len(track_id.encode())} UTF-8 bytes; the limit is {TRACK_ID_MAX_BYTES}"
            rejects.append(_reject(origin, cand, RejectReason.INVALID_TRACK_ID, detail))
            continue
        if track_id in taken_ids:
            wanted, track_id = track_id, fit_track_id(f"{track_id}-{sha[:8]}")
            renamed.append(f"{wanted} -> {track_id}")
        taken_ids.add(track_id)
        report.unlabelled += cand.style is None
        sha_owner[sha] = track_id
        if prev is None or prev.status != ACTIVE:
            report.added += 1
        elif track_id in moved_ids:
            report.moved += 1
        elif prev.sha256 != sha:
            report.updated += 1
        else:
            report.unchanged += 1
        rows.append(
            {
                "track_id": track_id,
                "path": str(cand.path),
                "style": cand.style or UNLABELLED,
                "source": cand.source,
                "artist": cand.artist,
                "album": cand.album,
                "title": cand.title,
                "genre": cand.genre,
                "track_number": cand.track_number,
                "mbid": cand.mbid,
                "licence": cand.licence,
                "licence_file": cand.licence_file,
                "label_confidence": cand.label_confidence,
                "duration_s": float(dur),
                "sample_rate": int(sr),
                "channels": int(ch),
                "sha256": sha,
                "size": int(st.st_size),
                "mtime_ns": int(st.st_mtime_ns),
                "origin": origin,
                "status": ACTIVE,
                "added_at": prev.added_at if prev is not None and prev.status == ACTIVE else now,
                "removed_at": None,
            }
        )

    if renamed:
        shown = ", ".join(renamed[:5]) + (f" and {len(renamed) - 5} more" if len(renamed) > 5 else "")
        report.notes.append(f"{len(renamed)} track id(s) were already taken by another track and got a suffix: {shown}")
    seen_paths = {r["path"] for r in rows}
    gone = mine[~mine["path"].isin(seen_paths) & ~mine["track_id"].isin(moved_ids)].copy()
    newly_gone = gone["status"] == ACTIVE
    report.removed = int(newly_gone.sum())
    gone.loc[newly_gone, "status"] = REMOVED
    gone.loc[newly_gone, "removed_at"] = now

    parts = [df for df in (others, pd.DataFrame(rows), gone) if not df.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MANIFEST_SCHEMA.names)
    write_table(merged.sort_values("track_id", kind="stable"), MANIFEST_SCHEMA, settings.manifest_path)

    old_rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    kept = old_rejects[old_rejects["origin"] != origin]
    parts = [df for df in (kept, pd.DataFrame(rejects)) if not df.empty]
    all_rejects = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REJECTS_SCHEMA.names)
    write_table(all_rejects, REJECTS_SCHEMA, settings.rejects_path)

    for rej in rejects:
        report.rejects[rej["reason"]] = report.rejects.get(rej["reason"], 0) + 1
        log.info("rejected %s: %s (%s)", rej["path"], rej["reason"], rej["detail"])
    log.info("%s", report.line())
    return report
