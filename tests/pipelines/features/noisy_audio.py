"""An MP3 whose decoder complains: damaged frames that mpg123 (inside libsndfile) reports on fd 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.synth import SR


def damaged_mp3(path: Path, audio: np.ndarray, sr: int = SR, every: int = 10) -> Path:
    """Encode ``audio`` as MP3, then overwrite the side information of every ``every``-th frame.

    mpg123 prints a line per damaged frame ("big_values too large!", "part2_3_length ... too large") and
    still decodes the rest, so the file imports and embeds like a slightly glitchy recording.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, format="MP3")
    data = bytearray(path.read_bytes())
    syncs = [i for i in range(len(data) - 8) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0]
    for at in syncs[every::every]:
        data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    return path


def raw_decoder_lines(path: Path) -> list[str]:
    """What decoding ``path`` with plain soundfile prints to stderr: the noise musicrec must not pass on."""
    code = "import sys, soundfile; soundfile.read(sys.argv[1])"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    return out.stderr.splitlines()
