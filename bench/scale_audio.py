"""Synthetic music libraries for the scale benchmark: many distinct, valid files, cheap to make.

Every file is a real, fully decodable file of its stated length, codec, sample rate and channel count, but
only its opening (about 11 s, more than the feature front end reads) is music; the rest is digital silence.
Encoding minutes of audio per file would take hours for 20,000 files on two cores, so:

- WAV and FLAC: the opening is synthesised for the file and encoded by libsndfile; the silent rest is
  written directly (WAV samples, or FLAC CONSTANT frames built here with their CRCs).
- Ogg Vorbis and MP3: a "reel" of synthesised music per (style, format, rate, channels) is encoded once;
  each file is a window of the reel's packets/frames starting at its own offset, followed by copies of the
  reel's silent packets/frames, re-paged (Ogg) or with its Xing/LAME header rewritten (MP3).

Styles differ in tempo, pitch range, timbre and noise, so features carry a learnable style signal. Files
sharing a reel overlap in content (windows at least ``REEL_STEP_S`` apart). Everything is deterministic
from a seed, and files are generated once and cached (see ``bench/bench_scale.py``).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

STYLES = ("ambient", "chiptune", "drone", "funk", "march", "noise-rock", "piano", "techno")
# (sample rate, channels) and how often each appears; 44.1 kHz stereo dominates real libraries.
LAYOUTS = ((44100, 2), (48000, 2), (22050, 1), (32000, 2), (44100, 1))
LAYOUT_WEIGHTS = (0.5, 0.15, 0.1, 0.1, 0.15)
CODECS = ("ogg", "mp3", "flac", "wav")
CODEC_WEIGHTS = (0.4, 0.3, 0.25, 0.05)
# WAV is large (10 MB a minute at 44.1 kHz stereo): mono layouts only, to keep 20k files on the disk.
WAV_LAYOUTS = ((22050, 1), (44100, 1), (16000, 1))
MIN_S, MAX_S = 30.0, 600.0
OPENING_S = 11.0  # music at the start of each file; the front end reads the first ~10 s
REEL_STEP_S = 0.5  # offset between two files' windows in one reel
BANK_SR = 48000


@dataclass(frozen=True)
class Spec:
    """One file of the library: where it goes and what it must be."""

    index: int
    style: str
    codec: str
    sr: int
    channels: int
    duration_s: float
    reel_slot: int  # which window of its reel (Ogg/MP3); the file's own seed otherwise

    @property
    def relative(self) -> str:
        return f"{self.style}/album-{self.index // 50:04d}/track-{self.index:06d}.{self.codec}"

    @property
    def frames(self) -> int:
        return round(self.duration_s * self.sr)


def specs(n: int, seed: int = 15) -> list[Spec]:
    """The first ``n`` files of the library; a smaller library is a prefix of a larger one."""
    rng = np.random.default_rng(seed)
    slots: dict[tuple, int] = {}
    out = []
    for i in range(n):
        style = STYLES[int(rng.integers(len(STYLES)))]
        codec = CODECS[int(rng.choice(len(CODECS), p=CODEC_WEIGHTS))]
        if codec == "wav":
            sr, ch = WAV_LAYOUTS[int(rng.integers(len(WAV_LAYOUTS)))]
        else:
            sr, ch = LAYOUTS[int(rng.choice(len(LAYOUTS), p=LAYOUT_WEIGHTS))]
        duration = round(float(math.exp(rng.uniform(math.log(MIN_S), math.log(MAX_S)))), 2)
        key = (style, codec, sr, ch)
        slot = slots.get(key, 0)
        slots[key] = slot + 1
        out.append(Spec(i, style, codec, sr, ch, duration, slot if codec in ("ogg", "mp3") else i))
    return out


# ------------------------------------------------------------------------------------------ synthesis


def _style_params(style: str) -> dict:
    k = STYLES.index(style)
    rng = np.random.default_rng(1000 + k)
    return {
        "bpm": (60 + 15 * k, 80 + 15 * k),
        "base": 55.0 * 2 ** (k % 4),
        "harmonics": int(rng.integers(1, 9)),
        "decay": float(rng.uniform(1.5, 12.0)),
        "noise": float(rng.uniform(0.0, 0.4)),
        "drums": k % 3 != 0,
    }


@lru_cache(maxsize=len(STYLES))
def _notes(style: str) -> np.ndarray:
    """The style's 24 notes (two octaves up from its base), each 1.5 s at the bank rate: (24, samples)."""
    p = _style_params(style)
    t = np.arange(int(1.5 * BANK_SR), dtype=np.float64) / BANK_SR
    env = np.exp(-t * p["decay"])
    weights = 1.0 / np.arange(1, p["harmonics"] + 1)
    notes = []
    for k in range(24):
        f0 = p["base"] * 2 ** (k / 12)
        notes.append(env * sum(w * np.sin(2 * np.pi * f0 * (h + 1) * t) for h, w in enumerate(weights)) * 0.12)
    return np.asarray(notes, dtype=np.float32)


def synth(style: str, seconds: float, seed: int) -> np.ndarray:
    """Mono float32 music-like audio at the bank rate: the style's notes on a beat, drums and noise."""
    p = _style_params(style)
    notes = _notes(style)
    rng = np.random.default_rng(seed)
    sr = BANK_SR
    n = int(seconds * sr)
    y = np.zeros(n + notes.shape[1], np.float32)
    step = int(60.0 / rng.uniform(*p["bpm"]) * sr / 2)
    hit = np.exp(-np.arange(sr // 10) / (sr / 80)).astype(np.float32) * 0.25
    for k, start in enumerate(range(0, n, step)):
        y[start : start + notes.shape[1]] += notes[int(rng.integers(24))] * rng.uniform(0.5, 1.0)
        if p["drums"] and k % 2 == 0:
            y[start : start + len(hit)] += hit * rng.standard_normal(len(hit)).astype(np.float32)
    y = y[:n]
    if p["noise"]:
        y += rng.standard_normal(n).astype(np.float32) * 0.02 * p["noise"]
    return np.clip(y, -0.9, 0.9)


def _layout(mono: np.ndarray, sr: int, channels: int, seed: int) -> np.ndarray:
    """Resample the bank-rate signal to ``sr`` and spread it over ``channels`` (a slightly different mix each)."""
    audio = soxr.resample(mono, BANK_SR, sr) if sr != BANK_SR else mono
    if channels == 1:
        return audio[:, None].astype(np.float32)
    delay = 1 + seed % 50
    other = np.concatenate([np.zeros(delay, np.float32), audio[:-delay]])
    return np.stack([audio, 0.7 * audio + 0.3 * other], axis=1).astype(np.float32)


def opening(spec: Spec, seed: int) -> np.ndarray:
    """The file's own music, (frames, channels) float32 at the file's rate."""
    mono = synth(spec.style, OPENING_S, seed)
    return _layout(mono, spec.sr, spec.channels, seed)


def _encode(audio: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, audio.shape[1], format=fmt, subtype=subtype) as f:
        for i in range(0, len(audio), 16384):  # libsndfile's Vorbis encoder crashes on very large writes
            f.write(audio[i : i + 16384])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ WAV


def write_wav(spec: Spec, path: Path, seed: int) -> None:
    audio = opening(spec, seed)[: spec.frames]
    with sf.SoundFile(path, "w", spec.sr, spec.channels, format="WAV", subtype="PCM_16") as f:
        f.write(audio)
        left = spec.frames - len(audio)
        zeros = np.zeros((min(left, 1 << 18), spec.channels), np.int16)
        while left > 0:
            f.write(zeros[: min(left, len(zeros))])
            left -= len(zeros)


# ----------------------------------------------------------------------------------------------- FLAC

_FLAC_BLOCK = 4096
_FLAC_SR_CODE = {8000: 4, 16000: 5, 22050: 6, 24000: 7, 32000: 8, 44100: 9, 48000: 10}


def _crc_table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number coding (UTF-8's scheme extended to 36 bits)."""
    if n < 0x80:
        return bytes([n])
    for length in range(2, 8):
        if n < 1 << (5 * length + 1):
            break
    out = []
    for _ in range(length - 1):
        out.append(0x80 | (n & 0x3F))
        n >>= 6
    lead = (0xFF << (8 - length)) & 0xFF
    return bytes([lead | n, *reversed(out)])


def _silent_flac_frame(number: int, block: int, sr: int, channels: int) -> bytes:
    """A FLAC frame of ``block`` zero samples per channel: one CONSTANT subframe per channel, 16-bit."""
    code = 12 if block == _FLAC_BLOCK else 7  # 12: 4096 samples; 7: 16-bit (size - 1) follows the number
    head = bytes([0xFF, 0xF8, (code << 4) | _FLAC_SR_CODE[sr], ((channels - 1) << 4) | (4 << 1)])
    head += _utf8_number(number)
    if code == 7:
        head += struct.pack(">H", block - 1)
    head += bytes([_crc8(head)])
    frame = head + b"\x00\x00\x00" * channels  # subframe header 0 (CONSTANT), then the 16-bit value 0
    return frame + struct.pack(">H", _crc16(frame))


def write_flac(spec: Spec, path: Path, seed: int) -> None:
    """Encode the opening (a whole number of 4096-sample blocks), then append silent frames to the length."""
    n_open = min(spec.frames, int(OPENING_S * spec.sr)) // _FLAC_BLOCK * _FLAC_BLOCK
    audio = opening(spec, seed)[:n_open]
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", spec.sr, spec.channels, format="FLAC", subtype="PCM_16") as f:
        f.write(audio)
    data = bytearray(buf.getvalue())
    # STREAMINFO is the first metadata block: 4-byte block header after "fLaC", then its 34 bytes.
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0
    info = 8
    min_block, max_block = struct.unpack_from(">HH", data, info)
    assert min_block == max_block == _FLAC_BLOCK, (min_block, max_block)
    frames = [data]
    number, left = n_open // _FLAC_BLOCK, spec.frames - n_open
    while left > 0:
        block = min(left, _FLAC_BLOCK)
        frames.append(_silent_flac_frame(number, block, spec.sr, spec.channels))
        number += 1
        left -= block
    # total samples: the low 36 bits of bytes 13..17 of STREAMINFO; min frame size unknown (0); no MD5.
    packed = int.from_bytes(data[info + 13 : info + 18], "big")
    packed = (packed & ~((1 << 36) - 1)) | spec.frames
    data[info + 13 : info + 18] = packed.to_bytes(5, "big")
    data[info + 4 : info + 7] = b"\x00\x00\x00"
    data[info + 18 : info + 34] = bytes(16)
    path.write_bytes(b"".join(frames))


# ------------------------------------------------------------------------------------------------ Ogg

_REV = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04c11db7, not reflected, no init or final xor), via zlib on reversed bits."""
    raw = zlib.crc32(page.translate(_REV), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _ogg_packets(data: bytes) -> tuple[int, list[bytes], list[int]]:
    """(serial, packets, granule of each page-ending packet or -1) of a single-stream Ogg file."""
    pos, packets, granules, cur = 0, [], [], b""
    serial = 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS", pos
        granule, serial = struct.unpack_from("<qI", data, pos + 6)
        nseg = data[pos + 26]
        segs = data[pos + 27 : pos + 27 + nseg]
        body = pos + 27 + nseg
        for s in segs:
            cur += data[body : body + s]
            body += s
            if s < 255:
                packets.append(cur)
                granules.append(-1)
                cur = b""
        if granules:
            granules[-1] = granule
        pos = body
    return serial, packets, granules


def _ogg_page(packets: list[bytes], granule: int, serial: int, seq: int, flags: int) -> bytes:
    segs = bytearray()
    for p in packets:
        segs += b"\xff" * (len(p) // 255) + bytes([len(p) % 255])
    head = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, seq, 0, len(segs)) + bytes(segs)
    page = head + b"".join(packets)
    return page[:22] + struct.pack("<I", _ogg_crc(page)) + page[26:]


@dataclass
class OggReel:
    """A reel's headers, audio packets, per-packet block flags and the silent packet from its end."""

    headers: list[bytes]
    audio: list[bytes]
    long: list[bool]
    blocksizes: tuple[int, int]
    silent: bytes
    sr: int

    @classmethod
    def parse(cls, data: bytes, sr: int) -> OggReel:
        _, packets, granules = _ogg_packets(data)
        headers, audio = packets[:3], packets[3:]
        bs = headers[0][28]
        blocksizes = (1 << (bs & 0x0F), 1 << (bs >> 4))
        # libvorbis writes two modes (short, long): the bit after the packet-type bit is the block flag.
        long = [bool((p[0] >> 1) & 1) if p else False for p in audio]
        reel = cls(headers, audio, long, blocksizes, audio[-20], sr)
        # Check the block-flag reading against the reel's own page granules (the last page is end-trimmed).
        total, checked = 0, 0
        for i in range(1, len(audio)):
            total += reel.samples(long[i - 1], long[i])
            g = granules[3 + i]
            if g >= 0 and i < len(audio) - 1:
                assert g == total, f"granule {g} != {total} at packet {i}"
                checked += 1
        assert checked and long[-20] and all(p == reel.silent for p in audio[-20:-2])
        return reel

    def samples(self, prev_long: bool, cur_long: bool) -> int:
        return self.blocksizes[prev_long] // 4 + self.blocksizes[cur_long] // 4


def write_ogg(spec: Spec, path: Path, reel: OggReel, seed: int) -> None:
    """Headers, the reel's packets from this file's window, silent packets up to the length, EOS-trimmed."""
    per_s = reel.sr / (reel.blocksizes[1] // 2)
    start = int(spec.reel_slot * REEL_STEP_S * per_s)
    stop = start + int(min(spec.duration_s, OPENING_S) * per_s)
    assert stop < len(reel.audio) - 40, "reel too short"
    serial = (seed * 2654435761) & 0xFFFFFFFF
    pages = [
        _ogg_page([reel.headers[0]], 0, serial, 0, 2),
        _ogg_page(reel.headers[1:], 0, serial, 1, 0),
    ]
    seq, total, prev = 2, 0, None
    page: list[bytes] = []
    nseg = size = 0
    window = list(zip(reel.audio[start:stop], reel.long[start:stop], strict=True))
    i = 0
    while True:
        packet, is_long = window[i] if i < len(window) else (reel.silent, True)
        i += 1
        need = len(packet) // 255 + 1
        if page and (nseg + need > 255 or size > 4000):  # start a new page; packets never span pages
            pages.append(_ogg_page(page, total, serial, seq, 0))
            seq += 1
            page, nseg, size = [], 0, 0
        if prev is not None:
            total += reel.samples(prev, is_long)
        prev = is_long
        page.append(packet)
        nseg += need
        size += len(packet)
        if total >= spec.frames:
            pages.append(_ogg_page(page, spec.frames, serial, seq, 4))
            break
    path.write_bytes(b"".join(pages))


# ------------------------------------------------------------------------------------------------ MP3

_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2/2.5 layer III
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every MPEG audio frame, from the first sync word to the end."""
    pos, out = data.find(b"\xff"), []
    while pos + 4 <= len(data):
        h = int.from_bytes(data[pos : pos + 4], "big")
        assert h >> 21 == 0x7FF, f"lost sync at {pos}"
        version = (h >> 19) & 3
        br = _MP3_BITRATES[1 if version == 3 else 2][(h >> 12) & 15] * 1000
        sr = _MP3_RATES[version][(h >> 10) & 3]
        pad = (h >> 9) & 1
        length = (144 if version == 3 else 72) * br // sr + pad
        out.append((pos, length))
        pos += length
    return out


_LAME_CRC = [0] * 256
for _b in range(256):
    _c = _b
    for _ in range(8):
        _c = (_c >> 1) ^ 0xA001 if _c & 1 else _c >> 1
    _LAME_CRC[_b] = _c


def _lame_crc(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = (crc >> 8) ^ _LAME_CRC[(crc ^ b) & 0xFF]
    return crc


@dataclass
class Mp3Reel:
    """A reel's Xing/LAME header frame, its audio frames, and the silent frame from its end."""

    info: bytes
    frames: list[bytes]
    silent: bytes
    spf: int  # samples per frame
    sr: int

    @classmethod
    def parse(cls, data: bytes, sr: int) -> Mp3Reel:
        spans = _mp3_frames(data)
        info = data[spans[0][0] : spans[0][0] + spans[0][1]]
        assert b"Xing" in info or b"Info" in info
        frames = [data[o : o + n] for o, n in spans[1:]]
        version = (info[1] >> 3) & 3
        spf = 1152 if version == 3 else 576
        lame = info.find(b"LAME")
        assert lame > 0 and _lame_crc(info[: lame + 34]) == struct.unpack_from(">H", info, lame + 34)[0]
        return cls(info, frames, frames[-30], spf, sr)


def _side_info_bytes(header: bytes) -> int:
    mpeg1, mono = (header[1] >> 3) & 3 == 3, header[3] >> 6 == 3
    return (17 if mono else 32) if mpeg1 else (9 if mono else 17)


def _lead_in(frames: list[bytes], start: int) -> bytes:
    """A silent frame that carries the bit reservoir ``frames[start]`` reads from the frames before it.

    MP3 frames borrow bytes from earlier frames (``main_data_begin``); a file cut out of a reel would start
    with a frame whose data is missing. This frame decodes to silence (all side information zero) and ends
    with exactly those bytes, so the cut decodes cleanly from its first music frame.
    """
    first = frames[start]
    assert first[1] & 1, "frames with CRC protection are not expected from libsndfile"
    mpeg1 = (first[1] >> 3) & 3 == 3
    side = _side_info_bytes(first)
    need = ((first[4] << 1) | (first[5] >> 7)) if mpeg1 else first[4]
    reservoir = b""
    i = start - 1
    while len(reservoir) < need and i >= 0:
        prev = frames[i]
        reservoir = prev[4 + _side_info_bytes(prev) :] + reservoir
        i -= 1
    reservoir = reservoir[-need:].rjust(need, b"\0") if need else b""
    header = bytearray(first[:4])
    header[2] = (14 << 4) | (header[2] & 0x0C)  # the highest bitrate, no padding: room for any reservoir
    version = (header[1] >> 3) & 3
    sr = _MP3_RATES[version][(header[2] >> 2) & 3]
    length = (144 if mpeg1 else 72) * _MP3_BITRATES[1 if mpeg1 else 2][14] * 1000 // sr
    payload = length - 4 - side
    assert payload >= need
    return bytes(header) + bytes(side) + bytes(payload - need) + reservoir


def write_mp3(spec: Spec, path: Path, reel: Mp3Reel) -> None:
    """The reel's frames from this file's window, then silent frames; the VBR header says the new length."""
    info = bytearray(reel.info)
    tag = info.find(b"Xing") if b"Xing" in info else info.find(b"Info")
    lame = info.find(b"LAME")
    delay = int.from_bytes(info[lame + 21 : lame + 24], "big") >> 12
    n_frames = math.ceil((spec.frames + delay) / reel.spf)
    padding = n_frames * reel.spf - delay - spec.frames
    per_s = reel.sr / reel.spf
    start = int(spec.reel_slot * REEL_STEP_S * per_s)
    take = min(n_frames, int(OPENING_S * per_s))
    assert start + take < len(reel.frames) - 40, "reel too short"
    lead = _lead_in(reel.frames, start)
    body = [lead, *reel.frames[start : start + take - 1]] + [reel.silent] * (n_frames - take)
    audio_bytes = sum(len(f) for f in body)
    flags = struct.unpack_from(">I", info, tag + 4)[0]
    assert flags & 7 == 7, flags
    struct.pack_into(">II", info, tag + 8, n_frames, len(info) + audio_bytes)
    info[tag + 16 : tag + 116] = bytes(int(i * 256 / 100) for i in range(100))  # a linear seek table
    info[lame + 21 : lame + 24] = ((delay << 12) | padding).to_bytes(3, "big")
    struct.pack_into(">I", info, lame + 28, len(info) + audio_bytes)
    struct.pack_into(">H", info, lame + 34, _lame_crc(bytes(info[: lame + 34])))
    path.write_bytes(bytes(info) + b"".join(body))


# ---------------------------------------------------------------------------------------------- reels


def reel_seconds(n_slots: int) -> float:
    return n_slots * REEL_STEP_S + OPENING_S + 5.0


def make_reel(style: str, codec: str, sr: int, channels: int, n_slots: int) -> bytes:
    """Music for ``n_slots`` windows, then 8 s of silence (the source of the silent packets or frames)."""
    key = zlib.crc32(f"{style}/{codec}/{sr}/{channels}".encode())
    music = synth(style, reel_seconds(n_slots), key)
    audio = np.concatenate([_layout(music, sr, channels, key), np.zeros((8 * sr, channels), np.float32)])
    fmt, subtype = ("OGG", "VORBIS") if codec == "ogg" else ("MP3", "MPEG_LAYER_III")
    return _encode(audio, sr, fmt, subtype)


def parse_reel(codec: str, data: bytes, sr: int) -> OggReel | Mp3Reel:
    return OggReel.parse(data, sr) if codec == "ogg" else Mp3Reel.parse(data, sr)


def write_file(spec: Spec, path: Path, reel: OggReel | Mp3Reel | None, seed: int) -> None:
    """Write ``spec`` at ``path`` (via a temporary name, so an interrupted run leaves no partial file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    file_seed = seed * 1_000_003 + spec.index
    if spec.codec == "wav":
        write_wav(spec, tmp, file_seed)
    elif spec.codec == "flac":
        write_flac(spec, tmp, file_seed)
    elif spec.codec == "ogg":
        assert isinstance(reel, OggReel)
        write_ogg(spec, tmp, reel, file_seed)
    else:
        assert isinstance(reel, Mp3Reel)
        write_mp3(spec, tmp, reel)
    tmp.replace(path)
