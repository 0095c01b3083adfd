"""The relay's SQL: thin wrappers over the guardian.relay_* functions (extension/sql/30_relay)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError
from pg_guardian.relay.config import Route
from pg_guardian.relay.model import AlertView, Message

CLAIM = "guardian.relay_claim(text,integer,integer,interval,interval,integer)"


@dataclass(frozen=True)
class IntakeAlert:
    """An alert to route (``guardian.relay_take_intake``)."""

    alert_id: UUID
    severity: str
    type: str
    environment: str | None
    table_name: str | None
    record_id: str | None
    fingerprint: str
    occurrences: int
    created_at: datetime
    last_seen_at: datetime
    resolved: bool
    failed_channel: str | None

    def labels(self) -> dict[str, Any]:
        """What routes match and groups are made of (``id`` is the alert id)."""
        return {
            "id": str(self.alert_id),
            "severity": self.severity,
            "type": self.type,
            "environment": self.environment,
            "table_name": self.table_name,
            "record_id": self.record_id,
            "fingerprint": self.fingerprint,
            "failed_channel": self.failed_channel,
        }


@dataclass(frozen=True)
class Notice:
    """One routed notice for ``guardian.relay_enqueue``."""

    alert_id: UUID
    channel: str
    group_key: str | None
    group_wait: float
    repeat_interval: float


def policy_routes(conn: psycopg.Connection) -> tuple[Route, ...] | None:
    """The alert routes the database's policy sets for its environment (guardian.policy_routes),
    or None when it sets none (or the guardian predates policies): the configured routes apply."""
    if conn.execute("SELECT to_regprocedure('guardian.policy_routes()')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT guardian.policy_routes()").fetchone()
    if not row or not isinstance(row[0], list):
        return None

    def values(route: dict[str, Any], key: str) -> tuple[str, ...] | None:
        value = route.get(key)
        return tuple(value) if isinstance(value, list) else None

    return tuple(
        Route(
            channels=tuple(r.get("channels") or ()),
            severity=values(r, "severity"),
            type=values(r, "type"),
            environment=values(r, "environment"),
            table_name=values(r, "table_name"),
            cont=bool(r.get("continue")),
        )
        for r in row[0]
        if isinstance(r, dict)
    )


def check_ready(conn: psycopg.Connection) -> None:
    """Refuse early, with the fix, when the database has no relay or the role may not use it."""
    row = conn.execute(
        "SELECT to_regprocedure(%s) IS NOT NULL, "
        "to_regprocedure(%s) IS NOT NULL AND has_function_privilege(%s, 'EXECUTE'), current_user",
        (CLAIM, CLAIM, CLAIM),
    ).fetchone()
    assert row is not None
    if not row[0]:
        raise GuardianError(
            f"pg_guardian in database {conn.info.dbname} has no alert relay: install it with "
            "`pg-guardian install`, or `pg-guardian upgrade` an older version"
        )
    if not row[1]:
        raise GuardianError(f"role {row[2]} may not run the relay; a superuser runs: GRANT guardian_relay TO {row[2]};")


def register(conn: psycopg.Connection) -> int:
    """A relay token for this connection (its lease on messages ends with the session)."""
    row = conn.execute("SELECT guardian.relay_register()").fetchone()
    assert row is not None
    return int(row[0])


def take_intake(conn: psycopg.Connection, limit: int) -> list[IntakeAlert]:
    """Alerts to route; call inside the transaction that enqueues their notices."""
    rows = conn.execute("SELECT * FROM guardian.relay_take_intake(%s)", (limit,)).fetchall()
    return [IntakeAlert(*r) for r in rows]


def enqueue(conn: psycopg.Connection, notices: Sequence[Notice]) -> int:
    """Queue routed notices; returns how many were queued or refreshed."""
    if not notices:
        return 0
    row = conn.execute(
        "SELECT guardian.relay_enqueue(%s::uuid[], %s::text[], %s::text[], %s::interval[], %s::interval[])",
        (
            [n.alert_id for n in notices],
            [n.channel for n in notices],
            [n.group_key for n in notices],
            [timedelta(seconds=n.group_wait) for n in notices],
            [timedelta(seconds=n.repeat_interval) for n in notices],
        ),
    ).fetchone()
    return int(row[0]) if row else 0


def claim(
    conn: psycopg.Connection,
    channel: str,
    token: int,
    limit: int,
    *,
    group_interval: float,
    lease: float,
    max_attempts: int,
    sample: int,
) -> list[Message]:
    """Lease up to ``limit`` messages of a channel and load what they say."""
    rows = conn.execute(
        "SELECT * FROM guardian.relay_claim(%s, %s, %s, %s, %s, %s)",
        (
            channel,
            token,
            limit,
            timedelta(seconds=group_interval),
            timedelta(seconds=lease),
            max_attempts,
        ),
    ).fetchall()
    messages = {
        r[0]: Message(
            id=r[0],
            channel=channel,
            idempotency_key=r[1],
            group_key=r[2],
            alert_count=r[3],
            attempts=r[4],
        )
        for r in rows
    }
    if not messages:
        return []
    cur = conn.cursor(row_factory=dict_row)
    for r in cur.execute(
        "SELECT * FROM guardian.relay_message_alerts(%s::uuid[], %s)", (list(messages), sample)
    ).fetchall():
        msg = messages[r["message_id"]]
        msg.alerts.append(
            AlertView(
                id=r["alert_id"],
                seq=r["seq"],
                idempotency_key=r["idempotency_key"],
                severity=r["severity"],
                type=r["type"],
                message=r["message"],
                message_length=r["message_length"],
                table_name=r["table_name"],
                record_id=r["record_id"],
                environment=r["environment"],
                metadata=r["metadata"] or {},
                fingerprint=r["fingerprint"],
                occurrences=r["occurrences"],
                created_at=r["created_at"],
                last_seen_at=r["last_seen_at"],
                resolved_at=r["resolved_at"],
            )
        )
        msg.total_occurrences = int(r["group_occurrences"])
        msg.first_at, msg.last_at = r["group_first_at"], r["group_last_at"]
    return list(messages.values())


def delivered(conn: psycopg.Connection, message_ids: Sequence[UUID]) -> None:
    """Record messages as delivered."""
    if message_ids:
        conn.execute("SELECT guardian.relay_delivered(%s::uuid[])", (list(message_ids),))


def failed(
    conn: psycopg.Connection,
    message_id: UUID,
    token: int,
    error: str,
    retry_in: float,
    max_attempts: int,
) -> str:
    """Record a failed send: returns retry, dead (dead-lettered) or ignored."""
    row = conn.execute(
        "SELECT guardian.relay_failed(%s, %s, %s, %s, %s)",
        (message_id, token, error, timedelta(seconds=retry_in), max_attempts),
    ).fetchone()
    assert row is not None
    return str(row[0])


def next_due_in(conn: psycopg.Connection, channel: str) -> float | None:
    """Seconds until the channel has work (may be negative: overdue); None when idle."""
    row = conn.execute("SELECT extract(epoch FROM guardian.relay_next_due(%s) - now())::float8", (channel,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def retry_dead(conn: psycopg.Connection, channel: str | None = None) -> int:
    """Send dead-lettered messages again from scratch (one channel's, or all); how many."""
    row = conn.execute("SELECT guardian.relay_retry(%s)", (channel,)).fetchone()
    return int(row[0]) if row else 0
