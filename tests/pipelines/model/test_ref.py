"""ModelRef: the one vocabulary of model names, its parsing, resolution, loading and the DAGs' regex."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import UserError
from pipelines.features.params import FeatureParams
from pipelines.model import ref as model_ref
from pipelines.model.ref import (
    CHAMPION,
    EVALUATE_NAMES,
    EVALUATED_BASELINES,
    REFRESH_NAMES,
    SERVABLE_BASELINES,
    Kind,
    ModelRef,
    param_pattern,
)
from pipelines.settings import PathSettings, Settings

PARAMS = FeatureParams(n_frames=24, n_mfcc=13)


def _settings(tmp_path: Path) -> Settings:
    return Settings(paths=PathSettings(data_root=tmp_path))


def test_parse_names_each_kind_and_refuses_the_rest() -> None:
    assert ModelRef.parse("champion") == ModelRef("champion", Kind.ALIAS)
    assert ModelRef.parse("challenger").kind is Kind.ALIAS
    assert ModelRef.parse("best").kind is Kind.BEST
    assert [ModelRef.parse(b).kind for b in EVALUATED_BASELINES] == [Kind.BASELINE] * 3
    assert ModelRef.parse(" 12 ") == ModelRef("12", Kind.VERSION)
    for bad in ("0", "012", "12a", "", "x' or '1", "1234567890"):
        with pytest.raises(UserError, match="unknown model"):
            ModelRef.parse(bad)
    # each context accepts its own names: random is never served, best is not a model to evaluate
    with pytest.raises(UserError, match=r"give champion, challenger, best, raw, meanstd or a version number"):
        ModelRef.parse("random", REFRESH_NAMES)
    with pytest.raises(UserError, match="unknown model 'best'"):
        ModelRef.parse("best", EVALUATE_NAMES)


def test_the_dag_regex_accepts_exactly_what_parse_accepts() -> None:
    assert param_pattern(REFRESH_NAMES) == r"^(champion|challenger|best|raw|meanstd|[1-9][0-9]{0,8})$"
    assert param_pattern(EVALUATE_NAMES) == r"^(champion|challenger|raw|meanstd|random|[1-9][0-9]{0,8})$"
    for names in (REFRESH_NAMES, EVALUATE_NAMES):
        pattern = re.compile(param_pattern(names))
        for text in ("champion", "challenger", "best", "raw", "meanstd", "random", "7", "999999999", "0", "x"):
            try:
                ModelRef.parse(text, names)
                parsed = True
            except UserError:
                parsed = False
            assert bool(pattern.fullmatch(text)) is parsed, (names, text)


def test_baselines_are_named_once_with_their_meaning() -> None:
    assert SERVABLE_BASELINES == ("raw", "meanstd")
    assert EVALUATED_BASELINES == ("raw", "meanstd", "random")
    assert set(SERVABLE_BASELINES) < set(EVALUATED_BASELINES)


def test_resolve_keeps_concrete_refs_and_asks_the_registry_for_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    assert ModelRef.parse("raw").resolve(settings) == ModelRef("raw", Kind.BASELINE)
    assert ModelRef.parse("4").resolve(settings) == ModelRef("4", Kind.VERSION)
    asked: list[str] = []

    def resolve_alias(_settings: Settings, alias: str) -> str:
        asked.append(alias)
        return "3"

    import pipelines.registry

    monkeypatch.setattr(pipelines.registry, "resolve_alias", resolve_alias)
    resolved = ModelRef.parse(CHAMPION).resolve(settings)
    assert resolved == ModelRef("3", Kind.VERSION) and asked == [CHAMPION]
    assert resolved.reason == "@champion resolves to model version 3"


def test_best_is_resolved_once_to_the_choice_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.evaluation import best

    calls: list[int] = []

    def choose_best(_settings: Settings) -> best.Choice:
        calls.append(1)
        return best.Choice("meanstd", "no trained model yet")

    monkeypatch.setattr(best, "choose_best", choose_best)
    resolved = ModelRef.parse("best").resolve(_settings(tmp_path))
    assert resolved == ModelRef("meanstd", Kind.BASELINE) and resolved.reason == "serving meanstd: no trained model yet"
    assert resolved.resolve(_settings(tmp_path)) is resolved and calls == [1]  # concrete now: no second choice


def test_load_gives_the_baselines_without_a_registry_and_refuses_random(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    raw = ModelRef.parse("raw").load(settings, PARAMS)
    meanstd = ModelRef.parse("meanstd").load(settings, PARAMS)
    assert (raw.version, raw.dim) == ("raw", PARAMS.dim) and (meanstd.version, meanstd.dim) == ("meanstd", 26)
    vectors = np.random.default_rng(0).standard_normal((3, PARAMS.dim)).astype(np.float32)
    assert meanstd.embed(vectors).shape == (3, 26)
    with pytest.raises(UserError, match="random baseline has no embedder"):
        ModelRef.parse("random").load(settings, PARAMS)


def test_the_module_stays_light() -> None:
    """DAG files import it while Airflow parses them: nothing heavy at module level."""
    import ast

    tree = ast.parse(Path(model_ref.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    modules = {getattr(n, "module", None) or n.names[0].name for n in top}
    assert modules <= {
        "__future__",
        "logging",
        "re",
        "collections.abc",
        "dataclasses",
        "enum",
        "typing",
        "pipelines.errors",
    }
