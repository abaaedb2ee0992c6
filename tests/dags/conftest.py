"""Airflow for DAG tests: a migrated metadata database, the DAG bag, musicrec settings through the
environment, and (for tests that need real parallel tasks) a LocalExecutor with an execution API server.

The root conftest already points AIRFLOW_HOME and the database at a throw-away folder.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.settings import Settings, get_settings

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(autouse=True)
def _task_context_stays_in_the_test() -> Iterator[None]:
    """``dag.test()`` runs tasks in this process, and Airflow exports each task's context to ``os.environ``
    (``AIRFLOW_CTX_DAG_RUN_ID``, ...); without this, later tests' subprocesses would believe they run
    inside an Airflow task."""
    before = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CTX_")}
    yield
    for key in [k for k in os.environ if k.startswith("AIRFLOW_CTX_")]:
        del os.environ[key]
    os.environ.update(before)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create Airflow's tables once per session (a few seconds on SQLite)."""
    # Airflow puts the DAG folder on sys.path when it parses DAGs in production; DAG files rely on it to
    # share modules such as ``assets``.
    if str(DAGS_DIR) not in sys.path:
        sys.path.append(str(DAGS_DIR))
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def dag_bag(airflow_db: None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture
def musicrec_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Returns ``use(settings)``: DAG tasks call ``get_settings()``, so point the environment at ``settings``."""

    def use(settings: Settings) -> Settings:
        monkeypatch.setenv("MUSICREC_DATA_ROOT", str(settings.paths.data_root))
        monkeypatch.setenv("MUSICREC_CACHE_DIR", str(settings.paths.cache_dir))
        get_settings.cache_clear()
        assert get_settings().paths.data_root == settings.paths.data_root
        return get_settings()

    yield use
    get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def execution_api(airflow_db: None) -> Iterator[str]:
    """Airflow's task execution API, served in a thread of this process, for executor-run tasks.

    In Airflow 3 a task run by an executor talks to the metadata database only through this API (in
    production, ``airflow api-server``). It is the same app ``dag.test()`` uses in-process, with the JWT
    checks replaced, served over HTTP so that LocalExecutor's worker processes can reach it.
    """
    import uvicorn
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI

    # With the JWT checks bypassed the token-refresh middleware warns on every call; it is noise here.
    logging.getLogger("airflow.api_fastapi.execution_api.app").setLevel(logging.ERROR)
    port = _free_port()
    config = uvicorn.Config(InProcessExecutionAPI().app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="execution-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the execution API server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def local_executor(execution_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dag.test(use_executor=True)`` then runs each task in a LocalExecutor worker process, several at once.

    LocalExecutor is Airflow 3's default executor (parallelism 32); its workers are forks of this process
    and reach the metadata database through the execution API.
    """
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", execution_api)
