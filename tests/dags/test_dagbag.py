"""Every DAG file in dags/ parses: no import errors, no heavy imports at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.dags.conftest import DAGS_DIR

# Modules a DAG file must import inside its tasks only: the scheduler parses every file every few minutes.
HEAVY = ("torch", "librosa", "mlflow", "pymilvus", "soundfile", "pipelines.features.frontend")


def _dag_files() -> set[str]:
    """Files that declare a DAG (shared modules such as assets.py declare none)."""
    return {p.name for p in DAGS_DIR.glob("*.py") if "@dag" in p.read_text() or "DAG(" in p.read_text()}


def test_every_dag_file_imports_without_errors(dag_bag: Any) -> None:
    assert dag_bag.import_errors == {}
    assert _dag_files(), "dags/ holds no DAG file"
    loaded = {Path(dag.fileloc).name for dag in dag_bag.dags.values()}
    assert loaded == _dag_files()
    for dag in dag_bag.dags.values():
        dag.validate()


def test_dag_files_leave_heavy_imports_to_their_tasks() -> None:
    """Parsed in a fresh interpreter, so that modules imported by other tests do not hide a violation."""
    code = (
        "import json, sys\n"
        f"sys.path.append({str(DAGS_DIR)!r})\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_DIR)!r})\n"
        f"print(json.dumps({{'errors': list(bag.import_errors), 'dags': len(bag.dags), "
        f"'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True, timeout=300
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["dags"] >= 1
    assert result["heavy"] == [], f"imported while parsing DAG files: {result['heavy']}"


def test_build_features_shape(dag_bag: Any) -> None:
    from assets import FEATURES, MANIFEST

    dag = dag_bag.dags["build_features"]
    assert set(dag.task_ids) == {"read_manifest", "plan", "shard_files", "compute", "merge", "publish"}
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dag.get_task("compute"), MappedOperator)
    assert dag.get_task("plan").downstream_task_ids == {"shard_files", "merge"}
    assert dag.get_task("merge").upstream_task_ids == {"plan", "compute"}
    assert dag.get_task("publish").outlets == [FEATURES]
    assert MANIFEST in dag.timetable.asset_condition.objects  # re-embeds when the catalogue changes
