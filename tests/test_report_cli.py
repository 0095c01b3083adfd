"""``pg-guardian report``: formats, several databases side by side, exit codes, bad input."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from support.history import FROM, add_alerts, fill_history

PERIOD = ("--from", "2026-03-02", "--to", "2026-03-05")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": "", "GUARDIAN_CONFIG": "", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def history(db: psycopg.Connection) -> psycopg.Connection:
    return fill_history(db)


@pytest.fixture
def staging(cluster: LocalCluster, template_db: str) -> Iterator[str]:
    name = "report_staging"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT guardian.set_environment('staging')")
        add_alerts(conn, [("LOW", "LOGIN_FAILED", "2026-03-03 12:00+00", None, None, None, None, {}, {})], "staging")
    yield cluster.dsn(name)
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_json_has_the_report_and_a_missed_metric_exits_1(history: psycopg.Connection, dsn: str) -> None:
    code, out, _ = run("report", "--dsn", dsn, *PERIOD, "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["environments"] == ["production"] and data["met"] is False
    report = data["reports"]["production"]
    assert report["totals"]["alerts"] == 5 and report["period"]["from"].startswith("2026-03-02T00:00:00")
    assert "production: False-positive rate" in data["missed"]


def test_text_shows_figures_and_what_was_missed(history: psycopg.Connection, dsn: str) -> None:
    code, out, _ = run("report", "--dsn", dsn, *PERIOD)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "pg_guardian report 2026-03-02 00:00 to 2026-03-05 00:00 UTC (UTC, daily)"
    assert any(
        line.split() == ["alerts", "(change", "against", "the", "previous", "period)", "5", "(+3,", "+150.0%)"]
        for line in lines
    )
    assert any("CRITICAL to acknowledge, median / p90" in line and "6m / 9m 12s" in line for line in lines)
    assert any("False-positive rate" in line and "MISSED: 33.3%" in line for line in lines)
    assert lines[-1].startswith("missed: production: Contamination events in production;")


def test_markdown_and_csv_have_a_column_per_environment(
    history: psycopg.Connection, dsn: str, staging: str, tmp_path: Path
) -> None:
    config = tmp_path / "guardian.toml"
    config.write_text(f'[databases.production]\ndsn = "{dsn}"\n\n[databases.staging]\ndsn = "{staging}"\n')
    code, out, _ = run("report", "--config", str(config), *PERIOD, "--format", "markdown")
    assert code == 1
    assert "| | production | staging |" in out
    assert "| CRITICAL | 2 (before 1) | 0 (before 0) |" in out
    code, out, _ = run("report", "--config", str(config), "--env", "staging", *PERIOD, "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["section", "key", "staging"]
    assert ["totals", "alerts", "1"] in rows and ["trend total", "2026-03-03", "1"] in rows
    assert ["metric false_positive_rate", "status", "unknown"] in rows
    assert code == 0  # staging alone misses nothing it can measure


def test_output_file_and_an_empty_period_that_meets_everything(
    db: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    code, out, err = run(
        "report", "--dsn", dsn, "--from", "2020-01-01", "--to", "2020-01-31", "--format", "html", "-o", str(target)
    )
    assert code == 0 and out == ""
    assert err.startswith(f"wrote {target} (")
    assert target.read_text().startswith("<!doctype html>")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday-ish"), "--since 'yesterday-ish' is not a duration: use a number and a unit"),
        (("--from", "2026-03-05", "--to", "2026-03-02"), "--from 2026-03-05T00:00:00+00:00 is not before --to"),
        (("--from", "last tuesday"), "--from 'last tuesday' is not a date or time"),
        (("--since", "7d", "--from", "2026-03-01"), "use either --since or --from/--to, not both"),
        (("--environment", "nowhere", "--since", "7d"), "unknown environment 'nowhere'"),
        (("--time-zone", "Mars/Olympus", "--since", "7d"), "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_input_is_a_one_line_error(db: psycopg.Connection, dsn: str, args: tuple[str, ...], message: str) -> None:
    code, out, err = run("report", "--dsn", dsn, *args)
    assert code == 2 and out == ""
    assert message in err
    assert len(err.strip().splitlines()) <= 2  # the error and, from the database, its hint


def test_an_unknown_configured_environment_names_the_known_ones(dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "guardian.toml"
    config.write_text(f'[databases.production]\ndsn = "{dsn}"\n')
    code, _, err = run("report", "--config", str(config), "--env", "qa", "--since", "7d")
    assert code == 2
    assert "--env qa: no [databases.qa] in" in err and "(known: production)" in err


def test_the_period_defaults_to_the_last_30_days(history: psycopg.Connection, dsn: str) -> None:
    code, out, _ = run("report", "--dsn", dsn, "--format", "json")
    assert code == 0  # the last 30 days hold none of the history, so nothing is missed
    period = json.loads(out)["reports"]["production"]["period"]

    span = datetime.fromisoformat(period["to"]) - datetime.fromisoformat(period["from"])
    assert span.days == 30 and period["from"] > FROM
