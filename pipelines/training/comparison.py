"""The champion/challenger comparison as one self-contained HTML file (styles and images inline, no links out).

Logged with every challenger under ``review/comparison.html``, so the comparison can be read from MLflow
alone, offline, long after the serving page has moved on.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from html import escape

import pandas as pd

_STYLE = (
    "body{font:15px/1.4 system-ui,sans-serif;margin:1rem;color:#1b1f24}"
    "table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.2rem .5rem;border-bottom:1px solid #ddd;"
    "text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".sides{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr));gap:1rem}"
    "img{max-width:100%;height:auto}"
)


def _value(metrics: Mapping[str, float], name: str) -> str:
    if name not in metrics:
        return "-"
    sd = metrics.get(f"{name}_sd")
    return f"{metrics[name]:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def comparison_html(
    challenger: str,
    champion: str | None,
    decision: str,
    reasons: list[str],
    challenger_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float],
    per_style: pd.DataFrame,
    images: Mapping[str, bytes],
) -> str:
    """The page: decision and reasons, metrics of both side by side (value ± sd), per-style table, images."""
    names = sorted({k for k in (*challenger_metrics, *champion_metrics) if not k.endswith("_sd")})
    head = f"<th>metric</th><th>challenger {escape(challenger)}</th>"
    head += f"<th>champion {escape(champion)}</th>" if champion else ""
    rows = []
    for name in names:
        cells = f"<th scope='row'>{escape(name)}</th><td class='n'>{_value(challenger_metrics, name)}</td>"
        cells += f"<td class='n'>{_value(champion_metrics, name)}</td>" if champion else ""
        rows.append(f"<tr>{cells}</tr>")
    figures = "".join(
        f"<figure><img alt='{escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        f"<figcaption>{escape(name)}</figcaption></figure>"
        for name, data in sorted(images.items())
    )
    reasons_html = "".join(f"<li>{escape(r)}</li>" for r in reasons)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>musicrec: version {escape(challenger)} against the champion</title><style>{_STYLE}</style></head>"
        f"<body><h1>Version {escape(challenger)}: {escape(decision)}</h1>"
        f"<p>Champion at the decision: {escape(champion or 'none')}</p><ul>{reasons_html}</ul>"
        f"<h2>Metrics</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h2>Per style (challenger)</h2>{per_style.to_html(index=False, float_format=lambda v: f'{v:.3f}')}"
        f"<h2>Images (challenger)</h2><div class='sides'>{figures}</div></body></html>"
    )
