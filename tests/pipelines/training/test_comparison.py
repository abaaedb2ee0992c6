"""The self-contained comparison page the gate logs with every challenger."""

from __future__ import annotations

import re

import pandas as pd

from pipelines.training.comparison import comparison_html


def test_the_page_holds_both_versions_and_needs_nothing_from_outside() -> None:
    page = comparison_html(
        "3",
        "2",
        "not promoted",
        ["p@10 0.500 does not beat champion 0.600 by 0.01", "<script>alert(1)</script>"],
        {"model/catalogue/p_at_10": 0.5, "model/catalogue/p_at_10_sd": 0.04, "raw/catalogue/p_at_10": 0.3},
        {"model/catalogue/p_at_10": 0.6, "model/catalogue/p_at_10_sd": 0.05},
        pd.DataFrame({"style": ["noise", "tones"], "p@10": [0.41, 0.77]}),
        {"confusion_catalogue.png": b"\x89PNG fake"},
    )
    row = re.search(r"<tr><th scope='row'>model/catalogue/p_at_10</th>(.*?)</tr>", page)
    assert row is not None and row.group(1) == "<td class='n'>0.500 ± 0.040</td><td class='n'>0.600 ± 0.050</td>"
    assert "raw/catalogue/p_at_10</th><td class='n'>0.300</td><td class='n'>-</td>" in page
    assert "challenger 3" in page and "champion 2" in page and "<td>noise</td>" in page
    assert "data:image/png;base64,iVBORyBmYWtl" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # reasons are text, never markup
    assert not re.search(r"(src|href)=['\"](https?:|/)", page)


def test_without_a_champion_there_is_one_column() -> None:
    page = comparison_html("1", None, "promoted to champion", [], {"m": 1.0}, {}, pd.DataFrame({"a": [1]}), {})
    assert "Champion at the decision: none" in page and "<th>champion" not in page
