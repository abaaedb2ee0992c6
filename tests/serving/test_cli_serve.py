"""`musicrec recommend / playlist / serve / catalogue rollback`, run as a user would: subprocesses, exit codes."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import endpoint_file, free_port
from pipelines.index.milvus import CatalogueIndex
from pipelines.settings import Settings
from tests.pipelines.index.helpers import PARAMS_A, PARAMS_B, refresh

_MAIN = "from serving.cli_serve import main; main()"


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(settings.data_root),
        "MUSICREC_MILVUS_URI": settings.milvus_uri,
    }


def _musicrec(args: list[str], settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", _MAIN, *args]
    full = {**_env(settings), **env}
    return subprocess.run(cmd, capture_output=True, text=True, env=full, check=False, timeout=180)


def _one_line_error(out: subprocess.CompletedProcess[str], text: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: ")
    assert text in out.stderr, out.stderr


def test_recommend_playlist_and_their_errors(lib: Settings) -> None:
    _one_line_error(_musicrec(["recommend", "x.y"], lib), "not built yet")
    refresh(lib, PARAMS_A)
    ids = dict(zip(*read_manifest(lib.manifest_path)[["title", "track_id"]].T.values, strict=True))

    out = _musicrec(["recommend", ids["high_tones 1"], "-k", "3"], lib)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"similar to {ids['high_tones 1']} (collection tracks__raw__")
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and rows[0][2] == "high_tones"
    assert [float(r[1]) for r in rows] == sorted(float(r[1]) for r in rows)

    audio = lib.data_root.parent / "music" / "noise" / "noise_0.wav"
    out = _musicrec(["recommend", "--audio", str(audio), "-k", "2", "--style", "noise"], lib)
    assert out.returncode == 0, out.stderr
    assert [line.split()[2] for line in out.stdout.splitlines()[1:]] == ["noise", "noise"]

    out = _musicrec(["playlist", ids["low_tones 0"], ids["noise 4"], "-n", "4"], lib)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 5

    out = _musicrec(["recommend", "--examples", "3", "-k", "4"], lib)
    assert out.returncode == 0, out.stderr
    headers = [line for line in out.stdout.splitlines() if line.startswith("similar to ")]
    assert [h.split()[2] for h in headers] == [ids["high_tones 0"], ids["low_tones 0"], ids["noise 0"]]
    assert "same-style share of the top 4 over all 15 tracks: " in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("start the API: musicrec serve")

    _one_line_error(_musicrec(["recommend", "no.such"], lib), "unknown track id 'no.such'")
    _one_line_error(_musicrec(["recommend"], lib), "give either a TRACK_ID or --audio FILE")
    _one_line_error(_musicrec(["recommend", ids["noise 0"], "-k", "0"], lib), "k must be between 1 and 100")
    _one_line_error(_musicrec(["recommend", "--audio", str(lib.data_root / "nope.wav")], lib), "no such file")
    _one_line_error(_musicrec(["recommend", "--audio", str(lib.manifest_path)], lib), "not audio")
    _one_line_error(_musicrec(["playlist", "nope"], lib), "unknown seed track id(s): 'nope'")


def test_catalogue_refresh_command_from_the_feature_store(lib: Settings) -> None:
    from pipelines.features.build import FeatureBuild

    settings = Settings(data_root=lib.data_root, milvus_uri=lib.milvus_uri, features=PARAMS_A)
    FeatureBuild(settings=settings, shards=1).run()
    params = {"MUSICREC_FEATURES__N_FRAMES": "24", "MUSICREC_FEATURES__N_MFCC": "13"}
    name = f"tracks__raw__{PARAMS_A.version}"

    out = _musicrec(["catalogue", "refresh", "--model-version", "raw"], settings, **params)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(f"built {name} (model raw): 15 tracks, 15 embedded")
    again = _musicrec(["catalogue", "refresh", "--model-version", "raw"], settings, **params)
    assert again.returncode == 0 and again.stdout.startswith(f"unchanged {name} (model raw): 15 tracks, 0 embedded")
    # @champion needs a trained model: exit 2 with the reason.
    # Only the last line is checked: MLflow logs its own lines when it creates its database on first use.
    champion = _musicrec(["catalogue", "refresh"], settings, **params)
    missing = "no model registry" if importlib.util.find_spec("pipelines.registry") is None else "champion"
    assert champion.returncode == 2
    last = champion.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and missing in last, champion.stderr


def test_rollback_command(lib: Settings) -> None:
    a = refresh(lib, PARAMS_A).collection
    _one_line_error(_musicrec(["catalogue", "rollback"], lib), "no earlier collection to roll back to")
    b = refresh(lib, PARAMS_B).collection
    out = _musicrec(["catalogue", "rollback"], lib)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"alias tracks: {b} -> {a}"
    index = CatalogueIndex(lib.milvus_uri)
    assert index.alias_target() == a
    index.close()


@pytest.mark.integration
def test_serve_shares_the_milvus_lite_folder_with_other_commands(lib: Settings, tmp_path: Path) -> None:
    """`musicrec serve` runs milvus-lite server on the folder; a CLI command meanwhile goes through it."""
    refresh(lib, PARAMS_A)
    track = read_manifest(lib.manifest_path)["track_id"][0]
    port = free_port()
    cmd = [sys.executable, "-c", _MAIN, "serve", "--port", str(port)]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(cmd, env=_env(lib), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert health.status_code == 200 and health.json()["tracks"] == 15
        assert endpoint_file(Path(lib.milvus_uri)).exists()
        out = _musicrec(["recommend", track, "-k", "2"], lib)  # the folder is held: goes via the server
        assert out.returncode == 0, out.stderr
        similar = httpx.get(f"http://127.0.0.1:{port}/tracks/{track}/similar", params={"k": 2}).json()
        assert [line.split()[3] for line in out.stdout.splitlines()[1:]] == [r["track_id"] for r in similar["results"]]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        log.close()
    assert not endpoint_file(Path(lib.milvus_uri)).exists()
