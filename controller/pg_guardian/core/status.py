"""What the guardian is doing in one database, as plain data for the CLI to print."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_guardian.core import alerts
from pg_guardian.install import installed


def _exists(conn: psycopg.Connection, relation: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()
    return bool(row and row[0])


def status(conn: psycopg.Connection) -> dict[str, Any]:
    """Version, install path, environment, mode, watched tables, jobs, open alerts."""
    state = installed(conn)
    result: dict[str, Any] = {
        "database": conn.info.dbname,
        "installed": state.version is not None,
        "version": state.version,
        "install_method": state.method,
    }
    if not state.version:
        return result
    cur = conn.cursor(row_factory=dict_row)
    env = cur.execute(
        "SELECT environment, mode, changed_at, changed_by, table_modes FROM guardian.environment_status"
    ).fetchone()
    assert env is not None
    result.update(
        environment=env["environment"],
        mode=env["mode"],
        mode_changed_at=env["changed_at"].isoformat() if env["changed_at"] else None,
        table_modes=env["table_modes"],
    )
    result["features"] = {
        "plpython3u": bool(
            conn.execute("SELECT EXISTS (SELECT FROM pg_catalog.pg_language WHERE lanname = 'plpython3u')").fetchone()[
                0
            ]  # type: ignore[index]
        ),
        "pg_cron": _exists(conn, "cron.job"),
        "trigger_protection": bool(
            conn.execute(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_event_trigger "
                "WHERE evtname = 'guardian_protect_triggers_alter')"
            ).fetchone()[0]  # type: ignore[index]
        ),
    }
    if _exists(conn, "guardian.watched_tables"):
        result["watched_tables"] = [
            dict(r)
            for r in cur.execute(
                "SELECT relid::text AS table, guardian.effective_mode(relid) AS mode "
                "FROM guardian.watched_tables ORDER BY 1"
            ).fetchall()
        ]
    else:
        result["watched_tables"] = []
    cron_join = (
        "LEFT JOIN cron.job AS c ON c.jobname = 'guardian_' || j.name AND c.database = current_database()"
        if result["features"]["pg_cron"]
        else ""
    )
    cron_col = "c.jobid IS NOT NULL" if cron_join else "false"
    result["jobs"] = [
        dict(r)
        for r in cur.execute(
            f"""SELECT j.name AS jobname, j.schedule, j.enabled, {cron_col} AS in_pg_cron,
                       j.last_status, j.last_finished_at, j.lag, j.overdue, j.last_error,
                       j.last_result
                  FROM guardian.job_status AS j {cron_join} ORDER BY j.name"""
        ).fetchall()
    ]
    if _exists(conn, "guardian.job_scheduler"):
        from pg_guardian.jobs.scheduling import guard_status

        result["guard"] = guard_status(conn)
    if _exists(conn, "guardian.check_status"):
        # Checks that could not run, or only partly, are the first thing to fix.
        by_status = cur.execute(
            "SELECT coalesce(last_status, 'never run') AS status, count(*) AS n "
            "FROM guardian.check_status WHERE enabled GROUP BY 1 ORDER BY 1"
        ).fetchall()
        attention = cur.execute(
            "SELECT name, last_status AS status, last_detail AS detail "
            "FROM guardian.check_status "
            "WHERE enabled AND last_status IN ('degraded', 'error') ORDER BY name"
        ).fetchall()
        result["checks"] = {
            "by_status": {r["status"]: int(r["n"]) for r in by_status},
            "attention": [dict(r) for r in attention],
        }
    if _exists(conn, "guardian.lockdown_status"):
        from pg_guardian.response import describe_lockdown, lockdown_status

        active = lockdown_status(conn)
        if active:
            result["lockdown"] = describe_lockdown(active)
    result["open_alerts"] = alerts.open_counts(conn)
    return result
