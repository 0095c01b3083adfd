"""A known alert history for the report tests: fixed timestamps, outcomes, acknowledgements."""

from __future__ import annotations

from typing import Any

import psycopg

FROM, TO = "2026-03-02 00:00+00", "2026-03-05 00:00+00"

# (severity, type, created, acknowledged, resolved, outcome, table, metadata, context)
HISTORY: list[tuple[Any, ...]] = [
    # The period (a Monday to a Wednesday, UTC).
    (
        "CRITICAL",
        "TEST_DATA_CONTAMINATION",
        "2026-03-02 10:00+00",
        "2026-03-02 10:02+00",
        "2026-03-02 10:30+00",
        "cleaned",
        "dental.patients",
        {"rule": "reserved_example_domain", "columns": ["email"], "affected_records": 3},
        {"session_user": "app", "application_name": "web", "client_addr": "10.0.0.5"},
    ),
    (
        "CRITICAL",
        "TEST_DATA_CONTAMINATION",
        "2026-03-03 23:00+00",
        "2026-03-03 23:10+00",
        "2026-03-04 00:00+00",
        "false_positive",
        "dental.clinics",
        {"rule": "test_marker", "columns": ["first_name"], "affected_records": 1},
        {"session_user": "ci", "application_name": "seed", "client_addr": "10.0.0.9"},
    ),
    ("HIGH", "BULK_OPERATION", "2026-03-02 14:00+00", None, None, None, "dental.invoices", {}, {}),
    # Rejected in strict mode: the writer is in metadata.session; closed without an acknowledgement.
    (
        "HIGH",
        "STRICT_MODE_REJECTION",
        "2026-03-04 07:00+00",
        None,
        "2026-03-04 07:05+00",
        "confirmed",
        "dental.patients",
        {
            "rule": "reserved_example_domain",
            "column": "email",
            "session": {"session_user": "app", "application_name": "web", "client_addr": "10.0.0.5"},
        },
        {"session_user": "recorder"},
    ),
    ("LOW", "LOGIN_FAILED", "2026-03-04 12:00+00", None, None, None, None, {}, {}),
    # The previous period (same length, just before).
    ("MEDIUM", "ENVIRONMENT_DRIFT", "2026-02-28 12:00+00", None, "2026-03-02 12:00+00", None, None, {}, {}),
    (
        "CRITICAL",
        "TEST_DATA_CONTAMINATION",
        "2026-02-28 08:00+00",
        "2026-02-28 08:01+00",
        "2026-02-28 09:00+00",
        "cleaned",
        "dental.patients",
        {"rule": "test_marker", "columns": ["email"]},
        {},
    ),
    # Outside both: the end is excluded, and so is what came before the previous period.
    ("HIGH", "BULK_OPERATION", "2026-03-05 00:00+00", None, "2026-03-05 01:00+00", None, "dental.invoices", {}, {}),
    ("INFO", "ENVIRONMENT_CHANGED", "2026-02-26 23:59+00", None, "2026-02-27 00:00+00", None, None, {}, {}),
]


def add_alerts(db: psycopg.Connection, rows: list[tuple[Any, ...]], environment: str = "production") -> None:
    for sev, typ, created, acked, resolved, outcome, table, metadata, context in rows:
        db.execute(
            """INSERT INTO guardian.monitoring_alerts
                   (severity, type, message, table_name, environment, metadata, context, created_at,
                    acknowledged_at, resolved_at, outcome)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                sev,
                typ,
                f"{typ} at {created}",
                table,
                environment,
                psycopg.types.json.Jsonb(metadata),
                psycopg.types.json.Jsonb(context),
                created,
                acked,
                resolved,
                outcome,
            ),
        )


def fill_history(db: psycopg.Connection) -> psycopg.Connection:
    """The known history: alerts of the period and the one before, findings, schema changes,
    relay messages, and a drift check that ran."""
    db.execute("SELECT guardian.set_environment('production')")
    add_alerts(db, HISTORY)
    db.execute("CREATE TABLE public.t (id int)")
    for record, at in (("r1", "2026-03-02 10:00+00"), ("r1", "2026-03-03 09:00+00"), ("r2", "2026-03-03 09:00+00")):
        db.execute(
            """INSERT INTO guardian.findings (relid, record_id, column_name, rule, severity, operation, created_at)
               VALUES ('public.t', %s, 'email', 'test_marker', 'HIGH', 'INSERT', %s)""",
            (record, at),
        )
    for at in ("2026-03-03 08:00+00", "2026-03-03 09:00+00"):
        db.execute(
            """INSERT INTO guardian.schema_changes (occurred_at, command_tag, source, role_name, session_user_name)
               VALUES (%s, 'ALTER TABLE', 'event trigger', 'postgres', 'postgres')""",
            (at,),
        )
    for channel, status, attempts in (("slack", "delivered", 1), ("slack", "delivered", 3), ("email", "dead", 5)):
        db.execute(
            """INSERT INTO guardian.relay_messages (channel, idempotency_key, status, attempts, created_at)
               VALUES (%s, gen_random_uuid()::text, %s, %s, '2026-03-03 10:00+00')""",
            (channel, status, attempts),
        )
    db.execute("UPDATE guardian.jobs SET last_ok_at = '2026-03-04 00:00+00' WHERE name = 'drift_check'")
    return db
