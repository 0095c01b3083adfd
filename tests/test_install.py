"""Both install paths, upgrade, uninstall and status, through the real server and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import install as install_mod
from pg_guardian import scripts
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from support.queries import catalog_snapshot, scalar

CURRENT = scripts.default_version()


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_cli_install_uses_extension_when_files_are_on_server(cluster: LocalCluster, blank_dbname: str) -> None:
    code, out = run_cli("install", "--dsn", cluster.dsn(blank_dbname), "--environment", "staging")
    assert code == 0, out
    assert f"installed pg_guardian {CURRENT} (extension)" in out
    with psycopg.connect(cluster.dsn(blank_dbname)) as conn:
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pg_guardian'") == CURRENT
        assert scalar(conn, "SELECT guardian.current_environment()") == "staging"


def test_cli_install_reads_database_url(cluster: LocalCluster, blank_dbname: str) -> None:
    code, out = run_cli("install", env={"DATABASE_URL": cluster.dsn(blank_dbname)})
    assert code == 0, out
    assert blank_dbname in out


def test_plain_sql_install_creates_the_same_objects_as_the_extension(
    cluster: LocalCluster, blank_dbname: str, dbname: str
) -> None:
    with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION plpython3u")  # as the template has: the same detector and disk probe
    code, out = run_cli("install", "--method", "sql", "--dsn", cluster.dsn(blank_dbname))
    assert code == 0, out
    assert "(sql)" in out
    with psycopg.connect(cluster.dsn(blank_dbname)) as plain, psycopg.connect(cluster.dsn(dbname)) as ext:
        assert scalar(plain, "SELECT guardian.version()") == CURRENT
        assert scalar(plain, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_guardian'") == 0
        plain_snapshot, ext_snapshot = catalog_snapshot(plain), catalog_snapshot(ext)
        for kind in ext_snapshot:
            assert plain_snapshot[kind] == ext_snapshot[kind], kind
        assert len(ext_snapshot["functions"]) > 10


@pytest.mark.parametrize("method", ["extension", "sql"])
def test_install_warns_of_nothing(cluster: LocalCluster, blank_dbname: str, method: str) -> None:
    # the install's own DDL fires the schema-change event trigger part-way through: it must not
    # fail there (it once warned "permission denied for schema guardian" sixty times)
    warnings: list[str] = []
    with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: warnings.append(d.message_primary or "") if d.severity == "WARNING" else None)
        install_mod.install(conn, method=method)
        conn.execute("CREATE TABLE after_install (id int)")
    assert warnings == []


def test_installing_twice_is_refused_and_changes_nothing(cluster: LocalCluster, dbname: str) -> None:
    with psycopg.connect(cluster.dsn(dbname)) as conn:
        before = catalog_snapshot(conn)
    code, out = run_cli("install", "--dsn", cluster.dsn(dbname))
    assert code == 2
    assert "already installed" in out and "pg-guardian upgrade" in out
    assert len(out.strip().splitlines()) == 1
    with psycopg.connect(cluster.dsn(dbname)) as conn:
        assert catalog_snapshot(conn) == before


def test_plain_install_over_a_foreign_guardian_schema_is_refused(cluster: LocalCluster, blank_dbname: str) -> None:
    with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA guardian; CREATE TABLE guardian.mine (x int)")
    code, out = run_cli("install", "--method", "sql", "--dsn", cluster.dsn(blank_dbname))
    assert code == 2
    assert "schema guardian already exists" in out
    with psycopg.connect(cluster.dsn(blank_dbname)) as conn:
        assert scalar(conn, "SELECT count(*) FROM pg_class WHERE relnamespace = 'guardian'::regnamespace") == 1


def test_bad_dsn_gives_one_line_error() -> None:
    code, out = run_cli("status", "--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=2")
    assert code == 2
    assert out.startswith("error: cannot connect to database x on 127.0.0.1:1")
    assert "check the DSN" in out
    assert len(out.strip().splitlines()) == 1


def test_malformed_dsn_names_the_value() -> None:
    code, out = run_cli("status", "--dsn", "postgresql://x:y@:notaport/db")
    assert code == 2
    assert "notaport" in out


def test_missing_dsn_says_how_to_give_one() -> None:
    code, out = run_cli("status", env={"DATABASE_URL": ""})
    assert code == 2
    assert "--dsn" in out and "DATABASE_URL" in out


def test_missing_server_packages_are_named(tmp_path: Path) -> None:
    # A PATH without pg_config: what a machine without postgresql-15 looks like to us.
    code, out = run_cli("demo", "--dir", str(tmp_path), env={"PATH": str(tmp_path)})
    assert code == 2
    assert "make setup" in out and "postgresql-15" in out


def test_upgrade_to_unknown_version_is_refused(cluster: LocalCluster, dbname: str) -> None:
    code, out = run_cli("upgrade", "--dsn", cluster.dsn(dbname), "--to", "9.9.9")
    assert code == 2
    assert "unknown pg_guardian version '9.9.9'" in out and CURRENT in out
    with psycopg.connect(cluster.dsn(dbname)) as conn:
        assert scalar(conn, "SELECT guardian.version()") == CURRENT


def test_unknown_install_version_is_refused(cluster: LocalCluster, blank_dbname: str) -> None:
    code, out = run_cli("install", "--dsn", cluster.dsn(blank_dbname), "--version", "0.0.7")
    assert code == 2 and "unknown pg_guardian version '0.0.7'" in out
    with psycopg.connect(cluster.dsn(blank_dbname)) as conn:
        assert scalar(conn, "SELECT to_regnamespace('guardian')") is None


@pytest.mark.parametrize("method", ["extension", "sql"])
def test_upgrade_from_previous_version_keeps_data_and_matches_fresh_install(
    cluster: LocalCluster, blank_dbname: str, dbname: str, method: str
) -> None:
    dsn = cluster.dsn(blank_dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION plpython3u")  # as the fresh template has
    code, out = run_cli("install", "--dsn", dsn, "--method", method, "--version", "0.0.1")
    assert code == 0, out
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT guardian.set_environment('staging')")
        conn.execute(
            "INSERT INTO guardian.monitoring_alerts (severity, type, message, table_name, record_id) "
            "VALUES ('critical', 'TEST_DATA_CONTAMINATION', 'Test email pattern detected', 'users', '42')"
        )
    code, out = run_cli("upgrade", "--dsn", dsn)
    assert code == 0, out
    assert f"0.0.1 -> {CURRENT}" in out
    with psycopg.connect(dsn) as upgraded, psycopg.connect(cluster.dsn(dbname)) as fresh:
        assert scalar(upgraded, "SELECT guardian.current_environment()") == "staging"
        row = upgraded.execute(
            "SELECT severity, type, record_id, environment, fingerprint IS NOT NULL FROM guardian.monitoring_alerts"
        ).fetchone()
        assert row == ("CRITICAL", "TEST_DATA_CONTAMINATION", "42", "production", True)
        assert catalog_snapshot(upgraded) == catalog_snapshot(fresh)


def test_status_reports_version_environment_mode_and_open_alerts(cluster: LocalCluster, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("SELECT guardian.set_mode('strict')")
    code, out = run_cli("status", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 1, out  # nothing runs the jobs of a test database
    assert "guarded: NO" in out
    db.execute("SELECT guardian.note_job_scheduler('jobs serve')")
    code, out = run_cli("status", "--dsn", cluster.dsn(db.info.dbname))
    assert code == 0, out
    assert f"pg_guardian {CURRENT} (" in out
    assert "environment: production   mode: strict" in out
    assert "HIGH 1" in out  # the environment change to production is audited as HIGH
    code, out = run_cli("status", "--dsn", cluster.dsn(db.info.dbname), "--format", "json")
    import json

    data = json.loads(out)
    assert data["open_alerts"]["HIGH"] == 1 and data["open_alerts"]["INFO"] == 1
    assert data["features"]["plpython3u"] is True
    assert data["install_method"] in ("extension", "sql")


def test_status_of_a_database_without_guardian(cluster: LocalCluster, blank_dbname: str) -> None:
    code, out = run_cli("status", "--dsn", cluster.dsn(blank_dbname))
    assert code == 0
    assert "not installed" in out


def test_uninstall_refuses_without_force(cluster: LocalCluster, dbname: str) -> None:
    code, out = run_cli("uninstall", "--dsn", cluster.dsn(dbname))
    assert code == 2 and "--force" in out
    with psycopg.connect(cluster.dsn(dbname)) as conn:
        assert scalar(conn, "SELECT guardian.version()") == CURRENT


@pytest.mark.parametrize("method", ["extension", "sql"])
def test_uninstall_keeps_alert_history_by_default(cluster: LocalCluster, blank_dbname: str, method: str) -> None:
    dsn = cluster.dsn(blank_dbname)
    assert run_cli("install", "--dsn", dsn, "--method", method)[0] == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT guardian.raise_alert('SCHEMA_CHANGE', 'LOW', 'kept after uninstall')")
    code, out = run_cli("uninstall", "--dsn", dsn, "--force")
    assert code == 0, out
    archive = out.split("kept in ")[1].strip()
    with psycopg.connect(dsn) as conn:
        assert scalar(conn, "SELECT to_regnamespace('guardian')") is None
        assert scalar(conn, "SELECT count(*) FROM pg_event_trigger") == 0
        assert scalar(conn, f"SELECT count(*) FROM {archive} WHERE message = 'kept after uninstall'") == 1
    # and it can be installed again afterwards
    assert run_cli("install", "--dsn", dsn)[0] == 0


def test_uninstall_with_drop_alerts_keeps_nothing(cluster: LocalCluster, dbname: str) -> None:
    code, out = run_cli("uninstall", "--dsn", cluster.dsn(dbname), "--force", "--drop-alerts")
    assert code == 0 and "kept" not in out
    with psycopg.connect(cluster.dsn(dbname)) as conn:
        assert scalar(conn, "SELECT to_regnamespace('guardian_history')") is None


def test_server_script_is_the_assembled_source(cluster: LocalCluster, db: psycopg.Connection) -> None:
    sharedir = scalar(db, "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'")
    installed = Path(sharedir, "extension", f"pg_guardian--{CURRENT}.sql").read_text()
    assert installed == scripts.install_script(), "run `make install`: the server has a stale script"


def test_make_install_with_database_url_installs_into_that_database(cluster: LocalCluster, blank_dbname: str) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DATABASE_URL": cluster.dsn(blank_dbname)}
    proc = subprocess.run(["make", "-s", "install"], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(cluster.dsn(blank_dbname)) as conn:
        assert scalar(conn, "SELECT guardian.version()") == CURRENT
    proc = subprocess.run(["make", "-s", "install"], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout
