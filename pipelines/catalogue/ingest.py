"""Turning scanned candidates into manifest rows and rejects, idempotently.

Every import is tied to an *origin* (the resolved folder or CSV path, or ``demo``). Re-importing an origin
replaces only that origin's view: files still there keep their ``track_id`` and ``added_at``, a file that
moved (a new path with the content of a vanished one) keeps its ``track_id`` under the new path, new files
are added, vanished files are marked removed. Input files are only ever opened for reading.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from pipelines.progress import ItemProgress
from pipelines.settings import Settings

log = logging.getLogger(__name__)

Progress = ItemProgress  # the callback shape of pipelines.progress, under the name callers import


def no_progress(items: Iterable[Any]) -> Iterable[Any]:
    return items


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


def _reject(origin: str, cand: Candidate, reason: RejectReason, detail: str, dup: str | None = None) -> dict:
    return {
        "origin": origin,
        "path": str(cand.path),
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
    now = datetime.now(UTC)
    manifest = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    mine = manifest[manifest["origin"] == origin]
    others = manifest[manifest["origin"] != origin]
    known = {row.path: row for row in mine.itertuples(index=False)}
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

    for cand in progress(sorted(candidates, key=lambda c: (str(c.path) not in known, str(c.path)))):
        if cand.style == "":
            rejects.append(_reject(origin, cand, RejectReason.INVALID_STYLE, "style is empty or not printable"))
            continue
        prev = known.get(str(cand.path))
        try:
            st = cand.path.stat()
            if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
                sha, dur, sr, ch = prev.sha256, prev.duration_s, prev.sample_rate, prev.channels
            else:
                info = probe(cand.path, settings.max_audio_bytes)
                sha = sha256_file(cand.path)
                report.hashed += 1
                dur, sr, ch = info.duration_s, info.sample_rate, info.channels
        except AudioRejected as exc:
            rejects.append(_reject(origin, cand, exc.reason, exc.detail))
            continue
        except OSError as exc:
            rejects.append(_reject(origin, cand, RejectReason.UNREADABLE, f"{type(exc).__name__}: {exc}"))
            continue
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
            track_id = fit_track_id(f"{track_id}-{sha[:8]}")
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
