"""Per-style counts and hours of the manifest, the first thing anyone wants to see of a catalogue."""

from __future__ import annotations

import pandas as pd

from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, UNLABELLED, read_manifest, read_table
from pipelines.settings import Settings


def style_summary(settings: Settings) -> pd.DataFrame:
    """One row per style: tracks, sources, hours; plus a TOTAL row."""
    df = read_manifest(settings.manifest_path)
    if df.empty:
        return pd.DataFrame(columns=["style", "tracks", "sources", "hours"])
    table = (
        df.groupby("style")
        .agg(tracks=("track_id", "size"), sources=("source", "nunique"), hours=("duration_s", "sum"))
        .reset_index()
    )
    table["hours"] = table["hours"] / 3600.0
    table["style"] = table["style"].replace({UNLABELLED: "(unlabelled)"})
    total = pd.DataFrame(
        [
            {
                "style": "TOTAL",
                "tracks": len(df),
                "sources": df["source"].nunique(),
                "hours": table["hours"].sum(),
            }
        ]
    )
    return pd.concat([table, total], ignore_index=True)


def format_summary(settings: Settings) -> str:
    """The summary as text: the style table, then removed tracks and rejects by reason."""
    table = style_summary(settings)
    if table.empty:
        return "catalogue is empty: run `musicrec data fetch-demo` or `musicrec catalogue import PATH`"
    lines = [f"{'style':<22}{'tracks':>8}{'sources':>9}{'hours':>8}"]
    lines += [f"{r.style:<22}{r.tracks:>8}{r.sources:>9}{r.hours:>8.2f}" for r in table.itertuples(index=False)]
    full = read_table(settings.manifest_path, MANIFEST_SCHEMA)
    removed = int((full["status"] != "active").sum())
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA)
    by_reason = rejects["reason"].value_counts().sort_index()
    rej = ", ".join(f"{n} {reason}" for reason, n in by_reason.items()) or "none"
    lines.append(f"removed: {removed}; rejects: {rej}")
    return "\n".join(lines)
