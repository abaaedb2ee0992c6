"""Shared fixtures: isolated settings per test, the real demo corpus once per session, Airflow's home."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pipelines.settings import PathSettings, Settings


def pytest_configure(config: pytest.Config) -> None:
    # Airflow reads its configuration when first imported: point it at a throw-away home before any test
    # module can import it, so tests never touch a developer's ~/airflow.
    home = Path(tempfile.mkdtemp(prefix="musicrec-airflow-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data root is a fresh temporary folder (the cache stays the real one)."""
    return Settings(paths=PathSettings(data_root=tmp_path / "data"))


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with the real demo corpus imported into a session-wide data root.

    The corpus is fetched into the user cache if missing (CI reuses it); skipped only where apt-get is
    absent, since the demo packages come from Debian.
    """
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("the demo corpus needs apt-get and dpkg (Debian/Ubuntu); not available here")
    from pipelines.catalogue.demo import fetch_demo

    settings = Settings(paths=PathSettings(data_root=tmp_path_factory.mktemp("demo") / "data"))
    fetch_demo(settings)
    return settings


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the Milvus Lite servers tests left running while logging still has somewhere to write.

    milvus_lite stops them itself at interpreter exit, but by then pytest has closed the streams its
    log handlers write to, and every stop printed a "Logging error" traceback after the summary.
    """
    import sys

    if "milvus_lite" in sys.modules:
        sys.modules["milvus_lite"].server_manager_instance.release_all()
