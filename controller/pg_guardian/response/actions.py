"""The response actions: cleanup scripts, quarantine and restore, lockdown.

The work happens in SQL (``extension/sql/60_response``); these functions call it with the
connection's rights and return plain data. Every cleanup script is checked with pglast before
it is run, and runs in one transaction.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError


class ResponseError(GuardianError):
    """The database refused a cleanup, restore or lockdown (the message says why and what to do)."""


def _sql_error(exc: psycopg.Error) -> ResponseError:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(diag.message_detail.rstrip("."))
    if diag.message_hint:
        parts.append(diag.message_hint)
    return ResponseError("; ".join(parts))


def _uuid(value: str, what: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise ResponseError(f"{value!r} is not a {what} id (a UUID)") from None


def _target(
    alert: str | None,
    table: str | None,
    records: tuple[str, ...] | list[str] | None,
    include_restricted: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    if bool(alert) == bool(table):
        raise ResponseError("name either an alert id or --table (not both)")
    params: tuple[Any, ...]
    if alert:
        args, params = "%s::uuid", (_uuid(alert, "alert"),)
    else:
        args, params = "%s::regclass, %s::text[]", (table, list(records) if records else None)
    if include_restricted:
        return f"{args}, p_include_restricted => true", params
    return args, params


def cleanup_plan(
    conn: psycopg.Connection,
    *,
    alert: str | None = None,
    table: str | None = None,
    records: list[str] | None = None,
    include_restricted: bool = False,
) -> list[dict[str, Any]]:
    """The dry run: each step with the rows it would touch (changes nothing).

    With ``include_restricted``, rows that reference removed rows through ON DELETE RESTRICT /
    NO ACTION are removed too, in steps of action ``delete_restricted`` that carry a ``warning``.
    """
    args, params = _target(alert, table, records, include_restricted)
    try:
        with conn.transaction():
            return list(
                conn.cursor(row_factory=dict_row).execute(
                    f"SELECT step, table_name, action, rows, via, detail, warning FROM guardian.cleanup_plan({args})",
                    params,
                )
            )
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc


def cleanup_script(
    conn: psycopg.Connection,
    *,
    alert: str | None = None,
    table: str | None = None,
    records: list[str] | None = None,
    include_restricted: bool = False,
) -> str:
    """Generate (and register, and store with its alert) the cleanup script.

    Raises ResponseError when rows that stay reference removed rows through ON DELETE RESTRICT /
    NO ACTION, unless ``include_restricted`` (then they are removed and quarantined too).
    """
    args, params = _target(alert, table, records, include_restricted)
    try:
        with conn.transaction():
            row = conn.execute(f"SELECT guardian.cleanup_script({args})", params).fetchone()
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc
    assert row is not None
    return str(row[0])


def run_script(conn: psycopg.Connection, script: str) -> str:
    """Run a cleanup script in one transaction after checking that pglast parses it.

    Returns what ``cleanup_finish()`` said (rows quarantined, the restore command).
    """
    from pg_guardian.response.policy import PolicyError, statements

    try:
        parsed = statements(script, without_transaction=True)
    except PolicyError as exc:
        raise ResponseError(f"the cleanup script does not parse: {exc}") from exc
    summary = ""
    try:
        with conn.transaction():
            for statement in parsed:
                row = conn.execute(statement).fetchone()
                if "guardian.cleanup_finish(" in statement and row:
                    summary = str(row[0])
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc
    return summary


def quarantine(conn: psycopg.Connection, *, include_restored: bool = False) -> list[dict[str, Any]]:
    """Quarantine batches, newest first (restored ones only when asked)."""
    return list(
        conn.cursor(row_factory=dict_row).execute(
            """SELECT batch_id, alert_id, automatic, status, row_count, tables, created_at,
                  created_by,
                  restored_at, restored_by, kept_until, restore_command
             FROM guardian.quarantine_status
            WHERE status = 'applied' OR %s
            ORDER BY created_at DESC""",
            (include_restored,),
        )
    )


def quarantined_rows(conn: psycopg.Connection, batch: str) -> list[dict[str, Any]]:
    """The rows of one batch as they were taken (needs guardian_admin)."""
    try:
        return list(
            conn.cursor(row_factory=dict_row).execute(
                """SELECT step, table_name, action, row_key, columns, findings, row_data
                 FROM guardian.quarantined_rows WHERE batch_id = %s ORDER BY step, seq""",
                (_uuid(batch, "batch"),),
            )
        )
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc


def restore(conn: psycopg.Connection, batch: str, *, allowlist: bool = True) -> str:
    """Put a quarantine batch back (one transaction); refused when already restored."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT guardian.restore(%s::uuid, %s)", (_uuid(batch, "batch"), allowlist)).fetchone()
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc
    assert row is not None
    return str(row[0])


def prune(conn: psycopg.Connection) -> str:
    """Apply quarantine retention now; says what went."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT guardian.prune_quarantine()").fetchone()
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc
    assert row is not None
    return str(row[0])


_LOCKDOWN_COLUMNS = "id, environment, reason, automatic, started_at, started_by, roles, not_revoked, sessions_ended"


def lockdown(conn: psycopg.Connection, reason: str) -> dict[str, Any]:
    """Lock the environment down; refused when it already is."""
    try:
        with conn.transaction():
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(f"SELECT {_LOCKDOWN_COLUMNS} FROM guardian.lockdown(%s)", (reason,))
                .fetchone()
            )
            status = (
                conn.cursor(row_factory=dict_row)
                .execute("SELECT revoked, read_only_roles FROM guardian.lockdown_status")
                .fetchone()
            )
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc
    assert row is not None
    return {**row, **(status or {})}


def unlock(conn: psycopg.Connection, note: str | None = None) -> dict[str, Any]:
    """Lift the lockdown, giving back what it took; the result lists what could not be."""
    try:
        with conn.transaction():
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT id, environment, reason, started_at, ended_at, ended_by FROM guardian.unlock(%s)",
                    (note,),
                )
                .fetchone()
            )
            assert row is not None
            notes = [
                r[0]
                for r in conn.execute(
                    "SELECT restore_note FROM guardian.lockdown_changes "
                    "WHERE lockdown_id = %s AND restore_note IS NOT NULL ORDER BY seq",
                    (row["id"],),
                )
            ]
    except psycopg.Error as exc:
        raise _sql_error(exc) from exc
    return {**row, "not_restored": notes}


def lockdown_status(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The active lockdown, or None."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            """SELECT id, environment, reason, automatic, started_at, started_by, roles, revoked,
                  read_only_roles, not_revoked, sessions_ended
             FROM guardian.lockdown_status"""
        )
        .fetchone()
    )


def lockdown_roles(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Which roles a lockdown would lock, and why each is in or out."""
    return list(
        conn.cursor(row_factory=dict_row).execute("SELECT role_name, locked, reason FROM guardian.lockdown_roles()")
    )


def describe_lockdown(row: dict[str, Any]) -> str:
    """One line for ``pg-guardian status``."""
    roles = ", ".join(row["roles"]) or "no application roles"
    text = (
        f"LOCKED DOWN since {row['started_at']:%Y-%m-%d %H:%M:%S %Z} by {row['started_by']}"
        f"{' (automatic)' if row['automatic'] else ''}: {row['reason']}; "
        f"{row['revoked']} write grant(s) taken from {roles}"
    )
    if row.get("not_revoked"):
        text += f"; {len(row['not_revoked'])} kept (see guardian.lockdown_status)"
    return text + "; lift it with `pg-guardian lockdown unlock`"
