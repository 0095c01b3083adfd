"""The security review's reproductions (shared/design/security-review.md), each replayed through
the real server as the role that attacks, and each asserted to fail now.

Roles: ``sec_app`` owns the watched table ``public.patients`` and may create in ``public`` (as
when migrations run as the application); ``sec_app2`` is a second application login;
``sec_admin`` is a member of guardian_admin. A compromised ``guardian_owner`` is played by a
superuser session that has done ``SET ROLE guardian_owner``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import psycopg
import pytest
from support.queries import scalar

PROOF = "CREATE TABLE public.sec_proof (who text, super boolean, at text)"
GRANT_PROOF = "GRANT INSERT, SELECT ON public.sec_proof TO PUBLIC"


@pytest.fixture
def roles(db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]) -> dict:
    make_role("sec_app")
    make_role("sec_app2")
    make_role("sec_admin", "guardian_admin")
    db.execute("GRANT CREATE ON SCHEMA public TO sec_app")
    db.execute(PROOF)
    db.execute(GRANT_PROOF)
    app = connect(db.info.dbname, "sec_app")
    app.execute(
        "CREATE TABLE public.patients (id serial PRIMARY KEY, first_name text, email text, "
        "phone text, clinic_name text)"
    )
    app.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.patients TO sec_app2")
    app.execute("GRANT USAGE ON SEQUENCE public.patients_id_seq TO sec_app2")
    db.execute("SELECT guardian.watch('public.patients')")
    return {
        "app": app,
        "app2": connect(db.info.dbname, "sec_app2"),
        "admin": connect(db.info.dbname, "sec_admin"),
    }


def proof_rows(db: psycopg.Connection) -> list[tuple]:
    return db.execute("SELECT who, super, at FROM public.sec_proof ORDER BY 1").fetchall()


def is_superuser(db: psycopg.Connection, role: str) -> bool:
    return bool(scalar(db, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)))


# C1 (a): the application's cast to json never runs inside the guardian's SECURITY DEFINER code.
C1_CAST = """
CREATE TYPE public.mood AS ENUM ('ok');
CREATE FUNCTION public.mood_to_json(m public.mood) RETURNS json LANGUAGE plpgsql AS $f$ BEGIN
  INSERT INTO public.sec_proof
  SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), 'cast';
  IF current_user = 'guardian_owner' THEN EXECUTE $d$
    CREATE OR REPLACE FUNCTION guardian._ignored_change(p_object_type text, p_schema_name text,
      p_object_identity text, p_classid oid, p_objid oid) RETURNS boolean LANGUAGE plpgsql AS $b$
    BEGIN IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
      EXECUTE 'ALTER ROLE sec_app SUPERUSER'; END IF; RETURN true; END $b$ $d$;
  END IF; RETURN to_json(m::text); END $f$;
CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_to_json(public.mood);
ALTER TABLE public.patients ADD COLUMN m public.mood;
"""


@pytest.fixture
def c1_cast(roles: dict, db: psycopg.Connection) -> Iterator[None]:
    roles["app"].execute(C1_CAST)
    yield
    db.execute("DROP TYPE public.mood CASCADE")  # a cast belongs to no role: DROP OWNED leaves it


@pytest.mark.parametrize("mode", ["warn", "strict"])
@pytest.mark.usefixtures("c1_cast")
def test_c1_application_cast_never_runs_as_the_guardian(roles: dict, db: psycopg.Connection, mode: str) -> None:
    app = roles["app"]
    db.execute("SELECT guardian.set_mode(%s)", (mode,))
    try:
        app.execute("INSERT INTO public.patients (first_name, email, m) VALUES ('Jane', 'user@tenant-a.test', 'ok')")
    except psycopg.Error as exc:
        assert mode == "strict" and exc.sqlstate == "GD001"
    app.execute("CREATE TABLE public.any_ddl (x int)")  # the next DDL, which the takeover needed
    # The finding is made all the same (the enum is read through its output function).
    kind = "STRICT_MODE_REJECTION" if mode == "strict" else "TEST_DATA_CONTAMINATION"
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = %s", (kind,)) >= 1
    assert [r for r in proof_rows(db) if r[0] != "sec_app"] == []
    assert not is_superuser(db, "sec_app")


@pytest.mark.usefixtures("c1_cast")
def test_c1_a_superuser_writing_a_watched_table_runs_no_application_cast(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO public.patients (first_name, email, m) VALUES ('Jane', 'user@tenant-a.test', 'ok')")
    assert proof_rows(db) == []
    assert scalar(db, "SELECT count(*) FROM guardian.findings WHERE relid = 'public.patients'::regclass") >= 1


@pytest.fixture
def as_guardian_owner(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A session that runs SQL as guardian_owner: what C1 (b) assumed an attacker had."""
    db.execute("SET ROLE guardian_owner")
    yield db
    db.execute("RESET ROLE")


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        (
            "CREATE OR REPLACE FUNCTION guardian._ignored_change(p_object_type text, p_schema_name text, "
            "p_object_identity text, p_classid oid, p_objid oid) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "CREATE OR REPLACE FUNCTION guardian._suspect(p_new record) RETURNS boolean LANGUAGE plpgsql "
            "AS 'BEGIN RETURN true; END'",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "CREATE FUNCTION guardian.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "ALTER FUNCTION guardian.raise_alert(text, text, text, text, text, jsonb, text) SECURITY INVOKER",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "ALTER FUNCTION guardian.raise_alert(text, text, text, text, text, jsonb, text) SET search_path = public",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "CREATE RULE evil AS ON INSERT TO guardian.schema_changes DO ALSO NOTIFY evil",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "CREATE TRIGGER evil AFTER INSERT ON guardian.findings FOR EACH STATEMENT "
            "EXECUTE FUNCTION guardian._recompile()",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "ALTER TABLE guardian.monitoring_alerts ALTER COLUMN message SET DEFAULT pg_catalog.now()::text",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "DROP FUNCTION guardian.current_mode()",
            (psycopg.errors.InsufficientPrivilege, psycopg.errors.DependentObjectsStillExist),
        ),
    ],
)
def test_c1_guardian_owner_cannot_change_what_superusers_run(
    roles: dict, as_guardian_owner: psycopg.Connection, statement: str, error: type | tuple[type, ...]
) -> None:
    with pytest.raises(error) as err:
        as_guardian_owner.execute(statement)
    assert "guardian" in str(err.value)


def test_c1_the_when_clause_and_event_triggers_call_only_objects_the_guardian_owner_cannot_alter(
    db: psycopg.Connection,
) -> None:
    # Every SECURITY INVOKER function in the schema (what WHEN clauses, triggers and event
    # triggers run as their caller) belongs to the installer, not to guardian_owner.
    assert (
        scalar(
            db,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'guardian'::regnamespace "
            "AND NOT prosecdef AND proowner = 'guardian_owner'::regrole",
        )
        == 0
    )
    assert (
        scalar(
            db, "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'guardian._suspect(record)'::regprocedure"
        )
        != "guardian_owner"
    )


# H1: a guardian_admin member cannot point the superuser recorder anywhere.
def test_h1_admin_cannot_redirect_the_strict_mode_recorder(roles: dict, db: psycopg.Connection) -> None:
    admin = roles["admin"]
    db.execute("CREATE SCHEMA sec_adm AUTHORIZATION sec_admin")
    admin.execute(
        """CREATE FUNCTION sec_adm.proof(v pg_catalog.jsonb) RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN
             INSERT INTO public.sec_proof SELECT current_user,
               (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), 'domain';
             RETURN true; END $f$"""
    )
    admin.execute("CREATE DOMAIN sec_adm.jsonb AS pg_catalog.jsonb CHECK (sec_adm.proof(VALUE))")
    # The old setting is no longer read; the recorder's own table is for superusers only.
    admin.execute(
        "INSERT INTO guardian.settings (environment, key, value) VALUES ('*', 'strict.recorder_dsn', %s)",
        (f"\"dbname={db.info.dbname} user=postgres options='-csearch_path=sec_adm,pg_catalog'\"",),
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        admin.execute("INSERT INTO guardian.strict_recorder (host) VALUES ('/tmp')")
    db.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error) as err:
        roles["app"].execute("INSERT INTO public.patients (email) VALUES ('strict@tenant-a.test')")
    assert err.value.sqlstate == "GD001"
    assert proof_rows(db) == []
    assert "Recorded as a STRICT_MODE_REJECTION alert" in (err.value.diag.message_detail or "")
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'STRICT_MODE_REJECTION'") == 1


# H2: no login role can crash the server through a C function.
def test_h2_null_rows_do_not_crash_the_server(roles: dict, db: psycopg.Connection) -> None:
    started = scalar(db, "SELECT pg_postmaster_start_time()")
    app = roles["app"]
    for call in (
        "SELECT guardian._suspect(NULL::public.patients, NULL::public.patients)",
        "SELECT guardian._suspect(NULL::public.patients)",
        "SELECT guardian._suspect(ROW(1, 2))",
        "SELECT guardian._suspect(ROW(1, 'x')::public.patients, NULL::public.patients)",
    ):
        with contextlib.suppress(psycopg.Error):
            app.execute(call)
    assert scalar(db, "SELECT pg_postmaster_start_time()") == started


# H3: the application cannot forge alerts, read other sessions' records, or close alerts.
def _flagged_write(conn: psycopg.Connection, email: str) -> str:
    conn.execute("INSERT INTO public.patients (first_name, email) VALUES ('Jane', %s)", (email,))
    return str(
        scalar(
            conn,
            "SELECT id FROM public.patients WHERE email = %s",
            (email,),
        )
    )


def test_h3_application_cannot_forge_alerts_or_scripts(roles: dict, db: psycopg.Connection) -> None:
    app = roles["app"]
    with app.transaction():
        _flagged_write(app, "forger@tenant-a.test")
        app.execute("SELECT guardian._auto_response_begin()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute(
                "SELECT guardian._auto_response_report('AUTO_CLEANUP_FAILED', NULL, 'FORGED alert', "
                """'{"cleanup_script": "ALTER ROLE sec_app SUPERUSER"}')"""
            )
    other = scalar(db, "SELECT id FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT guardian._auto_response_report('cleanup_script_error', %s, 'FORGED', NULL)", (other,))
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE message ~ 'FORGED'") == 0
    assert (
        scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE metadata::text ~ 'ALTER ROLE sec_app'") == 0
    )


def test_h3_reports_of_the_own_transaction_carry_no_made_up_script(roles: dict, db: psycopg.Connection) -> None:
    app = roles["app"]
    _flagged_write(app, "forger2@tenant-a.test")
    alert = scalar(db, "SELECT id FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'")
    db.execute("SELECT guardian.set_auto_cleanup(true)")  # so that the transaction runs an auto-response
    with app.transaction():
        _flagged_write(app, "forger3@tenant-a.test")  # this transaction adds to the alert
        app.execute("SELECT guardian._auto_response_begin()")
        app.execute(
            "SELECT guardian._auto_response_report('AUTO_CLEANUP_FAILED', %s, E'x\\nFORGED', "
            """'{"cleanup_script": "ALTER ROLE sec_app SUPERUSER", "error": "e"}')""",
            (alert,),
        )
    metadata = scalar(db, "SELECT metadata FROM guardian.monitoring_alerts WHERE type = 'AUTO_CLEANUP_FAILED'")
    assert "cleanup_script" not in metadata and metadata["reported_by"] == "sec_app"
    assert "\n" not in scalar(db, "SELECT message FROM guardian.monitoring_alerts WHERE type = 'AUTO_CLEANUP_FAILED'")


def test_h3_application_cannot_read_record_keys_of_other_sessions(roles: dict, db: psycopg.Connection) -> None:
    roles["app2"].execute("INSERT INTO public.patients (first_name, email) VALUES ('Eve', 'other@tenant-a.test')")
    alert = scalar(db, "SELECT id FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'")
    app = roles["app"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
        app.execute("SELECT guardian._auto_response_begin()")
        app.execute("SELECT guardian._auto_alert_roots(%s)", (alert,))


def test_h3_forged_quarantine_does_not_close_the_alert(roles: dict, db: psycopg.Connection) -> None:
    app = roles["app"]
    # so that a transaction with test data runs an auto-response (which cleans nothing itself)
    db.execute("SELECT guardian.set_auto_lockdown(true, 100000)")
    first = int(_flagged_write(app, "stays@tenant-a.test"))
    with app.transaction():
        # Another flagged row makes this transaction one whose findings joined the alert.
        second = int(_flagged_write(app, "again@tenant-a.test"))
        app.execute("SELECT guardian._auto_response_begin()")
        alert = scalar(
            db,
            "SELECT id FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION' "
            "ORDER BY (metadata->>'affected_records')::int DESC, created_at LIMIT 1",
        )
        roots = json.dumps({"public.patients": [{"key": {"id": first}}, {"key": {"id": second}}]})
        batch = scalar(
            app,
            "SELECT batch_id FROM guardian._register_cleanup_script(gen_random_uuid(), %s, %s::jsonb, "
            """'{"1": 2}'::jsonb, true)""",
            (alert, roots),
        )
        step = scalar(app, "SELECT steps FROM guardian._cleanup_registered(%s)", (batch,))[0]
        app.execute(
            "SELECT guardian._quarantine_put(%s, ARRAY["
            "ROW(%s, %s::regclass, 'delete', %s::jsonb, '{}'::jsonb, NULL, '[]'::jsonb, 0, '(0,1)'),"
            "ROW(%s, %s::regclass, 'delete', %s::jsonb, '{}'::jsonb, NULL, '[]'::jsonb, 0, '(0,2)')"
            "]::guardian.quarantine_item[])",
            (
                batch,
                step["step"],
                step["relid"],
                json.dumps({"id": first}),
                step["step"],
                step["relid"],
                json.dumps({"id": second}),
            ),
        )
        app.execute("SELECT guardian.cleanup_step(%s, %s, %s)", (batch, step["step"], step["rows"]))
        app.execute("SELECT guardian.cleanup_finish(%s)", (batch,))
    # The records are still there, so the guardian does not take the session's word for it.
    assert scalar(db, "SELECT count(*) FROM public.patients WHERE id IN (%s, %s)", (first, second)) == 2
    resolved, unconfirmed = db.execute(
        "SELECT resolved_at IS NOT NULL, metadata->>'cleanup_unconfirmed' "
        "FROM guardian.monitoring_alerts WHERE id = %s",
        (alert,),
    ).fetchone()
    assert resolved is False
    assert "2 of its records are still in public.patients" in unconfirmed


# H4: a table owner cannot take its table out of strict mode through its triggers.
@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE public.patients ENABLE REPLICA TRIGGER guardian_contamination_insert",
        "ALTER TABLE public.patients ENABLE ALWAYS TRIGGER guardian_contamination_insert",
        "ALTER TABLE public.patients ENABLE REPLICA TRIGGER guardian_activity",
        "ALTER TRIGGER guardian_contamination_insert ON public.patients RENAME TO app_audit",
        "ALTER TABLE public.patients DISABLE TRIGGER guardian_truncate",
    ],
)
def test_h4_table_owner_cannot_sideline_guardian_triggers(roles: dict, db: psycopg.Connection, statement: str) -> None:
    db.execute("SELECT guardian.set_mode('strict')")
    app = roles["app"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        app.execute(statement)
    assert "guardian trigger" in str(err.value)
    with pytest.raises(psycopg.Error) as rejected:
        app.execute("INSERT INTO public.patients (email) VALUES ('strict-escape@tenant-c.test')")
    assert rejected.value.sqlstate == "GD001"


def test_h4_rename_then_drop_is_refused(roles: dict) -> None:
    app = roles["app"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("ALTER TRIGGER guardian_contamination_update ON public.patients RENAME TO app_audit")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("DROP TRIGGER guardian_contamination_update ON public.patients")


# M1: DDL of the table owner keeps the table watched.
def test_m1_renamed_column_is_still_checked(roles: dict, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_mode('strict')")
    app = roles["app"]
    app.execute("ALTER TABLE public.patients RENAME COLUMN email TO email_address")
    with pytest.raises(psycopg.Error) as err:
        app.execute("INSERT INTO public.patients (email_address) VALUES ('renamed@tenant-a.test')")
    assert err.value.sqlstate == "GD001"
    assert "email_address" in scalar(db, "SELECT column_names::text FROM guardian.watched_tables")


def test_m1_added_column_is_watched(roles: dict, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_mode('strict')")
    app = roles["app"]
    app.execute("ALTER TABLE public.patients ADD COLUMN backup_email text")
    with pytest.raises(psycopg.Error) as err:
        app.execute("INSERT INTO public.patients (backup_email) VALUES ('added@tenant-a.test')")
    assert err.value.sqlstate == "GD001"


def test_m1_application_before_trigger_cannot_slip_a_value_past_update(roles: dict, db: psycopg.Connection) -> None:
    app = roles["app"]
    app.execute("INSERT INTO public.patients (first_name, email) VALUES ('Ana', 'ana@gmail.com')")
    app.execute(
        """CREATE FUNCTION public.sneak() RETURNS trigger LANGUAGE plpgsql AS $f$
           BEGIN NEW.email := 'sneaky@tenant-a.test'; RETURN NEW; END $f$"""
    )
    app.execute("CREATE TRIGGER a_sneak BEFORE UPDATE ON public.patients FOR EACH ROW EXECUTE FUNCTION public.sneak()")
    db.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error) as err:
        app.execute("UPDATE public.patients SET first_name = 'Anna'")
    assert err.value.sqlstate == "GD001"


def test_m1_inheritance_child_of_a_watched_table_is_refused(roles: dict) -> None:
    app = roles["app"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        app.execute("CREATE TABLE public.patients_child () INHERITS (public.patients)")
    assert "may not inherit from watched table public.patients" in str(err.value)
    assert "guardian.watch" in (err.value.diag.message_hint or "")
    app.execute("CREATE TABLE public.loose (LIKE public.patients)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("ALTER TABLE public.loose INHERIT public.patients")


def test_m1_partitions_made_by_the_application_are_watched_and_detaching_is_reported(
    roles: dict, db: psycopg.Connection
) -> None:
    app = roles["app"]
    app.execute(
        "CREATE TABLE public.visits (id int, region text, email text, PRIMARY KEY (id, region)) "
        "PARTITION BY LIST (region)"
    )
    app.execute("CREATE TABLE public.visits_eu PARTITION OF public.visits FOR VALUES IN ('eu')")
    db.execute("SELECT guardian.watch('public.visits')")
    db.execute("SELECT guardian.set_mode('strict')")
    app.execute("CREATE TABLE public.visits_us PARTITION OF public.visits FOR VALUES IN ('us')")
    assert scalar(
        db,
        "SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'public.visits_us'::regclass",
    ) == [
        "guardian_activity",
        "guardian_activity_start",
        "guardian_contamination_insert",
        "guardian_contamination_update",
        "guardian_truncate",
    ]
    with pytest.raises(psycopg.Error) as err:
        app.execute("INSERT INTO public.visits_us VALUES (1, 'us', 'new-partition@tenant-a.test')")
    assert err.value.sqlstate == "GD001"
    app.execute("ALTER TABLE public.visits DETACH PARTITION public.visits_eu")
    assert (
        scalar(
            db,
            "SELECT count(*) FROM guardian.monitoring_alerts "
            "WHERE type = 'WATCH_LOST' AND table_name = 'public.visits_eu'",
        )
        == 1
    )


# M3: nothing a session can SET switches the auto-response or the alert off.
def test_m3_session_settings_do_not_switch_off_alerts_or_auto_cleanup(roles: dict, db: psycopg.Connection) -> None:
    app = roles["app"]
    app.execute(
        """CREATE FUNCTION public.zz_clear() RETURNS trigger LANGUAGE plpgsql AS $f$
           BEGIN PERFORM set_config('guardian.pending_findings', '', true); RETURN NULL; END $f$"""
    )
    app.execute(
        "CREATE TRIGGER zz_clear AFTER INSERT ON public.patients FOR EACH ROW EXECUTE FUNCTION public.zz_clear()"
    )
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    with app.transaction():
        app.execute("SET LOCAL guardian.auto_response_upto = '9223372036854775807'")
        app.execute("INSERT INTO public.patients (first_name, email) VALUES ('Jane', 'jane@example.com')")
    # reserved_example_domain is safe for automation: cleaned at commit, alert closed
    assert scalar(db, "SELECT count(*) FROM public.patients WHERE email = 'jane@example.com'") == 0
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_QUARANTINED'") == 1


# L4: values do not leak through HINTs and record ids.
def test_l4_rejection_hint_and_record_ids_carry_no_full_value(
    db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> None:
    db.execute("CREATE TABLE public.accounts (email text PRIMARY KEY, first_name text)")
    db.execute("SELECT guardian.watch('public.accounts')")
    db.execute("INSERT INTO public.accounts VALUES ('celeste.realperson+qa@gmail.com', 'Celeste')")
    record_id = scalar(db, "SELECT record_id FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'")
    assert "celeste.realperson" not in record_id and "@gmail.com" in record_id
    db.execute("SELECT guardian.set_mode('strict')")
    big = "test-" + "x" * 10_000 + "@tenant-a.test"
    with pytest.raises(psycopg.Error) as err:
        db.execute("INSERT INTO public.accounts VALUES (%s, 'Big')", (big,))
    assert "x" * 200 not in (err.value.diag.message_hint or "") + (err.value.diag.message_detail or "")


# L5: TRUNCATE of a watched table is reported.
def test_l5_truncate_of_a_watched_table_is_reported(roles: dict, db: psycopg.Connection) -> None:
    roles["app"].execute("TRUNCATE public.patients")
    severity, message = db.execute(
        "SELECT severity, message FROM guardian.monitoring_alerts WHERE type = 'TABLE_TRUNCATED'"
    ).fetchone()
    assert severity == "HIGH" and "public.patients" in message and "sec_app" in message


def test_m3_plpgsql_activity_triggers_keep_their_baseline_out_of_session_reach(
    roles: dict, db: psycopg.Connection
) -> None:
    # The PL/pgSQL statement triggers (used where the C library cannot load) in place of C ones.
    for name, timing, function in (
        ("guardian_activity", "AFTER", "_on_statement"),
        ("guardian_activity_start", "BEFORE", "_before_statement"),
    ):
        db.execute(f"DROP TRIGGER {name} ON public.patients")
        db.execute(
            f"CREATE TRIGGER {name} {timing} INSERT OR UPDATE OR DELETE ON public.patients "
            f"FOR EACH STATEMENT EXECUTE FUNCTION guardian.{function}('r')"
        )
    app = roles["app"]
    # A row trigger of the application that would move a baseline kept in a setting.
    app.execute(
        """CREATE FUNCTION public.fake_baseline() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN
             PERFORM set_config('guardian.rows_' || TG_RELID::oid || '_INSERT', '1000000', true);
             RETURN NULL; END $f$"""
    )
    app.execute(
        "CREATE TRIGGER fake_baseline AFTER INSERT ON public.patients "
        "FOR EACH ROW EXECUTE FUNCTION public.fake_baseline()"
    )
    app.execute("INSERT INTO public.patients (first_name) SELECT 'n' || g FROM generate_series(1, 120) AS g")
    assert (
        scalar(
            db,
            "SELECT sum(rows) FROM guardian.activity_log WHERE relid = 'public.patients'::regclass "
            "AND operation = 'INSERT'",
        )
        == 120
    )
