"""The deployments people run, each on a cluster of its own: managed Postgres (a CREATEROLE
database owner, no superuser), pg_cron in the guarded database, in another database or not
loaded at all, and one cluster guarding several databases."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import install as install_mod
from pg_guardian import scripts
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from psycopg import sql
from support.queries import scalar

CURRENT = scripts.default_version()
CRON_DB = "guarded"
FIXTURE_ROW = "INSERT INTO clinics (name, email) VALUES ('Test Clinic', 'user@tenant-a.test')"


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def new_cluster() -> Iterator[Callable[..., LocalCluster]]:
    """Fresh clusters for this module (no guardian roles in them yet); removed at the end."""
    made: list[tuple[LocalCluster, Path]] = []

    def _make(cron_database: str = CRON_DB, **settings: str) -> LocalCluster:
        workdir = Path(tempfile.mkdtemp(prefix="pg-guardian-deploy-"))
        workdir.chmod(0o755)
        pg = LocalCluster(
            datadir=workdir / "data",
            cron_database=cron_database,
            settings={
                "fsync": "off",
                "synchronous_commit": "off",
                "cron.use_background_workers": "on",
                "max_worker_processes": "20",
                **settings,
            },
        )
        made.append((pg, workdir))
        pg.init()
        pg.start()
        return pg

    yield _make
    for pg, workdir in made:
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def managed(new_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    """A cluster like a managed service: pg_cron preloaded for database `guarded` (which exists,
    without the extension) and a master user that owns databases but is no superuser."""
    pg = new_cluster()
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        su.execute(f"CREATE DATABASE {CRON_DB}")
        su.execute("CREATE ROLE rds_master LOGIN CREATEROLE CREATEDB")
        assert scalar(su, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'guardian\\_%'") == 0
    return pg


def _owned_database(pg: LocalCluster, name: str, owner: str) -> str:
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return pg.dsn(name, user=owner)


def test_managed_install_falls_back_to_plain_sql_and_says_what_jobs_need(managed: LocalCluster) -> None:
    dsn = _owned_database(managed, "app1", "rds_master")
    code, out = run_cli("install", "--dsn", dsn, "--environment", "production")
    assert code == 0, out
    assert f"installed pg_guardian {CURRENT} (sql) in app1" in out
    assert 'note: CREATE EXTENSION refused (permission denied to create extension "pg_guardian")' in out
    assert "note: the C prefilter is not loaded (permission denied for language c)" in out
    # pg_cron runs in database `guarded`, where the master user may not create the extension.
    assert "WARNING: the guardian's jobs are not scheduled: pg_cron runs in database guarded" in out
    assert "fix: as a superuser in database guarded run: CREATE EXTENSION pg_cron;" in out

    code, out = run_cli("status", "--dsn", dsn)
    assert code == 1, out
    assert "guarded: NO: no job scheduler" in out
    assert "pg_cron runs in database guarded: run `pg-guardian jobs register`" in out

    with psycopg.connect(managed.dsn(CRON_DB), autocommit=True) as su:
        su.execute("CREATE EXTENSION pg_cron")
    code, out = run_cli("jobs", "register", "--dsn", dsn)
    assert code == 1, out
    assert "rds_master may not schedule jobs in other databases with pg_cron (guarded)" in out
    grant = re.search(r"run: (GRANT USAGE ON SCHEMA cron TO rds_master; GRANT EXECUTE ON FUNCTION [^;]+;)", out)
    assert grant, out
    with psycopg.connect(managed.dsn(CRON_DB), autocommit=True) as su:
        su.execute(grant.group(1))
    code, out = run_cli("jobs", "register", "--dsn", dsn)
    assert code == 0, out
    assert "jobs: 15 job(s) scheduled with pg_cron from database guarded" in out
    code, out = run_cli("status", "--dsn", dsn)
    assert code == 0, out
    assert "guarded: yes (jobs run by pg_cron in database guarded)" in out
    with psycopg.connect(managed.dsn(CRON_DB)) as cron:
        rows = cron.execute(
            "SELECT jobname, username FROM cron.job WHERE database = 'app1' ORDER BY jobname"
        ).fetchall()
    assert ("guardian_security_events@app1", "rds_master") in rows and len(rows) == 15

    # The guardian works for the master user: watch, detect, and the checks that need more
    # than it has say so (CHECK_DEGRADED with the fix) while the others run.
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        assert scalar(conn, "SELECT pg_has_role('rds_master', 'guardian_admin', 'MEMBER')") is True
        conn.execute("CREATE TABLE clinics (id serial PRIMARY KEY, name text, email text)")
        conn.execute("SELECT guardian.watch('clinics')")
        conn.execute(FIXTURE_ROW)
        assert (
            scalar(conn, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'") > 0
        )
        conn.execute("SELECT guardian.set_mode('strict')")
        with pytest.raises(psycopg.DatabaseError, match="strict mode rejected test data"):
            conn.execute(FIXTURE_ROW)
        conn.execute("INSERT INTO guardian.settings (key, value) VALUES ('cluster.checks_database', '\"*\"')")
        checks = dict(conn.execute("SELECT check_name, status FROM guardian.run_checks()").fetchall())
        assert checks["server_log"] == "degraded" and checks["role_changes"] == "degraded"
        assert checks["connections"] == "ok", "pg_monitor was granted to guardian_owner by the master user"
        remediation = scalar(
            conn,
            "SELECT metadata ->> 'remediation' FROM guardian.monitoring_alerts "
            "WHERE type = 'CHECK_DEGRADED' AND metadata ->> 'check' = 'server_log'",
        )
        assert "GRANT" in remediation and "guardian_owner" in remediation


def test_managed_install_in_a_second_database_reuses_the_roles(managed: LocalCluster) -> None:
    # The roles exist (a superuser installed the extension elsewhere); this owner is no member.
    with psycopg.connect(managed.dsn(), autocommit=True) as su:
        su.execute("CREATE DATABASE by_superuser")
        su.execute("CREATE ROLE second_owner LOGIN CREATEROLE CREATEDB")
    with psycopg.connect(managed.dsn("by_superuser"), autocommit=True) as su:
        assert install_mod.install(su).method == "extension"
    dsn = _owned_database(managed, "app2", "second_owner")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert scalar(conn, "SELECT pg_has_role('second_owner', 'guardian_owner', 'MEMBER')") is False
        state = install_mod.install(conn)
        assert (state.version, state.method) == (CURRENT, "sql")
        assert scalar(conn, "SELECT pg_has_role('second_owner', 'guardian_owner', 'MEMBER')") is True
        conn.execute("CREATE TABLE clinics (id serial PRIMARY KEY, name text, email text)")
        conn.execute("SELECT guardian.watch('clinics')")
        conn.execute(FIXTURE_ROW)
        assert (
            scalar(conn, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'") > 0
        )
        # Everything the plain-SQL path made belongs where it should.
        assert scalar(
            conn, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'guardian.rules'::regclass"
        ) == ("guardian_owner")
    # --method extension says why it cannot, and what to use instead.
    dsn3 = _owned_database(managed, "app3", "second_owner")
    code, out = run_cli("install", "--dsn", dsn3, "--method", "extension")
    assert code == 2
    assert "CREATE EXTENSION pg_guardian needs a superuser" in out and "--method sql" in out
    with psycopg.connect(dsn3) as conn:
        assert scalar(conn, "SELECT to_regnamespace('guardian')") is None


@pytest.mark.slow
def test_pg_cron_runs_the_jobs_here_and_from_its_own_database(new_cluster: Callable[..., LocalCluster]) -> None:
    pg = new_cluster()
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        su.execute(f"CREATE DATABASE {CRON_DB}")
        su.execute("CREATE DATABASE remote")
    # In pg_cron's own database: the install creates the extension and schedules there.
    code, out = run_cli("install", "--dsn", pg.dsn(CRON_DB))
    assert code == 0, out
    assert "jobs: 15 job(s) scheduled with pg_cron in this database" in out
    # In another database: scheduled from pg_cron's database with cron.schedule_in_database.
    code, out = run_cli("install", "--dsn", pg.dsn("remote"))
    assert code == 0, out
    assert "jobs: 15 job(s) scheduled with pg_cron from database guarded (cron.schedule_in_database)" in out
    with psycopg.connect(pg.dsn(CRON_DB)) as cron:
        names = {r[0]: r[1] for r in cron.execute("SELECT jobname, database FROM cron.job").fetchall()}
    assert names["guardian_security_events"] == CRON_DB
    assert names["guardian_security_events@remote"] == "remote"
    # The jobs really run (pg_cron 1.4 runs each minute): runs grow in both databases.
    deadline = time.monotonic() + 150
    runs: dict[str, int] = {}
    while time.monotonic() < deadline:
        for dbname in (CRON_DB, "remote"):
            with psycopg.connect(pg.dsn(dbname)) as conn:
                runs[dbname] = scalar(conn, "SELECT runs FROM guardian.jobs WHERE name = 'security_events'")
        if all(runs.values()):
            break
        time.sleep(2)
    assert all(runs.values()), runs
    with psycopg.connect(pg.dsn("remote")) as conn:
        assert scalar(conn, "SELECT last_ok_at IS NOT NULL FROM guardian.jobs WHERE name = 'security_events'")
    code, out = run_cli("metrics", "show", "--dsn", pg.dsn("remote"))
    assert code == 0, out
    assert 'pg_guardian_guarded{database="remote"} 1' in out
    assert re.search(
        r'pg_guardian_job_last_success_timestamp_seconds\{database="remote",job="security_events"\} \d+\.\d+', out
    )
    # Uninstalling removes the jobs scheduled for it from pg_cron's database.
    code, out = run_cli("uninstall", "--dsn", pg.dsn("remote"), "--force")
    assert code == 0, out
    with psycopg.connect(pg.dsn(CRON_DB)) as cron:
        assert scalar(cron, "SELECT count(*) FROM cron.job WHERE database = 'remote'") == 0
        assert scalar(cron, "SELECT count(*) FROM cron.job WHERE database = %s", (CRON_DB,)) == 15


def test_without_pg_cron_status_exits_1_until_jobs_serve_runs(new_cluster: Callable[..., LocalCluster]) -> None:
    # pg_cron not preloaded (its setting in postgresql.conf is then only a placeholder).
    pg = new_cluster(shared_preload_libraries="''")
    code, out = run_cli("install", "--dsn", pg.dsn())
    assert code == 0, out
    assert "WARNING: the guardian's jobs are not scheduled: pg_cron is not loaded on this server" in out
    assert "keep `pg-guardian jobs serve` running for database postgres" in out
    code, out = run_cli("status", "--dsn", pg.dsn())
    assert code == 1, out
    assert "guarded: NO" in out and "pg-guardian jobs serve" in out
    code, out = run_cli("metrics", "show", "--dsn", pg.dsn())
    assert 'pg_guardian_guarded{database="postgres"} 0' in out
    assert "pg_guardian_job_last_success_timestamp_seconds" not in out
    code, out = run_cli("jobs", "register", "--dsn", pg.dsn())
    assert code == 1 and "pg_cron is not loaded" in out

    code, out = run_cli("jobs", "serve", "--dsn", pg.dsn(), "--passes", "1", "--interval", "0.1")
    assert code == 0, out
    code, out = run_cli("status", "--dsn", pg.dsn())
    assert code == 0, out
    assert "guarded: yes (jobs run by jobs serve)" in out
    # When it stops, the jobs fall overdue and the database is unguarded again.
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE guardian.jobs SET last_finished_at = now() - max_lag * 2, created_at = now() - interval '30 days'"
        )
        conn.execute("UPDATE guardian.job_scheduler SET registered_at = now() - interval '1 day'")
    code, out = run_cli("status", "--dsn", pg.dsn())
    assert code == 1, out
    assert "guardian job(s) overdue" in out and "`pg-guardian jobs serve` has stopped" in out


def _cluster_alerts(conn: psycopg.Connection, role: str) -> int:
    return int(
        scalar(
            conn,
            "SELECT count(*) FROM guardian.monitoring_alerts WHERE resolved_at IS NULL "
            "AND metadata ->> 'check' = 'role_changes' AND message LIKE %s",
            (f"%{role}%",),
        )
    )


def test_one_cluster_three_databases_raise_each_cluster_wide_finding_once(
    new_cluster: Callable[..., LocalCluster],
) -> None:
    pg = new_cluster(cron_database="postgres")
    names = ("first", "second", "third")
    conns: dict[str, psycopg.Connection] = {}
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        for name in names:
            su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        for name in names:
            conns[name] = psycopg.connect(pg.dsn(name), autocommit=True)
            install_mod.install(conns[name])
            # A per-database finding: a table with a policy but row-level security off.
            conns[name].execute("CREATE TABLE notes (id int, owner text)")
            conns[name].execute("CREATE POLICY own ON notes USING (owner = current_user)")
        for conn in conns.values():
            conn.execute("SELECT count(*) FROM guardian.run_checks()")  # role snapshots taken at install
        # pg_cron's database is not guarded here: the guarded database created first runs them.
        assert {scalar(c, "SELECT guardian.cluster_checks_database()") for c in conns.values()} == {"first"}
        with psycopg.connect(pg.dsn(), autocommit=True) as su:
            su.execute("CREATE ROLE sneaky SUPERUSER")
        statuses = {
            n: dict(c.execute("SELECT check_name, status FROM guardian.run_checks()").fetchall())
            for n, c in conns.items()
        }
        assert [_cluster_alerts(conns[n], "sneaky") for n in names] == [1, 0, 0]
        for name in ("second", "third"):
            for check in (
                "connections",
                "replication_lag",
                "replication_slots",
                "xid_wraparound",
                "server_log",
                "role_changes",
            ):
                assert statuses[name][check] == "elsewhere", (name, check)
            assert (
                scalar(conns[name], "SELECT last_detail FROM guardian.check_status WHERE name = 'connections'")
                == "cluster-wide check: runs in database first"
            )
        for conn in conns.values():  # each database still raises its own findings
            assert (
                scalar(
                    conn,
                    "SELECT count(*) FROM guardian.monitoring_alerts WHERE resolved_at IS NULL "
                    "AND metadata ->> 'check' = 'rls_disabled_with_policies'",
                )
                == 1
            )

        # Configured: the third database runs them; the first's open cluster-wide alerts close.
        for conn in conns.values():
            conn.execute("INSERT INTO guardian.settings (key, value) VALUES ('cluster.checks_database', '\"third\"')")
        with psycopg.connect(pg.dsn(), autocommit=True) as su:
            su.execute("CREATE ROLE sneakier CREATEROLE")
        for conn in conns.values():
            conn.execute("SELECT count(*) FROM guardian.run_checks()")
        assert [_cluster_alerts(conns[n], "sneakier") for n in names] == [0, 0, 1]
        assert _cluster_alerts(conns["first"], "sneaky") == 0
        assert (
            scalar(
                conns["first"],
                "SELECT resolution_note FROM guardian.monitoring_alerts WHERE message LIKE '%sneaky%' LIMIT 1",
            )
            == "cluster-wide check role_changes now runs in database third"
        )
    finally:
        for conn in conns.values():
            conn.close()
