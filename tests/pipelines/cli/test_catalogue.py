"""The CLI's catalogue commands, run as a user would: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.catalogue.manifest import REJECTS_SCHEMA, read_manifest, read_table
from pipelines.settings import Settings
from tests import synth


def _musicrec(args: list[str], data_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSICREC_DATA_ROOT": str(data_root)}
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=120)


def test_import_then_show(tmp_path: Path) -> None:
    tree = synth.style_tree(tmp_path / "lib", per_style=2, seconds=1.5)
    (tmp_path / "lib" / "noise" / "junk.ogg").write_text("junk")
    out = _musicrec(["catalogue", "import", str(tmp_path / "lib")], tmp_path / "data")
    assert out.returncode == 0, out.stderr
    assert "6 added" in out.stdout and "1 not_audio" in out.stdout
    settings = Settings(data_root=tmp_path / "data")
    manifest = read_manifest(settings.manifest_path)
    assert len(manifest) == 6 and set(manifest["style"]) == set(tree)
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    assert rejects["reason"].tolist() == ["not_audio"] and rejects["path"].iloc[0].endswith("junk.ogg")
    show = _musicrec(["catalogue", "show"], tmp_path / "data")
    assert show.returncode == 0
    lines = show.stdout.splitlines()
    assert lines[0].split() == ["style", "tracks", "sources", "hours"]
    assert any(line.split()[:2] == ["TOTAL", "6"] for line in lines)


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = _musicrec(["catalogue", "import", str(tmp_path / "nope")], tmp_path / "data")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "path does not exist" in missing.stderr
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("file,genre\n")
    out = _musicrec(["catalogue", "import", str(bad_csv)], tmp_path / "data")
    assert out.returncode == 2 and "missing column(s) path; found file, genre" in out.stderr
    usage = _musicrec(["catalogue", "import"], tmp_path / "data")
    assert usage.returncode == 2 and usage.stderr.strip().startswith("error:")


def test_config_prints_each_effective_value_with_its_source(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MUSICREC_HNSW_M=24\nMUSICREC_SERVING_PORT=8111\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    env |= {"MUSICREC_DATA_ROOT": str(tmp_path / "data"), "MUSICREC_FEATURES__N_MFCC": "13", "MUSICREC_HNSW_M": "20"}
    cmd = [sys.executable, "-c", "from pipelines.cli.app import run; run()", "config", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    assert values["data_root"] == {"value": str((tmp_path / "data").resolve()), "source": "environment"}
    assert values["mlflow_tracking_uri"]["value"] == f"sqlite:///{(tmp_path / 'data').resolve() / 'mlflow.db'}"
    assert values["features.n_mfcc"] == {"value": 13, "source": "environment"}
    assert values["index.hnsw_m"] == {"value": 20, "source": "environment"}  # the environment beats .env
    assert values["serving.serving_port"] == {"value": 8111, "source": ".env"}
    assert values["index.index_type"] == {"value": "HNSW", "source": "default"}
    text = subprocess.run(cmd[:-1], capture_output=True, text=True, env=env, cwd=tmp_path, check=True, timeout=120)
    assert "serving.serving_port = 8111  (.env)" in text.stdout.splitlines()
