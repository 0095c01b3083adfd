"""The report as text, Markdown or CSV: one column per environment."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any

from pg_guardian.analytics.report import Combined, duration
from pg_guardian.vocabulary import SEVERITIES

STATUS_MARK = {"met": "met", "missed": "MISSED", "unknown": "unknown", "not_applicable": "n/a"}
TOP_FACETS = (
    ("rules", "Rules"),
    ("tables", "Tables"),
    ("columns", "Columns"),
    ("roles", "Roles"),
    ("applications", "Applications"),
    ("client_addresses", "Client addresses"),
)


def title(combined: Combined) -> str:
    p = combined.first["period"]
    return (
        f"pg_guardian report {p['from'][:16].replace('T', ' ')} to {p['to'][:16].replace('T', ' ')} UTC"
        f" ({p['time_zone']}, {'hourly' if p['bucket'] == 'hour' else 'daily'})"
    )


def _change(total: dict[str, Any]) -> str:
    if total["previous"] == 0:
        return f"{total['alerts']} (none before)" if total["alerts"] else "0"
    sign = "+" if total["change"] >= 0 else ""
    return f"{total['alerts']} ({sign}{total['change']}, {sign}{total['change_pct']}%)"


def _metric_value(metric: dict[str, Any]) -> str:
    value = metric["value"]
    if value is None:
        shown = "-"
    elif metric["unit"] == "percent":
        shown = f"{value}%"
    else:
        shown = str(value)
    return f"{STATUS_MARK[metric['status']]}: {shown}"


def rows(combined: Combined) -> Iterator[tuple[str, str, list[str]]]:
    """(section, label, one cell per environment), the report's figures in reading order."""
    reports = list(combined.reports.values())

    def each(get: Callable[[dict[str, Any]], Any]) -> list[str]:
        return [str(get(r)) for r in reports]

    def per_key(key: str, get: Callable[[dict[str, Any], str], Any]) -> list[str]:
        return [str(get(r, key)) for r in reports]

    yield "Alerts", "alerts (change against the previous period)", each(lambda r: _change(r["totals"]))
    for sev in SEVERITIES:
        yield (
            "Alerts",
            sev,
            per_key(sev, lambda r, s: "{alerts} (before {previous})".format(**r["totals"]["by_severity"][s])),
        )
    for sev in SEVERITIES:
        yield (
            "Response",
            f"{sev} to acknowledge, median / p90",
            per_key(sev, lambda r, s: _pair(r["response"]["by_severity"][s], "tta")),
        )
        yield (
            "Response",
            f"{sev} to resolve, median / p90",
            per_key(sev, lambda r, s: _pair(r["response"]["by_severity"][s], "ttr")),
        )
    yield (
        "Response",
        "critical acknowledged within 5 minutes",
        each(lambda r: _share(r["response"]["critical_acknowledged_within_5m"])),
    )
    yield (
        "Response",
        "serious alerts: business / off / sleep hours",
        each(lambda r: "{business_hours} / {off_hours} / {sleep_hours}".format(**r["response"]["interruptions"])),
    )
    yield (
        "Response",
        "open at the end (unacknowledged), oldest",
        each(
            lambda r: (
                f"{r['response']['backlog']['open']} ({r['response']['backlog']['unacknowledged']}), "
                f"{duration(r['response']['backlog']['oldest_age_s'])}"
            )
        ),
    )
    yield (
        "Contamination",
        "alerts / records",
        each(lambda r: f"{r['patterns']['contamination_alerts']} / {r['patterns']['contamination_records']}"),
    )
    for facet, label in TOP_FACETS:
        yield "Contamination", f"top {label.lower()}", per_key(facet, lambda r, f: _top(r["patterns"][f]))
    yield "Activity", "top tables", each(lambda r: _top(r["patterns"]["activity_tables"]))
    yield (
        "Anomalies",
        "anomalous samples: activity / metric",
        each(lambda r: "{ACTIVITY_ANOMALY} / {METRIC_ANOMALY}".format(**_anomalies(r)["by_type"])),
    )
    yield "Anomalies", "top series", each(lambda r: _top(_anomalies(r)["top_series"]))
    yield "Anomalies", "latest", each(lambda r: _latest(_anomalies(r)["latest"]))
    yield (
        "Relay",
        "delivered / retried / dead-lettered",
        each(lambda r: "{delivered} / {retried} / {dead_lettered}".format(**r["delivery"])),
    )
    for _name, label, per_env in combined.metrics():
        yield "Success metrics", label, [_metric_value(per_env[e]) if e in per_env else "-" for e in combined.names]


def _anomalies(report: dict[str, Any]) -> dict[str, Any]:
    empty = {"by_type": {"ACTIVITY_ANOMALY": 0, "METRIC_ANOMALY": 0}, "top_series": [], "latest": []}
    found: dict[str, Any] = report.get("anomalies") or empty
    return found


def _latest(items: list[dict[str, Any]]) -> str:
    if not items:
        return "-"
    top = items[0]
    return f"{str(top['sampled_at'])[:16].replace('T', ' ')} UTC {top['metric']} {top['subject']}: {top['value']:g}"


def _pair(stats: dict[str, Any], key: str) -> str:
    if stats[f"{key}_median_s"] is None:
        return "-"
    return f"{duration(stats[f'{key}_median_s'])} / {duration(stats[f'{key}_p90_s'])}"


def _share(share: dict[str, Any]) -> str:
    if not share["due"]:
        return "none due"
    return f"{share['in_time']} of {share['due']} ({share['share_pct']}%)"


def _top(items: list[dict[str, Any]], n: int = 3) -> str:
    if not items:
        return "-"
    return ", ".join(f"{i['value']} ({i['alerts']})" for i in items[:n])


def text(combined: Combined) -> str:
    names = combined.names
    table = list(rows(combined))
    width = max(len(label) for _, label, _ in table) + 2
    cols = [max(len(n), *(len(cells[i]) for _, _, cells in table)) for i, n in enumerate(names)]
    out = [title(combined), ""]
    out.append(" " * (width + 2) + "  ".join(n.ljust(w) for n, w in zip(names, cols, strict=True)).rstrip())
    section = None
    for sec, label, cells in table:
        if sec != section:
            out.append(sec)
            section = sec
        out.append(
            ("  " + label).ljust(width + 2) + "  ".join(c.ljust(w) for c, w in zip(cells, cols, strict=True)).rstrip()
        )
    out.append("")
    out.append("all success metrics met" if combined.met else "missed: " + "; ".join(combined.missed()))
    return "\n".join(out) + "\n"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown(combined: Combined) -> str:
    names = combined.names
    out = [f"# {title(combined)}", ""]
    section = None
    for sec, label, cells in rows(combined):
        if sec != section:
            out += ["", f"## {sec}", "", "| | " + " | ".join(_md(n) for n in names) + " |"]
            out.append("|---|" + "---|" * len(names))
            section = sec
        out.append(f"| {_md(label)} | " + " | ".join(_md(c) for c in cells) + " |")
    out += ["", "**All success metrics met.**" if combined.met else "**Missed:** " + "; ".join(combined.missed()), ""]
    return "\n".join(out).replace("\n\n\n", "\n\n")


def csv_text(combined: Combined) -> str:
    """Machine-friendly: one row per figure and per trend bucket, one column per environment."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    names = combined.names
    reports = list(combined.reports.values())
    writer.writerow(["section", "key", *names])
    writer.writerow(["totals", "alerts", *(r["totals"]["alerts"] for r in reports)])
    writer.writerow(["totals", "previous", *(r["totals"]["previous"] for r in reports)])
    for sev in SEVERITIES:
        writer.writerow(["severity", sev, *(r["totals"]["by_severity"][sev]["alerts"] for r in reports)])
    for sev in SEVERITIES:
        for key in ("tta_median_s", "tta_p90_s", "ttr_median_s", "ttr_p90_s"):
            writer.writerow(
                [f"response {sev}", key, *(_blank(r["response"]["by_severity"][sev][key]) for r in reports)]
            )
    for name, _label, per_env in combined.metrics():
        writer.writerow([f"metric {name}", "value", *(_blank(per_env.get(e, {}).get("value")) for e in names)])
        writer.writerow([f"metric {name}", "status", *(per_env.get(e, {}).get("status", "") for e in names)])
    labels = combined.first["trends"]["labels"]
    for series in ("total", "contamination_records", "schema_changes"):
        for i, label in enumerate(labels):
            writer.writerow([f"trend {series}", label, *(_at(r["trends"][series], i) for r in reports)])
    return buf.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _at(series: list[Any], i: int) -> Any:
    return series[i] if i < len(series) else ""
