"""The one alert table every detector writes to (``guardian.monitoring_alerts``)."""

from __future__ import annotations

import psycopg

from pg_guardian.vocabulary import SEVERITIES


def open_counts(conn: psycopg.Connection) -> dict[str, int]:
    """How many alerts are open, per severity (every severity, most severe first)."""
    counts: dict[str, int] = dict(
        conn.execute(
            "SELECT severity, count(*) FROM guardian.monitoring_alerts WHERE resolved_at IS NULL GROUP BY severity"
        ).fetchall()
    )
    return {s: int(counts.get(s, 0)) for s in SEVERITIES}
