"""The local model cache: a miss stores the registered version, a hit needs no MLflow, a rebuilt registry misses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.catalogue.manifest import read_manifest
from pipelines.features.store import read_features
from pipelines.index.milvus import TrackIndex
from pipelines.index.refresh import refresh_collection
from pipelines.model import cache
from pipelines.registry import MODEL_NAME, Registry, load_embedder
from pipelines.settings import IndexSettings, Settings
from pipelines.training.steps.evaluate import evaluate
from pipelines.training.steps.prepare import prepare
from pipelines.training.steps.train import train
from tests.pipelines.training.synth_catalogue import SMALL_JOB, build_synthetic_catalogue

pytestmark = pytest.mark.integration

_HIT = """
import json, sys
from pipelines.model.cache import load_cached
from pipelines.settings import IndexSettings, Settings
settings = Settings.model_validate_json(sys.argv[1])
embedder = load_cached(settings, "1")
out = {"mlflow": "mlflow" in sys.modules, "torch": "torch" in sys.modules, "dim": embedder.dim}
print(json.dumps({**out, "version": embedder.version, "kind": type(embedder).__name__}))
"""


def _register(settings: Settings) -> str:
    prepared = prepare(settings, SMALL_JOB)
    run_id = train(settings, SMALL_JOB, prepared)
    return evaluate(settings, SMALL_JOB, run_id)["version"]


def _entries(settings: Settings) -> list[str]:
    root = cache.cache_root(settings)
    return sorted(p.name for p in root.glob("v*-*")) if root.is_dir() else []


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return build_synthetic_catalogue(tmp_path_factory.mktemp("model-cache"), per_style=6)


def test_miss_then_hit_without_mlflow_then_a_rebuilt_registry_misses(catalogue: Settings, tmp_path: Path) -> None:
    first = catalogue.model_copy(
        update={"paths": catalogue.paths.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'a.db'}"})}
    )
    assert _register(first) == "1"
    fm = read_features(first)
    want = load_embedder(first, "1").embed(fm.matrix)
    assert _entries(first) == []

    # miss: stored under the data root, keyed by version and the registry's fingerprint of it
    got = cache.load_cached(first, "1")
    mv = Registry(first).version("1")
    fp = cache.fingerprint(mv.run_id, mv.creation_timestamp)
    assert cache.registry_fingerprint(first, MODEL_NAME, "1") == fp
    assert _entries(first) == [f"v1-{fp}"]
    np.testing.assert_allclose(got.embed(fm.matrix), want, atol=1e-5)
    assert (got.version, got.dim, got.feature_version) == ("1", want.shape[1], fm.version)

    # hit, in a fresh process: neither MLflow nor torch is imported, the numpy branch embeds
    out = subprocess.run(
        [sys.executable, "-c", _HIT, first.model_dump_json()], capture_output=True, text=True, check=True
    )
    hit = json.loads(out.stdout.strip().splitlines()[-1])
    assert hit == {"mlflow": False, "torch": False, "dim": want.shape[1], "version": "1", "kind": "NumpyEmbedder"}

    # a registry rebuilt from scratch registers a different model as version 1 again: a miss, and the
    # stale entry of version 1 is dropped
    second = catalogue.model_copy(
        update={"paths": catalogue.paths.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'b.db'}"})}
    )
    assert _register(second) == "1"
    fp2 = cache.registry_fingerprint(second, MODEL_NAME, "1")
    assert fp2 is not None and fp2 != fp
    cache.load_cached(second, "1")
    assert _entries(second) == [f"v1-{fp2}"]

    # damaged numpy weights: the torch program answers
    entry = cache.cache_root(second) / f"v1-{fp2}"
    (entry / "weights.npz").write_bytes(b"not weights")
    fallback = cache.load_cached(second, "1")
    assert type(fallback).__name__ == "TorchEmbedder"
    np.testing.assert_allclose(fallback.embed(fm.matrix), load_embedder(second, "1").embed(fm.matrix), atol=1e-5)

    # a damaged entry is replaced, never served
    (entry / "model.pt2").write_bytes(b"not a model")
    again = cache.load_cached(second, "1")
    np.testing.assert_allclose(again.embed(fm.matrix), load_embedder(second, "1").embed(fm.matrix), atol=1e-5)
    assert _entries(second) == [f"v1-{fp2}"]


def test_unknown_version_is_a_clear_error_and_caches_nothing(catalogue: Settings, tmp_path: Path) -> None:
    settings = catalogue.model_copy(
        update={"paths": catalogue.paths.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'c.db'}"})}
    )
    Registry(settings).check()
    assert cache.registry_fingerprint(settings, MODEL_NAME, "7") is None
    with pytest.raises(Exception, match="no version '7'"):
        cache.load_cached(settings, "7")


_RECOMMEND = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps({m: m in sys.modules for m in ("torch", "mlflow")}), file=sys.stderr))
from serving.cli_serve import main
main()
"""


def test_recommend_audio_with_a_registered_model_imports_neither_torch_nor_mlflow(
    catalogue: Settings, tmp_path: Path
) -> None:
    settings = catalogue.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'r.db'}", "milvus_uri": str(tmp_path / "m.db")}
    )
    assert _register(settings) == "1"
    index = TrackIndex(settings.paths.milvus_uri, IndexSettings(collections_kept=1, embed_batch_size=8))
    try:
        manifest = read_manifest(settings.manifest_path)
        refresh_collection(index, cache.load_cached(settings, "1"), read_features(settings), manifest)
    finally:
        index.close()
    audio = Path(manifest["path"].iloc[0])
    env = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.paths.data_root),
        "MUSICREC_MILVUS_URI": settings.paths.milvus_uri,
        "MUSICREC_MLFLOW_TRACKING_URI": settings.paths.mlflow_tracking_uri,
        "MUSICREC_FEATURES": settings.features.model_dump_json(),
    }
    cmd = [sys.executable, "-c", _RECOMMEND, "recommend", "--audio", str(audio), "-k", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(collection tracks__1__" in out.stdout.splitlines()[0]
    assert len(out.stdout.splitlines()) == 4
    assert json.loads(out.stderr.strip().splitlines()[-1]) == {"torch": False, "mlflow": False}
