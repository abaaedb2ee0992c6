"""One settings object for every path and URI musicrec uses.

Everything that differs between a laptop and a server (where data lives, which MLflow and Milvus to talk
to) is read here, from environment variables prefixed ``MUSICREC_`` or a ``.env`` file, so the same code
runs on the embedded defaults (SQLite, MLflow on SQLite, Milvus Lite) and on real servers.
Nothing is created or connected at import time: paths are only computed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.features.params import FeatureParams


class StackPorts(BaseModel):
    """Where `musicrec stack` runs its services: a folder and loopback ports (defaults avoid the usual ones)."""

    model_config = ConfigDict(frozen=True)

    dir: Path = Field(default=Path(".stack"), description="Services' data, logs and pid files.")
    postgres: int = 5433
    redis: int = 6380
    mlflow: int = 5500
    milvus: int = 19530
    airflow: int = 8280
    api: int = 8300
    celery_workers: int = Field(default=2, ge=1, le=8)


class Settings(BaseSettings):
    """Effective configuration; every field can be overridden with ``MUSICREC_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="MUSICREC_", env_file=".env", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    data_root: Path = Field(default=Path("data"), description="Manifests, feature store, models, indexes.")
    cache_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir("musicrec")),
        description="Downloaded corpora; shared by repeated runs and CI so nothing is fetched twice.",
    )
    mlflow_tracking_uri: str = Field(default="", description="Empty: SQLite file under the data root.")
    milvus_uri: str = Field(default="", description="Empty: a Milvus Lite file under the data root.")
    genre_map: Path | None = Field(
        default=None, description="CSV genre,style: styles from genre tags where no folder or column gives one."
    )
    max_audio_bytes: int = Field(default=512 * 1024 * 1024, description="Larger files are rejected.")
    decode_timeout_s: float = Field(default=30.0, description="A file whose decode takes longer is quarantined.")
    demo_extended: bool = Field(
        default=True,
        description="Demo corpus: the extra sources per style (every style from >= 2 soundtracks); false: the six "
        "original packages, one soundtrack per style (two for metal).",
    )
    features: FeatureParams = Field(default_factory=FeatureParams, description="MUSICREC_FEATURES__N_MFCC=...")
    training_job: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for scheduled training runs: TrainingJob fields as JSON, e.g. "
        '\'{"train": {"epochs": 12}}\'; a DAG run\'s `job` parameter overrides them.',
    )
    airflow_api_url: str = Field(
        default="", description="Airflow api-server base URL; set, imports announce the manifest Asset there."
    )
    airflow_username: str = Field(default="", description="Airflow user for the API (simple auth manager).")
    airflow_password: str = Field(default="", description="That user's password.")
    alert_webhook_url: str = Field(default="", description="Failed DAG tasks are POSTed here as JSON, if set.")
    stack: StackPorts = Field(default_factory=lambda: StackPorts(), description="`musicrec stack`: MUSICREC_STACK__*.")

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        root = self.data_root.expanduser().resolve()
        object.__setattr__(self, "data_root", root)
        object.__setattr__(self, "cache_dir", self.cache_dir.expanduser().resolve())
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{root / 'mlflow.db'}")
        if not self.milvus_uri:
            object.__setattr__(self, "milvus_uri", str(root / "milvus.db"))
        return self

    @property
    def catalogue_dir(self) -> Path:
        return self.data_root / "catalogue"

    @property
    def manifest_path(self) -> Path:
        return self.catalogue_dir / "manifest.parquet"

    @property
    def rejects_path(self) -> Path:
        return self.catalogue_dir / "rejects.parquet"

    @property
    def features_dir(self) -> Path:
        """Feature store root; one partition per feature-parameter version."""
        return self.data_root / "features"

    @property
    def quarantine_path(self) -> Path:
        return self.data_root / "features" / "_quarantine.parquet"

    @property
    def demo_dir(self) -> Path:
        """Unpacked demo packages live in the cache, not the data root: they are inputs, not outputs."""
        return self.cache_dir / "demo"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings(...)`` instead of patching this."""
    return Settings()
