"""Shared set-up for the auto-response tests: the dental sample with test data in it."""

from __future__ import annotations

from typing import Any

import psycopg
from pg_guardian.demo import package_sql
from psycopg import sql

TEST_CLINIC = "11111111-aaaa-4aaa-8aaa-000000000001"
REAL_CLINIC = "7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81"  # Greatest Smiles Dental, from demo_data.sql
TEST_PATIENTS = ("22222222-aaaa-4aaa-8aaa-000000000001", "22222222-aaaa-4aaa-8aaa-000000000002")

# Every table's rows as text, in a fixed order: equal strings mean identical rows.
SNAPSHOT = """
SELECT string_agg(x.t, E'\\n' ORDER BY x.t) FROM (
    SELECT 'c ' || c::text AS t FROM dental.clinics AS c
    UNION ALL SELECT 'p ' || p::text FROM dental.patients AS p
    UNION ALL SELECT 'a ' || a::text FROM dental.appointments AS a
    UNION ALL SELECT 'i ' || i::text FROM dental.invoices AS i) AS x
"""


def load_dental(conn: psycopg.Connection, *, data: bool = True) -> None:
    """The sample schema (and its real-looking rows), watched as the demo watches it."""
    conn.execute(package_sql("demo_schema.sql"))
    if data:
        conn.execute(package_sql("demo_data.sql"))
    conn.execute("SELECT guardian.watch('dental.clinics')")
    conn.execute("SELECT guardian.watch('dental.patients')")


def seed_test_clinic(conn: psycopg.Connection) -> None:
    """A test clinic (two rules match it) with two patients, their appointments and invoices;
    one invoice of a real patient points at a test appointment (ON DELETE SET NULL)."""
    conn.execute(
        "INSERT INTO dental.clinics (id, name, email, phone) "
        "VALUES (%s, 'Test Clinic', 'front@example.com', '+1 415 872 0000')",
        (TEST_CLINIC,),
    )
    conn.execute(
        """INSERT INTO dental.patients (id, clinic_id, first_name, last_name, email, phone,
                                        date_of_birth, allergies, preferences, balance, xray,
                                        created_at)
           VALUES (%s, %s, 'Ann', 'Lee', 'ann.lee@gmail.com', '+1 628 301 4410', '1999-12-31',
                   '{"a b",latex,NULL}', '{"z": 1, "a": [1.50, null], "s": "x''y"}', 1234567.89,
                   '\\x00ff10', '2024-02-29 23:59:59.123456+05:30'),
                  (%s, %s, 'Bob', 'Ray', 'bob.ray@gmail.com', NULL, NULL, '{}', '{}', 0, NULL,
                   now())""",
        (TEST_PATIENTS[0], TEST_CLINIC, TEST_PATIENTS[1], TEST_CLINIC),
    )
    conn.execute(
        """INSERT INTO dental.appointments
                  (patient_id, clinic_id, starts_at, duration, procedure, notes)
           VALUES (%s, %s, '2024-03-01 10:00:00.5+02', '1 day 02:03:04.5', 'cleaning',
                   E'line one\\nline two'),
                  (%s, %s, '2024-03-02 09:30:00+00', '45 minutes', 'x-ray', NULL)""",
        (TEST_PATIENTS[0], TEST_CLINIC, TEST_PATIENTS[1], TEST_CLINIC),
    )
    conn.execute(
        """INSERT INTO dental.invoices (patient_id, appointment_id, amount, line_items, paid)
           SELECT a.patient_id, a.id, 99.95, '[{"item": "cleaning", "qty": 1}]', false
             FROM dental.appointments AS a WHERE a.clinic_id = %s""",
        (TEST_CLINIC,),
    )
    # A real patient's invoice that refers to a test appointment: kept, its link set to NULL.
    conn.execute(
        """INSERT INTO dental.invoices (patient_id, appointment_id, amount)
           SELECT p.id, (SELECT min(a.id) FROM dental.appointments AS a WHERE a.clinic_id = %s),
                  10.00
             FROM dental.patients AS p WHERE p.clinic_id = %s ORDER BY p.created_at LIMIT 1""",
        (TEST_CLINIC, REAL_CLINIC),
    )


def contamination_alert(conn: psycopg.Connection, table: str = "dental.clinics", rule: str | None = None) -> str:
    """The open contamination alert of a table (optionally of one rule)."""
    row = conn.execute(
        """SELECT id FROM guardian.monitoring_alerts
            WHERE type = 'TEST_DATA_CONTAMINATION' AND table_name = %s AND resolved_at IS NULL
              AND (%s::text IS NULL OR metadata ->> 'rule' = %s)
            ORDER BY created_at, message LIMIT 1""",
        (table, rule, rule),
    ).fetchone()
    assert row is not None, f"no open contamination alert for {table}"
    return str(row[0])


def count(conn: psycopg.Connection, query: str, params: Any = None) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def grant_app(conn: psycopg.Connection, role: str, *, delete: bool = True) -> None:
    """An application role with the usual rights on the dental schema."""
    privileges = "SELECT, INSERT, UPDATE, DELETE" if delete else "SELECT, INSERT, UPDATE"
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA dental TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT " + privileges + " ON ALL TABLES IN SCHEMA dental TO {}").format(sql.Identifier(role)))
