"""Which embedder fills a collection and answers its queries: the seam to the model registry.

A collection records the model version that made its vectors; queries against it must be embedded by
that same version, whatever the registry's champion is by then. ``raw`` (the untrained baseline) needs no
registry; every other version is loaded through :mod:`pipelines.registry`, imported only when
needed so the index and serving work before a model is trained.
"""

from __future__ import annotations

import logging

from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.model.embedder import Embedder, RawEmbedder
from pipelines.settings import Settings

log = logging.getLogger(__name__)

RAW = "raw"  # the model version of the raw-MFCC baseline (RawEmbedder.version)
MEANSTD = "meanstd"  # the MFCC mean+std baseline (pipelines.model.baselines)
BASELINES = (RAW, MEANSTD)
BEST = "best"  # the champion if it beats the baselines, else the strongest baseline (pipelines.evaluation.best)
CHAMPION = "champion"  # registry alias the scheduled refresh follows
ALIASES = (CHAMPION, "challenger")


def resolve_model_version(settings: Settings, requested: str = CHAMPION) -> str:
    """A concrete model version: ``raw``, a version number as given, or what an alias points to now."""
    if requested == BEST:
        from pipelines.evaluation.best import choose_best

        choice = choose_best(settings)
        log.warning("%s", choice.line())
        return choice.version
    if requested not in ALIASES:
        return requested
    from pipelines.registry import resolve_alias  # MLflow is imported only when a registered model is needed

    version = str(resolve_alias(settings, requested))
    log.info("@%s resolves to model version %s", requested, version)
    return version


def check_model_version(settings: Settings, model_version: str) -> None:
    """Fail with a clear :class:`UserError` unless ``model_version`` is ``raw`` or a registered version."""
    if model_version in BASELINES:
        return
    from pipelines.registry import Registry

    Registry(settings).version(model_version)


def load_embedder(settings: Settings, model_version: str, params: FeatureParams) -> Embedder:
    """The embedder of ``model_version`` for front-end vectors made with ``params``."""
    if model_version == RAW:
        return RawEmbedder(feature_version=params.version, dim=params.dim)
    if model_version == MEANSTD:
        from pipelines.model.baselines import MeanStdEmbedder

        return MeanStdEmbedder(feature_version=params.version, input_dim=params.dim, n_mfcc=params.n_mfcc)
    from pipelines.model.cache import load_cached  # MLflow is imported only on a cache miss

    embedder = load_cached(settings, model_version)
    if embedder.feature_version != params.version:
        raise UserError(
            f"model version {model_version} expects feature version {embedder.feature_version}, "
            f"but the vectors were made with {params.version}"
        )
    return embedder
