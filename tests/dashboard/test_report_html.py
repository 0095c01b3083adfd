"""The HTML report in the real headless Chromium: it renders offline, and its charts draw the
series they claim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner
from pg_guardian.cli import main
from selenium.webdriver.common.by import By
from support.history import fill_history
from support.queries import scalar

PERIOD = ("--from", "2026-03-02", "--to", "2026-03-05")


def test_html_report_renders_offline_and_its_charts_carry_the_report(
    browser: Any, db: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    fill_history(db)
    target = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["report", "--dsn", dsn, *PERIOD, "--format", "html", "-o", str(target)], env={"GUARDIAN_CONFIG": ""}
    )
    assert result.exit_code == 1, result.output  # metrics were missed
    report = scalar(db, "SELECT guardian.report('2026-03-02 00:00+00', '2026-03-05 00:00+00', NULL, 'UTC')")
    html = target.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html

    browser.get(target.as_uri())
    # Nothing was fetched: the file is the whole report.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("pg_guardian report 2026-03-02 00:00")
    assert browser.find_element(By.ID, "verdict").text.startswith("Missed: production: Contamination events")

    scorecard = {
        row.get_attribute("data-metric"): row.find_element(By.CSS_SELECTOR, "td[data-env='production']").get_attribute(
            "data-status"
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#scorecard tr[data-metric]")
    }
    assert scorecard == {m["name"]: m["status"] for m in report["success_metrics"]}

    def chart(title: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, f"svg[data-chart='{title}']")

    severity = chart("production: alerts per day by severity")
    assert severity.get_attribute("data-labels") == ",".join(report["trends"]["labels"])
    drawn = {
        g.get_attribute("data-series"): [int(v) for v in g.get_attribute("data-values").split(",")]
        for g in severity.find_elements(By.CSS_SELECTOR, "g.series")
    }
    assert drawn == report["trends"]["by_severity"]
    # One bar per non-zero value, each as tall as its share of the peak day.
    bars = severity.find_elements(By.CSS_SELECTOR, "rect")
    assert len(bars) == sum(1 for s in drawn.values() for v in s if v)
    heights = {
        (b.get_attribute("data-label"), b.find_element(By.XPATH, "..").get_attribute("data-series")): float(
            b.get_attribute("height")
        )
        for b in bars
    }
    assert heights[("2026-03-02", "CRITICAL")] == heights[("2026-03-02", "HIGH")] > 0

    records = chart("production: contaminated records per day")
    values = records.find_element(By.CSS_SELECTOR, "g.series").get_attribute("data-values")
    assert values == ",".join(str(v) for v in report["trends"]["contamination_records"])

    tta = chart("production: time to acknowledge by severity")
    medians = tta.find_element(By.CSS_SELECTOR, "g.series[data-series='median']").get_attribute("data-values")
    expected = [
        report["response"]["by_severity"][s]["tta_median_s"] for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")
    ]
    assert medians.split(",") == ["" if v is None else f"{v:g}" for v in expected]

    rules = browser.find_elements(By.CSS_SELECTOR, "table[data-facet='rules'] tr td:first-child")
    assert [r.text for r in rules] == [i["value"] for i in report["patterns"]["rules"]]
    # It prints: the page lays out for A4 without horizontal overflow.
    width = browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert width is True
    assert json.loads(json.dumps(report["totals"]))["alerts"] == 5
