"""A small synthetic catalogue: tones and noise in three audibly different styles, indexed with the raw baseline.

For benchmarks and tests that need a real manifest, real front-end vectors and a real Milvus collection
without a music corpus (``bench/bench_refresh_load.py``, the index and serving tests). Nothing here is
used by the commands themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import read_manifest
from pipelines.features.frontend import TrackVector, track_vector
from pipelines.features.params import FeatureParams
from pipelines.index.milvus import TrackIndex
from pipelines.index.refresh import RefreshReport, refresh_collection
from pipelines.model.embedder import RawEmbedder
from pipelines.model.ref import RAW
from pipelines.settings import IndexSettings, PathSettings, Settings

SR = 22050


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3, harmonics: int = 1) -> np.ndarray:
    """A tone of ``freq`` Hz with ``harmonics`` overtones, each quieter by its order."""
    t = np.arange(int(seconds * sr)) / sr
    sig = sum(amp / (h + 1) * np.sin(2 * np.pi * freq * (h + 1) * t) for h in range(harmonics))
    return np.asarray(sig, dtype=np.float32)


def noise(seconds: float, sr: int = SR, amp: float = 0.2, seed: int = 0, colour: float = 0.0) -> np.ndarray:
    """White noise, or low-passed (``colour`` in 0..1, higher is darker) for a different timbre."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * sr))
    if colour > 0:
        for i in range(1, len(x)):
            x[i] = colour * x[i - 1] + (1 - colour) * x[i]
        x /= np.abs(x).max() + 1e-9
    return (amp * x).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    """Write audio in the format given by the suffix (.wav, .flac, .ogg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr)
    return path


# Two front-end settings = two feature versions = two collections, so blue/green can be exercised with
# the real raw baseline embedder. Small N keeps vectors short (a few hundred dims) and tests fast.
PARAMS_A = FeatureParams(n_frames=24, n_mfcc=13)
PARAMS_B = FeatureParams(n_frames=32, n_mfcc=13)
PARAMS_C = FeatureParams(n_frames=40, n_mfcc=13)


@dataclass(frozen=True)
class Features:
    """Same fields as ``pipelines.features.store.FeatureMatrix``."""

    track_ids: list[str]
    matrix: np.ndarray
    frames_real: np.ndarray
    sha256: list[str]
    version: str
    params: FeatureParams


def make_library(root: Path, per_style: int = 5) -> Settings:
    """Three audibly different synthetic styles, two artists/albums each, imported from a CSV listing.

    The album is the track's source, so source and artist caps have something to cap.
    """
    music = root / "music"
    rows = ["path,style,artist,album,title"]
    for i in range(per_style):
        tracks = {
            "low_tones": tone(110 + 15 * i, 3.0, harmonics=3),
            "high_tones": tone(1800 + 90 * i, 3.0),
            "noise": noise(3.0, seed=i, colour=0.5),
        }
        for style, audio in tracks.items():
            rel = f"{style}/{style}_{i}.wav"
            write(music / rel, audio)
            rows.append(f"{rel},{style},{style}-artist-{i % 2},{style}-album-{i % 2},{style} {i}")
    (music / "library.csv").write_text("\n".join(rows) + "\n")
    settings = Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "milvus.db")))
    import_catalogue(music / "library.csv", settings)
    return settings


def add_track(settings: Settings, name: str, audio: np.ndarray, style: str = "low_tones") -> None:
    """Add one file to the library CSV and re-import it: a new track under the same model."""
    music = settings.paths.data_root.parent / "music"
    write(music / style / name, audio)
    with (music / "library.csv").open("a") as fh:
        fh.write(f"{style}/{name},{style},new-artist,new-album,{name}\n")
    import_catalogue(music / "library.csv", settings)


def remove_track(settings: Settings, rel: str) -> None:
    """Delete a file and its CSV row, and re-import: the manifest marks the track removed."""
    music = settings.paths.data_root.parent / "music"
    (music / rel).unlink()
    lines = (music / "library.csv").read_text().splitlines()
    (music / "library.csv").write_text("\n".join(x for x in lines if not x.startswith(rel + ",")) + "\n")
    import_catalogue(music / "library.csv", settings)


_VECTORS: dict[tuple[str, str, str], TrackVector] = {}


def build_features(settings: Settings, params: FeatureParams) -> Features:
    """The active manifest's tracks through the real front end (vectors memoised by file content)."""
    manifest = read_manifest(settings.manifest_path)
    vectors = []
    for path, sha in zip(manifest["path"], manifest["sha256"], strict=True):
        key = (path, sha, params.version)
        if key not in _VECTORS:
            _VECTORS[key] = track_vector(Path(path), params)
        vectors.append(_VECTORS[key])
    return Features(
        track_ids=list(manifest["track_id"]),
        matrix=np.stack([v.vector for v in vectors]),
        frames_real=np.array([v.frames_real for v in vectors]),
        sha256=list(manifest["sha256"]),
        version=params.version,
        params=params,
    )


def refresh(settings: Settings, params: FeatureParams, index: TrackIndex | None = None, **kw: Any) -> RefreshReport:
    """One real refresh with the raw baseline embedder for ``params``."""
    own = index is None
    index = index or TrackIndex(settings.paths.milvus_uri, IndexSettings(collections_kept=1, embed_batch_size=4))
    try:
        features = build_features(settings, params)
        embedder = RawEmbedder(feature_version=params.version, dim=params.dim)
        assert embedder.version == RAW
        return refresh_collection(index, embedder, features, read_manifest(settings.manifest_path), **kw)
    finally:
        if own:
            index.close()
