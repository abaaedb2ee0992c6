"""A relocatable data root: MLflow's absolute paths follow the data root when it is copied or moved.

MLflow writes absolute locations into its embedded store, so a copied root would log into the original and a
moved one could not load its models; this module rewrites them when the root has changed.
Design: docs/training.md#registry-and-gate-registrypy ("A relocatable data root").
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipelines.settings import Settings

log = logging.getLogger(__name__)

MARKER = "mlflow-root.json"
ARTIFACTS_DIR = "mlartifacts"
_TEXT_TYPES = ("CHAR", "CLOB", "TEXT")  # SQLite's rules for text affinity
_SKIP_TABLES = {"alembic_version"}


@dataclass(frozen=True)
class Relocation:
    """What one relocation did: the roots and how many values each ``table.column`` had rewritten."""

    old_root: str
    new_root: str
    rewritten: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rewritten.values())


def embedded_store(settings: Settings) -> Path | None:
    """The SQLite file behind the tracking URI when it lies under the data root, else None."""
    uri = settings.paths.mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    db = Path(path).resolve()  # a relative path is relative to the working directory, as for SQLAlchemy
    return db if db.is_relative_to(settings.paths.data_root) else None


def read_marker(root: Path) -> str | None:
    """The root recorded in ``root``'s marker, or None when there is none (or it is unreadable)."""
    try:
        return str(json.loads((root / MARKER).read_text())["root"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", root / MARKER, exc)
        return None


def write_marker(root: Path) -> None:
    """Record that the MLflow paths in ``root`` are written for ``root`` (atomically: write, then rename)."""
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{MARKER}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"root": str(root)}, fh)
            fh.write("\n")
        os.replace(tmp, root / MARKER)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def uri_to_path(location: str) -> str:
    """A ``file:`` URI or a plain path as a plain path (percent-escapes decoded)."""
    parts = urlsplit(location)
    return unquote(parts.path) if parts.scheme == "file" else location


def _prefix_pairs(old_root: str, new_root: str) -> list[tuple[str, str]]:
    """Each spelling of ``old_root`` MLflow may have stored (plain path, ``file://`` URI escaped or not) with
    the same spelling of ``new_root``; an old spelling that repeats another (no escaping needed) is dropped.
    """

    def forms(root: str) -> list[str]:
        return [root, Path(root).as_uri(), f"file://{root}"]

    pairs: dict[str, str] = {}
    for old, new in zip(forms(old_root), forms(new_root), strict=True):
        pairs.setdefault(old, new)
    return list(pairs.items())


def _text_columns(con: sqlite3.Connection) -> list[tuple[str, str]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = []
    for table in tables:
        if table in _SKIP_TABLES or table.startswith("sqlite_"):
            continue
        for _cid, name, decl, *_ in con.execute(f"PRAGMA table_info({_ident(table)})"):
            if any(t in (decl or "").upper() for t in _TEXT_TYPES):
                columns.append((table, name))
    return columns


def _ident(name: str) -> str:
    """A quoted SQL identifier (table and column names come from the schema; values are always bound)."""
    return '"' + name.replace('"', '""') + '"'


def rewrite_root(db: Path, old_root: str, new_root: str) -> dict[str, int]:
    """Replace the path prefix ``old_root`` with ``new_root`` in every text column of ``db``, atomically.

    Only whole prefixes match (``/x/data`` and ``/x/data/...``, never ``/x/data2``), in each spelling of
    :func:`_prefix_pairs`. Returns the number of values rewritten per ``table.column`` (non-zero only).
    """
    pairs = _prefix_pairs(old_root, new_root)
    counts: dict[str, int] = {}
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")  # one writer: a concurrent opener waits, then finds nothing to do
        try:
            for table, column in _text_columns(con):
                col = _ident(column)
                for old, new in pairs:
                    cur = con.execute(
                        f"UPDATE {_ident(table)} SET {col} = ? || substr({col}, ?) "
                        f"WHERE {col} = ? OR substr({col}, 1, ?) = ?",
                        (new, len(old) + 1, old, len(old) + 1, old + "/"),
                    )
                    if cur.rowcount > 0:
                        key = f"{table}.{column}"
                        counts[key] = counts.get(key, 0) + cur.rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return counts


def _inferred_root(db: Path, experiment: str) -> str | None:
    """For a store written before the marker existed: the root its experiment's artifacts were put under."""
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)).fetchone()
    except sqlite3.OperationalError:  # no tables yet
        return None
    finally:
        con.close()
    if row is None or not row[0]:
        return None
    location = Path(uri_to_path(row[0]))
    return str(location.parent) if location.name == ARTIFACTS_DIR else None


def relocate(settings: Settings, experiment: str) -> Relocation | None:
    """Make the embedded store's paths point into the current data root; returns what was rewritten.

    None when there was nothing to do: not the embedded store, or the marker already names this root.
    ``experiment`` is the experiment whose artifact location tells the old root of a store without marker.
    """
    db = embedded_store(settings)
    if db is None:
        return None
    root = settings.paths.data_root
    old = read_marker(root)
    if old == str(root):
        return None
    if not db.exists():
        if old is not None:  # a stale marker, and no paths recorded anywhere
            write_marker(root)
        return None
    if old is None:
        old = _inferred_root(db, experiment)
        if old is None or old == str(root):
            write_marker(root)
            return None
    counts = rewrite_root(db, old, str(root))
    write_marker(root)
    done = Relocation(old, str(root), counts)
    log.info(
        "MLflow store %s was written for data root %s: %d paths rewritten to %s (%s)",
        db,
        old,
        done.total,
        root,
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none held the old root",
    )
    return done
