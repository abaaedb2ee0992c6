"""What `make run`'s commands print when their output is piped: the user's lines, no third-party noise.

No MLflow INFO lines (its database set-up), no carriage-return fragments of a progress bar (MLflow's
artifact download), no line per damaged MP3 frame from the decoder (mpg123 writes those to fd 2 itself):
at most one summary line per command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import typer

from pipelines.audio import DECODER_TALLY_ENV
from pipelines.cli import console
from tests.pipelines.features.noisy_audio import damaged_mp3, raw_decoder_lines
from tests.pipelines.training.synth_catalogue import SMALL_JOB, SYNTH_FEATURES
from tests.pipelines.training.synth_styles import style_library
from tests.tagged import mp3_supported

_MAIN = "from serving.cli_serve import main; main()"
_SUMMARY = "note: the audio decoder reported "  # the one line a command may print about decoder messages
_NOISE = ("INFO mlflow", "INFO alembic", "Downloading artifacts", "libmpg123", "big_values", "part2_3_length (")


def _musicrec(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICREC_", "MLFLOW_"))}
    env |= {
        "MUSICREC_DATA_ROOT": str(root / "data"),
        "MUSICREC_MILVUS_URI": str(root / "milvus.db"),
        "MUSICREC_FEATURES__N_FRAMES": str(SYNTH_FEATURES.n_frames),
        "MUSICREC_TRAINING_JOB": SMALL_JOB.model_dump_json(),
    }
    cmd = [sys.executable, "-c", _MAIN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)


@pytest.mark.integration
@pytest.mark.skipif(not mp3_supported(), reason="this libsndfile cannot write MP3")
def test_the_main_job_piped_prints_no_library_noise(tmp_path: Path) -> None:
    """Import, features, training (a fresh MLflow store), a refresh that downloads the model, a query."""
    library = style_library(tmp_path / "library", per_style=6, seconds=4.0, sources=2)
    wav = library["plucks"][0]
    audio, sr = sf.read(wav, dtype="float32")
    mp3 = damaged_mp3(wav.with_suffix(".mp3"), audio, sr)
    wav.unlink()
    assert sum("big_values" in line for line in raw_decoder_lines(mp3)) >= 5, "the MP3 must make the decoder talk"

    steps = [
        ["catalogue", "import", str(tmp_path / "library")],
        ["features", "build"],
        ["train"],
        ["index", "refresh", "--model-version", "1"],
        ["recommend", "--audio", str(mp3), "-k", "3"],
    ]
    outputs = {}
    for args in steps:
        out = _musicrec(args, tmp_path)
        assert out.returncode == 0, (args, out.stderr[-3000:])
        outputs[" ".join(args[:2])] = out
    for step, out in outputs.items():
        text = out.stdout + out.stderr
        assert "\r" not in text, (step, text[-2000:])
        lines = [line for line in text.splitlines() if not line.startswith(_SUMMARY)]
        assert not [(n, line) for line in lines for n in _NOISE if n in line], (step, text[-2000:])
        about_mp3 = [line for line in text.splitlines() if mp3.name in line and not line.startswith("similar to")]
        assert len(about_mp3) <= 1, (step, about_mp3)
    for step in ("features build", "train"):  # the messages were counted, not lost
        (line,) = [line for line in outputs[step].stderr.splitlines() if mp3.name in line]
        assert line.startswith(_SUMMARY) and f"in 1 file: {mp3}: " in line, line
    assert "version 1:" in outputs["train"].stdout and "built tracks__1__" in outputs["index refresh"].stdout


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _context() -> typer.Context:
    return typer.Context(typer.main.get_command(typer.Typer(callback=lambda: None)))


@pytest.mark.parametrize("tty", [False, True])
def test_mlflow_keeps_its_download_bar_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    for name in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    with _context() as ctx:
        console.quiet_libraries(ctx, verbose=False)
        assert os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR") == (None if tty else "false")
        assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ and "MLFLOW_LOGGING_LEVEL" not in os.environ


def test_the_users_own_mlflow_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    with _context() as ctx:
        console.quiet_libraries(ctx, verbose=False)
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
        assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"


def test_the_decoder_tally_lives_as_long_as_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DECODER_TALLY_ENV, raising=False)
    with _context() as ctx:
        console.summarise_decoder_messages(ctx)
        tally = Path(os.environ[DECODER_TALLY_ENV])
        assert tally.is_file()
    assert DECODER_TALLY_ENV not in os.environ and not tally.exists()
