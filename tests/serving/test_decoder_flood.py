"""An upload built to make the MP3 decoder complain (a run of fake frame headers before the real audio)
gives one log line with a count, not a line per fake frame, on the server and at import."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from tests import synth
from tests.tagged import mp3_supported

pytestmark = pytest.mark.skipif(not mp3_supported(), reason="this libsndfile cannot write MP3")

_UPLOAD = """
import sys
from pathlib import Path
from pipelines.features.params import FeatureParams
from serving.decoding import DecodePool
pool = DecodePool(max_bytes=50 << 20, timeout_s=60.0, size=1)
try:
    vector = pool.vector_of_bytes(Path(sys.argv[1]).read_bytes(), FeatureParams(n_frames=64))
    print("frames", vector.frames_real)
finally:
    pool.close()
"""


def _fake_frames_then_audio(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sf.write(buf, synth.tone(330, 6.0, harmonics=3), synth.SR, format="MP3")
    path.write_bytes(b"\xff\xfb\x00\x00" * (1 << 16) + buf.getvalue())  # 256 kB of headers of empty frames
    return path


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}


def test_an_upload_flooding_the_decoder_logs_one_line(tmp_path: Path) -> None:
    hostile = _fake_frames_then_audio(tmp_path / "flood.mp3")
    done = subprocess.run(
        [sys.executable, "-c", _UPLOAD, str(hostile)], capture_output=True, text=True, env=_clean_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "frames 64" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(done.stderr) < 4096 and len(lines) == 1, done.stderr[:2000]
    count = int(lines[0].split(".upload: ")[1].split()[0])
    assert "audio decoder message(s)" in lines[0] and count > 1000, lines[0]


def test_importing_it_gives_one_note_line(tmp_path: Path) -> None:
    _fake_frames_then_audio(tmp_path / "lib" / "tones" / "flood.mp3")
    env = _clean_env() | {"MUSICREC_DATA_ROOT": str(tmp_path / "data")}
    cli = Path(sys.executable).with_name("musicrec")
    done = subprocess.run(
        [str(cli), "catalogue", "import", str(tmp_path / "lib")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout) + len(done.stderr) < 8192, done.stderr[:2000]
    assert sum("audio decoder reported" in line for line in done.stderr.splitlines()) == 1, done.stderr
