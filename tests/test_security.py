"""Least privilege: an application role can use a guarded table but cannot tamper with the guardian."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from support.queries import scalar

# Every guardian function that PUBLIC may execute, and why that is safe. The test below fails
# when the list grows (or shrinks): a new entry needs its reason here and in docs/security.md.
_READ_ONLY = "returns the guardian's own state or a pure computation; reads no application data"
_WHEN = (
    "the WHEN clause of a watched table's row triggers runs as whoever writes; SECURITY INVOKER, "
    "owned by the installer (guardian_owner cannot alter it), STRICT or NULL-safe"
)
_SESSION = (
    "SECURITY INVOKER: the auto-response runs at commit inside the session that wrote test data, "
    "with that session's rights, so it does only what the caller could do anyway"
)
_GATED = (
    "SECURITY DEFINER, gated by _response_caller(): an admin, or a session acting on findings of its "
    "own transaction only; its claims are checked (records must be gone before an alert closes)"
)
_CATALOG = (
    "SECURITY INVOKER, reads only the catalog (readable by all): what application code a tool would run; "
    "called by scans, restores, cleanups and the auto-response"
)
PUBLIC_FUNCTIONS: dict[str, str] = {
    "current_environment()": _READ_ONLY,
    "current_mode()": _READ_ONLY,
    "effective_mode(regclass)": _READ_ONLY,
    "version()": _READ_ONLY,
    "_is_admin()": "event triggers run as whoever does DDL and ask whether that role is an admin",
    "_session_context()": "describes the caller's own session (role, application, address)",
    "_alert_fingerprint(text,text,text,text,text)": "pure: md5 of its arguments",
    "check_payload(jsonb,text)": "the application-side check of a document against the rules; returns redacted samples",
    "_contains_any(text,text[])": _WHEN,
    "_uuid_matches(uuid,uuid[])": _WHEN,
    "_anchors(text,text)": _WHEN + " (SQL prefilter only; revoked where the C prefilter is installed)",
    "_uuid_bounds(text)": _WHEN + " (SQL prefilter only; revoked where the C prefilter is installed)",
    "_suspect(record)": _WHEN,
    "_suspect(record,record)": _WHEN,
    '_suspect_columns(regclass,"any")': "the scan's prefilter, run by whoever scans; C, NULL-safe",
    "_on_contamination()": (
        "trigger function, cloned onto new partitions by whoever creates them; cannot be called other than as "
        "a trigger, does nothing on a table that is not watched"
    ),
    "_table_root(regclass)": _SESSION,
    "_regclass_of(text)": _SESSION,
    "_jsonb_texts(jsonb)": _SESSION,
    "_attnames(regclass,smallint[])": _SESSION,
    "_cleanup_edges(regclass[],boolean)": _SESSION,
    "_cleanup_steps(regclass[],boolean)": _SESSION,
    "_key_expr(regclass,text)": _SESSION,
    "_column_list(text,text[])": _SESSION,
    "_cleanup_roots(jsonb)": _SESSION,
    "_cleanup_collect(jsonb,boolean,boolean)": _SESSION,
    "_comment(text)": _SESSION,
    "_cleanup_counts(jsonb,guardian.cleanup_row[],boolean)": _SESSION,
    "_cleanup_group_sql(uuid,jsonb,integer)": _SESSION,
    "_cleanup_step_list(jsonb,jsonb,boolean)": _SESSION,
    "_render_cleanup_script(uuid,guardian.monitoring_alerts,jsonb,jsonb,boolean)": _SESSION,
    "_cleanup_prepare(jsonb,uuid,boolean,boolean)": _SESSION,
    "_table_shape(regclass)": _SESSION,
    "_json_columns(regclass)": _SESSION,
    "_row_json_expr(regclass,text)": _SESSION,
    "cleanup_begin(uuid,jsonb,jsonb)": _SESSION,
    "_auto_cleanup(jsonb,uuid,numeric)": _SESSION,
    "_record_key(regclass)": _SESSION,
    "_response_caller()": "says whether the caller is an admin or in its own auto-response; raises otherwise",
    "_register_cleanup_script(uuid,uuid,jsonb,jsonb,boolean,boolean)": _GATED,
    "_cleanup_registered(uuid)": _GATED,
    "_quarantine_open(uuid)": _GATED,
    "_quarantine_put(uuid,guardian.quarantine_item[])": _GATED,
    "cleanup_targets(uuid,integer)": _GATED,
    "cleanup_step(uuid,integer,bigint)": _GATED,
    "cleanup_finish(uuid)": _GATED,
    "_auto_alert_roots(uuid)": _GATED + "; keys only of tables the session may read",
    "_auto_response_report(text,uuid,text,jsonb)": _GATED + "; fixed types and metadata keys",
    "_auto_response_begin()": "SECURITY DEFINER: reads only the findings of the caller's own transaction",
    "_auto_response_end()": "SECURITY DEFINER: ends the caller's own auto-response",
    "_auto_lockdown_check()": "SECURITY DEFINER: applies the guardian's own lockdown threshold, takes no input",
    "_app_function(oid)": _CATALOG,
    "_app_code_exposure(regclass[])": _CATALOG,
    "_refuse_app_code(regclass[],text,text,text[])": _CATALOG + "; only ever refuses a superuser",
    "_scan_row_json(regclass,text)": "returns SQL text for reading a row through output functions; reads nothing",
    "_json_safe_type(oid)": "is a type built in? reads the catalog only",
}


@pytest.fixture
def app(
    db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> psycopg.Connection:
    """An application role that owns its table, as is common when migrations run as the app."""
    make_role("dental_app")
    db.execute("GRANT CREATE ON SCHEMA public TO dental_app")
    conn = connect(db.info.dbname, "dental_app")
    conn.execute("CREATE TABLE public.patients (id serial PRIMARY KEY, email text, full_name text)")
    db.execute("SELECT guardian.watch('public.patients')")
    return conn


def test_application_writes_are_still_checked(app: psycopg.Connection, db: psycopg.Connection) -> None:
    app.execute("INSERT INTO public.patients (email, full_name) VALUES ('x@y.test', 'Ana Lopez')")
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'") == 1
    db.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error) as err:
        app.execute("INSERT INTO public.patients (email, full_name) VALUES ('a@b.com', 'Test User')")
    assert err.value.sqlstate == "GD001"
    assert (
        scalar(
            db,
            "SELECT metadata->'session'->>'session_user' FROM guardian.monitoring_alerts "
            "WHERE type = 'STRICT_MODE_REJECTION'",
        )
        == "dental_app"
    )


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE public.patients DISABLE TRIGGER ALL",
        "ALTER TABLE public.patients DISABLE TRIGGER USER",
        "ALTER TABLE public.patients DISABLE TRIGGER guardian_contamination_insert",
        "DROP TRIGGER guardian_contamination_insert ON public.patients",
        "DROP TRIGGER guardian_activity ON public.patients",
    ],
)
def test_table_owner_cannot_disable_or_drop_guardian_triggers(app: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        app.execute(statement)
    assert "guardian trigger" in str(err.value)
    assert "guardian.unwatch" in (err.value.diag.message_hint or "")


def test_guardian_admin_may_unwatch(app: psycopg.Connection, db: psycopg.Connection) -> None:
    db.execute("GRANT guardian_admin TO dental_app")
    assert app.execute("SELECT guardian.unwatch('public.patients')").fetchone() == (True,)


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("UPDATE guardian.monitoring_alerts SET resolved_at = now()", psycopg.errors.InsufficientPrivilege),
        ("DELETE FROM guardian.monitoring_alerts", psycopg.errors.InsufficientPrivilege),
        (
            "INSERT INTO guardian.monitoring_alerts (severity, type, message) VALUES ('LOW', 'X', 'forged')",
            psycopg.errors.InsufficientPrivilege,
        ),
        ("TRUNCATE guardian.findings", psycopg.errors.InsufficientPrivilege),
        ("UPDATE guardian.rules SET enabled = false", psycopg.errors.InsufficientPrivilege),
        ("INSERT INTO guardian.allowlist (value, reason) VALUES ('x', 'y')", psycopg.errors.InsufficientPrivilege),
        ("SELECT guardian.set_mode('off')", psycopg.errors.InsufficientPrivilege),
        ("SELECT guardian.set_environment('local')", psycopg.errors.InsufficientPrivilege),
        ("SELECT guardian.raise_alert('X', 'LOW', 'forged')", psycopg.errors.InsufficientPrivilege),
        ("SELECT guardian.resolve_alert(gen_random_uuid())", psycopg.errors.InsufficientPrivilege),
        ("SELECT guardian.allow('keyboard_mash', p_reason => 'x')", psycopg.errors.InsufficientPrivilege),
        ("SELECT guardian.unwatch('public.patients')", psycopg.errors.InsufficientPrivilege),
        ("ALTER TABLE guardian.rules DISABLE TRIGGER ALL", psycopg.errors.InsufficientPrivilege),
        ("DROP FUNCTION guardian._on_contamination()", psycopg.errors.InsufficientPrivilege),
        (
            "CREATE FUNCTION guardian.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            psycopg.errors.InsufficientPrivilege,
        ),
    ],
)
def test_application_role_cannot_tamper(app: psycopg.Connection, statement: str, error: type) -> None:
    with pytest.raises(error):
        app.execute(statement)


def test_every_function_pins_search_path(db: psycopg.Connection) -> None:
    unpinned = db.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc AS p
            WHERE p.pronamespace = 'guardian'::regnamespace
              AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
              AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false)"""
    ).fetchall()
    # The exceptions run on every write and qualify every name instead (generated constants, or
    # inlined into callers that pin search_path).
    assert sorted(r[0] for r in unpinned) == [
        "guardian._anchors(text,text)",
        "guardian._gate(text,boolean)",
        "guardian._listed_domains(text[])",
        "guardian._rule_matches(text,text,text[],text)",
        "guardian._surprise(bigint,bigint)",
        "guardian._uuid_bounds(text)",
    ]


def test_only_listed_functions_are_public(db: psycopg.Connection) -> None:
    rows = db.execute(
        """SELECT regexp_replace(p.oid::regprocedure::text, '^guardian\\.', '')
             FROM pg_proc AS p
            WHERE p.pronamespace = 'guardian'::regnamespace
              AND has_function_privilege('public', p.oid, 'EXECUTE')"""
    ).fetchall()
    public = {r[0].replace(" ", "") for r in rows}
    listed = {f.replace(" ", "") for f in PUBLIC_FUNCTIONS}
    if scalar(db, "SELECT to_regprocedure('guardian._suspect(record)') IS NOT NULL"):
        # with the C prefilter the WHEN clauses never call the compiled anchors
        listed -= {"_anchors(text,text)", "_uuid_bounds(text)"}
    assert public == listed


def test_every_public_function_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    missing = [f for f in PUBLIC_FUNCTIONS if f.split("(")[0] not in doc]
    assert missing == []


def test_guardian_objects_belong_to_the_guardian_owner(db: psycopg.Connection) -> None:
    owners = db.execute(
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'guardian'::regnamespace "
        "AND relname <> 'strict_recorder' AND relkind <> 'i' AND relkind <> 'S'"
    ).fetchall()
    assert owners == [("guardian_owner",)]
    # guardian_owner owns SECURITY DEFINER functions only: every SECURITY INVOKER function runs
    # as whoever calls it (a superuser writing a watched table runs its WHEN clause, event
    # triggers run as whoever does DDL), so none may belong to a role that could alter it.
    assert (
        scalar(
            db,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'guardian'::regnamespace "
            "AND NOT prosecdef AND pg_get_userbyid(proowner) = 'guardian_owner'",
        )
        == 0
    )
    assert db.execute(
        "SELECT count(*) FROM pg_event_trigger AS e JOIN pg_proc AS p ON p.oid = e.evtfoid "
        "WHERE pg_get_userbyid(p.proowner) = 'guardian_owner'"
    ).fetchone() == (0,)
    superuser_definers = db.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'guardian'::regnamespace AND prosecdef "
        "AND pg_get_userbyid(proowner) <> 'guardian_owner' "
        "AND oid NOT IN (SELECT evtfoid FROM pg_event_trigger) ORDER BY 1"
    ).fetchall()
    # dblink and the server log need a superuser, lockdown changes other roles' privileges and
    # settings, and the compiled prefilter functions are replaced by their owner: these few
    # definers stay with the installing role.
    assert {r[0] for r in superuser_definers} <= {
        "_record_rejection",
        "_role_password_digests",
        "_prune_cron_history",
        "_lockdown_privilege",
        "_lockdown_read_only",
        "_lockdown_end_sessions",
        "_compile_rules",
    }
    # and it may create nothing: no CREATE OR REPLACE of any guardian function
    assert scalar(db, "SELECT has_schema_privilege('guardian_owner', 'guardian', 'CREATE')") is False
    assert scalar(db, "SELECT rolsuper OR rolcanlogin FROM pg_roles WHERE rolname = 'guardian_owner'") is False
