"""Database health checks through the real server: each fires at its threshold and not below,
ongoing conditions stay one alert, cleared ones resolve, bad thresholds are refused."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from support.checks import findings, open_alerts, run_check, set_param, wait_for
from support.queries import scalar


def test_connections_fire_at_threshold_and_not_above_it(db: psycopg.Connection) -> None:
    pct = float(
        scalar(
            db,
            """
        SELECT 100.0 * count(*) / (current_setting('max_connections')::int
                                   - current_setting('superuser_reserved_connections')::int)
          FROM pg_stat_activity WHERE backend_type = 'client backend'""",
        )
    )
    assert findings(db, "connections") == []  # default: warning at 80%
    set_param(db, "health.connections.warn_pct", int(pct) + 1)
    assert findings(db, "connections") == []
    set_param(db, "health.connections.warn_pct", max(int(pct), 1))
    [row] = findings(db, "connections", "CONNECTIONS_HIGH")
    assert row["severity"] == "MEDIUM" and "available connections in use" in row["detail"]
    set_param(db, "health.connections.crit_pct", max(int(pct), 1))
    [row] = findings(db, "connections")
    assert row["severity"] == "HIGH"
    [alert] = open_alerts(db, "CONNECTIONS_HIGH")
    assert alert["occurrences"] == 2 and alert["severity"] == "HIGH"  # one alert, escalated


def test_long_running_query_fires_and_resolves_when_it_ends(
    db: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    other = connect(db.info.dbname)
    other.pgconn.send_query(b"SELECT pg_sleep(20) /* long one */")
    set_param(db, "health.long_running_queries.warn_seconds", 1)
    time.sleep(1.2)
    [row] = findings(db, "long_running_queries", "LONG_RUNNING_QUERY")
    assert row["record_id"] == str(other.info.backend_pid)
    assert "pg_sleep(20)" in row["detail"] and "pg_cancel_backend" in row["remediation"]
    set_param(db, "health.long_running_queries.crit_seconds", 3600)
    set_param(db, "health.long_running_queries.warn_seconds", 3600)
    assert findings(db, "long_running_queries") == []  # not at a threshold it has not reached
    db.execute("SELECT pg_cancel_backend(%s)", (other.info.backend_pid,))
    assert open_alerts(db, "LONG_RUNNING_QUERY") == []
    resolved = scalar(
        db,
        "SELECT resolution_note FROM guardian.monitoring_alerts WHERE type = 'LONG_RUNNING_QUERY'",
    )
    assert "condition cleared" in resolved


def test_idle_in_transaction_is_one_alert_while_it_lasts(
    db: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    other = connect(db.info.dbname)
    other.execute("BEGIN")
    other.execute("SELECT 1")
    set_param(db, "health.idle_in_transaction.warn_seconds", 1)
    time.sleep(1.2)
    for _ in range(3):
        [row] = findings(db, "idle_in_transaction", "IDLE_IN_TRANSACTION")
        assert row["severity"] == "MEDIUM"
    [alert] = open_alerts(db, "IDLE_IN_TRANSACTION")
    assert alert["occurrences"] == 3
    assert alert["metadata"]["pid"] == other.info.backend_pid
    other.execute("ROLLBACK")
    assert findings(db, "idle_in_transaction") == []
    assert open_alerts(db, "IDLE_IN_TRANSACTION") == []


def test_lock_wait_names_the_blocking_session(
    db: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    db.execute("CREATE TABLE appointments (id int)")
    holder = connect(db.info.dbname)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE appointments IN ACCESS EXCLUSIVE MODE")
    waiter = connect(db.info.dbname)
    waiter.pgconn.send_query(b"SELECT count(*) FROM appointments")
    set_param(db, "health.lock_waits.warn_seconds", 1)
    time.sleep(1.2)
    [row] = findings(db, "lock_waits", "LOCK_WAIT")
    assert row["record_id"] == str(waiter.info.backend_pid)
    assert row["table_name"] == "public.appointments"
    assert row["metadata"]["blocking_pids"] == [holder.info.backend_pid]
    holder.execute("ROLLBACK")
    assert wait_for(lambda: findings(db, "lock_waits") == [], timeout=5)


def test_inactive_replication_slot_fires_past_retained_bytes(db: psycopg.Connection) -> None:
    slot = f"guardian_test_{db.info.dbname}"
    db.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    try:
        assert [r for r in findings(db, "replication_slots") if r["record_id"] == slot] == []
        set_param(db, "health.replication_slots.warn_bytes", 0)
        [row] = [r for r in findings(db, "replication_slots") if r["record_id"] == slot]
        assert row["alert_type"] == "REPLICATION_SLOT_INACTIVE" and row["severity"] == "MEDIUM"
        assert "pg_drop_replication_slot" in row["remediation"]
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    assert [r for r in findings(db, "replication_slots") if r["record_id"] == slot] == []


def test_replication_lag_is_quiet_without_standbys(db: psycopg.Connection) -> None:
    assert [r["status"] for r in run_check(db, "replication_lag")] == ["ok"]


def test_xid_wraparound_fires_at_warning_and_critical_age(db: psycopg.Connection) -> None:
    assert findings(db, "xid_wraparound") == []
    age = scalar(db, "SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()")
    set_param(db, "health.xid_wraparound.warn_age", age)
    mine = [r for r in findings(db, "xid_wraparound") if r["record_id"] == db.info.dbname]
    assert [r["severity"] for r in mine] == ["HIGH"]
    set_param(db, "health.xid_wraparound.crit_age", age)
    mine = [r for r in findings(db, "xid_wraparound") if r["record_id"] == db.info.dbname]
    assert [r["severity"] for r in mine] == ["CRITICAL"]
    assert "VACUUM (FREEZE" in mine[0]["remediation"]


def test_cache_hit_ratio_fires_below_threshold(
    db: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    # Temporary tables larger than temp_buffers are read back from disk: real block reads.
    other = connect(db.info.dbname)
    other.execute("SET temp_buffers = '800kB'")
    other.execute("CREATE TEMP TABLE scratch AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 5000) AS g")
    other.execute("SELECT count(*) FROM scratch")
    other.execute("SELECT pg_stat_force_next_flush()")
    other.execute("SELECT 1")
    assert wait_for(
        lambda: scalar(db, "SELECT blks_read FROM pg_stat_database WHERE datname = current_database()") > 0,
        timeout=5,
    )
    assert findings(db, "cache_hit_ratio") == []  # too few blocks to judge by default
    set_param(db, "health.cache_hit_ratio.min_blocks", 1)
    set_param(db, "health.cache_hit_ratio.crit_below_pct", 0)
    set_param(db, "health.cache_hit_ratio.warn_below_pct", 0)
    assert findings(db, "cache_hit_ratio") == []
    set_param(db, "health.cache_hit_ratio.warn_below_pct", 100)
    [row] = findings(db, "cache_hit_ratio", "CACHE_HIT_RATIO_LOW")
    assert row["severity"] == "MEDIUM" and "shared_buffers" in row["remediation"]


def test_dead_tuples_fire_above_share_of_rows(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE visits (id int) WITH (autovacuum_enabled = false)")
    db.execute("INSERT INTO visits SELECT generate_series(1, 200)")
    db.execute("DELETE FROM visits WHERE id <= 150")
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")
    assert findings(db, "dead_tuples") == []  # fewer than 10000 dead rows
    set_param(db, "health.dead_tuples.min_dead_tuples", 100)
    set_param(db, "health.dead_tuples.crit_pct", 90)
    set_param(db, "health.dead_tuples.warn_pct", 80)
    assert findings(db, "dead_tuples") == []  # 75% dead
    set_param(db, "health.dead_tuples.warn_pct", 75)
    [row] = wait_for(lambda: findings(db, "dead_tuples", "DEAD_TUPLES"), timeout=5)
    assert row["table_name"] == "public.visits" and "VACUUM" in row["remediation"]
    db.execute("VACUUM visits")
    db.execute("SELECT pg_stat_force_next_flush()")
    assert wait_for(lambda: findings(db, "dead_tuples") == [], timeout=5)
    assert open_alerts(db, "DEAD_TUPLES") == []


def test_table_growth_against_earlier_snapshot(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE invoices (id int, note text)")
    for name, value in (("window_seconds", 0), ("snapshot_interval_seconds", 0)):
        set_param(db, f"health.table_growth.{name}", value)
    assert findings(db, "table_growth") == []  # first run: the baseline
    db.execute("INSERT INTO invoices SELECT g, repeat('n', 200) FROM generate_series(1, 20000) AS g")
    assert findings(db, "table_growth") == []  # 100 MB minimum by default
    db.execute("INSERT INTO invoices SELECT g, repeat('n', 200) FROM generate_series(1, 100) AS g")
    set_param(db, "health.table_growth.min_bytes", 1_000_000)
    set_param(db, "health.table_growth.warn_pct", 50)
    assert findings(db, "table_growth") == []  # grew by a few kB since the last snapshot
    db.execute("INSERT INTO invoices SELECT g, repeat('n', 200) FROM generate_series(1, 20000) AS g")
    [row] = findings(db, "table_growth", "TABLE_GROWTH")
    assert row["table_name"] == "public.invoices" and row["severity"] == "MEDIUM"
    assert row["metadata"]["growth_bytes"] > 1_000_000
    assert scalar(db, "SELECT count(DISTINCT taken_at) FROM guardian.size_history WHERE kind = 'table'") == 4


def test_database_growth_is_quiet_below_min_bytes(db: psycopg.Connection) -> None:
    assert [r["status"] for r in run_check(db, "database_growth")] == ["ok"]
    assert scalar(db, "SELECT count(*) FROM guardian.size_history WHERE kind = 'database'") == 1


def test_sequence_near_exhaustion_escalates_on_one_alert(db: psycopg.Connection) -> None:
    db.execute("CREATE SEQUENCE ticket_seq MAXVALUE 100")
    db.execute("GRANT SELECT ON SEQUENCE ticket_seq TO guardian_owner")
    db.execute("SELECT setval('ticket_seq', 74)")
    assert findings(db, "sequences") == []
    db.execute("SELECT setval('ticket_seq', 80)")
    [row] = findings(db, "sequences", "SEQUENCE_EXHAUSTION")
    assert row["severity"] == "MEDIUM" and row["table_name"] == "public.ticket_seq"
    db.execute("SELECT setval('ticket_seq', 95)")
    [row] = findings(db, "sequences")
    assert row["severity"] == "HIGH"
    [alert] = open_alerts(db, "SEQUENCE_EXHAUSTION")
    assert alert["occurrences"] == 2 and alert["severity"] == "HIGH"


def test_bigint_sequence_behind_integer_column_is_bounded_by_the_column(
    db: psycopg.Connection,
) -> None:
    db.execute("CREATE TABLE patients (id integer)")
    db.execute("CREATE SEQUENCE patients_id_seq OWNED BY patients.id")
    db.execute("GRANT SELECT ON SEQUENCE patients_id_seq TO guardian_owner")
    db.execute("SELECT setval('patients_id_seq', 2000000000)")
    [row] = findings(db, "sequences", "SEQUENCE_EXHAUSTION")
    assert row["severity"] == "HIGH" and "limited by column public.patients.id" in row["detail"]


def test_unreadable_sequences_make_the_check_degraded_not_failed(db: psycopg.Connection) -> None:
    db.execute("CREATE SEQUENCE secret_seq")
    rows = run_check(db, "sequences")
    [row] = [r for r in rows if r["alert_type"] == "CHECK_DEGRADED"]
    assert row["status"] == "degraded" and "secret_seq" in row["detail"]
    assert "GRANT SELECT ON SEQUENCE public.secret_seq TO guardian_owner" in row["remediation"]
    assert scalar(db, "SELECT last_status FROM guardian.check_status WHERE name = 'sequences'") == "degraded"
    db.execute("GRANT SELECT ON SEQUENCE public.secret_seq TO guardian_owner")
    assert [r["status"] for r in run_check(db, "sequences")] == ["ok"]
    assert open_alerts(db, "CHECK_DEGRADED") == []


def test_invalid_index_from_failed_concurrent_build(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE clinics (code text)")
    db.execute("INSERT INTO clinics VALUES ('a'), ('a')")
    assert findings(db, "invalid_indexes") == []
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("CREATE UNIQUE INDEX CONCURRENTLY clinics_code_idx ON clinics (code)")
    [row] = findings(db, "invalid_indexes", "INVALID_INDEX")
    assert row["record_id"] == "public.clinics_code_idx" and "REINDEX INDEX CONCURRENTLY" in row["remediation"]
    db.execute("DROP INDEX clinics_code_idx")
    assert findings(db, "invalid_indexes") == [] and open_alerts(db, "INVALID_INDEX") == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("health.long_running_queries.warn_seconds", -5, "out of range"),
        ("health.connections.warn_pct", 150, "out of range"),
        ("health.connections.warn_pct", 99, "above health.connections.crit_pct"),
        ("health.connections.crit_pct", 50, "below health.connections.warn_pct"),
        (
            "health.cache_hit_ratio.crit_below_pct",
            95,
            "above health.cache_hit_ratio.warn_below_pct",
        ),
        ("security.brute_force.failures", 0, "out of range"),
        ("retention.resolved_alerts_days", 0, "out of range"),
        ("health.no_such.thing", 1, "unknown guardian parameter"),
    ],
)
def test_nonsensical_thresholds_are_refused_with_the_fix(
    db: psycopg.Connection, name: str, value: int, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        set_param(db, name, value)
    assert message in str(err.value)
    assert "guardian." in (err.value.diag.message_hint or "")
    assert scalar(db, "SELECT count(*) FROM guardian.settings WHERE key <> 'cluster.checks_database'") == 0


def test_bad_stored_threshold_fails_one_check_and_the_job_goes_on(db: psycopg.Connection) -> None:
    # Written past set_param (e.g. a restored dump): the check fails with the fix, the rest run.
    db.execute("INSERT INTO guardian.settings (key, value) VALUES ('health.lock_waits.warn_seconds', '\"soon\"')")
    rows = {r["check_name"]: r for r in run_check(db, "lock_waits")}
    assert rows["lock_waits"]["status"] == "error"
    assert 'invalid value "soon" for guardian parameter health.lock_waits.warn_seconds' in rows["lock_waits"]["detail"]
    assert "guardian.set_param('health.lock_waits.warn_seconds', 30)" in rows["lock_waits"]["remediation"]
    result = scalar(db, "SELECT guardian.run_job('health_checks')")
    assert result.startswith("ok: health checks:") and "1 error" in result and "17 ok" in result
    [alert] = open_alerts(db, "CHECK_FAILED")
    assert alert["record_id"] == "lock_waits" and alert["occurrences"] == 2
    db.execute("SELECT guardian.set_param('health.lock_waits.warn_seconds', NULL)")
    db.execute("DELETE FROM guardian.settings")
    assert [r["status"] for r in run_check(db, "lock_waits")] == ["ok"]
    assert open_alerts(db, "CHECK_FAILED") == []


def test_a_check_can_be_switched_off_per_environment(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_check_enabled('connections', false, 'local')")
    [row] = run_check(db, "connections")
    assert row["status"] == "disabled" and "set_check_enabled" in row["detail"]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown guardian check 'nope'"):
        db.execute("SELECT guardian.set_check_enabled('nope', false)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no guardian check matches"):
        db.execute("SELECT * FROM guardian.run_checks('nope')")
