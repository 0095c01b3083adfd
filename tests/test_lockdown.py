"""Lockdown: application writes stop, admins keep working, unlock gives back what was taken."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import response
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from support.queries import scalar
from support.response import count, grant_app, load_dental

ACLS = """
SELECT c.oid::regclass::text AS object, a.grantor::regrole::text, a.grantee, a.privilege_type,
       a.is_grantable
  FROM pg_class AS c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS a
 WHERE c.relnamespace = 'dental'::regnamespace
UNION ALL
SELECT c.oid::regclass::text || '.' || att.attname, a.grantor::regrole::text, a.grantee,
       a.privilege_type, a.is_grantable
  FROM pg_class AS c JOIN pg_attribute AS att ON att.attrelid = c.oid, aclexplode(att.attacl) AS a
 WHERE c.relnamespace = 'dental'::regnamespace
ORDER BY 1, 2, 3, 4
"""
SETTINGS = """
SELECT setrole::regrole::text, setconfig FROM pg_db_role_setting
 WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1
"""


@pytest.fixture
def roles(
    db: psycopg.Connection,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> Iterator[dict[str, str]]:
    """The dental sample with an application role (also through a group role, column and
    grant-option grants, a setting of its own), an ops admin and a dashboard role."""
    load_dental(db)
    make_role("dental_app")
    make_role("ops", "guardian_admin")
    make_role("relay_bot", "guardian_relay")
    grant_app(db, "dental_app")
    db.execute("DROP ROLE IF EXISTS dental_writers")
    db.execute("CREATE ROLE dental_writers NOLOGIN")
    db.execute("GRANT dental_writers TO dental_app")
    db.execute("GRANT UPDATE (name) ON dental.clinics TO dental_writers")
    db.execute("GRANT INSERT ON dental.invoices TO dental_writers WITH GRANT OPTION")
    db.execute("GRANT USAGE ON SCHEMA dental TO ops")
    db.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA dental TO ops")
    db.execute(f"ALTER ROLE dental_app IN DATABASE {dbname} SET statement_timeout = '7s'")
    yield {"app": "dental_app", "admin": "ops"}
    cleanup = connect(dbname)  # the test may have restarted the server
    cleanup.execute("DROP OWNED BY dental_writers")
    cleanup.execute("DROP ROLE dental_writers")


def _state(db: psycopg.Connection) -> tuple[list[Any], list[Any]]:
    return db.execute(ACLS).fetchall(), db.execute(SETTINGS).fetchall()


def test_lockdown_stops_the_application_while_the_admin_keeps_working(
    db: psycopg.Connection,
    roles: dict[str, str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    app = connect(dbname, user=roles["app"])
    admin = connect(dbname, user=roles["admin"])
    app.execute("INSERT INTO dental.clinics (name) VALUES ('Before Lockdown Dental')")
    row = response.lockdown(admin, "seed job writing test data to production")
    assert row["roles"] == ["dental_app", "dental_writers"] and row["revoked"] == 6
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table clinics"):
        app.execute("INSERT INTO dental.clinics (name) VALUES ('During Lockdown Dental')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("UPDATE dental.clinics SET name = 'x' WHERE false")
    assert count(app, "SELECT count(*) FROM dental.clinics") == 3  # reads still work
    admin.execute("INSERT INTO dental.clinics (name) VALUES ('Admin Still Works Dental')")
    # New sessions of the application are read-only as well.
    fresh = connect(dbname, user=roles["app"])
    assert scalar(fresh, "SHOW default_transaction_read_only") == "on"
    alert = db.execute("SELECT severity, message FROM guardian.open_alerts WHERE type = 'LOCKDOWN'").fetchone()
    assert alert is not None and alert[0] == "HIGH" and "seed job writing test data" in alert[1]
    # The lockdown's own REVOKEs are not privilege changes to report, now or by the scheduled check.
    assert count(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'PRIVILEGE_REVOKED'") == 0
    assert count(db, "SELECT count(*) FROM guardian._privilege_changes('scheduled scan')") == 0


def test_unlock_gives_back_exactly_the_previous_grants_and_settings(
    db: psycopg.Connection,
    roles: dict[str, str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    before = _state(db)
    response.lockdown(db, "drill")
    during_acls, during_settings = _state(db)
    assert during_acls != before[0]
    assert [s for s in during_settings[0][1] if "read_only" in s] == ["default_transaction_read_only=on"]
    result = response.unlock(db, "drill over")
    assert result["not_restored"] == []
    assert _state(db) == before
    app = connect(dbname, user=roles["app"])
    app.execute("INSERT INTO dental.clinics (name) VALUES ('After Lockdown Dental')")
    messages = [
        r[0]
        for r in db.execute(
            "SELECT type FROM guardian.monitoring_alerts "
            "WHERE type LIKE 'LOCKDOWN%' OR type LIKE 'PRIVILEGE\\_%' ORDER BY created_at"
        )
    ]
    assert messages[-2:] == ["LOCKDOWN", "LOCKDOWN_LIFTED"]
    assert count(db, "SELECT count(*) FROM guardian.open_alerts WHERE type = 'LOCKDOWN'") == 0


def test_a_lockdown_when_already_locked_is_refused(db: psycopg.Connection, roles: dict[str, str]) -> None:
    response.lockdown(db, "first")
    with pytest.raises(
        response.ResponseError,
        match=r"local is already locked down \(since .* by postgres: first\); Nothing was changed; "
        r"Lift it first with SELECT guardian.unlock\(\); \(pg-guardian lockdown unlock\)",
    ):
        response.lockdown(db, "second")
    with pytest.raises(response.ResponseError, match="a lockdown needs a reason"):
        response.unlock(db) and response.lockdown(db, "  ")
    with pytest.raises(response.ResponseError, match="local is not locked down"):
        response.unlock(db)


def test_roles_that_keep_working(db: psycopg.Connection, roles: dict[str, str]) -> None:
    rows = {r["role_name"]: (r["locked"], r["reason"]) for r in response.lockdown_roles(db)}
    assert rows["dental_app"][0] is True
    assert rows["ops"] == (False, "guardian role or admin")
    assert rows["relay_bot"] == (False, "guardian role or admin")
    assert rows["postgres"] == (False, "superuser")
    db.execute("""SELECT guardian.set_response_setting('lockdown.admin_roles', '["dental_app"]')""")
    assert {r["role_name"]: r["locked"] for r in response.lockdown_roles(db)}["dental_app"] is False
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot be locked down"):
        db.execute("""SELECT guardian.set_response_setting('lockdown.roles', '["ops"]')""")
    with pytest.raises(psycopg.errors.UndefinedObject, match="no role named"):
        db.execute("""SELECT guardian.set_response_setting('lockdown.roles', '["nobody_at_all"]')""")


def test_lockdown_can_end_the_applications_sessions(
    db: psycopg.Connection,
    roles: dict[str, str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    app = connect(dbname, user=roles["app"])
    db.execute("SELECT guardian.set_response_setting('lockdown.end_sessions', 'true')")
    row = response.lockdown(db, "end them")
    assert row["sessions_ended"] == 1
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")


def test_the_superuser_helpers_refuse_admins_and_only_the_guardian_may_call_them(
    db: psycopg.Connection,
    roles: dict[str, str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    owners = dict(
        db.execute(
            """SELECT proname, pg_get_userbyid(proowner) FROM pg_proc
                WHERE proname LIKE '\\_lockdown\\_%' AND pronamespace = 'guardian'::regnamespace"""
        )
    )
    assert owners["_lockdown_privilege"] == "postgres" and owners["_lockdown_apply"] == "guardian_owner"
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not change the privileges of role ops"):
        db.execute("SELECT guardian._lockdown_privilege(false, 'dental.clinics', 'ops'::regrole, ARRAY['INSERT'])")
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege,
        match=r"may not change privileges on guardian\.settings",
    ):
        db.execute(
            "SELECT guardian._lockdown_privilege(true, 'guardian.settings', 'dental_app'::regrole, ARRAY['INSERT'])"
        )
    admin = connect(dbname, user=roles["admin"])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"):
        admin.execute("SELECT guardian._lockdown_read_only('dental_app'::regrole, 'off')")


def test_lockdown_survives_a_restart_and_shows_in_status(
    db: psycopg.Connection,
    roles: dict[str, str],
    cluster: LocalCluster,
    connect: Callable[..., psycopg.Connection],
    dbname: str,
    dsn: str,
) -> None:
    response.lockdown(db, "incident 42")
    db.close()
    cluster.restart()
    app = connect(dbname, user=roles["app"])
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        app.execute("INSERT INTO dental.clinics (name) VALUES ('After Restart Dental')")
    result = CliRunner().invoke(main, ["status", "--dsn", dsn])
    assert result.exit_code == 1, result.output  # 1: nothing runs the jobs of a test database
    assert "lockdown: LOCKED DOWN since" in result.output and "incident 42" in result.output
    assert "6 write grant(s) taken from dental_app, dental_writers" in result.output
    unlocked = CliRunner().invoke(main, ["lockdown", "unlock", "--dsn", dsn])
    assert unlocked.exit_code == 0 and "local unlocked" in unlocked.output
    assert "lockdown" not in CliRunner().invoke(main, ["status", "--dsn", dsn, "--format", "json"]).output


def test_lockdown_cli(db: psycopg.Connection, roles: dict[str, str], dsn: str) -> None:
    runner = CliRunner()
    started = runner.invoke(main, ["lockdown", "start", "--dsn", dsn, "test", "data", "flood"])
    assert started.exit_code == 0, started.output
    assert "local locked down: 6 write grant(s) taken from dental_app, dental_writers" in started.output
    again = runner.invoke(main, ["lockdown", "start", "--dsn", dsn, "again"])
    assert again.exit_code == 2 and again.output.startswith("error: local is already locked down")
    shown = runner.invoke(main, ["lockdown", "status", "--dsn", dsn])
    assert "test data flood" in shown.output
    assert runner.invoke(main, ["lockdown", "unlock", "--dsn", dsn]).exit_code == 0
    assert runner.invoke(main, ["lockdown", "status", "--dsn", dsn]).output == "not locked down\n"


def test_automatic_lockdown_at_the_threshold(
    db: psycopg.Connection,
    roles: dict[str, str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    db.execute("SELECT guardian.set_auto_lockdown(true, 3)")
    app = connect(dbname, user=roles["app"])
    for n in range(3):  # three records with CRITICAL test data: at the threshold, not over it
        app.execute(
            "INSERT INTO dental.clinics (name, email) VALUES (%s, %s)",
            (f"Clinic {n}", f"c{n}@example.com"),
        )
    assert count(db, "SELECT count(*) FROM guardian.lockdowns") == 0
    app.execute("INSERT INTO dental.clinics (name, email) VALUES ('Clinic 3', 'c3@example.com')")
    row = db.execute("SELECT automatic, started_by, reason, roles FROM guardian.lockdown_status").fetchone()
    assert row is not None
    assert row[:2] == (True, "pg_guardian") and row[3] == ["dental_app", "dental_writers"]
    assert row[2] == ("4 records with CRITICAL test data in the last 60 minutes, more than LOCKDOWN_THRESHOLD 3")
    assert scalar(db, "SELECT severity FROM guardian.open_alerts WHERE type = 'LOCKDOWN'") == "CRITICAL"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("INSERT INTO dental.clinics (name) VALUES ('Blocked Dental')")


def test_automatic_lockdown_is_off_unless_enabled(db: psycopg.Connection, roles: dict[str, str]) -> None:
    db.execute("SELECT guardian.set_param('lockdown.threshold', 1)")
    for n in range(3):
        db.execute(
            "INSERT INTO dental.clinics (name, email) VALUES (%s, %s)",
            (f"Clinic {n}", f"c{n}@example.com"),
        )
    assert count(db, "SELECT count(*) FROM guardian.lockdowns") == 0


def test_uninstall_is_refused_during_a_lockdown(db: psycopg.Connection, roles: dict[str, str], dsn: str) -> None:
    response.lockdown(db, "drill")
    result = CliRunner().invoke(main, ["uninstall", "--force", "--dsn", dsn])
    assert result.exit_code == 2
    assert "a lockdown is active" in result.output and "guardian.unlock()" in result.output
    assert scalar(db, "SELECT count(*) FROM guardian.lockdown_status") == 1
    response.unlock(db)
    assert CliRunner().invoke(main, ["uninstall", "--force", "--dsn", dsn]).exit_code == 0
