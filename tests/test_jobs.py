"""Scheduling: the job registry run by pg_cron or by `pg-guardian jobs run|serve`, the
watchdog, retention, and job health in `pg-guardian status`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import install as install_mod
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from pg_guardian.errors import ConfigError
from pg_guardian.jobs import runner as jobs_mod
from support.checks import open_alerts, run_check, wait_for
from support.queries import scalar


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "now", "expected"),
    [
        ("*/5 * * * *", "2024-03-10 12:07:30", "2024-03-10 12:05:00"),
        ("17 3 * * *", "2024-03-10 02:00:00", "2024-03-09 03:17:00"),
        ("0 0 1 1 *", "2024-03-10 00:00:00", "2024-01-01 00:00:00"),
        ("30 9 * * 1-5", "2024-03-10 12:00:00", "2024-03-08 09:30:00"),  # Sunday -> Friday
        ("0 12 15 * 0", "2024-03-12 13:00:00", "2024-03-10 12:00:00"),  # 15th OR Sunday
        ("0,30 8-10 * * 7", "2024-03-10 10:45:00", "2024-03-10 10:30:00"),  # 7 is Sunday too
    ],
)
def test_schedules_are_read_like_pg_cron_in_utc(schedule: str, now: str, expected: str) -> None:
    assert jobs_mod.parse_schedule(schedule).previous(utc(now)) == utc(expected)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("* * * *", "expected five fields"),
        ("61 * * * *", "invalid minute field '61'"),
        ("* 5-2 * * *", "invalid hour field '5-2'"),
        ("*/0 * * * *", "invalid minute field '*/0'"),
        ("@daily * * * *", "invalid minute field '@daily'"),
    ],
)
def test_bad_schedules_are_refused_in_python_and_sql(db: psycopg.Connection, schedule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        jobs_mod.parse_schedule(schedule)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT guardian.set_job('watchdog', p_schedule => %s)", (schedule,))
    assert "schedule" in str(err.value) and "*/5 * * * *" in (err.value.diag.message_hint or "")


def test_set_job_changes_schedule_and_refuses_nonsense(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_job('health_checks', p_schedule => ' */10  *  * * * ', p_max_lag => '1 hour')")
    assert scalar(db, "SELECT schedule FROM guardian.jobs WHERE name = 'health_checks'") == "*/10 * * * *"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid max_lag"):
        db.execute("SELECT guardian.set_job('health_checks', p_max_lag => '-5 minutes')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown guardian job 'nope'"):
        db.execute("SELECT guardian.set_job('nope', false)")


def test_builtin_jobs_are_registered(db: psycopg.Connection) -> None:
    jobs = dict(db.execute("SELECT name, schedule FROM guardian.jobs WHERE builtin").fetchall())
    assert {"health_checks", "security_events", "security_posture", "watchdog", "retention"} <= set(jobs)


def test_jobs_run_all_runs_every_job_and_records_it(cluster: LocalCluster, db: psycopg.Connection) -> None:
    code, out = run_cli("jobs", "run", "--all", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 0, out
    assert "health_checks: ok: health checks:" in out and "retention: ok: deleted 0 resolved" in out
    rows = db.execute(
        "SELECT name, last_status, runs, last_result FROM guardian.jobs WHERE enabled ORDER BY name"
    ).fetchall()
    assert all(status == "ok" and runs == 1 and result for _, status, runs, result in rows), rows
    # A job that is off (the weekly digest, until enabled) is not run by --all either.
    off = db.execute("SELECT name, runs FROM guardian.jobs WHERE NOT enabled ORDER BY name").fetchall()
    assert off == [("report_digest", 0)]
    code, out = run_cli("jobs", "list", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 0 and "security_events" in out and "* * * * *" in out


def test_only_due_jobs_run_in_one_pass(db: psycopg.Connection) -> None:
    db.execute("UPDATE guardian.jobs SET created_at = '2024-03-10 11:59:30+00'")
    due = jobs_mod.due_jobs(db, utc("2024-03-10 12:05:10"))
    assert set(due) >= {"health_checks", "security_events", "watchdog"}
    assert "retention" not in due and "security_posture" not in due
    db.execute("UPDATE guardian.jobs SET last_started_at = '2024-03-10 12:05:01+00' WHERE name = 'health_checks'")
    assert "health_checks" not in jobs_mod.due_jobs(db, utc("2024-03-10 12:09:59"))
    assert "health_checks" in jobs_mod.due_jobs(db, utc("2024-03-10 12:10:00"))
    db.execute("SELECT guardian.set_job('security_events', false)")
    assert "security_events" not in jobs_mod.due_jobs(db, utc("2024-03-10 12:10:00"))


def test_failing_job_raises_job_failed_and_the_others_still_run(cluster: LocalCluster, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO guardian.jobs (name, schedule, command, description) "
        "VALUES ('broken', '* * * * *', 'SELECT 1/0', 'always fails')"
    )
    code, out = run_cli("jobs", "run", "--job", "broken", "--job", "watchdog", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 1, out
    assert "broken: error: division by zero" in out and "watchdog: ok" in out
    [alert] = open_alerts(db, "JOB_FAILED")
    assert alert["severity"] == "HIGH" and "division by zero" in alert["message"]
    db.execute("UPDATE guardian.jobs SET command = 'SELECT 1' WHERE name = 'broken'")
    assert scalar(db, "SELECT guardian.run_job('broken')") == "ok: 1"
    assert open_alerts(db, "JOB_FAILED") == []


def test_unknown_job_is_a_clear_error(cluster: LocalCluster, db: psycopg.Connection) -> None:
    code, out = run_cli("jobs", "run", "--job", "nope", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 2 and out.startswith("error: unknown guardian job 'nope'; known jobs:")


def test_watchdog_raises_job_overdue_once_and_resolves_it(db: psycopg.Connection) -> None:
    db.execute(
        "UPDATE guardian.jobs SET last_finished_at = now() - interval '2 hours', "
        "last_status = 'ok' WHERE name = 'health_checks'"
    )
    for _ in range(2):
        assert [r["record_id"] for r in run_check(db, "jobs_overdue") if r["status"] == "finding"] == ["health_checks"]
    [alert] = open_alerts(db, "JOB_OVERDUE")
    assert alert["severity"] == "HIGH" and alert["occurrences"] == 2
    assert "has not run for 02:00:00" in alert["message"]
    assert "pg-guardian jobs serve" in alert["metadata"]["remediation"]
    assert scalar(db, "SELECT guardian.run_job('health_checks')").startswith("ok")
    assert open_alerts(db, "JOB_OVERDUE") == []


def test_a_job_that_never_ran_becomes_overdue(cluster: LocalCluster, db: psycopg.Connection) -> None:
    db.execute("UPDATE guardian.jobs SET created_at = now() - interval '1 day' WHERE name = 'security_events'")
    assert scalar(db, "SELECT overdue FROM guardian.job_status WHERE name = 'security_events'")
    code, out = run_cli("status", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 1 and "security_events" in out and "overdue=True" in out  # 1: nothing runs the jobs


def test_serve_runs_due_jobs_and_survives_a_lost_server(db: psycopg.Connection, cluster: LocalCluster) -> None:
    db.execute("UPDATE guardian.jobs SET created_at = now() - interval '1 day'")
    # Both passes must fall in one minute (a loaded machine takes seconds for the first pass):
    # an every-minute job is due again in the next.
    second = datetime.now(UTC).second
    if second > 40:
        time.sleep(61 - second)
    lines: list[str] = []
    passes = jobs_mod.serve(
        cluster.dsn(db.info.dbname),
        echo=lines.append,
        passes=2,
        interval=0.01,
        sleep=lambda s: None,
    )
    assert passes == 2
    assert any("security_events: ok" in line for line in lines)
    assert sum("security_events" in line for line in lines) == 1  # not due again a second later
    lines.clear()
    slept: list[float] = []
    passes = jobs_mod.serve(
        f"host=127.0.0.1 port=1 dbname={db.info.dbname}",
        echo=lines.append,
        passes=3,
        sleep=slept.append,
    )
    assert passes == 3 and len(lines) == 3
    assert all("connection lost" in line and "retrying in" in line for line in lines)
    assert slept == [1.0, 2.0]  # backs off, never crashes


def test_serve_refuses_nonsense_options() -> None:
    code, out = run_cli("jobs", "serve", "--dsn", "host=x", "--interval", "-1")
    assert code == 2 and "invalid --interval -1.0" in out


def test_retention_prunes_old_resolved_alerts_and_says_so(db: psycopg.Connection) -> None:
    db.execute("""
        INSERT INTO guardian.monitoring_alerts (severity, type, message, resolved_at, created_at)
        SELECT 'LOW', 'OLD_NEWS', m, now() - r * interval '1 day', now() - c * interval '1 day'
          FROM (VALUES ('long resolved', 100, 101), ('recently resolved', 10, 11),
                       ('still open', NULL, 200)) AS v(m, r, c)""")
    result = scalar(db, "SELECT guardian.run_job('retention')")
    assert result.startswith("ok: deleted 1 resolved alerts older than 90 days")
    assert sorted(
        r[0] for r in db.execute("SELECT message FROM guardian.monitoring_alerts WHERE type = 'OLD_NEWS'")
    ) == ["recently resolved", "still open"]
    [note] = open_alerts(db, "RETENTION_PRUNED")
    assert note["severity"] == "INFO" and note["metadata"]["resolved_alerts"] == 1
    assert "deleted 1 resolved alerts" in scalar(db, "SELECT last_result FROM guardian.jobs WHERE name = 'retention'")
    db.execute("SELECT guardian.set_param('retention.resolved_alerts_days', 5)")
    assert scalar(db, "SELECT guardian.run_retention()").startswith("deleted 1 resolved alerts older than 5 days")


def test_status_shows_checks_that_need_attention(cluster: LocalCluster, db: psycopg.Connection) -> None:
    db.execute("CREATE SEQUENCE hidden_seq")
    db.execute("SELECT guardian.run_checks('health')")
    code, out = run_cli("status", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 1, out  # no job scheduler in a test database
    assert "checks: " in out and "sequences degraded: 1 sequences are not readable" in out
    code, out = run_cli("checks", "run", "--category", "health", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 0 and "[DEGRADED]" not in out and "[LOW] CHECK_DEGRADED" in out
    code, out = run_cli(
        "checks",
        "set",
        "--dsn",
        cluster.dsn(db.info.dbname),
        "--",
        "health.lock_waits.warn_seconds",
        "-1",
    )
    assert code == 2 and "out of range" in out and len(out.strip().splitlines()) == 1


@pytest.fixture
def cron_db(cluster: LocalCluster) -> Iterator[str]:
    """The database pg_cron runs in (cron.database_name), with pg_cron and pg_guardian."""
    name = cluster.cron_database
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            if scalar(conn, "SELECT to_regprocedure('guardian.unregister_jobs()') IS NOT NULL"):
                conn.execute("SELECT guardian.unregister_jobs()")
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow
def test_pg_cron_runs_a_registered_guardian_job(cluster: LocalCluster, cron_db: str) -> None:
    with psycopg.connect(cluster.dsn(cron_db), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_cron")
        install_mod.install(conn, method=os.environ.get("GUARDIAN_TEST_INSTALL", "extension"))
        scheduled = dict(
            conn.execute("SELECT jobname, schedule FROM cron.job WHERE jobname LIKE 'guardian\\_%'").fetchall()
        )
        assert scheduled["guardian_health_checks"] == "*/5 * * * *"
        # Keep only the watchdog, every minute: set_job re-registers with pg_cron.
        for (name,) in conn.execute("SELECT name FROM guardian.jobs WHERE name <> 'watchdog'").fetchall():
            conn.execute("SELECT guardian.set_job(%s, false)", (name,))
        conn.execute("SELECT guardian.set_job('watchdog', p_schedule => '* * * * *')")
        assert conn.execute("SELECT jobname, schedule FROM cron.job").fetchall() == [("guardian_watchdog", "* * * * *")]
        started = time.monotonic()
        ran = wait_for(
            lambda: scalar(conn, "SELECT last_finished_at FROM guardian.jobs WHERE name = 'watchdog'"),
            timeout=75,
            step=1,
        )
        assert ran, f"pg_cron did not run guardian_watchdog within {time.monotonic() - started:.0f}s"
        assert scalar(conn, "SELECT last_status FROM guardian.jobs WHERE name = 'watchdog'") == "ok"
        assert wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'"),
            timeout=5,
        )
        # Its history is the guardian's to prune (and nothing else's).
        conn.execute("UPDATE cron.job_run_details SET end_time = now() - interval '30 days'")
        assert scalar(conn, "SELECT guardian.run_retention()").endswith("pg_cron run records older than 7 days")
        assert (
            scalar(
                conn,
                "SELECT count(*) FROM cron.job_run_details WHERE end_time < now() - interval '1 day'",
            )
            == 0
        )
