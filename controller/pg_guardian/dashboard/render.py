"""Server-side rendering helpers: activity charts as SVG, highlighted SQL, time and numbers."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from html import escape
from typing import Any

from markupsafe import Markup

SERIES = (("inserts", "#2f6fdf"), ("updates", "#d89614"), ("deletes", "#d0342c"))
MARKER_COLOURS = {
    "BULK_OPERATION": "#7b2cbf",
    "OFF_HOURS_ACTIVITY": "#0b7285",
    "RAPID_CREATION": "#c2255c",
    "ACTIVITY_ANOMALY": "#e03131",
}


def activity_svg(entry: dict[str, Any], now: datetime | None, hours: int, width: int = 720, height: int = 90) -> Markup:
    """Stacked bars of rows written per minute; alert markers (bulk, off hours) on top; the
    anomaly detector's expected band behind the bars and a red dot over each anomaly."""
    minutes = hours * 60
    end = now or datetime.now().astimezone()
    start = end - timedelta(minutes=minutes - 1)
    top, bottom = 14, height - 14
    plot = bottom - top
    step = width / minutes
    peak = max((p["inserts"] + p["updates"] + p["deletes"] for p in entry["points"]), default=0) or 1
    bands = [b for b in entry.get("bands", []) if b["upper"] is not None]
    peak = max(peak, *(b["upper"] / 10 for b in bands)) if bands else peak
    parts = [
        f'<svg class="activity" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="rows written per minute to {escape(entry["table"])}">',
        f'<line x1="0" y1="{bottom}" x2="{width}" y2="{bottom}" class="axis"/>',
    ]
    # The detector's band, per 10 minutes, drawn per minute (a tenth of it) behind the bars.
    for band in bands:
        index = (band["sampled_at"] - start).total_seconds() / 60
        if index <= -10 or index >= minutes:
            continue
        x0, x1 = max(index, 0) * step, min(index + 10, minutes) * step
        y_hi = bottom - plot * min(band["upper"] / 10 / peak, 1)
        y_lo = bottom - plot * min((band["lower"] or 0) / 10 / peak, 1)
        parts.append(
            f'<rect class="band" x="{x0:.1f}" y="{y_hi:.1f}" width="{x1 - x0:.1f}" '
            f'height="{max(y_lo - y_hi, 0.5):.1f}">'
            f"<title>{band['sampled_at']:%H:%M} expected {band['lower']:.0f}-{band['upper']:.0f} rows per 10 min, "
            f"saw {band['value']:.0f}</title></rect>"
        )
    for point in entry["points"]:
        index = (point["minute"] - start).total_seconds() / 60
        if index < 0 or index >= minutes:
            continue
        x = index * step
        y = float(bottom)
        for name, colour in SERIES:
            value = point[name]
            if not value:
                continue
            h = max(1.0, plot * value / peak)
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 0.3, 0.8):.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{point['minute']:%H:%M} {name}: {value}</title></rect>"
            )
    for marker in entry["markers"]:
        seen = marker["last_seen_at"]
        index = max(0.0, min(minutes - 1, (seen - start).total_seconds() / 60))
        x = index * step
        colour = MARKER_COLOURS.get(marker["type"], "#555")
        parts.append(
            f'<g class="marker"><line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="{colour}" '
            f'stroke-dasharray="2,2"/><path d="M{x - 4:.1f},{top - 10} L{x + 4:.1f},{top - 10} L{x:.1f},{top - 3} Z" '
            f'fill="{colour}"><title>{escape(marker["type"])} {seen:%H:%M}: {escape(marker["message"])}</title>'
            "</path></g>"
        )
    for band in bands:
        index = (band["sampled_at"] - start).total_seconds() / 60
        if not band["anomaly"] or index <= -10 or index >= minutes:
            continue
        x = (max(index, 0) + 5) * step
        # Just above the band it left (the top corner holds the peak label).
        y = max(bottom - plot * min(band["upper"] / 10 / peak, 1) - 6, top)
        parts.append(
            f'<circle class="anomaly" cx="{x:.1f}" cy="{y:.1f}" r="4"><title>anomaly {band["sampled_at"]:%H:%M}: '
            f"{escape(band['what'] or '')}</title></circle>"
        )
    parts.append(f'<text x="0" y="{height - 2}" class="tick">{start:%H:%M}</text>')
    parts.append(f'<text x="{width}" y="{height - 2}" class="tick" text-anchor="end">{end:%H:%M}</text>')
    parts.append(f'<text x="{width}" y="10" class="tick" text-anchor="end">peak {peak}/min</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


_SQL_TOKEN = re.compile(
    r"(?P<comment>--[^\n]*)"
    r"|(?P<string>'(?:[^']|'')*'?)"
    r"|(?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)"
    r"|(?P<ident>\"(?:[^\"]|\"\")*\"?)"
    r"|(?P<number>\b\d+(?:\.\d+)?\b)"
    r"|(?P<word>\b[A-Za-z_][A-Za-z0-9_]*\b)",
    re.DOTALL,
)
_KEYWORDS = frozenset(
    [
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "in",
        "is",
        "null",
        "as",
        "on",
        "join",
        "left",
        "right",
        "inner",
        "outer",
        "using",
        "delete",
        "update",
        "insert",
        "into",
        "values",
        "set",
        "begin",
        "commit",
        "rollback",
        "with",
        "returning",
        "order",
        "by",
        "group",
        "limit",
        "case",
        "when",
        "then",
        "else",
        "end",
        "exists",
        "true",
        "false",
        "do",
        "language",
        "plpgsql",
        "perform",
        "raise",
        "notice",
        "exception",
        "if",
        "elsif",
        "loop",
        "for",
        "declare",
        "table",
        "only",
        "cascade",
        "transaction",
        "isolation",
        "level",
        "serializable",
        "repeatable",
        "read",
        "committed",
        "lock",
        "mode",
        "share",
        "row",
        "exclusive",
        "create",
        "drop",
        "alter",
        "truncate",
        "distinct",
        "union",
        "all",
        "any",
        "array",
    ]
)


def highlight_sql(text: str) -> Markup:
    """SQL as HTML with comments, strings, numbers and keywords marked (escaped throughout)."""
    out: list[str] = []
    pos = 0
    for match in _SQL_TOKEN.finditer(text):
        out.append(escape(text[pos : match.start()]))
        token = match.group(0)
        kind = match.lastgroup
        if kind == "tag":  # the dollar-quote's inner group
            kind = "dollar"
        if kind == "word":
            out.append(f'<span class="k">{escape(token)}</span>' if token.lower() in _KEYWORDS else escape(token))
        elif kind == "comment":
            out.append(f'<span class="c">{escape(token)}</span>')
        elif kind in ("string", "dollar"):
            out.append(f'<span class="s">{escape(token)}</span>')
        elif kind == "number":
            out.append(f'<span class="n">{escape(token)}</span>')
        else:
            out.append(escape(token))
        pos = match.end()
    out.append(escape(text[pos:]))
    return Markup("".join(out))


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', '2 h ago', 'never'."""
    if value is None:
        return "never"
    now = now or datetime.now(value.tzinfo)
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def when(value: datetime | None) -> str:
    return "—" if value is None else f"{value:%Y-%m-%d %H:%M:%S %Z}".strip()
