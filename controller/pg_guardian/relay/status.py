"""``pg-guardian relay status``: the outbox per channel, as plain data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError


def status(conn: psycopg.Connection, *, stale_after: float = 300.0) -> dict[str, Any]:
    """Queue depth, oldest undelivered age and failures per channel, and whether all is well.

    ``healthy`` is false when a message was dead-lettered or a notice has waited longer than
    ``stale_after`` seconds (not counting those held by a silence).
    """
    if conn.execute("SELECT to_regclass('guardian.relay_status')").fetchone() == (None,):
        raise GuardianError(f"pg_guardian in database {conn.info.dbname} has no alert relay; run `pg-guardian upgrade`")
    cur = conn.cursor(row_factory=dict_row)
    try:
        overview = cur.execute("SELECT * FROM guardian.relay_overview()").fetchone()
        channels = cur.execute("SELECT * FROM guardian.relay_status").fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise GuardianError(
            f"{exc.diag.message_primary}; relay status needs guardian_reader or guardian_relay"
        ) from exc
    assert overview is not None
    problems = []
    for row in channels:
        age: timedelta | None = row["oldest_undelivered_age"]
        row["oldest_undelivered_seconds"] = round(age.total_seconds(), 1) if age is not None else None
        if row["dead_messages"]:
            problems.append(f"{row['channel']}: {row['dead_messages']} dead-lettered message(s)")
        if age is not None and age.total_seconds() > stale_after:
            problems.append(f"{row['channel']}: oldest undelivered notice waited {int(age.total_seconds())}s")
    backlog_age = None
    if overview["oldest_intake_at"] is not None:
        waited = conn.execute(
            "SELECT extract(epoch FROM now() - %s)::float8", (overview["oldest_intake_at"],)
        ).fetchone()
        backlog_age = round(float(waited[0]), 1) if waited else None
        if backlog_age is not None and backlog_age > stale_after:
            problems.append(
                f"{overview['intake_backlog']} alert(s) not routed for {int(backlog_age)}s: is a relay running?"
            )
    return {
        "database": conn.info.dbname,
        "relay_connections": overview["relay_connections"],
        "intake_backlog": overview["intake_backlog"],
        "intake_oldest_seconds": backlog_age,
        "channels": [{k: v for k, v in r.items() if k != "oldest_undelivered_age"} for r in channels],
        "healthy": not problems,
        "problems": problems,
    }
