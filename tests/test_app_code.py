"""Whose code runs where (review finding M4): a superuser's scan or restore of an application's
table must not run the application's code (its casts, operators, triggers) with superuser
rights. The scan reads values through type output functions only; a restore that would run
such code is refused with the code named, unless asked for by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from pg_guardian import response
from support.queries import scalar
from support.response import contamination_alert

APP = "app_code_owner"
PROOF = "CREATE TABLE public.app_code_proof (who text, what text)"

# The application's type, with a cast to json that records who ran it.
MOOD = """
CREATE TYPE public.mood AS ENUM ('ok', 'meh');
CREATE FUNCTION public.mood_to_json(m public.mood) RETURNS json LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.app_code_proof VALUES (current_user, 'cast to json');
    RETURN to_json(m::text);
END $f$;
"""
CAST = "CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_to_json(public.mood)"
TRIGGER = """
CREATE FUNCTION public.audit_row() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.app_code_proof VALUES (current_user, 'trigger ' || TG_OP);
    RETURN NULL;
END $f$;
CREATE TRIGGER audit_row AFTER INSERT OR DELETE ON public.patients FOR EACH ROW EXECUTE FUNCTION public.audit_row();
"""


@pytest.fixture
def app(
    db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> Iterator[psycopg.Connection]:
    """An application role that owns public.patients (watched, warn mode) and the type mood."""
    make_role(APP)
    db.execute(f"GRANT CREATE ON SCHEMA public TO {APP}")
    db.execute(PROOF)
    db.execute("GRANT INSERT, SELECT ON public.app_code_proof TO PUBLIC")
    conn = connect(db.info.dbname, APP)
    conn.execute(MOOD)
    conn.execute("CREATE TABLE public.patients (id int PRIMARY KEY, first_name text, email text, m public.mood)")
    db.execute("SELECT guardian.watch('public.patients')")
    conn.execute(
        "INSERT INTO public.patients VALUES (1, 'Ann', 'ann@realmail.org', 'ok'), "
        "(2, 'Jane', 'jane@example.com', 'meh')"
    )
    yield conn
    db.execute("RESET ROLE")
    db.execute("DROP TYPE public.mood CASCADE")  # a cast belongs to no role: DROP OWNED leaves it


def ran_as(db: psycopg.Connection, role: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT what FROM public.app_code_proof WHERE who = %s ORDER BY what", (role,))]


def test_a_superuser_scan_runs_no_application_cast(db: psycopg.Connection, app: psycopg.Connection) -> None:
    app.execute(CAST)
    assert app.execute("SELECT to_jsonb(p) ->> 'm' FROM public.patients AS p WHERE id = 1").fetchone() == ("ok",)
    assert ran_as(db, APP) == ["cast to json"]  # the cast is real: it runs for whoever calls to_jsonb
    rows = db.execute("SELECT record_id, column_name, rule FROM guardian.scan('public.patients') ORDER BY 1").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("2", "email")]
    recorded = db.execute("SELECT count(*) FROM guardian.scan('public.patients', p_record => true)").fetchone()
    assert recorded == (1,)
    assert ran_as(db, "postgres") == []


def test_a_scan_of_a_keyless_table_fingerprints_rows_without_the_cast(
    db: psycopg.Connection, app: psycopg.Connection
) -> None:
    app.execute(CAST)
    app.execute("CREATE TABLE public.visits (email text, m public.mood)")
    app.execute("INSERT INTO public.visits VALUES ('jane@example.com', 'ok')")
    [(record_id,)] = db.execute("SELECT record_id FROM guardian.scan('public.visits')").fetchall()
    digest = scalar(db, """SELECT left(md5(jsonb_build_object('email', 'jane@example.com', 'm', 'ok')::text), 16)""")
    assert record_id == f"row:{digest}"
    assert ran_as(db, "postgres") == []


def test_an_ordinary_table_is_read_as_before(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.plain (id int PRIMARY KEY, email text, tags text[], at date)")
    assert scalar(db, "SELECT guardian._scan_row_json('public.plain')") == "pg_catalog.to_jsonb(t)"


def test_the_exposure_names_the_applications_code_and_not_the_guardians(
    db: psycopg.Connection, app: psycopg.Connection
) -> None:
    assert db.execute("SELECT * FROM guardian._app_code_exposure(ARRAY['public.patients'::regclass])").fetchall() == []
    app.execute(CAST)
    app.execute(TRIGGER)
    app.execute(
        "CREATE FUNCTION public.mood_eq(a public.mood, b public.mood) RETURNS boolean LANGUAGE sql AS 'SELECT true'"
    )
    app.execute("CREATE OPERATOR public.= (LEFTARG = public.mood, RIGHTARG = public.mood, FUNCTION = public.mood_eq)")
    app.execute("CREATE FUNCTION public.valid(t text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true'")
    app.execute("ALTER TABLE public.patients ADD CONSTRAINT patients_name_chk CHECK (public.valid(first_name))")
    app.execute("ALTER TABLE public.patients ENABLE ROW LEVEL SECURITY")
    app.execute("CREATE POLICY own ON public.patients USING (true)")
    rows = db.execute(
        "SELECT relid::text, kind, runs_on, code FROM guardian._app_code_exposure(ARRAY['public.patients'::regclass])"
    ).fetchall()
    assert rows == [
        ("patients", "cast", "values", "column m: cast (public.mood AS json) with public.mood_to_json(public.mood)"),
        ("patients", "expression", "write", "constraint patients_name_chk calls public.valid(text)"),
        (
            "patients",
            "operator",
            "values",
            "column m: operator public.=(public.mood,public.mood) with public.mood_eq(public.mood,public.mood)",
        ),
        ("patients", "row_security", "read", "row-level security (policies: own)"),
        ("patients", "trigger", "write", "trigger audit_row (public.audit_row())"),
    ]


def test_refusal_is_for_superusers_and_names_the_code_and_the_fix(
    db: psycopg.Connection,
    app: psycopg.Connection,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
) -> None:
    app.execute(TRIGGER)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        db.execute("SELECT guardian._refuse_app_code(ARRAY['public.patients'::regclass], 'the test')")
    diag = err.value.diag
    assert diag.message_primary == (
        "refusing the test: it would run application code of public.patients as superuser postgres"
    )
    assert (
        diag.message_detail
        == "It would run, with superuser rights: public.patients: trigger audit_row (public.audit_row())."
    )
    assert diag.message_hint == (
        f"Run it as the table owner, whose rights that code should have: SET ROLE {APP}; then RESET ROLE;"
    )
    # Reads alone run no trigger; and the table owner, or any role that is no superuser, is not refused.
    db.execute("SELECT guardian._refuse_app_code(ARRAY['public.patients'::regclass], 'a read', p_runs => '{read}')")
    db.execute(f"SET ROLE {APP}")
    db.execute("SELECT guardian._refuse_app_code(ARRAY['public.patients'::regclass], 'the test')")
    db.execute("RESET ROLE")
    admin = make_role("app_code_admin", "guardian_admin")
    connect(db.info.dbname, admin).execute(
        "SELECT guardian._refuse_app_code(ARRAY['public.patients'::regclass], 'the test')"
    )


@pytest.fixture
def batch(db: psycopg.Connection, app: psycopg.Connection) -> str:
    """The test patient quarantined by a superuser's cleanup (before the application added code)."""
    response.run_script(db, response.cleanup_script(db, alert=contamination_alert(db, "public.patients")))
    assert scalar(db, "SELECT count(*) FROM public.patients") == 1
    return str(scalar(db, "SELECT id FROM guardian.quarantine_batches"))


def test_a_superuser_restore_that_would_run_an_application_trigger_is_refused(
    db: psycopg.Connection, app: psycopg.Connection, batch: str
) -> None:
    app.execute(TRIGGER)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        db.execute("SELECT guardian.restore(%s)", (batch,))
    diag = err.value.diag
    assert diag.message_primary == (
        f"refusing to restore quarantine batch {batch}: it would run application code of public.patients "
        "as superuser postgres"
    )
    assert "public.patients: trigger audit_row (public.audit_row())" in (diag.message_detail or "")
    assert f"SELECT guardian.restore('{batch}', true, p_run_app_code => true);" in (diag.message_hint or "")
    assert ran_as(db, "postgres") == []
    assert scalar(db, "SELECT count(*) FROM public.patients") == 1
    assert scalar(db, "SELECT status FROM guardian.quarantine_batches WHERE id = %s", (batch,)) == "applied"
    # Asked for by name, it restores, and the summary says whose code ran as whom.
    summary = scalar(db, "SELECT guardian.restore(%s, true, p_run_app_code => true)", (batch,))
    assert summary.endswith(
        "; as asked (p_run_app_code), application code ran as superuser postgres: "
        "public.patients: trigger audit_row (public.audit_row())"
    )
    assert ran_as(db, "postgres") == ["trigger INSERT"]
    assert scalar(db, "SELECT count(*) FROM public.patients") == 2


def test_a_superuser_restore_of_a_table_whose_type_has_an_application_cast_runs_none_of_it(
    db: psycopg.Connection, app: psycopg.Connection, batch: str
) -> None:
    app.execute(CAST)
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege, match=r"cast \(public\.mood AS json\) with public\.mood_to_json"
    ):
        db.execute("SELECT guardian.restore(%s)", (batch,))
    assert ran_as(db, "postgres") == []
    assert scalar(db, "SELECT status FROM guardian.quarantine_batches WHERE id = %s", (batch,)) == "applied"


def test_a_superuser_restore_of_a_table_without_application_code_is_unchanged(
    db: psycopg.Connection, app: psycopg.Connection, batch: str
) -> None:
    summary = scalar(db, "SELECT guardian.restore(%s)", (batch,))
    assert summary.startswith(f"restored quarantine batch {batch}: 1 row(s) (1 public.patients) by postgres")
    assert "p_run_app_code" not in summary
    assert scalar(db, "SELECT count(*) FROM public.patients") == 2


def test_the_exposure_covers_partitions_and_leaves_out_the_guardians_own_triggers(
    db: psycopg.Connection, app: psycopg.Connection
) -> None:
    app.execute(
        "CREATE TABLE public.visits (id int, email text, at date) PARTITION BY RANGE (at);"
        "CREATE TABLE public.visits_2024 PARTITION OF public.visits FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
        "CREATE TABLE public.visits_2025 PARTITION OF public.visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
    )
    db.execute("SELECT guardian.watch('public.visits')")
    assert scalar(db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.visits_2025'::regclass") > 0
    exposure = "SELECT relid::text, kind, code FROM guardian._app_code_exposure(ARRAY['public.visits'::regclass])"
    assert db.execute(exposure).fetchall() == []
    app.execute(TRIGGER.replace("public.patients", "public.visits_2025"))
    assert db.execute(exposure).fetchall() == [("visits_2025", "trigger", "trigger audit_row (public.audit_row())")]


def test_a_superuser_cleanup_over_application_triggers_is_refused_and_runs_as_the_owner(
    app: psycopg.Connection, db: psycopg.Connection
) -> None:
    app.execute(TRIGGER)
    alert = contamination_alert(db, table="public.patients")
    script = scalar(db, "SELECT guardian.cleanup_script(%s::uuid)", (alert,))
    db.execute("TRUNCATE public.app_code_proof")
    with pytest.raises(response.ResponseError, match=r"refusing cleanup script .* as superuser postgres") as err:
        response.run_script(db, script)
    assert "SET ROLE app_code_owner" in str(err.value) or "audit_row" in str(err.value)
    assert scalar(db, "SELECT count(*) FROM public.patients WHERE id = 2") == 1
    assert scalar(db, "SELECT count(*) FROM public.app_code_proof") == 0
    # As the hint says: as the table's owner, whose rights the trigger should have.
    db.execute(f"SET ROLE {APP}")
    summary = response.run_script(db, script)
    db.execute("RESET ROLE")
    assert "quarantined 1 row(s)" in summary
    assert scalar(db, "SELECT array_agg(DISTINCT who) FROM public.app_code_proof") == [APP]
