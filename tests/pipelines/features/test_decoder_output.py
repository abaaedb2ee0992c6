"""What C decoders print on fd 2 while musicrec decodes: counted per file, never passed on line by line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.audio import DECODER_TALLY_ENV, decoder_summary, report_decoder_lines
from pipelines.cli import console
from tests.pipelines.features.noisy_audio import damaged_mp3, raw_decoder_lines
from tests.synth import noise, tone
from tests.tagged import mp3_supported

pytestmark = pytest.mark.skipif(not mp3_supported(), reason="this libsndfile cannot write MP3")

_DECODE_THRICE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
from pipelines.audio import probe
from pipelines.features.frontend import decode
from pathlib import Path
probe(Path(sys.argv[1]))
for _ in range(3):
    decode(sys.argv[1], 22050, 0.0, 10.0)
print("decoded", file=sys.stderr)
"""


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    music = tone(220, 12.0, harmonics=4) + noise(12.0, amp=0.05, seed=3)
    path = damaged_mp3(tmp_path_factory.mktemp("noisy") / "noisy.mp3", music)
    raw = raw_decoder_lines(path)
    assert sum("big_values" in line or "part2_3_length" in line for line in raw) >= 5, raw[:5]
    return path


def _decode_in_child(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != DECODER_TALLY_ENV} | env
    cmd = [sys.executable, "-c", _DECODE_THRICE, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, check=True, timeout=120)


def test_a_noisy_file_gives_one_warning_line_however_often_it_is_decoded(noisy: Path) -> None:
    """Outside the CLI (an Airflow task, the API): one WARNING per file and process, the rest at INFO."""
    lines = _decode_in_child(noisy).stderr.splitlines()
    assert lines[-1] == "decoded", lines
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"WARNING pipelines.audio: {noisy}: ") and "audio decoder message(s)" in lines[0]
    assert not any("libmpg123" in line or line.startswith("[") for line in lines)


def test_under_the_cli_the_counts_go_to_the_tally_and_nothing_to_stderr(noisy: Path, tmp_path: Path) -> None:
    tally = tmp_path / "tally.jsonl"
    tally.touch()
    out = _decode_in_child(noisy, **{DECODER_TALLY_ENV: str(tally)})
    assert out.stderr.splitlines() == ["decoded"]
    records = [json.loads(line) for line in tally.read_text().splitlines()]
    assert len(records) == 4 and {r["file"] for r in records} == {str(noisy)}  # three decodes, one probe
    summary = decoder_summary(tally)
    assert summary is not None and "\n" not in summary
    assert f"in 1 file: {noisy}: " in summary and f"reported {sum(r['count'] for r in records)} problems" in summary


def test_a_removed_tally_is_not_recreated(noisy: Path, tmp_path: Path) -> None:
    """A child that outlives its command (its tally removed) logs instead of leaving files behind."""
    gone = tmp_path / "gone.jsonl"
    lines = _decode_in_child(noisy, **{DECODER_TALLY_ENV: str(gone)}).stderr.splitlines()
    assert not gone.exists() and len(lines) == 2 and lines[0].startswith("WARNING")


def test_other_output_on_fd2_is_passed_on_unchanged(capfd: pytest.CaptureFixture[str]) -> None:
    assert report_decoder_lines("x.mp3", b"a traceback line\n[src/libmpg123/layer3.c:f():1] error: bad\n") == 1
    assert capfd.readouterr().err == "a traceback line\n"


def test_summary_counts_files_once_across_processes(tmp_path: Path) -> None:
    tally = tmp_path / "t.jsonl"
    records = [("a.mp3", 2, "big_values too large!"), ("b.mp3", 1, "x"), ("a.mp3", 3, "y")]
    tally.write_text("".join(json.dumps({"file": f, "count": n, "first": m}) + "\n" for f, n, m in records))
    summary = decoder_summary(tally)
    assert summary is not None
    assert summary.startswith("the audio decoder reported 6 problems in 2 files: a.mp3: big_values too large!")
    assert " and 1 more file " in summary
    assert decoder_summary(tmp_path / "missing.jsonl") is None


def test_the_cli_names_the_same_tally_variable() -> None:
    assert console.DECODER_TALLY_ENV == DECODER_TALLY_ENV
