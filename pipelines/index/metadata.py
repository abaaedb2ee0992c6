"""What musicrec stores in Milvus besides vectors: collection properties, field limits, filter literals.

Everything a reader must know to query a collection correctly (which model made the vectors, with which
front-end parameters, which index) is stored in the collection's properties (docs/platform.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines.catalogue.limits import STYLE_MAX_BYTES, TRACK_ID_MAX_BYTES

PROP = "musicrec."  # prefix of the collection properties musicrec writes
# VARCHAR limits, in bytes (Milvus counts UTF-8 bytes); longer metadata is cut, never rejected.
FIELD_BYTES = {
    "track_id": TRACK_ID_MAX_BYTES,
    "style": STYLE_MAX_BYTES,
    "source": 256,
    "artist": 1024,
    "album": 1024,
    "title": 1024,
    "sha256": 64,
    "model_version": 128,
    "feature_version": 64,
}
RESULT_FIELDS = ("track_id", "style", "source", "artist", "album", "title", "sha256")
# Primary keys per query: keeps each filter expression small (a few hundred kB at most).
KEYS_PER_QUERY = 512
# Escapes understood by both Milvus's and Milvus Lite's string literals; other characters stand for themselves.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def literal(value: str) -> str:
    """``value`` as a Milvus string literal: identifiers are data, so they are always quoted and escaped.

    Milvus Lite does not accept expression templates (``filter_params``), so every filter musicrec sends
    is built from literals made here and nowhere else.
    """
    return '"' + str(value).translate(_ESCAPES) + '"'


def key_filter(field_name: str, values: Sequence[str]) -> str:
    """``field in ["a", "b"]`` with every value escaped."""
    return f"{field_name} in [{', '.join(literal(v) for v in values)}]"


def collection_name(alias: str, model_version: str, feature_version: str) -> str:
    """``tracks__<model>__<features>``: readable, and one name per pair, so a re-run finds its own work."""
    clean = [re.sub(r"[^A-Za-z0-9_]", "_", part) for part in (model_version, feature_version)]
    return f"{alias}__{clean[0]}__{clean[1]}"


def clip(text: object, name: str) -> str:
    """Metadata as stored: missing becomes ``""``, too long is cut at a UTF-8 character boundary."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    raw = str(text).encode()[: FIELD_BYTES[name]]
    return raw.decode(errors="ignore")


def now_iso() -> str:
    """Now, in UTC, as stored in collection properties."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection's properties say about it."""

    name: str
    model_version: str
    feature_version: str
    dim: int
    index_type: str
    created_at: str
    feature_params: dict[str, Any] = field(default_factory=dict)
    previous: str = ""
    styles: tuple[str, ...] = ()
    state: str = "building"  # "ready" once verified; a crashed refresh leaves "building"
    rolled_back_from: str = ""  # set by a rollback: kept (to roll forward) until a later refresh succeeds
    updated_at: str = ""  # set by a refresh that changed the collection in place (read-only here)

    def properties(self) -> dict[str, str]:
        return {
            PROP + "model_version": self.model_version,
            PROP + "feature_version": self.feature_version,
            PROP + "dim": str(self.dim),
            PROP + "index_type": self.index_type,
            PROP + "created_at": self.created_at,
            PROP + "feature_params": json.dumps(self.feature_params, sort_keys=True),
            PROP + "previous": self.previous,
            PROP + "styles": json.dumps(sorted(self.styles)),
            PROP + "state": self.state,
            PROP + "rolled_back_from": self.rolled_back_from,
        }

    @classmethod
    def from_properties(cls, name: str, props: dict[str, str]) -> CollectionMeta:
        get = {k.removeprefix(PROP): v for k, v in props.items() if k.startswith(PROP)}
        return cls(
            name=name,
            model_version=get.get("model_version", ""),
            feature_version=get.get("feature_version", ""),
            dim=int(get.get("dim", "0")),
            index_type=get.get("index_type", ""),
            created_at=get.get("created_at", ""),
            feature_params=json.loads(get.get("feature_params") or "{}"),
            previous=get.get("previous", ""),
            styles=tuple(json.loads(get.get("styles") or "[]")),
            state=get.get("state", "building"),
            rolled_back_from=get.get("rolled_back_from", ""),
            updated_at=get.get("updated_at", ""),
        )


@dataclass(frozen=True)
class Hit:
    """One search result: cosine distance (1 - cosine similarity, 0 = same direction) and stored fields."""

    track_id: str
    distance: float
    fields: dict[str, Any]
