"""Where each effective setting comes from: defaults, the environment, or a .env file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.settings import Settings, effective_values


def test_each_value_names_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("MUSICREC_")]:
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("MUSICREC_SEARCH_EF=64\nMUSICREC_STACK__REDIS=6390\n")
    monkeypatch.setenv("MUSICREC_SERVING_MAX_K", "50")
    monkeypatch.setenv("MUSICREC_FEATURES__N_MFCC", "13")
    values = {name: (value, source) for name, value, source in effective_values(Settings())}
    assert values["index.search_ef"] == (64, ".env")
    assert values["stack.redis"] == (6390, ".env")
    assert values["serving.serving_max_k"] == (50, "environment")
    assert values["features.n_mfcc"] == (13, "environment")
    assert values["index.hnsw_m"] == (16, "default")
    assert values["data_root"] == ((tmp_path / "data").resolve(), "default")
    # every field of every section is listed once
    sections = {"features", "stack", "index", "serving"}
    expected = {n for n in Settings.model_fields if n not in sections}
    for section in sections:
        expected |= {f"{section}.{f}" for f in type(getattr(Settings(), section)).model_fields}
    assert set(values) == expected
