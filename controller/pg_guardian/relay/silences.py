"""Silences: hold back relay notices of matching alerts for a while (guardian.create_silence)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError


def _sql_error(exc: psycopg.Error) -> GuardianError:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip()
    if diag.message_hint:
        text += f" ({diag.message_hint})"
    return GuardianError(text)


def create(
    conn: psycopg.Connection,
    matchers: list[str],
    duration: float,
    comment: str,
    channel: str | None = None,
) -> UUID:
    """Create a silence; returns its id. Matchers are ``field=value``, ``!=``, ``=~``, ``!~``."""
    try:
        row = conn.execute(
            "SELECT guardian.create_silence(%s, %s, %s, %s)",
            (matchers, timedelta(seconds=duration), comment, channel),
        ).fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        raise _sql_error(exc) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise GuardianError(f"{exc.diag.message_primary}; silences need a member of guardian_admin") from exc
    assert row is not None
    return UUID(str(row[0]))


def active(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Silences in force now or later, with how many notices each holds."""
    cur = conn.cursor(row_factory=dict_row)
    return [dict(r) for r in cur.execute("SELECT * FROM guardian.active_silences").fetchall()]


def expire(conn: psycopg.Connection, silence: str) -> dict[str, Any]:
    """End a silence now, by id or by a unique prefix of it (at least 4 characters)."""
    ids = (
        [
            r[0]
            for r in conn.execute(
                "SELECT id FROM guardian.relay_silences WHERE id::text LIKE %s ORDER BY created_at",
                (silence.lower().replace("%", "").replace("_", "") + "%",),
            ).fetchall()
        ]
        if len(silence) >= 4
        else []
    )
    if not ids:
        raise GuardianError(f"no silence with id {silence!r}; list them with `pg-guardian silence list`")
    if len(ids) > 1:
        raise GuardianError(f"{len(ids)} silences start with {silence!r}; give more of the id")
    try:
        cur = conn.cursor(row_factory=dict_row)
        row = cur.execute("SELECT * FROM guardian.expire_silence(%s)", (ids[0],)).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise GuardianError(f"{exc.diag.message_primary}; silences need a member of guardian_admin") from exc
    assert row is not None
    return dict(row)
