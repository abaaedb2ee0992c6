"""Are a step's inputs there yet? Each check returns why not (one line) or None.

A scheduled run on a platform that has no catalogue, no features or no champion yet has nothing to do:
the DAG tasks skip with this reason instead of failing and alerting. Only absence is reported here;
anything that is there but broken (an unreadable Parquet file, MLflow down) still raises, so the run fails.
"""

from __future__ import annotations

import pandas as pd

from pipelines.catalogue.manifest import UNLABELLED, read_manifest
from pipelines.features.params import FeatureParams
from pipelines.settings import Settings


def manifest_missing(settings: Settings) -> str | None:
    """Why a feature build has nothing to read: no catalogue manifest yet."""
    if settings.manifest_path.exists():
        return None
    return (
        f"no catalogue manifest at {settings.manifest_path} yet: import music first "
        "(`musicrec catalogue import <folder>` or `musicrec data fetch-demo`)"
    )


def _featured_tracks(settings: Settings, params: FeatureParams) -> tuple[str | None, pd.DataFrame]:
    """The active manifest rows (newest per track) that have a vector under ``params``, or why there are none."""
    from pipelines.features.store import part_files, stored_shas

    empty = pd.DataFrame()
    if reason := manifest_missing(settings):
        return reason, empty
    manifest = read_manifest(settings.manifest_path, active_only=True)
    if manifest.empty:
        return f"the catalogue manifest at {settings.manifest_path} lists no active tracks yet", empty
    if not part_files(settings, params):
        return f"no features under version {params.version} yet: build_features has not embedded the catalogue", empty
    if "added_at" in manifest.columns:
        manifest = manifest.sort_values("added_at", kind="stable")
    manifest = manifest.drop_duplicates("track_id", keep="last")
    featured = manifest[manifest["sha256"].isin(stored_shas(settings, params))]
    if featured.empty:
        return f"no active track has features under version {params.version} yet", empty
    return None, featured


def features_missing(settings: Settings, params: FeatureParams | None = None) -> str | None:
    """Why an index refresh has nothing to embed: no manifest, no active tracks, or none with features."""
    reason, _ = _featured_tracks(settings, params or settings.features)
    return reason


def training_inputs_missing(settings: Settings, params: FeatureParams | None = None) -> str | None:
    """Why training has nothing to learn from: :func:`features_missing`, or no labelled track among them."""
    params = params or settings.features
    reason, featured = _featured_tracks(settings, params)
    if reason:
        return reason
    if (featured["style"].fillna(UNLABELLED) == UNLABELLED).all():
        return f"none of the {len(featured)} tracks with features under version {params.version} has a style label"
    return None


def champion_missing(settings: Settings) -> str | None:
    """Why a refresh of the champion has no model: the registry has no champion yet.

    An unreachable MLflow raises :class:`pipelines.registry.RegistryUnavailable` instead: that is an outage,
    not an empty registry.
    """
    from pipelines.registry import CHAMPION, MODEL_NAME, Registry

    registry = Registry(settings)
    registry.check()
    if registry.alias(CHAMPION) is None:
        return f"{MODEL_NAME} has no {CHAMPION!r} yet: no model has been trained and promoted"
    return None
