"""The MLflow side of training: runs, the logged model, the registry and its aliases, the audit trail.

:class:`Registry` wraps one ``MlflowClient``, so the training steps, the gate and the CLI share one place for
runs, the ``challenger``/``champion`` aliases and their audit tags; serving needs only :func:`resolve_alias`
and :func:`load_embedder`.
Design: docs/training.md#registry-and-gate-registrypy
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import Unavailable, UserError
from pipelines.model.embedder import Embedder
from pipelines.model.ref import CHALLENGER, CHAMPION
from pipelines.relocate import ARTIFACTS_DIR, embedded_store, relocate, write_marker
from pipelines.settings import Settings

log = logging.getLogger(__name__)

MODEL_NAME = "musicrec-triplet"
EXPERIMENT_NAME = "musicrec-triplet"


class RegistryUnavailable(Unavailable):
    """MLflow cannot be reached or used; nothing was registered. An outage, so Airflow retries it."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database in some containers
        return "unknown"


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the duration of a call, then restore what was there."""
    import mlflow

    prev_tracking = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    prev_registry = mlflow.get_registry_uri() if prev_tracking else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        if prev_tracking is None:
            mlflow.set_tracking_uri("")
            mlflow.set_registry_uri("")
        else:
            mlflow.set_tracking_uri(prev_tracking)
            mlflow.set_registry_uri(prev_registry or prev_tracking)


class Registry:
    """Runs, models and aliases of ``musicrec-triplet`` in the MLflow that ``settings`` names.

    Opening the embedded store of a data root that was copied or moved first points its recorded paths
    into the current root (see :mod:`pipelines.relocate`), before MLflow reads or writes anything.
    """

    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.uri = settings.paths.mlflow_tracking_uri
        try:
            relocate(settings, EXPERIMENT_NAME)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryUnavailable(
                f"the MLflow store in {settings.paths.data_root} could not be pointed at this data root "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # --- availability -------------------------------------------------------------------------------

    def check(self, timeout_s: float = 5.0) -> None:
        """Fail fast, with what to do, when MLflow is not there: before hours of training, not after."""
        if self.uri.startswith(("http://", "https://")):
            import requests

            try:
                requests.get(self.uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
            except requests.RequestException as exc:
                raise RegistryUnavailable(
                    f"MLflow at {self.uri} is not reachable ({type(exc).__name__}); start the server or set "
                    "MUSICREC_MLFLOW_TRACKING_URI"
                ) from exc
        elif self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise RegistryUnavailable(f"MLflow at {self.uri} cannot be used: {type(exc).__name__}: {exc}") from exc

    # --- runs ---------------------------------------------------------------------------------------

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT_NAME)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            # Default artifact root is ./mlruns of the current directory: keep artifacts under the data root.
            location = (self.settings.paths.data_root / ARTIFACTS_DIR).as_uri()
        experiment_id = self.client.create_experiment(EXPERIMENT_NAME, artifact_location=location)
        if embedded_store(self.settings) is not None:
            write_marker(self.settings.paths.data_root)  # the paths MLflow records from now on are for this root
        return experiment_id

    def start_run(self, params: Mapping[str, Any], tags: Mapping[str, str], name: str | None = None) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id(), tags=dict(tags), run_name=name)
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[i : i + 100])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k.replace("@", "_at_"), float(v), ts, step or 0)
            for k, v in metrics.items()
            if v is not None and np.isfinite(v)
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def end_run(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    @contextlib.contextmanager
    def run(self, run_id: str, finish: bool = False, tag_failure: bool = False) -> Iterator[str]:
        """Work inside the run ``run_id``: any exception (Ctrl+C too) ends it FAILED and propagates.

        ``finish`` ends it FINISHED when the block completes; otherwise it stays RUNNING for the next step.
        ``tag_failure`` also records the exception as the run's ``failure`` tag.
        """
        try:
            yield run_id
        except BaseException as exc:
            if tag_failure:
                self.set_run_tags(run_id, {"failure": f"{type(exc).__name__}: {exc}"[:500]})
            self.end_run(run_id, failed=True)
            raise
        if finish:
            self.end_run(run_id)

    def running_runs(self) -> list[Any]:
        """Runs of the experiment still marked RUNNING."""
        exp = self.client.get_experiment_by_name(EXPERIMENT_NAME)
        if exp is None:
            return []
        return list(self.client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'"))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    # --- models -------------------------------------------------------------------------------------

    def log_model(self, run_id: str, model: Any, feature_version: str, example: np.ndarray) -> str:
        """Log the branch to the run (exported program, signature, input example); returns the model URI.

        The input is the raw front-end vector: standardisation is inside the model, so the signature is
        exactly what serving feeds it.
        """
        import mlflow
        import torch
        from mlflow.models import infer_signature

        model.eval()
        example = np.array(example[:2], dtype=np.float32)  # 2 rows keep the batch axis dynamic
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        with _tracking(self.uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                metadata={"feature_version": feature_version, "encoder": model.config.model_dump_json()},
            )
        return info.model_uri

    def register(self, run_id: str, model_uri: str, tags: Mapping[str, str]) -> str:
        """A new version of ``musicrec-triplet`` with ``tags``, aliased ``challenger``; returns the version.

        All or nothing: if tagging or aliasing fails after the version exists, the version is deleted again
        so the registry never holds a half-registered model.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(MODEL_NAME)
        except MlflowException:
            self.client.create_registered_model(
                MODEL_NAME, description="Triplet-network branch: front-end MFCC vector -> style embedding."
            )
        with _tracking(self.uri):  # resolving a ``models:/<id>`` source goes through the fluent URI
            # A logged model's URI is ``models:/<model id>``; a tracking server wants that id stated.
            model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
            mv = self.client.create_model_version(MODEL_NAME, source=model_uri, run_id=run_id, model_id=model_id)
        try:
            for k, v in tags.items():
                self.client.set_model_version_tag(MODEL_NAME, mv.version, k, str(v))
            self.client.set_registered_model_alias(MODEL_NAME, CHALLENGER, mv.version)
        except Exception:
            with contextlib.suppress(Exception):
                self.client.delete_model_version(MODEL_NAME, mv.version)
            raise
        return str(mv.version)

    def alias(self, alias: str) -> str | None:
        """The version an alias points at, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(MODEL_NAME, alias).version)
        except MlflowException:
            return None

    def version(self, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(MODEL_NAME, str(version))
        except MlflowException as exc:
            raise UserError(f"{MODEL_NAME} has no version {version!r}") from exc

    def tag_version(self, version: str, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(MODEL_NAME, str(version), k, str(v))

    def versions(self) -> list[Any]:
        """Every version, newest first."""
        found = self.client.search_model_versions(f"name='{MODEL_NAME}'")
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    # --- champion -----------------------------------------------------------------------------------

    def set_champion(self, version: str, by: str, reason: str) -> str | None:
        """Move ``champion`` to ``version`` with audit tags; returns the previous champion (or None)."""
        self.version(version)  # a clear error for an unknown version
        previous = self.alias(CHAMPION)
        if previous == str(version):
            raise UserError(f"version {version} is already the champion")
        tags = {"promoted_at": _now(), "promoted_by": by, "promotion_reason": reason}
        if previous is not None:
            tags["previous_champion"] = previous
        self.tag_version(version, tags)
        self.client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
        log.info("champion: %s -> %s (%s)", previous, version, by)
        return previous

    def rollback(self, by: str | None = None) -> tuple[str, str]:
        """Give ``champion`` back to the version it replaced; returns (demoted, restored)."""
        current = self.alias(CHAMPION)
        if current is None:
            raise UserError(f"{MODEL_NAME} has no champion to roll back")
        previous = self.version(current).tags.get("previous_champion")
        if not previous:
            raise UserError(f"champion version {current} has no previous champion to return to")
        by = by or f"manual:{current_user()}"
        now = _now()
        self.tag_version(current, {"rolled_back_at": now, "rolled_back_by": by, "rolled_back_to": previous})
        self.tag_version(previous, {"restored_at": now, "restored_by": by})
        self.client.set_registered_model_alias(MODEL_NAME, CHAMPION, previous)
        log.info("champion rolled back: %s -> %s (%s)", current, previous, by)
        return current, previous


def resolve_alias(settings: Settings, alias: str) -> str:
    """The concrete version behind an alias (``champion``, ``challenger``); a clear error when unset."""
    version = Registry(settings).alias(alias)
    if version is None:
        raise UserError(f"{MODEL_NAME} has no {alias!r} yet; run `musicrec train` first")
    return version


def load_embedder(settings: Settings, version: str) -> Embedder:
    """The registered branch ``version`` as an :class:`Embedder` (exported program: no training code needed)."""
    import mlflow

    from pipelines.model.torch_embedder import TorchEmbedder

    registry = Registry(settings)
    mv = registry.version(version)
    with _tracking(registry.uri), tempfile.TemporaryDirectory() as tmp:
        module = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{mv.version}", dst_path=tmp)
    meta = json.loads(mv.tags["encoder"]) if "encoder" in mv.tags else {}
    return TorchEmbedder(
        version=str(mv.version),
        feature_version=mv.tags["feature_version"],
        dim=int(mv.tags.get("dim", meta.get("dim", 0))),
        input_dim=int(meta["n_frames"]) * int(meta["n_mfcc"]),
        module=module,
    )
