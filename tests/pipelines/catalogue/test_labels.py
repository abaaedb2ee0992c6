"""Label checks for sources whose style comes from package notes, not from listening."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.catalogue.ingest import ingest
from pipelines.catalogue.labels import label_agreement
from pipelines.catalogue.manifest import REJECTS_SCHEMA, read_manifest, read_table
from pipelines.catalogue.scan import Candidate
from pipelines.settings import Settings
from tests import synth


def test_label_agreement_flags_a_track_that_sounds_like_another_style() -> None:
    rng = np.random.default_rng(0)
    centres = {"a": rng.normal(size=8) * 3, "b": rng.normal(size=8) * 3, "c": rng.normal(size=8) * 3}
    rows, styles, sources = [], [], []
    for style, centre in centres.items():
        for src in ("s1", "s2"):
            for _ in range(5):
                rows.append(centre + rng.normal(size=8) * 0.3)
                styles.append(style)
                sources.append(f"{style}-{src}")
    rows.append(centres["c"] + rng.normal(size=8) * 0.3)  # labelled "a" but sounds like "c"
    styles.append("a")
    sources.append("a-s2")
    conf, rank, nearest = label_agreement(np.stack(rows), styles, sources)
    assert rank[-1] > 1 and nearest[-1] == "c" and conf[-1] < 0.2
    assert (rank[:-1] == 1).mean() > 0.9 and conf[:-1].mean() > 0.8


def test_short_and_doubtful_candidates_are_rejected_with_reasons(tmp_path: Path, settings: Settings) -> None:
    ok = synth.write(tmp_path / "ok.wav", synth.tone(220, 3.0))
    short = synth.write(tmp_path / "short.wav", synth.tone(330, 1.0))
    odd = synth.write(tmp_path / "odd.wav", synth.noise(3.0))
    cands = [
        Candidate(path=ok, style="x", source="p", relative="ok.wav", min_seconds=2.0, label_confidence=0.9),
        Candidate(path=short, style="x", source="p", relative="short.wav", min_seconds=2.0),
        Candidate(path=odd, style="x", source="p", relative="odd.wav", doubt="sounds like y"),
    ]
    report = ingest(cands, origin="t", label="t", settings=settings)
    assert report.added == 1 and report.rejects == {"too_short": 1, "doubtful_style": 1}
    assert read_manifest(settings.manifest_path)["label_confidence"].tolist() == [0.9]
    rejects = read_table(settings.rejects_path, REJECTS_SCHEMA).set_index("reason")
    assert rejects.loc["doubtful_style", "detail"] == "sounds like y"
