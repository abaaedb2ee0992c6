"""Benchmark of the MFCC front end on the demo corpus (not a test: it measures, it does not assert).

1. One core, side by side in one run: (a) prefix decode (what the front end does) and (b) a full decode of
   the same file followed by the same MFCC; tracks/s and seconds of audio analysed per second. (b) runs on
   every k-th track (``--full-every``), since a full decode takes about a second per track.
2. The whole corpus with all cores: the real build (``FeatureBuild``, one worker process per core) into a
   fresh store, wall time.
3. With ``--quality``: how well the raw vector of a few parameter choices finds tracks of the same style
   (precision@5 by cosine, leave-one-out), the basis for the defaults in docs/features.md.

Writes a markdown table to stdout and to bench/results/features.md.
Run: ``.venv/bin/python bench/bench_features.py [--quality]``.
"""

from __future__ import annotations

import os

# One thread per process, before numpy loads: "one core" must mean one core, and the build's workers do so.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model  # noqa: E402
from pipelines.audio import AudioRejected  # noqa: E402
from pipelines.catalogue.demo import fetch_demo  # noqa: E402
from pipelines.catalogue.manifest import read_manifest  # noqa: E402
from pipelines.features.build import FeatureBuild  # noqa: E402
from pipelines.features.frontend import decode, frames_to_vector, mfcc_frames, rms_db, track_vector  # noqa: E402
from pipelines.features.params import FeatureParams  # noqa: E402
from pipelines.settings import PathSettings, Settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "features.md"


def one_core(tracks: list, params: FeatureParams, full_every: int) -> tuple[list[str], dict]:
    """Prefix vs full decode on one pinned core; returns table lines and the raw numbers."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    track_vector(tracks[0].path, params)  # first-call costs (imports, caches) are not per track
    prefix_t, prefix_audio, full_t, full_audio, paired_prefix_t, diffs = [], [], [], [], [], []
    per_format: dict[str, list[float]] = {}
    for i, row in enumerate(tracks):
        start = time.perf_counter()
        try:
            vec = track_vector(row.path, params)
        except AudioRejected:
            continue
        took = time.perf_counter() - start
        prefix_t.append(took)
        prefix_audio.append(min(params.duration_s, row.duration_s))
        per_format.setdefault(Path(row.path).suffix[1:], []).append(took)
        if i % full_every == 0:
            start = time.perf_counter()
            full = decode(row.path, params.sr)
            full_vec = frames_to_vector(mfcc_frames(full, params), params.n_frames)
            full_t.append(time.perf_counter() - start)
            full_audio.append(len(full) / params.sr)
            paired_prefix_t.append(took)
            diffs.append(float(np.abs(full_vec.vector - vec.vector).max()))
    a_rate, b_rate = len(prefix_t) / sum(prefix_t), len(full_t) / sum(full_t)
    paired_speedup = sum(full_t) / sum(paired_prefix_t)
    lines = [
        "| one core | tracks | tracks/s | audio s analysed / s | ms / track |",
        "|---|---:|---:|---:|---:|",
        f"| (a) prefix decode ({params.duration_s:.1f} s) + MFCC | {len(prefix_t)} | {a_rate:.1f} | "
        f"{sum(prefix_audio) / sum(prefix_t):.0f} | {1000 * np.mean(prefix_t):.1f} |",
        f"| (b) full decode + same MFCC | {len(full_t)} | {b_rate:.2f} | {sum(full_audio) / sum(full_t):.0f} | "
        f"{1000 * np.mean(full_t):.0f} |",
        f"| speed-up of (a) over (b), same {len(full_t)} tracks | | **{paired_speedup:.0f}x** | | |",
    ]
    fmt_lines = ["", "| format (prefix path) | tracks | ms / track | tracks/s |", "|---|---:|---:|---:|"]
    for fmt, times in sorted(per_format.items()):
        fmt_lines.append(f"| {fmt} | {len(times)} | {1000 * np.mean(times):.1f} | {len(times) / sum(times):.1f} |")
    numbers = {"prefix_rate": a_rate, "full_rate": b_rate, "speedup": paired_speedup, "max_diff": max(diffs)}
    return lines + fmt_lines, numbers


def all_cores(demo: Settings) -> tuple[list[str], dict]:
    """The real build, every core, into a fresh store (the demo manifest copied to a temporary data root)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    root = Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        settings = Settings(paths=PathSettings(data_root=root / "data", cache_dir=demo.paths.cache_dir))
        settings.catalogue_dir.mkdir(parents=True)
        shutil.copy(demo.manifest_path, settings.manifest_path)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        start = time.perf_counter()
        report = FeatureBuild(settings=settings, shards=cores).run()
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    done = report.embedded + report.quarantined
    lines = [
        "",
        "| all cores (`FeatureBuild`, one worker process per core) | cores | tracks | wall s | tracks/s |",
        "|---|---:|---:|---:|---:|",
        f"| whole corpus, fresh store (worker start-up included) | {cores} | {done} | {wall:.1f} | {done / wall:.1f} |",
    ]
    return lines, {"wall": wall, "tracks": done}


def quality(tracks: list) -> list[str]:
    """Precision@5 of same-style neighbours by cosine on the raw vector, for a grid of front-end choices."""
    grid = [
        FeatureParams(n_frames=n, n_mfcc=c, offset_s=o)
        for o in (0.0, 30.0)
        for n, c in ((130, 20), (215, 20), (430, 13), (430, 20), (430, 40), (860, 20))
    ] + [FeatureParams(n_fft=1024)]
    longest = max(p.duration_s for p in grid)
    vectors: dict[str, list[np.ndarray]] = {p.version: [] for p in grid}
    styles = []
    for row in tracks:
        try:
            audio = {o: decode(row.path, 22050, o, longest) for o in (0.0, 30.0)}
        except AudioRejected:
            continue
        if rms_db(audio[0.0][: 10 * 22050]) < -60:
            continue
        styles.append(row.style)
        for p in grid:
            needed = (p.n_frames - 1) * p.hop + p.n_fft // 2  # exactly what the front end would decode
            vectors[p.version].append(frames_to_vector(mfcc_frames(audio[p.offset_s][:needed], p), p.n_frames).vector)
    labels = np.array(styles)
    chance = sum((labels == s).sum() * ((labels == s).sum() - 1) for s in set(styles)) / (
        len(labels) * (len(labels) - 1)
    )

    def p_at_5(x: np.ndarray) -> float:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        nearest = np.argsort(-sim, axis=1)[:, :5]
        return float((labels[nearest] == labels[:, None]).mean())

    lines = [
        "",
        f"| raw-vector quality ({len(labels)} tracks, {len(set(styles))} styles; chance {chance:.2f}) "
        "| N | seconds | n_mfcc | n_fft | offset | dim | P@5 raw cosine | P@5 time-pooled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in grid:
        x = np.stack(vectors[p.version])
        frames = x.reshape(len(x), p.n_frames, p.n_mfcc)
        pooled = np.concatenate([frames.mean(1), frames.std(1)], axis=1)  # what a network could extract
        pooled = (pooled - pooled.mean(0)) / (pooled.std(0) + 1e-6)
        mark = " (default)" if p == FeatureParams() else ""
        lines.append(
            f"| {p.version}{mark} | {p.n_frames} | {p.duration_s:.1f} | {p.n_mfcc} | {p.n_fft} | {p.offset_s:g} | "
            f"{p.dim} | {p_at_5(x):.3f} | {p_at_5(pooled):.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-every", type=int, default=3, help="full-decode every k-th track (default 3)")
    parser.add_argument("--quality", action="store_true", help="also measure raw-vector retrieval quality")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    demo = Settings(paths=PathSettings(data_root=Path(tempfile.mkdtemp(prefix="bench-demo-")) / "data"))
    fetch_demo(demo)
    tracks = list(read_manifest(demo.manifest_path).sort_values("track_id").itertuples(index=False))
    params = FeatureParams()
    load_before = os.getloadavg()
    head = [
        f"# Feature front-end benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Demo corpus: {len(tracks)} tracks, {sum(t.duration_s for t in tracks) / 3600:.1f} h of audio; "
        f"parameters {params.version} (N={params.n_frames}, n_mfcc={params.n_mfcc}, sr={params.sr}, "
        f"n_fft={params.n_fft}, hop={params.hop}, offset={params.offset_s:g} s).",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average at start {load_before[0]:.2f} (the machine may be shared: figures are pessimistic).",
        "",
    ]
    print("\n".join(head), flush=True)
    core_lines, core = one_core(tracks, params, args.full_every)
    print("\n".join(core_lines), flush=True)
    wall_lines, _ = all_cores(demo)
    print("\n".join(wall_lines), flush=True)
    lines = head + core_lines + wall_lines
    notes = [
        "",
        f"Prefix and full decode give the same vectors (largest difference {core['max_diff']:.1e}, resampler edge).",
    ]
    if args.quality:
        quality_lines = quality(tracks)
        print("\n".join(quality_lines), flush=True)
        lines += quality_lines
    lines += [*notes, f"Load average at the end: {os.getloadavg()[0]:.2f}.", ""]
    print("\n".join(notes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    shutil.rmtree(demo.paths.data_root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
