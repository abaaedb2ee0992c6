"""Per-style counts and hours of the manifest, the first thing anyone wants to see of a catalogue."""

from __future__ import annotations

import pandas as pd

from pipelines.catalogue.manifest import MANIFEST_SCHEMA, REJECTS_SCHEMA, UNLABELLED, read_manifest, read_table
from pipelines.settings import Settings


def quarantined(settings: Settings) -> pd.DataFrame:
    """Active tracks the current feature version quarantined (same content): they have no vector to serve."""
    from pipelines.features.quarantine import read_quarantine

    held = read_quarantine(settings, settings.features.version)
    if held.empty:
        return held
    active = read_manifest(settings.manifest_path)[["track_id", "sha256"]]
    return held.merge(active, on=["track_id", "sha256"]).reset_index(drop=True)


def style_summary(settings: Settings) -> pd.DataFrame:
    """One row per style over the active tracks (quarantined ones left out): tracks, sources, hours; TOTAL."""
    df = read_manifest(settings.manifest_path)
    if df.empty:
        return pd.DataFrame(columns=["style", "tracks", "sources", "hours"])
    df = df[~df["track_id"].isin(quarantined(settings)["track_id"])]
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
    """The summary as text: the style table of active tracks, then removed, quarantined and rejected ones."""
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
    held = quarantined(settings)
    why = ", ".join(f"{n} {reason}" for reason, n in held["reason"].value_counts().sort_index().items())
    held_text = f"{len(held)} ({why}; features {settings.features.version})" if len(held) else "0"
    lines.append(f"removed: {removed}; quarantined: {held_text}; rejects: {rej}")
    return "\n".join(lines)
