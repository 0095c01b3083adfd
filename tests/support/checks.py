"""Helpers for the tests of checks, jobs and security events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row


def run_check(conn: psycopg.Connection, check: str) -> list[dict[str, Any]]:
    """Run one check through guardian.run_checks and return its rows."""
    cur = conn.cursor(row_factory=dict_row)
    return list(cur.execute("SELECT * FROM guardian.run_checks(NULL, %s)", (check,)).fetchall())


def findings(conn: psycopg.Connection, check: str, alert_type: str | None = None) -> list[dict[str, Any]]:
    """The findings (not ok/degraded rows) of one run of a check, optionally of one type."""
    return [
        r
        for r in run_check(conn, check)
        if r["status"] == "finding" and (alert_type is None or r["alert_type"] == alert_type)
    ]


def open_alerts(conn: psycopg.Connection, alert_type: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return list(
        cur.execute(
            "SELECT * FROM guardian.monitoring_alerts WHERE type = %s AND resolved_at IS NULL ORDER BY created_at",
            (alert_type,),
        ).fetchall()
    )


def set_param(conn: psycopg.Connection, name: str, value: object) -> None:
    conn.execute("SELECT guardian.set_param(%s, %s::numeric)", (name, str(value)))


def wait_for(probe: Callable[[], Any], timeout: float = 15.0, step: float = 0.25) -> Any:
    """Call probe until it returns something truthy (bounded); return that, or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
