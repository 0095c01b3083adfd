"""Cleanup scripts: foreign-key order from the catalog, quarantine first, guarded counts."""

from __future__ import annotations

import psycopg
import pytest
from pg_guardian import response
from pg_guardian.response.policy import statements
from support.queries import scalar
from support.response import (
    REAL_CLINIC,
    SNAPSHOT,
    TEST_CLINIC,
    contamination_alert,
    count,
    load_dental,
    seed_test_clinic,
)


@pytest.fixture
def dental(db: psycopg.Connection) -> psycopg.Connection:
    load_dental(db)
    seed_test_clinic(db)
    return db


def test_plan_shows_each_step_in_foreign_key_order_and_changes_nothing(
    dental: psycopg.Connection,
) -> None:
    before = scalar(dental, SNAPSHOT)
    plan = response.cleanup_plan(dental, alert=contamination_alert(dental))
    steps = [(r["table_name"], r["action"], r["rows"]) for r in plan]
    assert steps == [
        ("dental.invoices", "set null", 1),  # the real patient's invoice keeps its row
        ("dental.invoices", "delete", 2),
        ("dental.appointments", "delete", 2),
        ("dental.patients", "delete", 2),
        ("dental.clinics", "delete", 1),
        ("dental.appointments", "blocked", 0),  # appointments_clinic_id_fkey is ON DELETE RESTRICT
    ]
    assert scalar(dental, SNAPSHOT) == before


def test_script_removes_the_clinic_and_its_dependents_quarantining_everything(
    dental: psycopg.Connection,
) -> None:
    alert = contamination_alert(dental, rule="reserved_example_domain")
    script = response.cleanup_script(dental, alert=alert)
    assert len(statements(script)) == 9  # BEGIN, begin, 5 steps (one is SET NULL), finish, COMMIT
    assert "ON DELETE" not in script.split("BEGIN;")[1].split("cleanup_begin")[0]
    real_invoice = scalar(
        dental,
        "SELECT i.id FROM dental.invoices AS i JOIN dental.patients AS p ON p.id = i.patient_id WHERE p.clinic_id = %s",
        (REAL_CLINIC,),
    )

    dental.execute(script)  # one simple-query message: BEGIN ... COMMIT

    assert count(dental, "SELECT count(*) FROM dental.clinics WHERE id = %s", (TEST_CLINIC,)) == 0
    assert count(dental, "SELECT count(*) FROM dental.patients WHERE clinic_id = %s", (TEST_CLINIC,)) == 0
    assert count(dental, "SELECT count(*) FROM dental.appointments WHERE clinic_id = %s", (TEST_CLINIC,)) == 0
    assert scalar(dental, "SELECT appointment_id FROM dental.invoices WHERE id = %s", (real_invoice,)) is None
    assert count(dental, "SELECT count(*) FROM dental.clinics") == 2  # the real clinics stay
    quarantined = dict(
        dental.execute(
            "SELECT q.table_name || ' ' || q.action, count(*) FROM guardian.quarantine AS q GROUP BY 1"
        ).fetchall()
    )
    assert quarantined == {
        "dental.clinics delete": 1,
        "dental.patients delete": 2,
        "dental.appointments delete": 2,
        "dental.invoices delete": 2,
        "dental.invoices set null": 1,
    }
    # Both alerts about the clinic are resolved (its one record is gone); the cleanup is an alert.
    assert (
        count(
            dental,
            "SELECT count(*) FROM guardian.open_alerts WHERE type = 'TEST_DATA_CONTAMINATION'",
        )
        == 0
    )
    note = scalar(dental, "SELECT resolution_note FROM guardian.monitoring_alerts WHERE id = %s", (alert,))
    assert "guardian.restore(" in note
    message = scalar(
        dental,
        "SELECT message FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_QUARANTINED'",
    )
    assert "quarantined 8 row(s)" in message and "SELECT guardian.restore(" in message


def test_script_is_stored_with_its_alert_for_the_relay(dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    script = response.cleanup_script(dental, alert=alert)
    metadata = scalar(dental, "SELECT metadata FROM guardian.monitoring_alerts WHERE id = %s", (alert,))
    assert metadata["cleanup_script"] == script
    assert metadata["cleanup_plan_query"] == f"SELECT * FROM guardian.cleanup_plan('{alert}');"


def test_script_run_statement_by_statement_from_the_cli_path(dental: psycopg.Connection) -> None:
    script = response.cleanup_script(dental, alert=contamination_alert(dental))
    summary = response.run_script(dental, script)
    assert summary.startswith("cleanup by postgres quarantined 8 row(s)")


def test_script_aborts_with_nothing_changed_when_the_rows_changed_since(
    dental: psycopg.Connection,
) -> None:
    script = response.cleanup_script(dental, alert=contamination_alert(dental))
    dental.execute(
        "INSERT INTO dental.invoices (patient_id, amount) "
        "SELECT id, 1 FROM dental.patients WHERE clinic_id = %s LIMIT 1",
        (TEST_CLINIC,),
    )
    before = scalar(dental, SNAPSHOT)
    with pytest.raises(
        response.ResponseError,
        match=r"the data changed since cleanup script .* was generated: "
        r"step 2 \(delete dental.invoices\): expected 2, found 3",
    ):
        response.run_script(dental, script)
    assert scalar(dental, SNAPSHOT) == before
    assert count(dental, "SELECT count(*) FROM guardian.quarantine_batches") == 0


def test_running_a_script_twice_is_refused(dental: psycopg.Connection) -> None:
    script = response.cleanup_script(dental, alert=contamination_alert(dental))
    response.run_script(dental, script)
    with pytest.raises(response.ResponseError, match=r"already ran.*guardian.restore"):
        response.run_script(dental, script)


def test_an_edited_script_is_refused(dental: psycopg.Connection) -> None:
    script = response.cleanup_script(dental, alert=contamination_alert(dental))
    edited = script.replace('"5": 1', '"5": 2')
    with pytest.raises(response.ResponseError, match="was edited"):
        response.run_script(dental, edited)


def test_steps_run_outside_the_capturing_transaction_are_refused(
    dental: psycopg.Connection,
) -> None:
    script = response.cleanup_script(dental, alert=contamination_alert(dental))
    parts = statements(script, without_transaction=True)
    dental.execute(parts[0])  # cleanup_begin alone, autocommit
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="not captured in this transaction"):
        dental.execute(parts[1])
    # Run as a whole afterwards, it starts again from scratch.
    response.run_script(dental, script)
    assert count(dental, "SELECT count(*) FROM dental.clinics WHERE id = %s", (TEST_CLINIC,)) == 0


def test_a_restrict_reference_from_a_row_that_stays_blocks_the_cleanup(
    dental: psycopg.Connection,
) -> None:
    # A real patient's appointment at the test clinic: ON DELETE RESTRICT, and not removed.
    dental.execute(
        """INSERT INTO dental.appointments (patient_id, clinic_id, starts_at, procedure)
           SELECT id, %s, now(), 'check-up' FROM dental.patients WHERE clinic_id = %s LIMIT 1""",
        (TEST_CLINIC, REAL_CLINIC),
    )
    plan = response.cleanup_plan(dental, alert=contamination_alert(dental))
    blocked = [r for r in plan if r["action"] == "blocked"]
    assert blocked[0]["rows"] == 1 and "not removed themselves" in blocked[0]["detail"]
    with pytest.raises(
        response.ResponseError,
        match=r"the cleanup is blocked: 1 row\(s\) of dental.appointments reference dental.clinics "
        r"through appointments_clinic_id_fkey",
    ):
        response.cleanup_script(dental, alert=contamination_alert(dental))


def test_cleanup_for_an_alert_whose_rows_are_gone_says_so(dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    dental.execute("DELETE FROM dental.appointments WHERE clinic_id = %s", (TEST_CLINIC,))
    dental.execute("DELETE FROM dental.clinics WHERE id = %s", (TEST_CLINIC,))
    with pytest.raises(
        response.ResponseError,
        match=r"none of the 1 contaminated record\(s\) is in dental.clinics any more"
        r".*resolve_alert",
    ):
        response.cleanup_script(dental, alert=alert)


def test_cleanup_for_a_table_dropped_since_the_alert_says_so(dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    dental.execute("DROP TABLE dental.clinics CASCADE")
    with pytest.raises(
        response.ResponseError,
        match=r"table dental.clinics of alert .* no longer exists.*resolve_alert",
    ):
        response.cleanup_script(dental, alert=alert)


def test_a_script_whose_table_was_dropped_before_it_ran_changes_nothing(
    dental: psycopg.Connection,
) -> None:
    script = response.cleanup_script(dental, alert=contamination_alert(dental))
    dental.execute("ALTER TABLE dental.clinics RENAME TO clinics_old")
    with pytest.raises(response.ResponseError, match=r"table dental\.clinics no longer exists"):
        response.run_script(dental, script)


def test_cleanup_of_other_alert_types_is_refused(dental: psycopg.Connection) -> None:
    alert = scalar(dental, "SELECT guardian.raise_alert('BULK_OPERATION', 'HIGH', 'many rows')")
    with pytest.raises(response.ResponseError, match="is a BULK_OPERATION alert"):
        response.cleanup_script(dental, alert=str(alert))


def test_script_for_a_scan_result(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.unwatch('dental.clinics')")
    dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Bright Smiles (TEST)', 'a@b.co')")
    found = [r[0] for r in dental.execute("SELECT DISTINCT record_id FROM guardian.scan('dental.clinics')")]
    assert len(found) == 2
    script = response.cleanup_script(dental, table="dental.clinics", records=[found[0]])
    assert f'"id": "{found[0]}"' in script and found[1] not in script.split("BEGIN;")[1]
    with pytest.raises(response.ResponseError, match="1 of the records given are not test data"):
        response.cleanup_script(dental, table="dental.clinics", records=[REAL_CLINIC])


def test_composite_keys_self_references_and_cycles(db: psycopg.Connection) -> None:
    db.execute("""
        CREATE SCHEMA org;
        CREATE TABLE org.tenants (region text, code int, name text NOT NULL, admin_email text,
                                  owner_region text, owner_code int,
                                  PRIMARY KEY (region, code));
        CREATE TABLE org.teams (id int PRIMARY KEY, region text, code int, lead int, parent int,
                                FOREIGN KEY (region, code) REFERENCES org.tenants ON DELETE CASCADE,
                                FOREIGN KEY (parent) REFERENCES org.teams ON DELETE CASCADE);
        CREATE TABLE org.people (id int PRIMARY KEY,
                                 team int NOT NULL REFERENCES org.teams ON DELETE CASCADE,
                                 manager int REFERENCES org.people ON DELETE RESTRICT, email text);
        ALTER TABLE org.teams ADD FOREIGN KEY (lead) REFERENCES org.people ON DELETE SET NULL;
        -- a tenant owned by another tenant: a second cycle, through a composite key
        ALTER TABLE org.tenants ADD FOREIGN KEY (owner_region, owner_code)
            REFERENCES org.tenants ON DELETE SET NULL;
        SELECT guardian.watch('org.tenants');
        INSERT INTO org.tenants VALUES ('eu', 1, 'Tenant A', 'admin@tenant-a.test', NULL, NULL),
                                       ('eu', 2, 'Real Co', 'ops@realco.com', 'eu', 1);
        INSERT INTO org.teams VALUES (10, 'eu', 1, NULL, NULL), (11, 'eu', 1, NULL, 10),
                                     (20, 'eu', 2, NULL, NULL);
        INSERT INTO org.people VALUES (100, 11, NULL, 'x@tenant-a.test'),
                                      (101, 11, 100, 'y@tenant-a.test'),
                                      (102, 10, 101, 'z@tenant-a.test'),
                                      (200, 20, NULL, 'real@realco.com');
        UPDATE org.people SET manager = 102 WHERE id = 100;        -- managers in a cycle
        UPDATE org.teams SET lead = 100 WHERE id IN (10, 11);      -- teams <-> people
    """)
    before_real = scalar(db, "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM org.tenants AS t WHERE code = 2")
    alert = contamination_alert(db, "org.tenants")
    plan = {(r["table_name"], r["action"]): r["rows"] for r in response.cleanup_plan(db, alert=alert)}
    assert plan[("org.tenants", "delete")] == 1
    assert plan[("org.tenants", "set null")] == 1  # Real Co's owner link
    assert plan[("org.teams", "delete")] == 2
    assert plan[("org.people", "delete")] == 3
    script = response.cleanup_script(db, alert=alert)
    # people and teams reference each other: one statement deletes both.
    assert "RETURNING 1),\nstep_" in script
    response.run_script(db, script)
    assert count(db, "SELECT count(*) FROM org.people") == 1
    assert count(db, "SELECT count(*) FROM org.teams") == 1
    assert scalar(db, "SELECT owner_code FROM org.tenants WHERE code = 2") is None
    batch = scalar(db, "SELECT id FROM guardian.quarantine_batches")
    response.restore(db, str(batch))
    assert (
        scalar(
            db,
            "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM org.tenants AS t WHERE code = 2",
        )
        == before_real
    )
    assert count(db, "SELECT count(*) FROM org.people") == 4


def test_hostile_values_stay_quoted_in_the_script(db: psycopg.Connection) -> None:
    db.execute("""
        CREATE TABLE public.accounts (code text PRIMARY KEY, email text);
        SELECT guardian.watch('public.accounts');
        INSERT INTO public.accounts
        VALUES (E'x''y\\n--$roots$ \\\\ DROP TABLE public.accounts;', 'a@example.com');
    """)
    alert = contamination_alert(db, "public.accounts")
    db.execute(
        "UPDATE guardian.monitoring_alerts SET message = message || E'\\nDROP TABLE public.accounts;' WHERE id = %s",
        (alert,),
    )
    script = response.cleanup_script(db, alert=alert)
    assert "\nDROP TABLE" not in script
    assert len(statements(script)) == 5  # BEGIN, begin, one delete, finish, COMMIT
    response.run_script(db, script)
    assert count(db, "SELECT count(*) FROM public.accounts") == 0


def test_cleanup_runs_with_the_admins_rights_not_the_guardians(
    dental: psycopg.Connection, make_role, connect, dbname: str
) -> None:
    make_role("cleaner", "guardian_admin")
    make_role("nosy")
    dental.execute("GRANT USAGE ON SCHEMA dental TO cleaner, nosy")
    dental.execute("GRANT SELECT ON ALL TABLES IN SCHEMA dental TO cleaner")
    admin = connect(dbname, user="cleaner")
    alert = contamination_alert(dental)
    script = response.cleanup_script(admin, alert=alert)
    with pytest.raises(response.ResponseError, match="permission denied for table"):
        response.run_script(admin, script)
    dental.execute("GRANT UPDATE, DELETE ON ALL TABLES IN SCHEMA dental TO cleaner")
    assert "quarantined 8 row(s)" in response.run_script(admin, script)
    # Someone who is no admin cannot drive the bookkeeping.
    nosy = connect(dbname, user="nosy")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not run guardian cleanups"):
        nosy.execute("SELECT * FROM guardian.cleanup_targets(gen_random_uuid(), 1)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        nosy.execute("SELECT count(*) FROM guardian.quarantine")


def test_demo_step_walks_from_detection_to_restore(db: psycopg.Connection) -> None:
    from pg_guardian import demo

    load_dental(db)
    lines: list[str] = []
    demo.step_cleanup(db, lines.append)
    text = "\n".join(lines)
    assert "-> CRITICAL alert: test data in dental.clinics.email" in text
    assert "--    5  dental.clinics" in text
    assert "quarantined 5 row(s)" in text and "restored quarantine batch" in text
    assert text.endswith("every row back, byte for byte: yes (and allowlisted, so it is not flagged again)")


def test_partitioned_tables_and_quoted_names(db: psycopg.Connection, tmp_path) -> None:
    from pg_guardian.response import policy

    db.execute("""
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."Clinic List" (id int PRIMARY KEY, "E-mail" text);
        CREATE TABLE "Odd Schema".visits (
            id int, at date NOT NULL, note text,
            clinic int REFERENCES "Odd Schema"."Clinic List" ON DELETE CASCADE,
            PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE "Odd Schema".visits_2023 PARTITION OF "Odd Schema".visits
            FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
        CREATE TABLE "Odd Schema".visits_2024 PARTITION OF "Odd Schema".visits
            FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    """)
    spec = tmp_path / "odd.toml"
    spec.write_text('[environments.local.tables.\'"Odd Schema"."Clinic List"\']\ncolumns = { "E-mail" = "email" }\n')
    policy.apply(db, policy.load(spec, env={}), "local")
    db.execute("""
        INSERT INTO "Odd Schema"."Clinic List" VALUES (1, 'x@example.com'), (2, 'real@clinic.com');
        INSERT INTO "Odd Schema".visits VALUES (1, '2023-05-01', 'a', 1), (1, '2024-05-01', 'b', 1),
                                               (2, '2024-06-01', 'c', 2);
    """)
    everything = """SELECT string_agg(t, '|' ORDER BY t) FROM (
                        SELECT tableoid::regclass::text || v::text AS t
                          FROM "Odd Schema".visits AS v
                        UNION ALL SELECT c::text FROM "Odd Schema"."Clinic List" AS c) AS x"""
    before = scalar(db, everything)
    alert = contamination_alert(db, '"Odd Schema"."Clinic List"')
    plan = [(r["table_name"], r["rows"]) for r in response.cleanup_plan(db, alert=alert)]
    assert plan == [('"Odd Schema".visits', 2), ('"Odd Schema"."Clinic List"', 1)]
    response.run_script(db, response.cleanup_script(db, alert=alert))
    assert count(db, 'SELECT count(*) FROM "Odd Schema".visits') == 1
    response.restore(db, str(scalar(db, "SELECT id FROM guardian.quarantine_batches")))
    assert scalar(db, everything) == before  # each row back in its own partition
