"""OpenSubsonic face at library scale: getSonicSimilarTracks and findSonicPath over loopback HTTP.

A synthetic catalogue (clustered 128-d vectors, as in bench_serving.py) with a manifest of the same
tracks is served by the musicrec API on Milvus Lite's server (the embedded default). Songs are named the
way a music server names them: by path relative to the music folder, and by MusicBrainz id. Reports p50
and p99 of one request at a time for each call.

Usage: .venv/bin/python bench/bench_subsonic.py [--tracks 20000] [--requests 300]
Writes bench/results/subsonic.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import ROOT, api, lite_backend, load, percentiles, synthetic

from pipelines.catalogue.manifest import MANIFEST_SCHEMA, write_table

MUSIC = Path("/srv/music")  # never read: the API only maps relative paths to manifest rows


def manifest(ids: list[str], styles: list[str], path: Path) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    df = pd.DataFrame(
        {
            "track_id": ids,
            "path": [str(MUSIC / f"artist{i % 500}" / f"album{i % 2000}" / f"{t}.flac") for i, t in enumerate(ids)],
            "style": styles,
            "source": [f"source{i % 50}" for i in range(len(ids))],
            "artist": [f"artist{i % 500}" for i in range(len(ids))],
            "album": [f"album{i % 2000}" for i in range(len(ids))],
            "title": [f"track {i}" for i in range(len(ids))],
            "mbid": [str(uuid.UUID(int=i + 1)) for i in range(len(ids))],
            "duration_s": 200.0,
            "sha256": [f"{i:064x}" for i in range(len(ids))],
            "status": "active",
            "origin": "bench",
            "added_at": now,
            "removed_at": pd.Series([pd.NaT] * len(ids), dtype="datetime64[us, UTC]"),
        }
    )
    write_table(df.reindex(columns=MANIFEST_SCHEMA.names), MANIFEST_SCHEMA, path)
    return df


def timed(client, url: str, params: list[dict[str, str]]) -> tuple[float, float, int]:
    samples, failures = [], 0
    for p in params:
        start = time.perf_counter()
        res = client.get(url, params=p)
        samples.append((time.perf_counter() - start) * 1000)
        ok = res.status_code == 200 and ('"status":"ok"' in res.text.replace(" ", "") or 'status="ok"' in res.text)
        failures += not ok
    p50, p99 = percentiles(samples)
    return p50, p99, failures


def main() -> None:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    cat = synthetic(args.tracks)
    work = Path(tempfile.mkdtemp(prefix="musicrec-bench-subsonic-"))
    root = work / "data"
    (root / "catalogue").mkdir(parents=True)
    df = manifest(cat.ids, cat.styles, root / "catalogue" / "manifest.parquet")
    rng = np.random.default_rng(1)
    rows = []
    with lite_backend(work) as uri:
        index, meta, built = load(uri, cat, "HNSW", "tracks__raw__bench")
        index.switch_alias(meta.name)
        index.close()
        settings = {"MUSICREC_DATA_ROOT": str(root), "MUSICREC_MUSIC_FOLDER": str(MUSIC)}
        with api(uri, work, True, settings) as server, httpx.Client(base_url=server.base, timeout=30) as client:
            picks = rng.integers(0, len(cat.ids), args.requests)
            rel = [str(Path(df["path"][i]).relative_to(MUSIC)) for i in picks]
            mbid = [df["mbid"][i] for i in picks]
            similar = "/rest/getSonicSimilarTracks"
            timed(client, similar, [{"id": r, "count": "10", "f": "json"} for r in rel[:20]])  # warm-up
            calls = {
                "getSonicSimilarTracks, id = relative path, count 10": (
                    similar,
                    [{"id": r, "count": "10", "f": "json"} for r in rel],
                ),
                "getSonicSimilarTracks, id = MusicBrainz id, count 10": (
                    similar,
                    [{"id": m, "count": "10", "f": "json"} for m in mbid],
                ),
                "getSonicSimilarTracks, XML": (similar, [{"id": r, "count": "10"} for r in rel]),
                "findSonicPath, 10 steps": (
                    "/rest/findSonicPath",
                    [
                        {"startSongId": a, "endSongId": b, "count": "10", "f": "json"}
                        for a, b in zip(rel, mbid[::-1], strict=True)
                    ],
                ),
            }
            for name, (url, params) in calls.items():
                p50, p99, failures = timed(client, url, params)
                rows.append((name, p50, p99, failures, len(params)))
                print(f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failures} failed of {len(params)}")
    out = ROOT / "bench" / "results" / "subsonic.md"
    lines = [
        "# OpenSubsonic face at library scale",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"`bench/bench_subsonic.py --tracks {args.tracks} --requests {args.requests}`. Synthetic catalogue of "
        f"{args.tracks} tracks (128-d clustered vectors, HNSW) on Milvus Lite's server (the embedded default), "
        f"with a manifest of the same tracks; index built in {built:.0f} s. One request at a time over loopback HTTP.",
        "",
        "| call | p50 ms | p99 ms | failed |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {n} | {a:.1f} | {b:.1f} | {f} of {k} |" for n, a, b, f, k in rows],
        "",
    ]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
