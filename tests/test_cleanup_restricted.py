"""Cleanups that include rows protected by ON DELETE RESTRICT / NO ACTION (p_include_restricted)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import response
from pg_guardian.cli import main
from pg_guardian.response.policy import statements
from support.queries import scalar
from support.response import (
    REAL_CLINIC,
    SNAPSHOT,
    TEST_CLINIC,
    contamination_alert,
    count,
    grant_app,
    load_dental,
    seed_test_clinic,
)

# A test clinic (id 2) whose patients have appointments (ON DELETE RESTRICT to the patient);
# an appointment has notes (CASCADE) and treatments (RESTRICT again, a second level), and a
# treatment is billed by an invoice that stays (SET NULL). Clinic 1 is real and keeps
# everything.
CARE = """
CREATE SCHEMA care;
CREATE TABLE care.clinics (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE care.patients (id int PRIMARY KEY, clinic_id int NOT NULL REFERENCES care.clinics ON DELETE CASCADE,
                            name text NOT NULL, born date, tags text[]);
CREATE TABLE care.appointments (id int PRIMARY KEY,
                                patient_id int NOT NULL REFERENCES care.patients ON DELETE RESTRICT,
                                at timestamptz NOT NULL, length interval, notes json, scan bytea);
CREATE TABLE care.appointment_notes (id int PRIMARY KEY,
                                     appointment_id int NOT NULL REFERENCES care.appointments ON DELETE CASCADE,
                                     body text);
CREATE TABLE care.treatments (id int PRIMARY KEY,
                              appointment_id int NOT NULL REFERENCES care.appointments ON DELETE RESTRICT,
                              code text, price numeric(10, 2));
CREATE TABLE care.invoices (id int PRIMARY KEY, treatment_id int REFERENCES care.treatments ON DELETE SET NULL,
                            amount numeric(10, 2));
SELECT guardian.watch('care.clinics');
INSERT INTO care.clinics VALUES (1, 'Greatest Smiles', 'desk@greatestsmiles.com'),
                                (2, 'Bright Dental', 'front@example.com');
INSERT INTO care.patients VALUES (10, 1, 'Rosa Diaz', '1980-02-29', '{a}'),
                                 (20, 2, 'Ann Lee', '1999-12-31', '{"a b",NULL}'),
                                 (21, 2, 'Bob Ray', NULL, '{}');
INSERT INTO care.appointments VALUES
    (100, 10, '2024-03-01 10:00+02', '30 minutes', '{"z": 1, "a": [1.50]}', NULL),
    (200, 20, '2024-03-01 10:00:00.5+02', '1 day 02:03:04.5', '{"b":  2,"a":1}', '\\x00ff'),
    (201, 20, '2024-03-02 09:30+00', NULL, NULL, NULL),
    (210, 21, '2024-03-03 08:00+00', '45 minutes', '[]', ''::bytea);
INSERT INTO care.appointment_notes VALUES (1000, 100, 'real'), (2000, 200, E'line one\\nline two');
INSERT INTO care.treatments VALUES (300, 200, 'D1110', 99.95), (301, 100, 'D0120', 45.00);
INSERT INTO care.invoices VALUES (400, 300, 99.95), (401, 301, 45.00), (402, NULL, 1.00);
"""

# Every row of the care schema as text, in a fixed order: equal strings mean identical rows.
CARE_ROWS = """
SELECT string_agg(x.t, E'\\n' ORDER BY x.t) FROM (
    SELECT 'c ' || t::text AS t FROM care.clinics AS t
    UNION ALL SELECT 'p ' || t::text FROM care.patients AS t
    UNION ALL SELECT 'a ' || t::text FROM care.appointments AS t
    UNION ALL SELECT 'n ' || t::text FROM care.appointment_notes AS t
    UNION ALL SELECT 't ' || t::text FROM care.treatments AS t
    UNION ALL SELECT 'i ' || t::text FROM care.invoices AS t) AS x
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def care(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(CARE)
    return db


def _ids(conn: psycopg.Connection, table: str) -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]


def test_without_the_option_the_refusal_names_the_rows_and_the_option(care: psycopg.Connection) -> None:
    alert = contamination_alert(care, "care.clinics")
    before = scalar(care, CARE_ROWS)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as err:
        care.execute("SELECT guardian.cleanup_script(%s::uuid)", (alert,))
    diag = err.value.diag
    assert diag.message_primary == (
        "the cleanup is blocked: 3 row(s) of care.appointments reference care.patients through "
        'appointments_patient_id_fkey (ON DELETE RESTRICT / NO ACTION): {"id": 200}, {"id": 201}, {"id": 210}'
    )
    assert "Nothing was changed" in (diag.message_detail or "")
    hint = diag.message_hint or ""
    assert hint.startswith(
        "If those rows are test data too, run the cleanup with p_include_restricted => true (CLI: --include-restricted)"
    )
    assert f"guardian.cleanup_plan('{alert}'::uuid, p_include_restricted => true)" in hint
    # The hint's command runs as it is.
    hinted = care.execute(hint.split("see first what it would remove: ")[1]).fetchall()
    assert ("care.appointments", "delete_restricted", 3) in [(r[1], r[2], r[3]) for r in hinted]
    assert scalar(care, CARE_ROWS) == before


def test_the_plan_lists_restricted_rows_apart_with_a_warning(care: psycopg.Connection) -> None:
    alert = contamination_alert(care, "care.clinics")
    before = scalar(care, CARE_ROWS)
    plan = response.cleanup_plan(care, alert=alert, include_restricted=True)
    assert [(r["table_name"], r["action"], r["rows"]) for r in plan] == [
        ("care.invoices", "set null", 1),  # invoice 400 stays, its treatment goes
        ("care.appointment_notes", "delete_restricted", 1),
        ("care.treatments", "delete_restricted", 1),  # RESTRICT again, a second level
        ("care.appointments", "delete_restricted", 3),
        ("care.patients", "delete", 2),
        ("care.clinics", "delete", 1),
    ]
    restricted = {r["table_name"]: r for r in plan if r["action"] == "delete_restricted"}
    assert restricted["care.appointments"]["via"] == "appointments_patient_id_fkey (ON DELETE RESTRICT)"
    assert restricted["care.appointment_notes"]["via"] == "appointment_notes_appointment_id_fkey (ON DELETE CASCADE)"
    assert restricted["care.treatments"]["via"] == "treatments_appointment_id_fkey (ON DELETE RESTRICT)"
    warning = restricted["care.appointments"]["warning"]
    assert warning.startswith("3 row(s) of care.appointments were protected by ON DELETE RESTRICT")
    assert "removed because p_include_restricted (--include-restricted) was given" in warning
    assert all(r["warning"] is None for r in plan if r["action"] != "delete_restricted")
    # Without the option the same rows are a blocked check, with a warning naming the option.
    plain = response.cleanup_plan(care, alert=alert)
    blocked = [r for r in plain if r["action"] == "blocked"]
    assert [(r["table_name"], r["rows"]) for r in blocked] == [("care.appointments", 3)]
    assert "--include-restricted" in blocked[0]["warning"]
    assert scalar(care, CARE_ROWS) == before


def test_the_cleanup_removes_restricted_rows_two_levels_deep_and_restore_brings_all_back(
    care: psycopg.Connection,
) -> None:
    alert = contamination_alert(care, "care.clinics")
    before = scalar(care, CARE_ROWS)
    script = response.cleanup_script(care, alert=alert, include_restricted=True)
    header = script.split("BEGIN;")[0]
    assert "-- WARNING: it also removes 5 row(s) in step(s) 2, 3, 4 (delete_restricted)" in header
    assert f"SELECT guardian.cleanup_script('{alert}'::uuid, p_include_restricted => true);" in header
    assert "delete_restricted" in header
    # BEGIN, begin, set null, three groups of restricted deletes, patients, clinics, finish, COMMIT
    assert len(statements(script)) == 10

    summary = response.run_script(care, script)

    assert "quarantined 9 row(s)" in summary
    assert _ids(care, "care.clinics") == [1]
    assert _ids(care, "care.patients") == [10]
    assert _ids(care, "care.appointments") == [100]
    assert _ids(care, "care.appointment_notes") == [1000]
    assert _ids(care, "care.treatments") == [301]
    assert care.execute("SELECT id, treatment_id FROM care.invoices ORDER BY id").fetchall() == [
        (400, None),
        (401, 301),
        (402, None),
    ]
    batch = str(scalar(care, "SELECT id FROM guardian.quarantine_batches"))
    quarantined = dict(
        care.execute(
            "SELECT table_name || ' ' || action, count(*) FROM guardian.quarantine WHERE batch_id = %s GROUP BY 1",
            (batch,),
        ).fetchall()
    )
    assert quarantined == {
        "care.clinics delete": 1,
        "care.patients delete": 2,
        "care.appointments delete": 3,
        "care.appointment_notes delete": 1,
        "care.treatments delete": 1,
        "care.invoices set null": 1,
    }
    steps = scalar(care, "SELECT steps FROM guardian.quarantine_batches WHERE id = %s", (batch,))
    assert [s["table"] for s in steps if s["restricted"]] == [
        "care.appointment_notes",
        "care.treatments",
        "care.appointments",
    ]
    assert count(care, "SELECT count(*) FROM guardian.open_alerts WHERE type = 'TEST_DATA_CONTAMINATION'") == 0

    response.restore(care, batch, allowlist=False)
    assert scalar(care, CARE_ROWS) == before


def test_a_script_made_with_the_option_checks_its_restricted_rows_when_it_runs(care: psycopg.Connection) -> None:
    script = response.cleanup_script(care, alert=contamination_alert(care, "care.clinics"), include_restricted=True)
    care.execute("INSERT INTO care.treatments VALUES (302, 201, 'D0140', 10)")  # one more restricted row since
    before = scalar(care, CARE_ROWS)
    with pytest.raises(response.ResponseError, match=r"step 3 \(delete care.treatments\): expected 1, found 2"):
        response.run_script(care, script)
    assert scalar(care, CARE_ROWS) == before


def test_a_table_reached_through_cascade_and_restrict_gets_both_steps_in_one_statement(
    db: psycopg.Connection,
) -> None:
    load_dental(db)
    seed_test_clinic(db)
    # A real patient's appointment at the test clinic (appointments_clinic_id_fkey is RESTRICT),
    # with an invoice of that real patient (SET NULL): the appointment goes, the invoice stays.
    db.execute(
        """INSERT INTO dental.appointments (patient_id, clinic_id, starts_at, procedure)
           SELECT id, %s, '2024-05-01 10:00+00', 'check-up' FROM dental.patients WHERE clinic_id = %s LIMIT 1""",
        (TEST_CLINIC, REAL_CLINIC),
    )
    db.execute(
        """INSERT INTO dental.invoices (patient_id, appointment_id, amount)
           SELECT patient_id, id, 12.50 FROM dental.appointments WHERE procedure = 'check-up'"""
    )
    before = scalar(db, SNAPSHOT)
    alert = contamination_alert(db)
    plan = response.cleanup_plan(db, alert=alert, include_restricted=True)
    assert [(r["table_name"], r["action"], r["rows"]) for r in plan] == [
        ("dental.invoices", "set null", 2),
        ("dental.invoices", "delete", 2),
        ("dental.appointments", "delete", 2),  # the test patients' (CASCADE)
        ("dental.appointments", "delete_restricted", 1),  # the real patient's, at the test clinic
        ("dental.patients", "delete", 2),
        ("dental.clinics", "delete", 1),
    ]
    script = response.cleanup_script(db, alert=alert, include_restricted=True)
    assert "RETURNING 1),\nstep_4 AS (\n    DELETE FROM dental.appointments" in script
    assert "quarantined 10 row(s)" in response.run_script(db, script)
    assert count(db, "SELECT count(*) FROM dental.appointments WHERE clinic_id = %s", (TEST_CLINIC,)) == 0
    response.restore(db, str(scalar(db, "SELECT id FROM guardian.quarantine_batches")), allowlist=False)
    assert scalar(db, SNAPSHOT) == before


def test_no_action_references_are_included_like_restrict(db: psycopg.Connection) -> None:
    db.execute("""
        CREATE TABLE public.accounts (id int PRIMARY KEY, email text);
        CREATE TABLE public.orders (id int PRIMARY KEY, account_id int REFERENCES public.accounts, total numeric);
        SELECT guardian.watch('public.accounts');
        INSERT INTO public.accounts VALUES (1, 'shop@example.com'), (2, 'ops@realshop.com');
        INSERT INTO public.orders VALUES (10, 1, 9.99), (11, 1, 0.01), (20, 2, 5);
    """)
    rows = (
        "SELECT string_agg(t, '|' ORDER BY t) FROM (SELECT a::text AS t FROM public.accounts AS a "
        "UNION ALL SELECT o::text FROM public.orders AS o) AS x"
    )
    before = scalar(db, rows)
    alert = contamination_alert(db, "public.accounts")
    with pytest.raises(response.ResponseError, match=r"2 row\(s\) of public.orders reference public.accounts"):
        response.cleanup_script(db, alert=alert)
    plan = response.cleanup_plan(db, alert=alert, include_restricted=True)
    assert [(r["table_name"], r["action"], r["rows"], r["via"]) for r in plan] == [
        ("public.orders", "delete_restricted", 2, "orders_account_id_fkey (ON DELETE NO ACTION)"),
        ("public.accounts", "delete", 1, "the contaminated records"),
    ]
    response.run_script(db, response.cleanup_script(db, alert=alert, include_restricted=True))
    assert _ids(db, "public.orders") == [20]
    response.restore(db, str(scalar(db, "SELECT id FROM guardian.quarantine_batches")))
    assert scalar(db, rows) == before


def test_a_self_referencing_restrict_key_removes_the_chain_in_one_statement(db: psycopg.Connection) -> None:
    db.execute("""
        CREATE TABLE public.staff (id int PRIMARY KEY, email text,
                                   manager int REFERENCES public.staff ON DELETE RESTRICT);
        SELECT guardian.watch('public.staff');
        INSERT INTO public.staff VALUES (1, 'boss@example.com', NULL), (2, 'ana@realco.com', 1),
                                        (3, 'bo@realco.com', 2), (4, 'cy@realco.com', NULL);
    """)
    rows = "SELECT string_agg(s::text, '|' ORDER BY s::text) FROM public.staff AS s"
    before = scalar(db, rows)
    alert = contamination_alert(db, "public.staff")
    with pytest.raises(response.ResponseError, match=r"1 row\(s\) of public.staff reference public.staff"):
        response.cleanup_script(db, alert=alert)
    plan = response.cleanup_plan(db, alert=alert, include_restricted=True)
    assert [(r["action"], r["rows"]) for r in plan] == [("delete", 1), ("delete_restricted", 2)]
    script = response.cleanup_script(db, alert=alert, include_restricted=True)
    assert "RETURNING 1),\nstep_" in script  # both steps of the table in one statement
    response.run_script(db, script)
    assert _ids(db, "public.staff") == [4]
    response.restore(db, str(scalar(db, "SELECT id FROM guardian.quarantine_batches")))
    assert scalar(db, rows) == before


def test_cli_include_restricted_end_to_end(care: psycopg.Connection, dsn: str) -> None:
    alert = contamination_alert(care, "care.clinics")
    before = scalar(care, CARE_ROWS)

    code, out, err = run("cleanup", "plan", alert, "--dsn", dsn)
    assert code == 1 and "blocked" in out and "--include-restricted" in err
    code, _, err = run("cleanup", "script", alert, "--dsn", dsn)
    assert code == 2
    assert "the cleanup is blocked: 3 row(s) of care.appointments" in err and "--include-restricted" in err

    code, out, err = run("cleanup", "plan", alert, "--include-restricted", "--dsn", dsn)
    assert code == 0, err
    assert "delete_restricted" in out
    assert "warning: step 4 (delete_restricted care.appointments): 3 row(s)" in err

    code, out, err = run("cleanup", "run", alert, "--include-restricted", "--force", "--dsn", dsn)
    assert code == 0, err
    assert "quarantined 9 row(s)" in out
    assert _ids(care, "care.appointments") == [100]

    batch = str(scalar(care, "SELECT id FROM guardian.quarantine_batches"))
    code, out, err = run("quarantine", "restore", batch, "--no-allowlist", "--dsn", dsn)
    assert code == 0, err
    assert scalar(care, CARE_ROWS) == before


def test_auto_cleanup_never_includes_restricted_rows(
    db: psycopg.Connection,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    load_dental(db)
    make_role("dental_app")
    grant_app(db, "dental_app")
    app = connect(dbname, user="dental_app")
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    clinic = "33333333-aaaa-4aaa-8aaa-000000000001"
    with app.transaction():
        app.execute(
            "INSERT INTO dental.clinics (id, name, email) VALUES (%s, 'Bright Dental', 'front@example.com')", (clinic,)
        )
        # A real patient's appointment at the test clinic: appointments_clinic_id_fkey is RESTRICT.
        app.execute(
            """INSERT INTO dental.appointments (patient_id, clinic_id, starts_at, procedure)
               SELECT id, %s, now(), 'check-up' FROM dental.patients WHERE clinic_id = %s LIMIT 1""",
            (clinic, REAL_CLINIC),
        )
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE id = %s", (clinic,)) == 1
    assert count(db, "SELECT count(*) FROM guardian.quarantine_batches") == 0
    message = scalar(db, "SELECT message FROM guardian.monitoring_alerts WHERE type = 'AUTO_CLEANUP_SKIPPED'")
    appointment = scalar(db, "SELECT id FROM dental.appointments WHERE clinic_id = %s", (clinic,))
    assert message.startswith(
        "auto-cleanup skipped: 1 row(s) of dental.appointments reference dental.clinics through "
        f'appointments_clinic_id_fkey (ON DELETE RESTRICT / NO ACTION), e.g. {{"id": {appointment}}}'
    )
    assert "p_include_restricted => true" in message
    # The script stored with the alert is refused the same way; an automatic cleanup may not ask.
    alert = contamination_alert(db, "dental.clinics")
    metadata = scalar(db, "SELECT metadata FROM guardian.monitoring_alerts WHERE id = %s", (alert,))
    assert "the cleanup is blocked" in metadata["cleanup_script_error"]
    # A person can include them.
    response.run_script(db, response.cleanup_script(db, alert=alert, include_restricted=True))
    assert count(db, "SELECT count(*) FROM dental.appointments WHERE clinic_id = %s", (clinic,)) == 0


def test_an_automatic_cleanup_may_not_register_restricted_rows(db: psycopg.Connection) -> None:
    db.execute(CARE)
    alert = contamination_alert(db, "care.clinics")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="never removes rows protected by ON DELETE"):
        db.execute(
            "SELECT guardian._cleanup_prepare(guardian._alert_roots(%s::uuid), %s::uuid, true, true)", (alert, alert)
        )
