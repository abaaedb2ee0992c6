"""A data root copied or moved keeps working: MLflow writes only into it and its models load from it.

Real MLflow on SQLite under the data root, real torch branches logged and registered through
:class:`~pipelines.registry.Registry`, loaded back through :func:`~pipelines.registry.load_embedder`.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.model.encoder import Encoder, EncoderConfig
from pipelines.registry import (
    CHAMPION,
    EXPERIMENT_NAME,
    MODEL_NAME,
    Registry,
    RegistryUnavailable,
    load_embedder,
    resolve_alias,
)
from pipelines.relocate import MARKER, read_marker, relocate, rewrite_root, uri_to_path
from pipelines.settings import PathSettings, Settings

pytestmark = pytest.mark.integration

CONFIG = EncoderConfig(n_frames=6, n_mfcc=4, dim=4, frame_layers=(8,), head_layers=(8,))
X = np.random.default_rng(0).standard_normal((5, CONFIG.input_dim)).astype(np.float32)


def _settings(root: Path) -> Settings:
    """The embedded defaults for ``root``: MLflow in ``root/mlflow.db``, artifacts in ``root/mlartifacts``."""
    return Settings(paths=PathSettings(data_root=root, mlflow_tracking_uri="", milvus_uri=""))


def _register(settings: Settings, seed: int) -> tuple[str, np.ndarray]:
    """Log and register a tiny random branch as the champion; returns its version and expected output."""
    torch.manual_seed(seed)
    model = Encoder(CONFIG).eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).numpy()
    registry = Registry(settings)
    registry.check()
    run_id = registry.start_run({"seed": seed}, {"feature_version": "fv-test"}, name="relocate-test")
    uri = registry.log_model(run_id, model, "fv-test", X)
    tags = {"feature_version": "fv-test", "dim": str(CONFIG.out_dim), "encoder": CONFIG.model_dump_json()}
    version = registry.register(run_id, uri, tags)
    registry.end_run(run_id)
    registry.set_champion(version, by="test", reason="relocation test")
    return version, expected


def _digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256 of its bytes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _text_values_naming(db: Path, root: Path) -> list[str]:
    """Every text value in the store that names ``root`` or a path under it (any spelling)."""
    spellings = {str(root), root.as_uri(), f"file://{root}"}
    con = sqlite3.connect(db)
    try:
        found = []
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for _cid, col, *_ in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                for (value,) in con.execute(f'SELECT "{col}" FROM "{table}"'):
                    if isinstance(value, str) and any(value == s or s + "/" in value for s in spellings):
                        found.append(f"{table}.{col}={value}")
        return found
    finally:
        con.close()


def _assert_loads(settings: Settings, version: str, expected: np.ndarray) -> None:
    embedder = load_embedder(settings, version)
    assert embedder.version == version and embedder.dim == CONFIG.out_dim
    np.testing.assert_allclose(embedder.embed(X), expected, atol=1e-5)


def test_a_copy_writes_only_into_itself_and_loads_old_and_new_versions(tmp_path: Path) -> None:
    a, b = tmp_path / "A", tmp_path / "copy of A"  # the space makes file URIs and plain paths differ
    v1, out1 = _register(_settings(a), seed=1)
    assert read_marker(a) == str(a)
    before = _digest(a)
    assert "mlflow.db" in before and any(k.startswith("mlartifacts/") for k in before)

    shutil.copytree(a, b)
    settings_b = _settings(b)
    v2, out2 = _register(settings_b, seed=2)

    assert _digest(a) == before  # the original, database included, is byte for byte what it was
    assert v2 == str(int(v1) + 1)
    assert read_marker(b) == str(b)
    assert _text_values_naming(b / "mlflow.db", a) == []
    registry = Registry(settings_b)
    run_id = registry.version(v2).run_id
    run_artifacts = Path(uri_to_path(registry.client.get_run(run_id).info.artifact_uri))
    assert run_artifacts.is_relative_to(b / "mlartifacts")
    for version in (v1, v2):
        stored = Path(uri_to_path(registry.client.get_model_version_download_uri(MODEL_NAME, version)))
        assert stored.is_relative_to(b / "mlartifacts") and (stored / "MLmodel").is_file()
    assert resolve_alias(settings_b, CHAMPION) == v2
    _assert_loads(settings_b, v1, out1)
    _assert_loads(settings_b, v2, out2)


def test_a_moved_root_serves_its_champion_from_the_new_place(tmp_path: Path) -> None:
    a, c = tmp_path / "A", tmp_path / "moved" / "C"
    version, expected = _register(_settings(a), seed=3)
    c.parent.mkdir()
    shutil.move(a, c)
    assert not a.exists()

    settings_c = _settings(c)
    assert resolve_alias(settings_c, CHAMPION) == version
    _assert_loads(settings_c, version, expected)
    assert _text_values_naming(c / "mlflow.db", a) == []
    assert not a.exists()  # nothing recreated the old place


def test_relocation_rewrites_once_and_a_second_open_changes_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    version, expected = _register(_settings(a), seed=4)
    shutil.copytree(a, b)
    settings_b = _settings(b)

    first = relocate(settings_b, EXPERIMENT_NAME)
    assert first is not None and (first.old_root, first.new_root) == (str(a), str(b))
    assert {
        "experiments.artifact_location",
        "runs.artifact_uri",
        "logged_models.artifact_location",
        "model_versions.storage_location",
    } <= set(first.rewritten)
    rewritten = _digest(b)
    assert relocate(settings_b, EXPERIMENT_NAME) is None
    Registry(settings_b)
    Registry(settings_b)
    assert _digest(b) == rewritten
    _assert_loads(settings_b, version, expected)


def test_a_root_written_before_markers_existed_is_relocated_from_its_experiment(tmp_path: Path) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    version, expected = _register(_settings(a), seed=5)
    shutil.copytree(a, b)
    (b / MARKER).unlink()
    before = _digest(a)

    done = relocate(_settings(b), EXPERIMENT_NAME)
    assert done is not None and done.old_root == str(a) and done.total >= 4
    assert read_marker(b) == str(b) and _text_values_naming(b / "mlflow.db", a) == []
    _assert_loads(_settings(b), version, expected)
    assert _digest(a) == before


def test_only_whole_path_prefixes_are_rewritten(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    old, new = "/srv/data", "/mnt/my data"
    values = {
        "/srv/data": "/mnt/my data",
        "/srv/data/mlartifacts/1": "/mnt/my data/mlartifacts/1",
        "file:///srv/data/mlartifacts/x": "file:///mnt/my%20data/mlartifacts/x",
        "/srv/data2/mlartifacts": "/srv/data2/mlartifacts",
        "file:///srv/database": "file:///srv/database",
        "s3://bucket/srv/data/x": "s3://bucket/srv/data/x",
        "it's in /srv/data/x": "it's in /srv/data/x",
    }
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, location VARCHAR(500), n INTEGER)")
        con.executemany("INSERT INTO t (location, n) VALUES (?, 1)", [(v,) for v in values])
    con.close()
    assert rewrite_root(db, old, new) == {"t.location": 3}
    with sqlite3.connect(db) as con:
        got = [r[0] for r in con.execute("SELECT location FROM t ORDER BY id")]
    con.close()
    assert got == list(values.values())


def test_a_store_that_cannot_be_rewritten_is_a_clear_error_and_stays_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "B"
    root.mkdir()
    (root / "mlflow.db").write_bytes(b"not a database, e.g. a copy cut short" * 100)
    (root / MARKER).write_text(f'{{"root": "{tmp_path / "A"}"}}')
    before = _digest(root)
    with pytest.raises(RegistryUnavailable, match="could not be pointed at this data root"):
        Registry(_settings(root))
    assert _digest(root) == before
