"""Model references: the one vocabulary for "which model" (``champion``, ``raw``, ``best``, ``12``, ...).

Every front end takes a model as text: the CLI's ``--model-version``, ``musicrec model evaluate VERSION``,
the DAGs' run parameters, a collection's recorded ``model_version``. :class:`ModelRef` parses that text
once, :meth:`ModelRef.resolve` turns an alias or ``best`` into what it means now, and :meth:`ModelRef.load`
gives the embedder (the baselines need no registry; a version goes through :mod:`pipelines.model.cache`,
which falls back to :mod:`pipelines.registry`). :func:`param_pattern` gives the DAGs their Param regex
from the same names.

Light on purpose: importing this module pulls in no MLflow, torch or settings (DAG files import it while
Airflow parses them). Design: docs/architecture.md#model-references.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from pipelines.errors import UserError

if TYPE_CHECKING:
    from pipelines.features.params import FeatureParams
    from pipelines.model.embedder import Embedder
    from pipelines.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"  # registry alias: the served model, the one the scheduled refresh follows
CHALLENGER = "challenger"  # registry alias: the latest trained model, before the gate promotes it
ALIASES = (CHAMPION, CHALLENGER)
RAW = "raw"  # the raw-MFCC baseline (pipelines.model.embedder.RawEmbedder)
MEANSTD = "meanstd"  # the MFCC mean+std baseline (pipelines.model.baselines.MeanStdEmbedder)
RANDOM = "random"  # random vectors: a floor for the evaluation, nothing to serve
BEST = "best"  # the champion if it beats the baselines, else the strongest baseline (pipelines.evaluation.best)

SERVABLE_BASELINES = (RAW, MEANSTD)
"""Baselines with an embedder: an index can be built and served with them (``index refresh``)."""
EVALUATED_BASELINES = (RAW, MEANSTD, RANDOM)
"""Baselines the evaluation scores beside every model. ``random`` is among them as a floor but has no
embedder, so it is not in :data:`SERVABLE_BASELINES`."""

VERSION_DIGITS = 9  # a registry version number: 1..999999999
_VERSION = re.compile(rf"[1-9][0-9]{{0,{VERSION_DIGITS - 1}}}")

REFRESH_NAMES = (*ALIASES, BEST, *SERVABLE_BASELINES)
"""What an index refresh accepts besides a version number."""
EVALUATE_NAMES = (*ALIASES, *EVALUATED_BASELINES)
"""What ``model evaluate`` accepts besides a version number (``best`` is a serving choice, not a model)."""


class Kind(StrEnum):
    ALIAS = "alias"
    BASELINE = "baseline"
    BEST = "best"
    VERSION = "version"


def param_pattern(names: Sequence[str]) -> str:
    """The JSON-schema ``pattern`` (a Param regex) of ``names`` or a version number, for a DAG parameter."""
    return "^(" + "|".join([*(re.escape(n) for n in names), _VERSION.pattern]) + ")$"


def describe(names: Sequence[str]) -> str:
    """``names`` for a help text or an error: ``champion, challenger, raw or a version number``."""
    return ", ".join(names) + " or a version number"


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: ``text`` as given and what kind of name it is.

    ``reason`` says how a resolved reference was reached (``best``'s choice, an alias's target); it is not
    part of the reference's identity.
    """

    text: str
    kind: Kind
    reason: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str, names: Sequence[str] = (*ALIASES, BEST, *EVALUATED_BASELINES)) -> ModelRef:
        """``text`` as a reference, if it is one of ``names`` or a version number; else a :class:`UserError`."""
        value = str(text).strip()
        if value in names:
            if value in ALIASES:
                return cls(value, Kind.ALIAS)
            if value == BEST:
                return cls(value, Kind.BEST)
            return cls(value, Kind.BASELINE)
        if _VERSION.fullmatch(value):
            return cls(value, Kind.VERSION)
        raise UserError(f"unknown model {text!r}: give {describe(names)}")

    @property
    def concrete(self) -> bool:
        """A baseline or a version number: means the same thing whenever it is used."""
        return self.kind in (Kind.BASELINE, Kind.VERSION)

    def resolve(self, settings: Settings) -> ModelRef:
        """The concrete reference this means now: an alias's version, ``best``'s choice; itself otherwise."""
        if self.concrete:
            return self
        if self.kind is Kind.BEST:
            from pipelines.evaluation.best import choose_best

            choice = choose_best(settings)
            log.warning("%s", choice.line())
            return ModelRef.parse(choice.version, SERVABLE_BASELINES)._because(choice.line())
        from pipelines.registry import resolve_alias  # MLflow is imported only when a registered model is needed

        version = str(resolve_alias(settings, self.text))
        log.info("@%s resolves to model version %s", self.text, version)
        return ModelRef(version, Kind.VERSION, f"@{self.text} resolves to model version {version}")

    def _because(self, reason: str) -> ModelRef:
        return ModelRef(self.text, self.kind, reason)

    def check(self, settings: Settings) -> ModelRef:
        """The resolved reference, after a clear :class:`UserError` unless it is a baseline or registered."""
        ref = self.resolve(settings)
        if ref.kind is Kind.VERSION:
            from pipelines.registry import Registry

            Registry(settings).version(ref.text)
        return ref

    def load(self, settings: Settings, params: FeatureParams) -> Embedder:
        """The embedder for front-end vectors made with ``params`` (an alias or ``best`` is resolved first).

        A collection records the model version that made its vectors, and its queries must be embedded by
        that same version whatever the champion is by then: serving loads by the recorded version.
        """
        ref = self.resolve(settings)
        if ref.text == RAW:
            from pipelines.model.embedder import RawEmbedder

            return RawEmbedder(feature_version=params.version, dim=params.dim)
        if ref.text == MEANSTD:
            from pipelines.model.baselines import MeanStdEmbedder

            return MeanStdEmbedder(feature_version=params.version, input_dim=params.dim, n_mfcc=params.n_mfcc)
        if ref.kind is Kind.BASELINE:
            raise UserError(f"the {ref.text} baseline has no embedder to serve; give {describe(REFRESH_NAMES)}")
        from pipelines.model.cache import load_cached  # MLflow is imported only on a cache miss

        embedder = load_cached(settings, ref.text)
        if embedder.feature_version != params.version:
            raise UserError(
                f"model version {ref.text} expects feature version {embedder.feature_version}, "
                f"but the vectors were made with {params.version}"
            )
        return embedder
