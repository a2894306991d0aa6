"""`modelgate drift report MODEL --html FILE`: one self-contained page to look at, not read.

Per feature (worst first): the reference's share per bin (per category, "other" last, for a
categorical feature) beside the last window's, as inline SVG bars, with every score. No
external script, style or font, so it opens anywhere, offline. A few lines of script count what
was drawn into the page's summary line (a test opens the page in a real headless browser and
reads that line back).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["render"]

WIDTH, HEIGHT, PAD = 360, 120, 18


def _bars(reference: Sequence[int], live: Sequence[int], categorical: bool = False) -> str:
    bins = max(1, len(reference))
    ref_total, live_total = sum(reference) or 1, sum(live) or 1
    shares = [(r / ref_total, lv / live_total) for r, lv in zip(reference, live, strict=False)]
    top = max((max(pair) for pair in shares), default=1.0) or 1.0
    slot = (WIDTH - 2 * PAD) / bins
    out = []
    for i, (ref, lv) in enumerate(shares):
        x = PAD + i * slot
        for j, (share, kind) in enumerate(((ref, "ref"), (lv, "live"))):
            h = (HEIGHT - 2 * PAD) * share / top
            out.append(
                f'<rect class="{kind}" x="{x + j * slot / 2:.1f}" y="{HEIGHT - PAD - h:.1f}" '
                f'width="{slot / 2 - 1:.1f}" height="{h:.1f}">'
                f"<title>{_slot(i, bins, categorical)}: {kind} {100 * share:.1f}%</title></rect>"
            )
    return "".join(out)


def _slot(i: int, slots: int, categorical: bool) -> str:
    if not categorical:
        return f"bin {i}"
    return "other" if i == slots - 1 else f"category {i}"


def _feature(f: Any, score: str) -> str:
    categorical = f.kind == "categorical"
    edges = list(f.edges)
    span = f"{edges[0]:.4g} .. {edges[-1]:.4g}" if edges else ""
    if categorical:
        span = f"codes 0 .. {len(f.reference_counts) - 2}, then other"
    kind = " (categorical)" if categorical else ""
    title = f"version {f.version} · {f.role} {f.tensor} · feature {f.feature}{kind}"
    flag = ' <b class="over">over the alert</b>' if f.over else ""
    if categorical:  # no order between categories: KS and W1 both read the total variation
        spread = f"PSI {f.psi:.4f} · JS {f.js:.4f} · TV {f.ks:.4f} · other {100 * f.out_of_range_rate:.2f}%"
    else:
        spread = (
            f"PSI {f.psi:.4f} · JS {f.js:.4f} · KS {f.ks:.4f} · W1 {f.wasserstein:.4g} · "
            f"NaN {100 * f.nan_rate:.2f}% · out of range {100 * f.out_of_range_rate:.2f}%"
        )
    scores = f"{spread} · {f.window_rows} rows"
    bars = _bars(list(f.reference_counts), list(f.live_counts), categorical)
    svg = (
        f'<svg width="{WIDTH}" height="{HEIGHT}" role="img">{bars}'
        f'<text x="{PAD}" y="{HEIGHT - 4}">{html.escape(span)}</text></svg>'
    )
    return (
        f'<section class="feature"><h3>{html.escape(title)}{flag}</h3>'
        f"<p>{html.escape(scores)} (alerts read {html.escape(score)})</p>{svg}</section>"
    )


def render(report: Any) -> str:
    """The page for a GetDriftReportResponse."""
    versions = "".join(
        f"<li>version {html.escape(v.version)}: {v.windows} windows, "
        + (f'<b class="over">ALERT</b> {html.escape(v.reason)}' if v.alert else "no alert")
        + "</li>"
        for v in report.versions
    )
    features = "".join(_feature(f, report.score) for f in report.features)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>drift of {html.escape(report.model)}</title>
<style>
body {{ font: 14px sans-serif; margin: 2em; }}
.feature {{ display: inline-block; margin: 0 1.5em 1.5em 0; vertical-align: top; }}
h3 {{ font-size: 14px; margin: 0; }} p {{ margin: .2em 0; color: #444; font-size: 12px; }}
rect.ref {{ fill: #9aa5b1; }} rect.live {{ fill: #e8833a; }} .over {{ color: #c0392b; }}
svg text {{ font-size: 10px; fill: #666; }}
</style></head>
<body>
<h1>drift of {html.escape(report.model)}</h1>
<p>{html.escape(report.reference)}</p>
<p>Grey: the reference's share per bin; orange: the last window's. Alerts when the worst counted
feature's {html.escape(report.score)} is over {report.alert:g}. Worst first.</p>
<ul>{versions}</ul>
<p id="summary">{len(report.features)} features</p>
{features}
<script>
const charts = document.querySelectorAll("section.feature svg").length;
const bars = document.querySelectorAll("rect").length;
document.getElementById("summary").textContent = `rendered ${{charts}} charts, ${{bars}} bars`;
</script>
</body></html>
"""
