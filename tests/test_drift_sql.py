"""Drift inside the database: fingerprints, DDL capture, snapshots, baseline, hourly check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from pg_guardian.drift import catalog
from psycopg.types.json import Jsonb
from support.queries import scalar


def open_alerts(db: psycopg.Connection, type_: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT severity, message, occurrences, metadata FROM guardian.monitoring_alerts "
        "WHERE type = %s AND resolved_at IS NULL ORDER BY created_at",
        (type_,),
    ).fetchall()


# -- the fingerprint ----------------------------------------------------------------------------


def test_sql_fingerprint_is_the_document_the_controller_builds(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.t (id int PRIMARY KEY, note text DEFAULT 'x''y' COLLATE \"C\")")
    db.execute("CREATE FUNCTION public.f(a int) RETURNS int LANGUAGE sql AS 'SELECT a'")
    db.execute("COMMENT ON TABLE public.t IS 'héllo \"quoted\"\nnew line'")
    in_sql = scalar(db, "SELECT guardian.schema_fingerprint()")
    assert in_sql == catalog.read_fingerprint(db).to_document()


def test_fingerprint_leaves_out_pg_guardian_and_temporary_objects(db: psycopg.Connection) -> None:
    db.execute("CREATE TEMP TABLE scratch (a int)")
    db.execute("CREATE SCHEMA guardian_history")
    db.execute("CREATE TABLE guardian_history.old_alerts (a int)")
    identities = scalar(db, "SELECT array_agg(identity) FROM guardian.schema_objects()")
    assert not [i for i in identities if "guardian" in i or "scratch" in i or "pg_temp" in i]


def test_dblink_that_pg_guardian_keeps_in_guardian_ext_is_neither_drift_nor_a_change(
    db: psycopg.Connection,
) -> None:
    db.execute("CREATE SCHEMA IF NOT EXISTS guardian_ext")  # install makes it where dblink exists
    db.execute("CREATE EXTENSION IF NOT EXISTS dblink SCHEMA guardian_ext")
    db.execute("COMMENT ON EXTENSION dblink IS 'pg_guardian keeps it for strict-mode records'")
    db.execute("CREATE FUNCTION guardian_ext.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    assert scalar(db, "SELECT count(*) FROM guardian.schema_changes") == 0
    assert (
        scalar(
            db,
            "SELECT count(*) FROM guardian.schema_objects() WHERE identity ~ 'dblink|guardian_ext'",
        )
        == 0
    )


def test_fingerprint_does_not_depend_on_the_callers_settings(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.t (at timestamptz DEFAULT '2024-01-02 03:04:05+00', d date DEFAULT '2024-01-02')")
    first = scalar(db, "SELECT guardian.schema_fingerprint()->>'checksum'")
    db.execute("SET DateStyle = 'SQL, DMY'")
    db.execute("SET TimeZone = 'Asia/Tokyo'")
    db.execute("SET search_path = public")
    assert scalar(db, "SELECT guardian.schema_fingerprint()->>'checksum'") == first


# -- comparing fingerprints in SQL ---------------------------------------------------------------


def test_compare_fingerprints_lists_changes_with_both_values(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.t (id int PRIMARY KEY, email text)")
    before = scalar(db, "SELECT guardian.schema_fingerprint()")
    db.execute("ALTER TABLE public.t ALTER COLUMN email TYPE varchar(100)")
    rows = db.execute(
        "SELECT kind, identity, change, detail FROM guardian.compare_fingerprints(%s, guardian.schema_fingerprint())",
        (Jsonb(before),),
    ).fetchall()
    assert rows == [
        (
            "column",
            "public.t.email",
            "changed",
            {"data_type": {"source": "text", "target": "character varying(100)"}},
        )
    ]


def test_compare_fingerprints_rejects_what_is_not_a_fingerprint(db: psycopg.Connection) -> None:
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="the source is not a pg_guardian fingerprint"
    ) as exc:
        db.execute("SELECT * FROM guardian.compare_fingerprints('{\"a\": 1}', guardian.schema_fingerprint())")
    assert exc.value.diag.message_hint and "guardian.schema_fingerprint()" in exc.value.diag.message_hint


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("SELECT a+1 FROM t -- note", "select a + 1\n  from t", True),
        ("BEGIN /* c */ RETURN 'Keep';END", "begin\n  return 'Keep' ; end", True),
        ("SELECT 'Keep'", "SELECT 'keep'", False),
        ('SELECT "MixedCase" FROM t', "SELECT mixedcase FROM t", False),
        ("SELECT $q$Keep$q$", "select $q$keep$q$", False),
        ("SELECT a < = b", "SELECT a <= b", False),
    ],
)
def test_normalize_sql_ignores_formatting_only(db: psycopg.Connection, a: str, b: str, same: bool) -> None:
    assert (scalar(db, "SELECT guardian.normalize_sql(%s) = guardian.normalize_sql(%s)", (a, b))) is same


# -- drift as it happens -------------------------------------------------------------------------


def test_ddl_is_recorded_with_who_and_from_where(db: psycopg.Connection) -> None:
    db.execute("SET application_name = 'migrate.py'")
    db.execute("CREATE TABLE public.patients (id int)")
    row = db.execute(
        "SELECT command_tag, object_type, object_identity, role_name, session_user_name, "
        "application_name, "
        "source, alert_id IS NOT NULL FROM guardian.schema_changes"
    ).fetchone()
    assert row == (
        "CREATE TABLE",
        "table",
        "public.patients",
        "postgres",
        "postgres",
        "migrate.py",
        "ddl_command_end",
        True,
    )


def test_schema_change_in_production_is_more_severe_than_in_local(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.a (id int)")
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("CREATE TABLE public.b (id int)")
    db.execute("DROP TABLE public.a")
    severities = [r[0] for r in open_alerts(db, "SCHEMA_CHANGE")]
    assert severities == ["INFO", "HIGH", "CRITICAL"]


def test_one_alert_per_transaction_counts_its_changes(db: psycopg.Connection) -> None:
    with db.transaction():
        db.execute("CREATE TABLE public.a (id int)")
        db.execute("CREATE INDEX a_id_idx ON public.a (id)")
        db.execute("ALTER TABLE public.a ADD COLUMN note text")
    [(_, message, occurrences, metadata)] = open_alerts(db, "SCHEMA_CHANGE")
    assert occurrences == 3
    assert message.startswith("3 schema changes in local by postgres")
    assert metadata["changes"] == [
        "CREATE TABLE public.a",
        "CREATE INDEX public.a_id_idx",
        "ALTER TABLE public.a",
    ]


def test_grant_revoke_temp_objects_and_guardian_objects_are_not_schema_changes(
    db: psycopg.Connection,
) -> None:
    db.execute("CREATE TEMP TABLE scratch (a int)")
    db.execute("DROP TABLE scratch")
    db.execute("GRANT USAGE ON SCHEMA public TO guardian_reader")
    db.execute("REVOKE USAGE ON SCHEMA public FROM guardian_reader")
    db.execute("CREATE TABLE guardian.scratch (a int)")
    db.execute("DROP TABLE guardian.scratch")
    assert scalar(db, "SELECT count(*) FROM guardian.schema_changes") == 0


def test_drops_are_recorded_with_what_cascade_took(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.a (id int, note text)")
    db.execute("CREATE VIEW public.v AS SELECT id FROM public.a")
    db.execute("CREATE FUNCTION public.f(x text) RETURNS int LANGUAGE sql AS 'SELECT 1'")
    db.execute("ALTER TABLE public.a DROP COLUMN note")
    db.execute("DROP TABLE public.a CASCADE")
    db.execute("DROP FUNCTION public.f(text)")
    rows = db.execute(
        "SELECT command_tag, object_type, object_identity, detail FROM guardian.schema_changes "
        "WHERE source = 'sql_drop' ORDER BY id"
    ).fetchall()
    assert rows == [
        ("ALTER TABLE", "table column", "public.a.note", {}),
        ("DROP TABLE", "table", "public.a", {}),
        ("DROP TABLE", "view", "public.v", {"cascaded": True}),
        ("DROP FUNCTION", "function", "public.f(text)", {}),
    ]


def test_ddl_by_an_application_role_is_recorded_as_that_role(
    db: psycopg.Connection,
    dbname: str,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
) -> None:
    app = make_role("drift_app_owner")
    db.execute(f"GRANT CREATE ON SCHEMA public TO {app}")
    conn = connect(dbname, user=app)
    conn.execute("CREATE TABLE public.mine (id int)")
    assert scalar(db, "SELECT role_name FROM guardian.schema_changes") == app


def test_record_schema_change_is_the_hook_for_roles_and_other_detectors(
    db: psycopg.Connection,
) -> None:
    db.execute("SELECT guardian.record_schema_change('alter role', 'role', 'app_owner', p_source => 'role snapshot')")
    assert db.execute(
        "SELECT command_tag, object_type, object_identity, source FROM guardian.schema_changes"
    ).fetchone() == ("ALTER ROLE", "role", "app_owner", "role snapshot")
    assert len(open_alerts(db, "SCHEMA_CHANGE")) == 1
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid change source"):
        db.execute("SELECT guardian.record_schema_change('ALTER ROLE', 'role', 'x', p_source => 'Bad Source!')")


def test_mode_off_captures_nothing(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_mode('off')")
    db.execute("CREATE TABLE public.quiet (id int)")
    assert scalar(db, "SELECT count(*) FROM guardian.schema_changes") == 0


# -- drift over time ------------------------------------------------------------------------------


def test_check_drift_without_baseline_says_how_to_make_one(db: psycopg.Connection) -> None:
    assert "SELECT guardian.approve_baseline();" in scalar(db, "SELECT guardian.check_drift()")


def test_drift_from_baseline_is_one_alert_until_it_changes(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.t (id int)")
    db.execute("SELECT guardian.approve_baseline()")
    assert scalar(db, "SELECT guardian.check_drift()").startswith("no drift")

    db.execute("ALTER TABLE public.t ADD COLUMN email text")
    assert scalar(db, "SELECT guardian.check_drift()") == "1 difference from baseline 1"
    assert scalar(db, "SELECT guardian.check_drift()") == "1 difference from baseline 1"
    [(severity, message, occurrences, metadata)] = open_alerts(db, "ENVIRONMENT_DRIFT")
    assert (severity, occurrences, metadata["count"]) == ("LOW", 2, 1)
    assert "column public.t.email added" in message
    [difference] = metadata["differences"]
    assert difference["last_change"]["command"] == "ALTER TABLE"
    assert difference["last_change"]["role"] == "postgres"

    db.execute("CREATE INDEX t_id_idx ON public.t (id)")
    db.execute("SELECT guardian.check_drift()")
    [(_, message, occurrences, metadata)] = open_alerts(db, "ENVIRONMENT_DRIFT")
    assert (occurrences, metadata["count"]) == (1, 2)
    assert scalar(
        db,
        "SELECT resolution_note FROM guardian.monitoring_alerts "
        "WHERE type = 'ENVIRONMENT_DRIFT' AND resolved_at IS NOT NULL",
    ).startswith("superseded")

    db.execute("DROP INDEX public.t_id_idx")
    db.execute("ALTER TABLE public.t DROP COLUMN email")
    assert scalar(db, "SELECT guardian.check_drift()").startswith("no drift")
    assert open_alerts(db, "ENVIRONMENT_DRIFT") == []


def test_reformatted_function_is_not_drift_from_baseline(db: psycopg.Connection) -> None:
    db.execute("CREATE FUNCTION public.f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$")
    db.execute("SELECT guardian.approve_baseline()")
    db.execute(
        "CREATE OR REPLACE FUNCTION public.f() RETURNS int LANGUAGE plpgsql AS $$\nbegin\n  return 1; -- one\nend\n$$"
    )
    assert scalar(db, "SELECT guardian.check_drift()") == "no drift from baseline 1 (1 formatting-only differences)"
    assert scalar(db, "SELECT count(*) FROM guardian.diff_schema()") == 0
    assert scalar(db, "SELECT count(*) FROM guardian.diff_schema(p_include_cosmetic => true)") == 1


def test_approving_a_new_baseline_accepts_the_drift(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.approve_baseline()")
    db.execute("CREATE TABLE public.t (id int)")
    db.execute("SELECT guardian.check_drift()")
    assert len(open_alerts(db, "ENVIRONMENT_DRIFT")) == 1
    new = scalar(db, "SELECT guardian.approve_baseline()")
    assert open_alerts(db, "ENVIRONMENT_DRIFT") == []
    assert scalar(db, "SELECT count(*) FROM guardian.schema_snapshots WHERE baseline") == 1
    assert scalar(db, "SELECT id FROM guardian.schema_snapshots WHERE baseline") == new
    assert scalar(db, "SELECT guardian.check_drift()").startswith("no drift")


def test_drift_check_is_a_registered_hourly_job(db: psycopg.Connection) -> None:
    assert db.execute("SELECT schedule, command FROM guardian.jobs WHERE name = 'drift_check'").fetchone() == (
        "0 * * * *",
        "SELECT guardian.check_drift()",
    )
    db.execute("SELECT guardian.approve_baseline()")
    db.execute("CREATE TABLE public.t (id int)")
    assert scalar(db, "SELECT guardian.run_job('drift_check')").startswith("ok")
    assert len(open_alerts(db, "ENVIRONMENT_DRIFT")) == 1


def test_imported_fingerprint_from_another_environment_can_be_the_baseline(
    db: psycopg.Connection, blank_dbname: str, connect: Callable[..., psycopg.Connection]
) -> None:
    prod = connect(blank_dbname)  # production has no pg_guardian: the controller exports it
    prod.execute("CREATE EXTENSION plpython3u")
    prod.execute("CREATE TABLE public.patients (id int PRIMARY KEY, email text NOT NULL)")
    document = catalog.read_fingerprint(prod).to_document()
    db.execute("CREATE TABLE public.patients (id int PRIMARY KEY, email text)")
    snapshot = scalar(
        db,
        "SELECT guardian.import_fingerprint('production 2024-06', %s, 'production')",
        (Jsonb(document),),
    )
    rows = db.execute("SELECT identity, detail FROM guardian.diff_schema(%s)", (snapshot,)).fetchall()
    assert rows == [("public.patients.email", {"not_null": {"source": True, "target": False}})]
    db.execute("SELECT guardian.approve_baseline(%s)", (snapshot,))
    assert scalar(db, "SELECT guardian.check_drift()") == f"1 difference from baseline {snapshot}"


def test_import_refuses_an_edited_fingerprint(db: psycopg.Connection) -> None:
    document = scalar(db, "SELECT guardian.schema_fingerprint()")
    key = next(iter(document["objects"]))
    document["objects"][key]["definition"]["comment"] = "edited by hand"
    with pytest.raises(psycopg.errors.DataCorrupted, match="does not match its checksum"):
        db.execute("SELECT guardian.import_fingerprint('edited', %s)", (Jsonb(document),))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid snapshot label"):
        db.execute("SELECT guardian.snapshot_schema('  ')")


def test_diff_schema_without_baseline_says_how_to_approve_one(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match="no approved schema baseline") as exc:
        db.execute("SELECT * FROM guardian.diff_schema()")
    assert (
        exc.value.diag.message_hint
        == "Approve the current schema as the baseline with: SELECT guardian.approve_baseline();"
    )


def test_readers_may_compare_but_only_admins_may_approve(
    db: psycopg.Connection,
    dbname: str,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
) -> None:
    reader = connect(dbname, user=make_role("drift_reader", "guardian_reader"))
    admin = connect(dbname, user=make_role("drift_admin", "guardian_admin"))
    db.execute("SELECT guardian.approve_baseline()")
    assert scalar(reader, "SELECT count(*) FROM guardian.diff_schema()") == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT guardian.approve_baseline()")
    assert scalar(admin, "SELECT guardian.approve_baseline()") == 2
    assert scalar(admin, "SELECT guardian.check_drift()").startswith("no drift")


def test_demo_step_shows_a_hotfix_caught_as_it_happens_and_against_the_baseline(
    db: psycopg.Connection,
) -> None:
    from pg_guardian import demo

    db.execute(demo.package_sql("demo_schema.sql"))
    db.execute("SELECT guardian.set_environment('production')")
    lines: list[str] = []
    demo.step_drift(db, lines.append)
    text = "\n".join(lines)
    assert (
        "HIGH SCHEMA_CHANGE: schema change in production: "
        "ALTER TABLE dental.patients by postgres via psql (hotfix)" in text
    )
    assert "CRITICAL SCHEMA_CHANGE: schema change in production: DROP INDEX dental.appointments_patient_id_idx" in text
    assert "hourly drift_check job: 2 differences from baseline 1" in text
    assert "    added    column dental.patients.insurance_no" in text
    assert "    removed  index dental.appointments_patient_id_idx" in text
