"""A hostile-input corpus made here: every kind's outcome at import, at the feature build and at upload.

One audio rule holds on all three paths: a file refused at import for what it is (not a regular file,
non-finite samples, too short, out-of-range format) is refused for the same reason by the feature build and
by the upload endpoint (HTTP 4xx naming the reason, never 500), and no input byte is ever changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import (
    ACTIVE,
    MANIFEST_SCHEMA,
    REJECTS_SCHEMA,
    read_manifest,
    read_table,
    write_table,
)
from pipelines.features.build import FeatureBuild
from pipelines.features.quarantine import read_quarantine
from pipelines.features.store import read_features
from pipelines.settings import PathSettings, ServingSettings, Settings
from serving.api import create_app
from serving.service import Recommender
from tests import synth
from tests.pipelines.index.helpers import PARAMS_A, refresh
from tests.serving.conftest import Served
from tests.serving.test_cli_serve import _musicrec, _one_line_error

OK = "ok"
SR = synth.SR


def _wav(path: Path, audio: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(str(path), audio, sr, subtype=subtype)
    return path


def _as(path: Path, container: str) -> Path:
    sf.write(str(path), TONE, SR, format=container)
    return path


def _channels_wav(channels: int) -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, SR, SR * channels, channels, 8)
    data = b"\x80" * (channels * 20)
    riff = struct.pack("<I", 36 + len(data))
    return b"RIFF" + riff + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


def _rf64_claiming(data_bytes: int) -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16)
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, data_bytes + 36, data_bytes, data_bytes // 2, 0)
    return b"RF64" + b"\xff" * 4 + b"WAVE" + ds64 + b"fmt " + fmt + b"data" + b"\xff" * 4 + b"\0" * 50_000


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _with(audio: np.ndarray, at: int, value: float) -> np.ndarray:
    out = audio.copy()
    out[at] = value
    return out


def _cut(path: Path, fmt: str, keep: float) -> Path:
    buf = io.BytesIO()
    sf.write(buf, synth.tone(330, 6.0, harmonics=3), SR, format=fmt)
    return _bytes(path, buf.getvalue()[: int(len(buf.getvalue()) * keep)])


def _huge_header(path: Path) -> Path:
    buf = io.BytesIO()
    sf.write(buf, synth.tone(330, 3.0), SR, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 2_000_000_000)  # the header promises 2 GB of samples
    return _bytes(path, bytes(data))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link(target: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        os.symlink(target, path)
        return path

    return make


@dataclass(frozen=True)
class Kind:
    name: str  # file name, suffix included
    make: Callable[[Path], Path]
    imported: str | None  # reject reason at import, OK, or None: not tried there
    features: str  # quarantine reason at the feature build, or OK
    upload: tuple[int, str] | None  # HTTP status and a text the reason must hold; None: not an uploadable file


TONE = synth.tone(440, 3.0, harmonics=2)
RNG = np.random.default_rng(5)
KINDS = [
    Kind("empty.wav", lambda p: _bytes(p, b""), "empty_file", "empty_file", (422, "the upload is empty")),
    Kind("text.wav", lambda p: _bytes(p, b"liner notes\n" * 300), "not_audio", "not_audio", (415, "not audio")),
    Kind(
        "random.mp3",
        lambda p: _bytes(p, b"\x00" + RNG.integers(0, 256, 30000, dtype=np.uint8).tobytes()),
        "not_audio",
        "not_audio",
        (415, "not audio"),
    ),
    Kind("cut.wav", lambda p: _cut(p, "WAV", 0.5), *["corrupt_or_truncated"] * 2, (422, "corrupt_or_truncated")),
    Kind("cut.flac", lambda p: _cut(p, "FLAC", 0.05), *["corrupt_or_truncated"] * 2, (422, "corrupt_or_truncated")),
    Kind("huge_header.wav", _huge_header, *["corrupt_or_truncated"] * 2, (422, "corrupt_or_truncated")),
    Kind(
        "garbage.ogg",
        lambda p: _bytes(p, b"OggS" + RNG.integers(0, 256, 20000, dtype=np.uint8).tobytes()),
        *["corrupt_or_truncated"] * 2,
        (422, "corrupt_or_truncated"),
    ),
    Kind(
        "id3_junk.mp3",
        lambda p: _bytes(p, b"ID3\x04\x00\x00\x00\x00\x00\x00" + RNG.integers(0, 256, 20000, dtype=np.uint8).tobytes()),
        *["corrupt_or_truncated"] * 2,
        (422, "corrupt_or_truncated"),
    ),
    Kind(
        "header_only.wav",
        lambda p: _wav(p, np.zeros(0, np.float32)),
        *["zero_length_audio"] * 2,
        (422, "zero_length_audio"),
    ),
    Kind("fifo.wav", _fifo, "not_regular_file", "not_regular_file", None),
    Kind("dev_zero.wav", _link("/dev/zero"), "not_regular_file", "not_regular_file", None),
    Kind("dev_null.flac", _link("/dev/null"), "not_regular_file", "not_regular_file", None),
    Kind("dangling.ogg", _link("/nonexistent/nowhere.ogg"), "unreadable", "unreadable", None),
    Kind(
        "one_inf.wav",
        lambda p: _wav(p, _with(TONE, 100, np.inf), subtype="FLOAT"),
        *["non_finite_samples"] * 2,
        (422, "non_finite_samples"),
    ),
    Kind(
        "late_neg_inf.wav",
        lambda p: _wav(p, _with(TONE, 2 * SR, -np.inf), subtype="FLOAT"),
        *["non_finite_samples"] * 2,
        (422, "non_finite_samples"),
    ),
    Kind(
        "all_nan.wav",
        lambda p: _wav(p, np.full(3 * SR, np.nan, np.float32), subtype="FLOAT"),
        *["non_finite_samples"] * 2,
        (422, "non_finite_samples"),
    ),
    Kind(
        "nan_double.wav",
        lambda p: _wav(p, _with(TONE, 5, np.nan), subtype="DOUBLE"),
        *["non_finite_samples"] * 2,
        (422, "non_finite_samples"),
    ),
    Kind("tiny.wav", lambda p: _wav(p, synth.tone(440, 0.05)), "too_short", "too_short", (422, "too_short")),
    Kind("short.flac", lambda p: _wav(p, synth.tone(440, 0.9)), "too_short", "too_short", (422, "too_short")),
    Kind(
        "rate_2k.wav",
        lambda p: _wav(p, synth.tone(300, 3.0, sr=2000), sr=2000),
        *["unsupported_format"] * 2,
        (422, "unsupported_format"),
    ),
    Kind(
        "twenty_channels.wav",
        lambda p: _wav(p, np.tile(TONE[:, None], (1, 20))),
        *["unsupported_format"] * 2,
        (422, "unsupported_format"),
    ),
    Kind("silent.wav", lambda p: _wav(p, np.zeros(3 * SR, np.float32)), OK, "silent", (422, "silent")),
    Kind("whisper.flac", lambda p: _wav(p, synth.noise(3.0, amp=1e-4)), OK, "silent", (422, "silent")),
    Kind("u8_8khz.wav", lambda p: _wav(p, synth.tone(300, 3.0, sr=8000), sr=8000, subtype="PCM_U8"), OK, OK, (200, "")),
    Kind(
        "hires_96k_24bit.flac",
        lambda p: _wav(p, np.tile(synth.tone(500, 2.0, sr=96000)[:, None], (1, 2)), sr=96000, subtype="PCM_24"),
        OK,
        OK,
        (200, ""),
    ),
    Kind(
        "clipped_dc.wav", lambda p: _wav(p, np.clip(np.sign(TONE) + 0.5, -1, 1).astype(np.float32)), OK, OK, (200, "")
    ),
    Kind("real.mp3", lambda p: _wav(p, synth.tone(250, 3.0, harmonics=3)), OK, OK, (200, "")),
    Kind("vorbis.ogg", lambda p: _wav(p, synth.noise(3.0, seed=3, colour=0.6)), OK, OK, (200, "")),
    Kind('we\'ird "na\nme" ♫ -rf.wav', lambda p: _wav(p, synth.tone(700, 2.0)), OK, OK, (200, "")),
    Kind("stuck.wav", lambda p: _wav(p, synth.tone(900, 3.0)), None, "decode_timeout", None),
    # content that its name misstates: the same refusal everywhere, naming what it is
    Kind("sun_au.wav", lambda p: _as(p, "AU"), *["unsupported_format"] * 2, (415, "Sun/NeXT AU")),
    Kind("apple_caf.flac", lambda p: _as(p, "CAF"), *["unsupported_format"] * 2, (415, "Apple CAF")),
    Kind(
        "many_channels.wav", lambda p: _bytes(p, _channels_wav(65535)), *["unsupported_format"] * 2, (422, "channels")
    ),
    Kind(
        "sync_word_noise.mp3",
        lambda p: _bytes(p, b"\xff\xfb\x90\x64" + RNG.integers(0, 256, 60000, dtype=np.uint8).tobytes()),
        *["corrupt_or_truncated"] * 2,
        (422, "not decodable audio"),
    ),
    Kind("rf64_lies.wav", lambda p: _bytes(p, _rf64_claiming(1 << 62)), *["corrupt_or_truncated"] * 2, (422, "header")),
    Kind(
        "silent_intro.wav",
        lambda p: _wav(p, np.concatenate([np.zeros(12 * SR, np.float32), TONE])),
        OK,
        OK,
        (200, ""),
    ),
]


def _fingerprints(paths: list[Path]) -> dict[Path, tuple[str, int]]:
    out = {}
    for path in paths:
        if path.is_file():  # special files are never read; their link targets are not ours to hash
            st = path.stat()
            out[path] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def _manifest(settings: Settings, files: dict[str, Path]) -> None:
    """Every kind listed in a manifest as a tool that does not probe would list it."""
    rows = []
    for name, path in files.items():
        st = path.stat() if path.exists() else None
        rows.append(
            dict.fromkeys(MANIFEST_SCHEMA.names)
            | {
                "track_id": f"k.{name}",
                "path": str(path),
                "style": "x",
                "source": "hostile",
                "sha256": hashlib.sha256(name.encode()).hexdigest(),
                "size": st.st_size if st else 0,
                "mtime_ns": st.st_mtime_ns if st else 0,
                "origin": "test",
                "status": ACTIVE,
                "added_at": datetime.now(UTC),
            }
        )
    write_table(pd.DataFrame(rows), MANIFEST_SCHEMA, settings.manifest_path)


def test_the_corpus_has_enough_kinds() -> None:
    assert len(KINDS) >= 25 and len({k.name for k in KINDS}) == len(KINDS)


@pytest.mark.integration
def test_every_kind_gets_its_outcome_at_import_features_and_upload(served: Served, tmp_path: Path) -> None:
    lib = tmp_path / "lib" / "style"
    lib.mkdir(parents=True)
    files = {k.name: k.make(lib / k.name) for k in KINDS}
    before = _fingerprints(list(files.values()))
    expect = {k.name: k for k in KINDS}

    # import (the hanging file is held out: import decodes in-process, so it would wait for the kernel)
    stuck = files["stuck.wav"]
    aside = stuck.rename(tmp_path / "stuck.wav")
    settings = Settings(paths=PathSettings(data_root=tmp_path / "data"), features=PARAMS_A)
    import_catalogue(lib.parent, settings)
    aside.rename(stuck)
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    got = {Path(p).name: r for p, r in zip(rejects["path"], rejects["reason"], strict=True)}
    got |= {Path(p).name: OK for p in read_manifest(settings.manifest_path)["path"]}
    want = {k.name: k.imported for k in KINDS if k.imported is not None}
    assert got == want

    # feature build on a manifest that lists everything (as if written by a tool that never probes)
    features = Settings(paths=PathSettings(data_root=tmp_path / "features"), features=PARAMS_A, decode_timeout_s=3.0)
    _manifest(features, files)
    with synth.hanging_open(stuck):
        FeatureBuild(settings=features, shards=1).run()
    held = read_quarantine(features)
    got = {tid.removeprefix("k."): r for tid, r in zip(held["track_id"], held["reason"], strict=True)}
    got |= {tid.removeprefix("k."): OK for tid in read_features(features).track_ids}
    assert got == {k.name: k.features for k in KINDS}

    # upload: the same reason over HTTP, as a 4xx
    for name, path in files.items():
        if expect[name].upload is None:
            continue
        status, text = expect[name].upload
        res = served.client.post("/similar", params={"k": 2}, content=path.read_bytes())
        assert res.status_code == status, (name, res.text)
        if status != 200:
            assert text in res.json()["detail"] and "possibly a pipe" not in res.json()["detail"], name
            assert "\n" not in res.json()["detail"]

    assert _fingerprints(list(files.values())) == before  # no input byte changed, no file touched


def test_the_cli_says_one_line_for_special_and_non_finite_files(lib: Settings, tmp_path: Path) -> None:
    refresh(lib, PARAMS_A)
    fifo = _fifo(tmp_path / "pipe.wav")
    inf = _wav(tmp_path / "inf.wav", _with(TONE, 100, np.inf), subtype="FLOAT")
    _one_line_error(_musicrec(["recommend", "--audio", str(fifo)], lib), "not_regular_file (a FIFO")
    _one_line_error(_musicrec(["recommend", "--audio", str(inf)], lib), "non_finite_samples")
    stuck = _wav(tmp_path / "stuck.wav", TONE)
    with synth.hanging_open(stuck):
        started = time.monotonic()
        out = _musicrec(["recommend", "--audio", str(stuck)], lib, MUSICREC_SERVING_DECODE_TIMEOUT_S="2")
        _one_line_error(out, "decode_timeout")
        assert time.monotonic() - started < 30, "the CLI waited for the kernel instead of its deadline"


def _lease_first_upload(spool: Path, size: int, stack: contextlib.ExitStack, within_s: float = 30.0) -> Path:
    """Hold a write lease on the first complete upload spooled by the server, before its decoder opens it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for path in spool.glob("*.upload"):
            with contextlib.suppress(OSError):
                if path.stat().st_size == size:
                    stack.enter_context(synth.hanging_open(path))
                    return path
        time.sleep(0.001)
    raise AssertionError("no upload was spooled")


def test_an_upload_that_hangs_the_decoder_costs_that_request_only(served: Served, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    serving = ServingSettings(serving_alias_ttl_s=0, serving_decode_timeout_s=2.0, serving_upload_dir=spool)
    recommender = Recommender(served.index, served.settings, serving)
    buf = io.BytesIO()
    sf.write(buf, TONE, SR, format="WAV")
    data = buf.getvalue()
    answers: dict[str, httpx.Response] = {}
    with TestClient(create_app(served.settings, recommender=recommender)) as client:
        hung = threading.Thread(target=lambda: answers.update(hung=client.post("/similar", content=data)))
        with contextlib.ExitStack() as stack:
            started = time.monotonic()
            hung.start()
            _lease_first_upload(spool, len(data), stack)
            health = client.get("/health")  # the server answers while the decoder hangs
            hung.join(timeout=60)
            elapsed = time.monotonic() - started
        assert health.status_code == 200 and not hung.is_alive()
        assert answers["hung"].status_code == 422, answers["hung"].text
        assert "decode_timeout" in answers["hung"].json()["detail"] and elapsed < 20
        after = client.post("/similar", params={"k": 2}, content=data)  # a fresh decoder takes the next one
        assert after.status_code == 200 and len(after.json()["results"]) == 2
    recommender.decoder.close()
    assert recommender.decoder.timeouts == 1 and not list(spool.iterdir()), "spooled uploads are removed"
