"""Model review: the registry's versions, champion and challenger side by side, and the same queries for both.

Everything is read from MLflow (version tags, run metrics, the ``review/`` artifacts the evaluation logs)
and from the Milvus collections each version filled; nothing here trains or embeds the whole catalogue.
Artifacts are served by name only when the run lists that name under ``review/``: a name from a request
is compared with MLflow's listing, never joined into a path.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import UserError
from pipelines.index.metadata import RESULT_FIELDS, CollectionMeta
from pipelines.index.milvus import TrackIndex
from pipelines.settings import Settings
from serving.errors import NotFound, shown
from serving.service import Recommendation

log = logging.getLogger(__name__)

REVIEW_DIR = "review"
SERVED_TYPES = {".png": "image/png", ".csv": "text/csv", ".md": "text/markdown", ".html": "text/html"}


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    created: str
    run_id: str
    feature_version: str
    decision: str
    reasons: list[str]
    tags: dict[str, str]


@dataclass(frozen=True)
class Side:
    """One model for the side-by-side view: its metrics (with ``_sd`` intervals), per-style rows, images."""

    version: VersionInfo
    metrics: dict[str, float]
    per_style: list[dict[str, str]]
    artifacts: list[str]
    collection: str | None  # a collection this version filled, used for its example answers


@dataclass(frozen=True)
class ExampleAnswer:
    query: Recommendation
    answers: dict[str, list[Recommendation]] = field(default_factory=dict)  # version -> neighbours


def _registry(settings: Settings) -> Any:
    from pipelines.registry import Registry

    return Registry(settings)


def _aliases(registry: Any) -> dict[str, list[str]]:
    """Version -> its aliases, from the registered model (version searches leave aliases out)."""
    from mlflow.exceptions import MlflowException

    from pipelines.registry import MODEL_NAME

    try:
        model = registry.client.get_registered_model(MODEL_NAME)
    except MlflowException:
        return {}
    out: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(str(version), []).append(str(alias))
    return out


def _info(mv: Any, aliases: dict[str, list[str]]) -> VersionInfo:
    tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
    reasons = [r.strip() for r in tags.get("gate.reasons", "").split(";") if r.strip()]
    created = mv.creation_timestamp
    return VersionInfo(
        version=str(mv.version),
        aliases=sorted(aliases.get(str(mv.version), [])),
        created=str(np.datetime64(int(created), "ms")) if created else "",
        run_id=str(mv.run_id or tags.get("run_id", "")),
        feature_version=tags.get("feature_version", ""),
        decision=tags.get("gate.decision", "not gated"),
        reasons=reasons,
        tags={k: v for k, v in tags.items() if k not in ("encoder",)},
    )


class ModelReview:
    """What the review page shows, read from the model registry and the index."""

    def __init__(self, settings: Settings, index: TrackIndex) -> None:
        self.settings = settings
        self.index = index

    def versions(self) -> list[VersionInfo]:
        """Every registered version, newest first, with aliases and the gate's decision."""
        registry = _registry(self.settings)
        aliases = _aliases(registry)
        return [_info(mv, aliases) for mv in registry.versions()]

    def _by_alias(self, alias: str) -> VersionInfo | None:
        registry = _registry(self.settings)
        version = registry.alias(alias)
        return _info(registry.version(version), _aliases(registry)) if version else None

    def _collection_for(self, version: str) -> CollectionMeta | None:
        """The live collection when ``version`` made it, else the newest verified one it made."""
        live = self.index.alias_target()
        made = [m for m in self.index.managed() if m.model_version == version and m.state == "ready"]
        for meta in made:
            if meta.name == live:
                return meta
        return made[-1] if made else None

    def artifact_names(self, run_id: str) -> list[str]:
        if not run_id:
            return []
        client = _registry(self.settings).client
        try:
            listed = client.list_artifacts(run_id, REVIEW_DIR)
        except Exception as exc:  # a run without artifacts, or an artifact store that is gone
            log.info("no review artifacts for run %s: %s", run_id, exc)
            return []
        names = [Path(f.path).name for f in listed if not f.is_dir]
        return sorted(n for n in names if Path(n).suffix in SERVED_TYPES)

    def artifact(self, version: str, name: str) -> tuple[bytes, str]:
        """The bytes and media type of review artifact ``name`` of ``version``'s run; 404 unless listed."""
        info = self.version(version)
        if name not in self.artifact_names(info.run_id):
            raise NotFound(f"version {version} has no review artifact {shown(name)}")
        client = _registry(self.settings).client
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(info.run_id, f"{REVIEW_DIR}/{name}", tmp)
            return Path(local).read_bytes(), SERVED_TYPES[Path(name).suffix]

    def version(self, version: str) -> VersionInfo:
        if not version.isdigit():
            raise NotFound(f"no model version {shown(version)}")
        try:
            registry = _registry(self.settings)
            return _info(registry.version(version), _aliases(registry))
        except UserError as exc:
            raise NotFound(str(exc)) from None

    def side(self, info: VersionInfo) -> Side:
        registry = _registry(self.settings)
        metrics: dict[str, float] = {}
        if info.run_id:
            try:
                metrics = {k: round(float(v), 6) for k, v in registry.run_metrics(info.run_id).items()}
            except Exception as exc:
                log.info("run %s of version %s has no metrics: %s", info.run_id, info.version, exc)
        names = self.artifact_names(info.run_id)
        per_style: list[dict[str, str]] = []
        if "per_style.csv" in names:
            data, _ = self.artifact(info.version, "per_style.csv")
            per_style = list(csv.DictReader(io.StringIO(data.decode())))
        meta = self._collection_for(info.version)
        return Side(info, metrics, per_style, names, meta.name if meta else None)

    def compare(self) -> dict[str, Side | None]:
        """Champion and challenger (the challenger only when it is not also the champion)."""
        champion, challenger = self._by_alias("champion"), self._by_alias("challenger")
        if champion and challenger and champion.version == challenger.version:
            challenger = None
        return {
            "champion": self.side(champion) if champion else None,
            "challenger": self.side(challenger) if challenger else None,
        }

    def examples(self, query_ids: list[str], versions: list[str], k: int = 5) -> list[ExampleAnswer]:
        """The same query tracks answered by each version, from the collection that version filled."""
        metas = {v: self._collection_for(v) for v in versions}
        out: list[ExampleAnswer] = []
        for track_id in query_ids:
            query: Recommendation | None = None
            answers: dict[str, list[Recommendation]] = {}
            for version, meta in metas.items():
                if meta is None:
                    continue
                rows = self.index.get(meta.name, [track_id], (*RESULT_FIELDS, "vector"))
                if not rows:
                    continue
                row = rows[0]
                if query is None:
                    query = Recommendation(
                        track_id, row["style"], row["source"], row["artist"] or None, row["title"] or None, 0.0
                    )
                vec = np.asarray(row["vector"], dtype=np.float32).reshape(1, -1)
                hits = self.index.search(meta, vec, k + 3)[0]
                picked = [h for h in hits if h.track_id != track_id and h.fields["sha256"] != row["sha256"]][:k]
                answers[version] = [Recommendation.from_hit(h) for h in picked]
            if query is not None:
                out.append(ExampleAnswer(query, answers))
        return out

    def promote(self, version: str, by: str) -> str | None:
        """Make ``version`` the champion; returns the previous champion."""
        self.version(version)
        return _registry(self.settings).set_champion(version, by=by, reason="promoted on the review page")

    def rollback(self, by: str) -> tuple[str, str]:
        return _registry(self.settings).rollback(by=by)
