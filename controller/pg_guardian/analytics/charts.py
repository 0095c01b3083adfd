"""Server-drawn SVG charts for the report (the HTML file and the dashboard's analytics page).

Every chart carries its data: each series is a ``<g class="series" data-series="NAME"
data-values="1,0,3">`` and each bar a ``<rect data-label data-value>``, so a reader (or a test)
can check a chart against the numbers it claims to draw. No script, no library, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from pg_guardian.analytics.report import duration

SEVERITY_COLOURS = {
    "CRITICAL": "#9f1239",
    "HIGH": "#dc2626",
    "MEDIUM": "#f59e0b",
    "LOW": "#2563eb",
    "INFO": "#6b7280",
}


def _values(values: Sequence[float | int | None]) -> str:
    return ",".join("" if v is None else f"{v:g}" for v in values)


def stacked_bars(
    labels: Sequence[str],
    series: dict[str, Sequence[int]],
    colours: dict[str, str],
    *,
    title: str,
    width: int = 720,
    height: int = 160,
) -> Markup:
    """Bars per bucket, stacked by series, with the first and last label under the axis."""
    n = max(len(labels), 1)
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    top = 14  # room for the peak label above the bars
    plot = height - 22
    step = width / n
    bar = max(step * 0.8, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'data-chart="{escape(title)}" data-labels="{escape(",".join(labels))}" data-peak="{peak}">',
        f"<title>{escape(title)}</title>",
    ]
    base = [0.0] * len(labels)
    for name, values in series.items():
        parts.append(
            f'<g class="series" data-series="{escape(name)}" data-values="{_values(values)}" '
            f'fill="{colours.get(name, "#64748b")}">'
        )
        for i, value in enumerate(values):
            if not value:
                continue
            h = (plot - top) * value / peak
            y = plot - base[i] - h
            base[i] += h
            parts.append(
                f'<rect x="{i * step + (step - bar) / 2:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'data-label="{escape(labels[i])}" data-value="{value}">'
                f"<title>{escape(labels[i])}: {value} {escape(name)}</title></rect>"
            )
        parts.append("</g>")
    parts.append(f'<line x1="0" y1="{plot}" x2="{width}" y2="{plot}" stroke="#cbd5e1"/>')
    if labels:
        parts.append(f'<text x="0" y="{height - 6}" font-size="11" fill="#475569">{escape(labels[0])}</text>')
        parts.append(
            f'<text x="{width}" y="{height - 6}" font-size="11" fill="#475569" text-anchor="end">'
            f"{escape(labels[-1])}</text>"
        )
    parts.append(f'<text x="{width}" y="11" font-size="11" fill="#475569" text-anchor="end">peak {peak}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def hbars(
    rows: Sequence[tuple[str, float | None, float | None]],
    *,
    title: str,
    names: tuple[str, str] = ("median", "p90"),
    width: int = 720,
) -> Markup:
    """Horizontal bars, two per row (a median and a p90 in seconds), labelled in durations."""
    peak = max((v for _, a, b in rows for v in (a, b) if v is not None), default=0) or 1
    row_h, label_w = 34, 110
    height = row_h * max(len(rows), 1) + 4
    plot = width - label_w - 80
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'data-chart="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for which, name in enumerate(names):
        values: list[float | None] = [r[1] if which == 0 else r[2] for r in rows]
        parts.append(
            f'<g class="series" data-series="{escape(name)}" data-values="{_values(values)}" '
            f'fill="{"#0f766e" if which == 0 else "#99f6e4"}">'
        )
        for i, (row, value) in enumerate(zip(rows, values, strict=True)):
            if value is None:
                continue
            y = i * row_h + 4 + which * 13
            w = max(plot * value / peak, 1.0)
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="12" data-label="{escape(row[0])}" '
                f'data-value="{value:g}"><title>{escape(row[0])} {name}: {duration(value)}</title></rect>'
                f'<text x="{label_w + w + 4:.1f}" y="{y + 10}" font-size="11" fill="#334155">{duration(value)}</text>'
            )
        parts.append("</g>")
    for i, row in enumerate(rows):
        parts.append(f'<text x="0" y="{i * row_h + 20}" font-size="12" fill="#0f172a">{escape(row[0])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
