"""Imports run dags -> pipelines and serving -> pipelines, never back: checked on the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import (at module level or inside a function)
FORBIDDEN = {
    "pipelines": {"serving", "dags", "airflow"},
    "serving": {"dags", "airflow"},
    "dags": {"serving"},
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every absolute module an import statement names, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path.read_text()):
            if module.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_function_level_and_from_imports() -> None:
    source = "import os\n\ndef f():\n    from serving.service import Recommender\n    import airflow.sdk\n"
    assert imported_modules(source) == [(1, "os"), (4, "serving.service"), (5, "airflow.sdk")]


def test_the_check_fails_on_a_reverse_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "bad.py").write_text("from serving.cli_serve import main\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert violations("pipelines") == ["pipelines/bad.py:1 imports serving.cli_serve"]
