"""Synthetic libraries for feature tests: good tracks of three styles next to every kind of bad file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from pipelines.audio import RejectReason, sha256_file
from pipelines.catalogue.manifest import ACTIVE, MANIFEST_SCHEMA, write_table
from pipelines.settings import Settings
from tests.synth import SR, noise, style_tree, tone, truncated, write


def bad_files(root: Path) -> dict[Path, RejectReason]:
    """One file per way to fail, with the reason the feature build must give it."""
    root.mkdir(parents=True, exist_ok=True)
    good_wav = write(root / "_src" / "src.wav", tone(330, 6.0, harmonics=3))
    good_flac = write(root / "_src" / "src.flac", tone(330, 6.0, harmonics=3))
    header_only = root / "header_only.wav"
    sf.write(str(header_only), np.zeros(0, np.float32), SR)
    text = root / "notes.ogg"
    text.write_text("these are liner notes, not music\n" * 50)
    fake_ogg = root / "garbage.ogg"
    fake_ogg.write_bytes(b"OggS" + bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8)))
    empty = root / "empty.flac"
    empty.write_bytes(b"")
    return {
        write(root / "silent.wav", np.zeros(3 * SR, np.float32)): RejectReason.SILENT,
        write(root / "whisper.flac", noise(3.0, amp=1e-4)): RejectReason.SILENT,
        empty: RejectReason.EMPTY_FILE,
        text: RejectReason.NOT_AUDIO,
        fake_ogg: RejectReason.CORRUPT,
        truncated(root / "cut.wav", good_wav, 0.5): RejectReason.CORRUPT,
        truncated(root / "cut.flac", good_flac, 0.15): RejectReason.CORRUPT,
        header_only: RejectReason.ZERO_LENGTH,
    }


def good_files(root: Path, per_style: int = 3, seconds: float = 3.0) -> dict[str, list[Path]]:
    """Decodable tracks of three audibly different styles, in WAV, FLAC and Ogg Vorbis."""
    styles = style_tree(root, per_style=per_style, seconds=seconds)
    styles["noise"].append(write(root / "noise" / "long.ogg", noise(15.0, seed=7, colour=0.5)))
    styles["low_tones"].append(write(root / "low_tones" / "low.flac", tone(130, seconds, harmonics=3)))
    return styles


def write_manifest(settings: Settings, files: dict[Path, str]) -> pd.DataFrame:
    """A manifest listing ``files`` (path -> style) as they are now, without probing them.

    The catalogue import would reject the broken ones; a manifest written by another tool, or files
    damaged after import, reach the feature build all the same, and it must cope.
    """
    now = datetime.now(UTC)
    rows = []
    for path, style in sorted(files.items()):
        st = path.stat()
        rows.append(
            dict.fromkeys(MANIFEST_SCHEMA.names)
            | {
                "track_id": f"test.{style}.{path.stem}-{path.suffix[1:]}",
                "path": str(path),
                "style": style,
                "source": "synthetic",
                "sha256": sha256_file(path),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "origin": "test",
                "status": ACTIVE,
                "added_at": now,
            }
        )
    df = pd.DataFrame(rows)
    write_table(df, MANIFEST_SCHEMA, settings.manifest_path)
    return df
