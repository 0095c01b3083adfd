"""Security events through the real server: failed logins from real wrong-password connections,
brute force, permission-denied errors and strict-mode rejections read from the CSV log (with
rotation and an unreadable log), role changes, GRANT/REVOKE, and risky posture."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from pg_guardian.cluster import LocalCluster
from support.checks import findings, open_alerts, run_check, set_param, wait_for
from support.queries import scalar


def fail_login(cluster: LocalCluster, dbname: str, user: str, times: int = 1) -> None:
    """Real TCP connections with a wrong password (scram-sha-256 on 127.0.0.1)."""
    for _ in range(times):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.tcp_dsn(dbname, user, "wrong-password"), connect_timeout=5)


def log_findings(db: psycopg.Connection, alert_type: str, record_id: str) -> list[dict[str, object]]:
    """Read the log until a finding of this type about this role shows up (bounded)."""
    return wait_for(
        lambda: [r for r in findings(db, "server_log", alert_type) if r["record_id"] == record_id],
        timeout=10,
    )


def test_failed_logins_are_read_from_the_log_and_brute_force_fires_at_threshold(
    cluster: LocalCluster, db: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    role = make_role("bf_victim", password="right-password")
    run_check(db, "server_log")
    fail_login(cluster, db.info.dbname, role, times=4)
    [row] = log_findings(db, "LOGIN_FAILED", role)
    assert row["severity"] == "LOW" and "127.0.0.1" in row["detail"]
    events = scalar(
        db,
        "SELECT count(*) FROM guardian.security_events WHERE kind = 'login_failed' AND role_name = %s",
        (role,),
    )
    assert events == 4
    assert [r for r in open_alerts(db, "BRUTE_FORCE_SUSPECTED") if r["record_id"] == role] == []

    fail_login(cluster, db.info.dbname, role)  # the fifth within the window
    [row] = log_findings(db, "BRUTE_FORCE_SUSPECTED", role)
    assert row["severity"] == "HIGH" and "5 failed logins for role bf_victim" in row["detail"]
    fail_login(cluster, db.info.dbname, role)
    log_findings(db, "BRUTE_FORCE_SUSPECTED", role)
    [alert] = [a for a in open_alerts(db, "BRUTE_FORCE_SUSPECTED") if a["record_id"] == role]
    assert alert["occurrences"] == 2  # an ongoing attack is one alert
    # A right password is not an event.
    psycopg.connect(cluster.tcp_dsn(db.info.dbname, role, "right-password")).close()
    assert scalar(db, "SELECT count(*) FROM guardian.security_events WHERE role_name = %s", (role,)) == 6


def test_brute_force_threshold_and_window_are_settings(
    cluster: LocalCluster, db: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    role = make_role("bf_slow", password="right-password")
    set_param(db, "security.brute_force.failures", 2)
    set_param(db, "security.brute_force.window_seconds", 1)
    run_check(db, "server_log")
    fail_login(cluster, db.info.dbname, role)
    log_findings(db, "LOGIN_FAILED", role)
    wait_for(lambda: False, timeout=1.2)  # let the window pass
    fail_login(cluster, db.info.dbname, role)
    log_findings(db, "LOGIN_FAILED", role)
    assert [a for a in open_alerts(db, "BRUTE_FORCE_SUSPECTED") if a["record_id"] == role] == []
    fail_login(cluster, db.info.dbname, role)
    [row] = log_findings(db, "BRUTE_FORCE_SUSPECTED", role)
    assert "2 failed logins for role bf_slow within 1 s" in row["detail"]


def test_permission_denied_and_strict_mode_rejections_in_this_database(
    db: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    make_role: Callable[..., str],
) -> None:
    role = make_role("nosy_app")
    db.execute("CREATE TABLE patients (id int)")
    run_check(db, "server_log")
    app = connect(db.info.dbname, user=role)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT * FROM patients")
    with pytest.raises(psycopg.errors.RaiseException):
        app.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'pg_guardian: strict mode rejected test data in public.patients'; END $$"
        )
    [denied] = log_findings(db, "PERMISSION_DENIED", role)
    assert denied["severity"] == "MEDIUM" and "permission denied for table patients" in denied["detail"]
    assert denied["metadata"]["query"] == "SELECT * FROM patients"
    [strict] = [a for a in open_alerts(db, "STRICT_MODE_REJECTED") if a["record_id"] == role]
    assert strict["severity"] == "HIGH" and "public.patients" in strict["message"]


def test_a_strict_rejection_recorded_through_dblink_is_not_reported_again_from_the_log(
    db: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    make_role: Callable[..., str],
) -> None:
    role = make_role("fixture_loader")
    db.execute("CREATE TABLE clinics (id int PRIMARY KEY, name text)")
    db.execute("GRANT SELECT, INSERT ON clinics TO " + role)
    db.execute("SELECT guardian.watch('clinics')")
    db.execute("SELECT guardian.set_mode('strict')")
    run_check(db, "server_log")
    app = connect(db.info.dbname, user=role)
    with pytest.raises(psycopg.Error) as err:
        app.execute("INSERT INTO clinics VALUES (1, 'Test Clinic')")
    assert err.value.sqlstate == "GD001"
    assert "Recorded as a STRICT_MODE_REJECTION alert." in (err.value.diag.message_detail or "")
    assert [a["type"] for a in open_alerts(db, "STRICT_MODE_REJECTION")] == ["STRICT_MODE_REJECTION"]
    # a later error of the same role in the log: once it is read, the rejection before it was too
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("DELETE FROM clinics")
    log_findings(db, "PERMISSION_DENIED", role)
    assert [a for a in open_alerts(db, "STRICT_MODE_REJECTED") if a["record_id"] == role] == []
    assert scalar(db, "SELECT count(*) FROM guardian.security_events WHERE kind = 'strict_mode_rejected'") == 0


def test_log_rotation_is_followed(cluster: LocalCluster, db: psycopg.Connection, make_role: Callable[..., str]) -> None:
    role = make_role("rot_victim", password="right-password")
    run_check(db, "server_log")
    fail_login(cluster, db.info.dbname, role)
    before = scalar(db, "SELECT pg_current_logfile('csvlog')")
    db.execute("SELECT pg_rotate_logfile()")
    assert wait_for(lambda: scalar(db, "SELECT pg_current_logfile('csvlog')") != before, timeout=5)
    fail_login(cluster, db.info.dbname, role, times=2)

    def events() -> bool:
        run_check(db, "server_log")
        return scalar(db, "SELECT count(*) FROM guardian.security_events WHERE role_name = %s", (role,)) == 3

    assert wait_for(events, timeout=10)
    assert (
        scalar(
            db,
            "SELECT count(DISTINCT log_file) FROM guardian.security_events WHERE role_name = %s",
            (role,),
        )
        == 2
    )
    assert scalar(db, "SELECT 'log/' || file_name FROM guardian.log_reader_state") == scalar(
        db, "SELECT pg_current_logfile('csvlog')"
    )


@pytest.fixture
def unreadable_log_file(cluster: LocalCluster) -> Iterator[Path]:
    """A CSV file in the log folder that the server's user cannot read, sorted newest."""
    path = cluster.logdir / "postgresql-2999-01-01_000000.csv"
    path.write_text("not for you\n")
    path.chmod(0)
    os.utime(path, (4_000_000_000, 4_000_000_000))
    yield path
    path.unlink()


def test_unreadable_log_is_a_degraded_check_not_a_broken_job(db: psycopg.Connection, unreadable_log_file: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the file must be unreadable by the server's user")
    db.execute("SELECT guardian.run_checks('security')")  # reader positioned before the file
    rows = run_check(db, "server_log")
    [row] = rows
    assert row["status"] == "degraded" and row["alert_type"] == "CHECK_DEGRADED"
    assert "cannot read server log file" in row["detail"] and unreadable_log_file.name in row["detail"]
    assert "log_file_mode" in row["remediation"]
    result = scalar(db, "SELECT guardian.run_job('security_events')")
    assert result.startswith("ok: security checks:") and "1 degraded" in result
    assert scalar(db, "SELECT last_status FROM guardian.check_status WHERE name = 'server_log'") == "degraded"


def test_log_reader_without_rights_says_which_grant_is_missing(db: psycopg.Connection) -> None:
    db.execute("REVOKE EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) FROM guardian_owner")
    [row] = run_check(db, "server_log")
    assert row["status"] == "degraded" and "may not read the server log" in row["detail"]
    assert "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file" in row["remediation"]
    [alert] = open_alerts(db, "CHECK_DEGRADED")
    assert alert["severity"] == "LOW" and alert["record_id"] == "server_log"
    db.execute("GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO guardian_owner")
    assert run_check(db, "server_log")[0]["status"] in ("ok", "finding")
    assert open_alerts(db, "CHECK_DEGRADED") == []


def test_role_escalation_membership_and_password_changes(db: psycopg.Connection, make_role: Callable[..., str]) -> None:
    run_check(db, "role_changes")
    role = make_role("new_intern", password="first")
    [created] = [r for r in findings(db, "role_changes") if r["record_id"] == role]
    assert created["alert_type"] == "ROLE_CREATED" and created["severity"] == "MEDIUM"
    assert [r for r in findings(db, "role_changes") if r["record_id"] == role] == []  # reported once

    db.execute(f"ALTER ROLE {role} SUPERUSER CREATEROLE")
    db.execute(f"GRANT pg_read_server_files TO {role}")
    db.execute(f"ALTER ROLE {role} PASSWORD 'second'")
    got = {
        (r["alert_type"], r["severity"], r["detail"]) for r in findings(db, "role_changes") if r["record_id"] == role
    }
    assert got == {
        ("ROLE_ESCALATION", "CRITICAL", "role new_intern gained SUPERUSER"),
        ("ROLE_ESCALATION", "HIGH", "role new_intern gained CREATEROLE"),
        (
            "ROLE_MEMBERSHIP_GRANTED",
            "HIGH",
            "role new_intern was granted membership in pg_read_server_files",
        ),
        ("ROLE_PASSWORD_CHANGED", "LOW", "password of role new_intern was changed"),
    }
    # Alerts show a digest of nothing: neither verifier nor its hash is exposed.
    assert (
        scalar(
            db,
            "SELECT count(*) FROM guardian.monitoring_alerts WHERE metadata::text ~ 'SCRAM|[0-9a-f]{64}'",
        )
        == 0
    )


def test_grant_to_public_is_high_and_reported_at_once(
    db: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    make_role: Callable[..., str],
) -> None:
    owner = make_role("app_owner")
    reader = make_role("app_reader")
    db.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    app = connect(db.info.dbname, user=owner)
    app.execute("CREATE TABLE invoices (id int, total numeric)")
    db.execute("UPDATE guardian.monitoring_alerts SET resolved_at = now()")  # the set-up's grant
    assert open_alerts(db, "PRIVILEGE_GRANTED") == []  # creating a table grants nothing
    app.execute("GRANT SELECT ON invoices TO PUBLIC")
    [alert] = open_alerts(db, "GRANT_TO_PUBLIC")
    assert alert["severity"] == "HIGH" and alert["table_name"] == "public.invoices"
    assert alert["message"] == "SELECT on table public.invoices granted to PUBLIC by app_owner"
    assert "REVOKE SELECT ON public.invoices FROM PUBLIC" in alert["metadata"]["remediation"]
    app.execute(f"GRANT INSERT, UPDATE ON invoices TO {reader}")
    [granted] = open_alerts(db, "PRIVILEGE_GRANTED")
    assert granted["severity"] == "MEDIUM" and granted["record_id"] == reader
    app.execute(f"GRANT SELECT (id) ON invoices TO {reader}")
    assert any("SELECT on column public.invoices.id" in a["message"] for a in open_alerts(db, "PRIVILEGE_GRANTED"))
    app.execute("REVOKE SELECT ON invoices FROM PUBLIC")
    [revoked] = open_alerts(db, "PRIVILEGE_REVOKED")
    assert revoked["severity"] == "LOW" and "revoked from PUBLIC" in revoked["message"]
    app.execute("GRANT EXECUTE ON FUNCTION guardian.version() TO PUBLIC")  # a no-op: not a change
    assert len(open_alerts(db, "GRANT_TO_PUBLIC")) == 1


def test_grants_missed_by_the_event_trigger_are_found_by_the_scan(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE clinics (id int)")
    db.execute("SET session_replication_role = replica")  # event triggers do not fire
    db.execute("GRANT SELECT ON clinics TO PUBLIC")
    db.execute("RESET session_replication_role")
    assert open_alerts(db, "GRANT_TO_PUBLIC") == []
    [row] = findings(db, "privilege_changes", "GRANT_TO_PUBLIC")
    assert "(found by the scheduled scan)" in row["detail"]
    assert findings(db, "privilege_changes") == []


def test_risky_posture_is_found_and_resolves_when_fixed(db: psycopg.Connection) -> None:
    assert [r["status"] for r in run_check(db, "rls_disabled_with_policies")] == ["ok"]
    db.execute("CREATE TABLE records (id int, clinic int)")
    db.execute("CREATE POLICY by_clinic ON records USING (clinic = 1)")
    db.execute("CREATE FUNCTION lookup() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
    db.execute("GRANT SELECT ON records TO PUBLIC")
    db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    rows = {
        r["alert_type"]: r
        for r in db.cursor(row_factory=psycopg.rows.dict_row)
        .execute("SELECT * FROM guardian.run_checks('posture') WHERE status = 'finding'")
        .fetchall()
    }
    assert set(rows) == {
        "RLS_DISABLED_WITH_POLICIES",
        "SECURITY_DEFINER_SEARCH_PATH",
        "TABLE_READABLE_BY_PUBLIC",
        "SCHEMA_WRITABLE_BY_PUBLIC",
    }
    assert rows["RLS_DISABLED_WITH_POLICIES"]["severity"] == "HIGH"
    assert rows["SECURITY_DEFINER_SEARCH_PATH"]["record_id"] == "public.lookup()"
    assert rows["TABLE_READABLE_BY_PUBLIC"]["severity"] == "MEDIUM"
    db.execute("ALTER TABLE records ENABLE ROW LEVEL SECURITY")
    db.execute("ALTER FUNCTION lookup() SET search_path = pg_catalog, pg_temp")
    db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    left = {
        r[0]: r[1]
        for r in db.execute("SELECT alert_type, severity FROM guardian.run_checks('posture') WHERE status = 'finding'")
    }
    assert left == {"TABLE_READABLE_BY_PUBLIC": "LOW"}  # RLS now filters what PUBLIC reads
    resolved = scalar(
        db,
        "SELECT count(*) FROM guardian.monitoring_alerts WHERE resolved_at IS NOT NULL "
        "AND type IN ('RLS_DISABLED_WITH_POLICIES', 'SECURITY_DEFINER_SEARCH_PATH', "
        "'SCHEMA_WRITABLE_BY_PUBLIC')",
    )
    assert resolved == 3


def test_unreadable_log_directory_is_a_degraded_check(cluster: LocalCluster, db: psycopg.Connection) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the folder must be unreadable by the server's user")
    mode = cluster.logdir.stat().st_mode
    cluster.logdir.chmod(0)
    try:
        [row] = run_check(db, "server_log")
    finally:
        cluster.logdir.chmod(mode)
    assert row["status"] == "degraded" and "could not open directory" in row["detail"]
    assert {r["status"] for r in run_check(db, "server_log")} <= {"ok", "finding"}
