"""A local cache of registered models, so a one-shot command does not import MLflow to embed one query.

Loading a version through MLflow costs seconds (importing MLflow, downloading the artifact, validating
it) on every ``musicrec recommend --audio``. The exported program of each version used is kept under the
data root instead, in a folder keyed by the version and a fingerprint of the registry's record of it (the
run that made it and when it was registered). The fingerprint is read straight from the registry's
SQLite file (or the MLflow server's REST API) without importing MLflow, so a registry rebuilt with a new
model under an old version number is a miss, never a stale hit. Design notes: docs/query-speed.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from pipelines.errors import Unavailable, UserError
from pipelines.model.embedder import Embedder
from pipelines.settings import Settings

log = logging.getLogger(__name__)

CACHE_DIR = "model-cache"
KEEP = 4  # entries kept; the oldest used go first
_MODEL_FILE = "model.pt2"
# The same program as TorchScript: loads in milliseconds, where torch.export.load takes seconds (it
# imports sympy and the export machinery). Kept only when it gives the program's outputs at any batch size.
_SCRIPT_FILE = "model-1.ts"  # traced for one row (a query)
_SCRIPT_MANY_FILE = "model-many.ts"  # traced for _CHUNK rows (a refresh's batches)
_CHUNK = 256
# The weights as numpy arrays, run by pipelines.model.numpy_branch: a query then needs no torch at all
# (importing torch alone takes seconds). Kept only when its outputs match the program's to 1e-5.
_NUMPY_FILE = "weights.npz"
_META_FILE = "meta.json"
_FORMAT = 2  # entries of an older layout are stored again (once) so that they get the numpy weights


def cache_root(settings: Settings) -> Path:
    return settings.paths.data_root / CACHE_DIR


def fingerprint(run_id: str, created: Any) -> str:
    """What tells two registrations of the same version number apart."""
    return hashlib.sha256(f"{run_id}|{created}".encode()).hexdigest()[:16]


def registry_fingerprint(settings: Settings, model_name: str, version: str) -> str | None:
    """The fingerprint of ``version`` as the registry records it now, or None when it cannot be read cheaply.

    SQLite (the embedded default) is read directly; an MLflow server through its REST API. None for any
    other store, or when the version is not there (the caller then goes through MLflow, which says why).
    """
    uri = settings.paths.mlflow_tracking_uri
    try:
        if uri.startswith("sqlite:///"):
            path = Path(uri.removeprefix("sqlite:///"))
            if not path.is_file():
                return None
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                row = db.execute(
                    "SELECT run_id, creation_time FROM model_versions WHERE name = ? AND version = ?",
                    (model_name, int(version)),
                ).fetchone()
            return fingerprint(str(row[0]), int(row[1])) if row else None
        if uri.startswith(("http://", "https://")):
            import httpx

            res = httpx.get(
                uri.rstrip("/") + "/api/2.0/mlflow/model-versions/get",
                params={"name": model_name, "version": version},
                timeout=5,
            )
            if res.status_code != 200:
                return None
            mv = res.json()["model_version"]
            return fingerprint(str(mv.get("run_id", "")), int(mv["creation_timestamp"]))
    except (sqlite3.Error, ValueError, KeyError, OSError) as exc:
        log.info("registry fingerprint of version %s not readable (%s); loading through MLflow", version, exc)
    except Exception as exc:  # httpx errors: the server is down; MLflow will say so clearly
        log.info("registry fingerprint of version %s not readable (%s); loading through MLflow", version, exc)
    return None


def _entry(settings: Settings, version: str, fp: str) -> Path:
    return cache_root(settings) / f"v{version}-{fp}"


def _load_entry(folder: Path) -> Embedder:
    meta = json.loads((folder / _META_FILE).read_text())
    if (folder / _NUMPY_FILE).is_file() and "encoder" in meta:
        try:
            return _numpy_embedder(folder, meta)
        except Exception as exc:  # the torch program below still answers
            log.warning("numpy weights of %s unreadable (%s); loading the torch program", folder, exc)
    import torch

    from pipelines.model.torch_embedder import TorchEmbedder

    if (folder / _SCRIPT_FILE).is_file() and (folder / _SCRIPT_MANY_FILE).is_file():
        one, many = (torch.jit.load(str(folder / f)) for f in (_SCRIPT_FILE, _SCRIPT_MANY_FILE))
        module: Any = _Traced(one, many, _CHUNK)
    else:
        module = torch.export.load(str(folder / _MODEL_FILE)).module()
    return TorchEmbedder(
        version=str(meta["version"]),
        feature_version=str(meta["feature_version"]),
        dim=int(meta["dim"]),
        input_dim=int(meta["input_dim"]),
        module=module,
    )


def _store(settings: Settings, model_name: str, version: str) -> Path | None:
    """Download ``version``'s exported program through MLflow into its cache folder; None if it has none."""
    import mlflow

    from pipelines.registry import Registry, _tracking

    registry = Registry(settings)
    mv = registry.version(version)
    fp = fingerprint(str(mv.run_id), int(mv.creation_timestamp))
    final = _entry(settings, str(mv.version), fp)
    if (final / _META_FILE).is_file():
        return final
    encoder = json.loads(mv.tags["encoder"]) if "encoder" in mv.tags else {}
    root = cache_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".incoming-") as tmp:
        with _tracking(registry.uri):
            local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{mv.version}", dst_path=tmp))
        found = sorted(local.rglob(_MODEL_FILE))
        if not found:
            log.info("model version %s is not an exported program; not cached", version)
            return None
        stage = Path(tmp) / "entry"
        stage.mkdir()
        shutil.move(str(found[0]), stage / _MODEL_FILE)
        meta = {
            "version": str(mv.version),
            "feature_version": mv.tags["feature_version"],
            "dim": int(mv.tags.get("dim", encoder.get("dim", 0))),
            "input_dim": int(encoder["n_frames"]) * int(encoder["n_mfcc"]),
            "run_id": str(mv.run_id),
            "format": _FORMAT,
        }
        if encoder:
            meta["encoder"] = encoder
        (stage / _META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        _script(stage, meta["input_dim"])
        if encoder:
            _numpy(stage, encoder)
        try:
            os.rename(stage, final)  # atomic: a reader sees the whole entry or none
        except OSError:
            if not (final / _META_FILE).is_file():  # not another process storing the same entry first
                raise
    _prune(settings, str(mv.version), final)
    log.info("cached model version %s in %s", mv.version, final)
    return final


class _Traced:
    """A traced program at two fixed batch sizes: one row as is, more rows padded to whole chunks.

    Tracing fixes the batch size (the exported program reads it from the input); the rows are independent,
    so padding with zeros and dropping the padded rows' outputs gives the same embeddings.
    """

    def __init__(self, one: Any, many: Any, size: int) -> None:
        self.one, self.many, self.size = one, many, size

    def __call__(self, x: Any) -> Any:
        import torch

        n = x.shape[0]
        if n == 1:
            return self.one(x)
        padded = torch.cat([x, x.new_zeros((-n % self.size, x.shape[1]))])
        return torch.cat([self.many(padded[i : i + self.size]) for i in range(0, len(padded), self.size)])[:n]


def _script(folder: Path, input_dim: int) -> None:
    """Write the exported program in ``folder`` as TorchScript too, if the traced copy reproduces its outputs."""
    import warnings

    import torch

    program = torch.export.load(str(folder / _MODEL_FILE)).module()
    rng = torch.Generator().manual_seed(0)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            one = torch.jit.trace(program, torch.randn(1, input_dim, generator=rng))
            many = torch.jit.trace(program, torch.randn(_CHUNK, input_dim, generator=rng))
            traced = _Traced(one, many, _CHUNK)
            for n in (1, 2, 7, _CHUNK + 3):
                x = torch.randn(n, input_dim, generator=rng)
                if not torch.allclose(traced(x), program(x), atol=1e-5):
                    raise ValueError(f"traced outputs differ at batch size {n}")
        one.save(str(folder / _SCRIPT_FILE))
        many.save(str(folder / _SCRIPT_MANY_FILE))
    except Exception as exc:  # the exported program still serves, only slower to load
        log.info("model kept as an exported program only (TorchScript: %s)", " ".join(str(exc).split())[:200])


def _numpy_embedder(folder: Path, meta: dict[str, Any]) -> Embedder:
    from pipelines.model import numpy_branch
    from pipelines.model.config import EncoderConfig

    config = EncoderConfig.model_validate(meta["encoder"])
    return numpy_branch.NumpyEmbedder(
        version=str(meta["version"]),
        feature_version=str(meta["feature_version"]),
        dim=int(meta["dim"]),
        input_dim=int(meta["input_dim"]),
        branch=numpy_branch.load(config, folder / _NUMPY_FILE),
    )


def _numpy(folder: Path, encoder: dict[str, Any]) -> None:
    """Write the program's weights as numpy arrays in ``folder``, if the numpy forward pass reproduces it."""
    import numpy as np
    import torch

    from pipelines.model import numpy_branch
    from pipelines.model.config import EncoderConfig

    try:
        exported = torch.export.load(str(folder / _MODEL_FILE))
        program = exported.module()
        config = EncoderConfig.model_validate(encoder)
        state = {k: v.detach().numpy() for k, v in exported.state_dict.items()}
        branch = numpy_branch.from_state(config, state)
        rng = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n in (1, 3):
                # MFCC-like magnitudes: the first coefficient is in the hundreds, the others in the tens
                x = torch.randn(n, config.input_dim, generator=rng) * 40.0
                got, want = branch(x.numpy()), program(x).numpy()
                if got.shape != want.shape or not np.allclose(got, want, atol=1e-5, rtol=0):
                    raise ValueError(f"numpy outputs differ from the program's at batch size {n}")
        numpy_branch.save(branch, folder / _NUMPY_FILE)
    except Exception as exc:  # the torch program still serves, only slower to start
        log.info("model kept for torch only (numpy weights: %s)", " ".join(str(exc).split())[:200])


def _prune(settings: Settings, version: str, keep: Path) -> None:
    """Drop other entries of ``version`` (stale registrations), then the oldest beyond :data:`KEEP`."""
    entries = [p for p in cache_root(settings).glob("v*-*") if p.is_dir() and p != keep]
    stale = [p for p in entries if p.name.rsplit("-", 1)[0] == f"v{version}"]
    rest = sorted((p for p in entries if p not in stale), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in stale + rest[KEEP - 1 :]:
        shutil.rmtree(p, ignore_errors=True)
        log.info("dropped cached model %s", p.name)


def load_cached(settings: Settings, version: str) -> Embedder:
    """The registered model ``version`` as an embedder, from the local cache when it holds this registration."""
    from pipelines.registry import MODEL_NAME, load_embedder

    fp = registry_fingerprint(settings, MODEL_NAME, version)
    if fp is not None:
        folder = _entry(settings, version, fp)
        if (folder / _META_FILE).is_file() and json.loads((folder / _META_FILE).read_text()).get("format") != _FORMAT:
            log.info("cached model %s has an older layout; storing it again", folder)
            shutil.rmtree(folder, ignore_errors=True)
        if (folder / _META_FILE).is_file():
            try:
                embedder = _load_entry(folder)
                os.utime(folder)  # most recently used: pruned last
                log.info("model version %s from the local cache", version)
                return embedder
            except Exception as exc:  # a damaged entry is replaced, never served
                log.warning("cached model %s is unreadable (%s); loading it again", folder, exc)
                shutil.rmtree(folder, ignore_errors=True)
    try:
        stored = _store(settings, MODEL_NAME, version)
    except (UserError, Unavailable):  # an unknown version or MLflow down: loading through MLflow fails the same
        raise
    except Exception as exc:  # caching is an optimisation: the registry's own loader still answers
        log.warning("could not cache model version %s (%s); loading it through MLflow", version, exc)
        stored = None
    if stored is not None:
        return _load_entry(stored)
    return load_embedder(settings, version)
