"""Health checks, security events and posture checks: run them and read their state.

The checks live in SQL (``guardian.run_checks``); this module calls them and returns rows
for the CLI to print. Every finding is also an alert in ``guardian.monitoring_alerts``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError
from pg_guardian.vocabulary import SEVERITY_RANK


class CheckError(GuardianError):
    """The database refused a check request (unknown check, bad parameter)."""


def _sql_error(exc: psycopg.Error) -> CheckError:
    message = exc.diag.message_primary or str(exc).strip()
    hint = exc.diag.message_hint
    return CheckError(message + (f"; {hint}" if hint else ""))


def run(conn: psycopg.Connection, *, category: str | None = None, check: str | None = None) -> list[dict[str, Any]]:
    """Run checks (a category, one check, or all) and return one row per finding or per
    check without findings (status ok, disabled, degraded or error)."""
    cur = conn.cursor(row_factory=dict_row)
    try:
        rows = cur.execute(
            """SELECT check_name, category, status, alert_type, severity, table_name, record_id,
                      detail, remediation, alert_id
                 FROM guardian.run_checks(%s, %s)""",
            (category, check),
        ).fetchall()
    except psycopg.errors.InvalidParameterValue as exc:
        raise _sql_error(exc) from exc
    if not conn.autocommit:
        conn.commit()
    return sorted(
        (dict(r) for r in rows),
        key=lambda r: (
            r["status"] == "ok",
            SEVERITY_RANK.get(r["severity"] or "", 9),
            r["category"],
            r["check_name"],
        ),
    )


def status(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Each check with its category, switch and last run (``guardian.check_status``)."""
    cur = conn.cursor(row_factory=dict_row)
    return list(
        cur.execute(
            """SELECT name, category, enabled, last_run_at, last_status, last_findings, last_detail
             FROM guardian.check_status ORDER BY category, name"""
        ).fetchall()
    )


def parameters(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every threshold with its value in this environment, default, range and unit."""
    cur = conn.cursor(row_factory=dict_row)
    return list(
        cur.execute(
            """SELECT name, value, default_value, min_value, max_value, unit, overridden
             FROM guardian.parameter_values ORDER BY name"""
        ).fetchall()
    )


def set_parameter(conn: psycopg.Connection, name: str, value: str | None, environment: str = "*") -> Any:
    """Set (or with None, reset) a threshold; the database refuses nonsense with the fix."""
    try:
        row = conn.execute("SELECT guardian.set_param(%s, %s::numeric, %s)", (name, value, environment)).fetchone()
    except psycopg.errors.InvalidTextRepresentation as exc:
        raise CheckError(f"invalid value {value!r} for parameter {name}: give a number") from exc
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.InsufficientPrivilege) as exc:
        raise _sql_error(exc) from exc
    if not conn.autocommit:
        conn.commit()
    return row[0] if row else None
