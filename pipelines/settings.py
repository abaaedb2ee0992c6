"""One settings object for every path and URI musicrec uses.

Everything that differs between a laptop and a server (where data lives, which MLflow and Milvus to talk
to: the ``paths`` section) is read here, from environment variables prefixed ``MUSICREC_`` or a ``.env``
file, so the same code runs on the embedded defaults (SQLite, MLflow on SQLite, Milvus Lite) and on real servers.
Nothing is created or connected at import time: paths are only computed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
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


class IndexSettings(BaseSettings):
    """Index and refresh knobs (env ``MUSICREC_<FIELD>``); the Milvus URI is ``PathSettings.milvus_uri``."""

    model_config = SettingsConfigDict(env_prefix="MUSICREC_", env_file=".env", extra="ignore", frozen=True)

    milvus_alias: str = Field(default="tracks", pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    index_type: Literal["HNSW", "IVF_FLAT", "FLAT"] = Field(
        default="HNSW", description="HNSW: see bench/results/serving.md for the measurement behind it."
    )
    hnsw_m: int = Field(default=16, ge=4, le=64)
    hnsw_ef_construction: int = Field(default=200, ge=8)
    search_ef: int = Field(default=128, ge=8, description="HNSW search breadth; raised to k when k is larger.")
    ivf_nlist: int = Field(default=1024, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    collections_kept: int = Field(
        default=1, ge=1, description="Earlier collections kept for rollback besides the live one."
    )
    embed_batch_size: int = Field(default=256, ge=1, description="Tracks embedded and inserted per batch.")
    flush_every_mb: float | None = Field(
        default=None,
        gt=0,
        description="Flush after about this many MB of vectors during a refresh (default: only at the end). "
        "Milvus Lite turns its write buffer into Python objects (~8x its size) when it flushes, but more, "
        "smaller flushes make it compact more: see bench/results/scale.md before setting it.",
    )
    verify_sample: int = Field(default=32, ge=1, description="Tracks whose nearest neighbour must be themselves.")
    milvus_timeout_s: float = Field(default=10.0, gt=0)
    index_lock_timeout_s: float = Field(
        default=120.0, ge=0, description="How long a refresh or rollback waits for another writer to finish."
    )


class ServingSettings(BaseSettings):
    """Serving knobs (env ``MUSICREC_<FIELD>``); the Milvus URI itself is ``PathSettings.milvus_uri``."""

    model_config = SettingsConfigDict(env_prefix="MUSICREC_", env_file=".env", extra="ignore", frozen=True)

    serving_host: str = "127.0.0.1"
    serving_port: int = Field(default=8000, ge=1, le=65535)
    serving_max_k: int = Field(default=100, ge=1, le=1000)
    serving_max_playlist: int = Field(default=200, ge=1, le=5000)
    serving_max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, description="A FLAC song is ~30 MB.")
    serving_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Every other request body (JSON, forms): 100 seeds of the longest track ids are ~50 kB.",
    )
    serving_alias_ttl_s: float = Field(
        default=1.0, ge=0.0, description="How long the alias's target is cached; a refresh shows after this."
    )
    serving_batch_searches: bool = Field(default=True, description="Coalesce concurrent searches.")
    serving_max_batch: int = Field(default=64, ge=1)
    serving_max_inflight: int = Field(default=1, ge=1, description="Concurrent Milvus searches.")
    serving_vector_copy: bool = Field(
        default=True,
        description="The API keeps an in-process copy of the served collection's vectors and searches it "
        "exactly (about 1.1 kB per 128-d track, in each worker; see docs/query-speed.md).",
    )
    serving_api_key: SecretStr | None = Field(
        default=None,
        description="Required (header X-API-Key) on every recommendation route when set; `musicrec serve` "
        "refuses a non-loopback address without one.",
    )
    serving_upload_timeout_s: float = Field(
        default=30.0, gt=0, description="A request body (upload or JSON) must arrive within this, else 408."
    )
    serving_decode_timeout_s: float = Field(
        default=30.0, gt=0, description="An upload whose decoding takes longer is refused (422 decode_timeout)."
    )
    serving_decode_workers: int = Field(default=2, ge=1, description="Child processes decoding uploads at once.")
    serving_upload_dir: Path | None = Field(
        default=None,
        description="Where uploads are spooled for the decoding children (default: a private temp folder).",
    )
    serving_keep_alive_s: int = Field(default=5, ge=1, description="Idle keep-alive connections close after this.")
    serving_header_timeout_s: float = Field(
        default=10.0, gt=0, description="A request's headers must arrive within this, else the connection closes."
    )
    serving_graceful_stop_s: int = Field(default=2, ge=0, description="Requests in flight get this long at stop.")
    serving_start_milvus: bool = Field(
        default=True, description="`musicrec serve` runs `milvus-lite server` on a local Milvus Lite folder."
    )
    music_folder: Path | None = Field(
        default=None,
        description="The music server's library root: players' tracks are matched by path relative to it, and "
        "playlists can name tracks relative to it.",
    )
    playlist_dir: Path | None = Field(
        default=None, description="Where `musicrec playlist --write` puts M3U8/XSPF files (a folder players scan)."
    )
    subsonic_user: str | None = Field(
        default=None,
        description="The one user of the Subsonic face (/rest): clients log in with it and "
        "MUSICREC_SUBSONIC_PASSWORD (u+p or u+t+s). Unset, and with no API key, /rest is open.",
    )
    subsonic_password: SecretStr | None = Field(
        default=None, description="The Subsonic user's password; set both or neither."
    )

    @model_validator(mode="after")
    def _subsonic_pair(self) -> ServingSettings:
        if (self.subsonic_user is None) != (self.subsonic_password is None):
            raise ValueError("set both MUSICREC_SUBSONIC_USER and MUSICREC_SUBSONIC_PASSWORD, or neither")
        return self


class PathSettings(BaseSettings):
    """Where data lives and which servers to talk to (env ``MUSICREC_<FIELD>``).

    Empty URIs mean the embedded defaults under the data root: MLflow on SQLite and a Milvus Lite file.
    """

    model_config = SettingsConfigDict(env_prefix="MUSICREC_", env_file=".env", extra="ignore", frozen=True)

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

    @model_validator(mode="after")
    def _fill_derived(self) -> PathSettings:
        root = self.data_root.expanduser().resolve()
        object.__setattr__(self, "data_root", root)
        object.__setattr__(self, "cache_dir", self.cache_dir.expanduser().resolve())
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{root / 'mlflow.db'}")
        if not self.milvus_uri:
            object.__setattr__(self, "milvus_uri", str(root / "milvus.db"))
        return self


class TrainingSettings(BaseSettings):
    """Scheduled training (env ``MUSICREC_TRAINING_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="MUSICREC_TRAINING_", env_file=".env", extra="ignore", frozen=True)

    job: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for scheduled training runs: TrainingJob fields as JSON, e.g. "
        '\'{"train": {"epochs": 12}}\'; a DAG run\'s `job` parameter overrides them.',
    )


class AirflowSettings(BaseSettings):
    """Talking to Airflow (env ``MUSICREC_AIRFLOW_<FIELD>``, and ``MUSICREC_ALERT_WEBHOOK_URL``)."""

    model_config = SettingsConfigDict(
        env_prefix="MUSICREC_AIRFLOW_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    api_url: str = Field(
        default="", description="Airflow api-server base URL; set, imports announce the manifest Asset there."
    )
    username: str = Field(default="", description="Airflow user for the API (simple auth manager).")
    password: SecretStr = Field(default=SecretStr(""), description="That user's password.")
    alert_webhook_url: str = Field(
        default="",
        validation_alias="MUSICREC_ALERT_WEBHOOK_URL",
        description="Failed DAG tasks are POSTed here as JSON, if set.",
    )
    retrain_cron: str = Field(
        default="0 3 * * 1",
        pattern=r"^\s*(@\w+|\S+(\s+\S+){4})\s*$",
        description="When train_triplet_model runs on its own clock (cron, UTC), besides whenever the features "
        "change; read when the DAG file is parsed. Default: Mondays 03:00.",
    )


class Settings(BaseSettings):
    """Effective configuration: sections of fields, each overridable from the environment (``MUSICREC_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="MUSICREC_", env_file=".env", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    paths: PathSettings = Field(default_factory=PathSettings, description="Data, cache, URIs: MUSICREC_<FIELD>.")
    max_audio_bytes: int = Field(default=512 * 1024 * 1024, description="Larger files are rejected.")
    decode_timeout_s: float = Field(default=30.0, description="A file whose decode takes longer is quarantined.")
    catalogue_lock_timeout_s: float = Field(
        default=900.0,
        ge=0,
        description="How long an import, sync or demo fetch waits for another one writing the same manifest.",
    )
    demo_extended: bool = Field(
        default=True,
        description="Demo corpus: the extra sources per style (every style from >= 4 soundtracks); false: the six "
        "original packages, one soundtrack per style (two for metal).",
    )
    features: FeatureParams = Field(default_factory=FeatureParams, description="MUSICREC_FEATURES__N_MFCC=...")
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="MUSICREC_TRAINING_JOB.")
    airflow: AirflowSettings = Field(default_factory=AirflowSettings, description="MUSICREC_AIRFLOW_<FIELD>.")
    stack: StackPorts = Field(default_factory=lambda: StackPorts(), description="`musicrec stack`: MUSICREC_STACK__*.")
    index: IndexSettings = Field(default_factory=IndexSettings, description="Index and refresh: MUSICREC_<FIELD>.")
    serving: ServingSettings = Field(default_factory=ServingSettings, description="Serving: MUSICREC_<FIELD>.")

    @property
    def catalogue_dir(self) -> Path:
        return self.paths.data_root / "catalogue"

    @property
    def manifest_path(self) -> Path:
        return self.catalogue_dir / "manifest.parquet"

    @property
    def catalogue_lock_path(self) -> Path:
        """The manifest's writer lock: one import, sync or demo fetch changes the catalogue at a time."""
        return self.catalogue_dir / "manifest.writer.lock"

    @property
    def rejects_path(self) -> Path:
        return self.catalogue_dir / "rejects.parquet"

    @property
    def features_dir(self) -> Path:
        """Feature store root; one partition per feature-parameter version."""
        return self.paths.data_root / "features"

    @property
    def quarantine_path(self) -> Path:
        return self.paths.data_root / "features" / "_quarantine.parquet"

    @property
    def demo_dir(self) -> Path:
        """Unpacked demo packages live in the cache, not the data root: they are inputs, not outputs."""
        return self.paths.cache_dir / "demo"


Source = Literal["default", "environment", ".env"]


def _env_file_values() -> dict[str, str]:
    from dotenv import dotenv_values

    return {k.upper(): v for k, v in dotenv_values(".env").items() if v is not None}


def env_names(section: type[BaseSettings], field: str) -> list[str]:
    """The environment variables a field of a section reads: its aliases, else the section's prefix + name."""
    info = section.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a).upper() for a in alias.choices if str(a).upper().startswith("MUSICREC_")]
    if isinstance(alias, str):
        return [alias.upper()]
    return [f"{section.model_config.get('env_prefix', '')}{field}".upper()]


def effective_values(settings: Settings) -> list[tuple[str, Any, Source]]:
    """Every effective setting as (dotted name, value, where it came from), sections flattened.

    The paths, training, airflow, index and serving sections read their own environment names (see
    :func:`env_names`, e.g. ``MUSICREC_DATA_ROOT``, ``MUSICREC_AIRFLOW_API_URL``); features and stack read
    ``MUSICREC_<SECTION>__<FIELD>``. Secrets stay ``SecretStr``, which prints masked.
    """
    env = {k.upper(): v for k, v in os.environ.items()}
    dotenv = _env_file_values()

    def source(*names: str) -> Source:
        if any(n in env for n in names):
            return "environment"
        if any(n in dotenv for n in names):
            return ".env"
        return "default"

    out: list[tuple[str, Any, Source]] = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        whole = f"MUSICREC_{name.upper()}"
        if isinstance(value, BaseSettings):  # a section with its own environment names
            for field in type(value).model_fields:
                out.append((f"{name}.{field}", getattr(value, field), source(*env_names(type(value), field))))
        elif isinstance(value, BaseModel):
            for field in type(value).model_fields:
                env_name = f"{whole}__{field.upper()}"
                out.append((f"{name}.{field}", getattr(value, field), source(whole, env_name)))
        else:
            out.append((name, value, source(whole)))
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings(...)`` instead of patching this."""
    return Settings()
