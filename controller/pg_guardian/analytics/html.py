"""The report as one self-contained HTML file: inline CSS, SVG charts, no script, no network.

Sized for sharing: at most 10 entries per list and one bar per day (or hour), so a year of
history stays a few hundred kilobytes. It prints to PDF as it looks on screen.
"""

from __future__ import annotations

from typing import Any

import jinja2

from pg_guardian.analytics import charts, render
from pg_guardian.analytics.report import Combined, duration
from pg_guardian.vocabulary import SEVERITIES


def environment_charts(name: str, report: dict[str, Any]) -> dict[str, Any]:
    """One environment's report with its charts (the HTML file's and the dashboard's)."""
    trends = report["trends"]
    response = report["response"]["by_severity"]
    return {
        "name": name,
        "report": report,
        "severity_chart": charts.stacked_bars(
            trends["labels"],
            {s: trends["by_severity"][s] for s in SEVERITIES},
            charts.SEVERITY_COLOURS,
            title=f"{name}: alerts per {trends['bucket']} by severity",
        ),
        "records_chart": charts.stacked_bars(
            trends["labels"],
            {"records": trends["contamination_records"]},
            {"records": "#7c3aed"},
            title=f"{name}: contaminated records per {trends['bucket']}",
            height=120,
        ),
        "tta_chart": charts.hbars(
            [(s, response[s]["tta_median_s"], response[s]["tta_p90_s"]) for s in SEVERITIES],
            title=f"{name}: time to acknowledge by severity",
        ),
        "ttr_chart": charts.hbars(
            [(s, response[s]["ttr_median_s"], response[s]["ttr_p90_s"]) for s in SEVERITIES],
            title=f"{name}: time to resolve by severity",
        ),
    }


def html(combined: Combined) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pg_guardian.analytics", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    template = env.get_template("report.html.j2")
    return template.render(
        title=render.title(combined),
        combined=combined,
        metrics=combined.metrics(),
        environments=[environment_charts(n, r) for n, r in combined.reports.items()],
        facets=render.TOP_FACETS,
        severities=SEVERITIES,
        colours=charts.SEVERITY_COLOURS,
        status_mark=render.STATUS_MARK,
        rows=list(render.rows(combined)),
    )
