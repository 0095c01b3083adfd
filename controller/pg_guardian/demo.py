"""``pg-guardian demo``: the guardian at work on a throwaway cluster with a dental schema."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import psycopg

from pg_guardian import install as install_mod
from pg_guardian import status as status_mod
from pg_guardian.cluster import LocalCluster

DEMO_DB = "dental"


def package_sql(name: str) -> str:
    """A SQL file shipped in the package's ``sql/`` folder."""
    return resources.files("pg_guardian").joinpath("sql", name).read_text()


def _table(rows: list[tuple[object, ...]], headers: tuple[str, ...]) -> list[str]:
    cells = [tuple(headers)] + [tuple("" if c is None else str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def run(directory: Path, *, keep: bool, echo: Callable[[str], None]) -> None:
    """Start the cluster, install, load the sample and walk through each capability."""
    cluster = LocalCluster(datadir=directory / "pgdata", cron_database=DEMO_DB)
    echo(f"== starting a throwaway PostgreSQL 15 cluster in {cluster.datadir} (port {cluster.port})")
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DEMO_DB}")
        with psycopg.connect(cluster.dsn(DEMO_DB), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")
            state = install_mod.install(conn)
            echo(f"== installed pg_guardian {state.version} ({state.method} path), pg_cron preloaded")
            conn.execute(package_sql("demo_schema.sql"))
            conn.execute(package_sql("demo_data.sql"))
            echo("== sample dental schema: clinics, patients, appointments, invoices")
            conn.execute("SELECT guardian.set_environment('production')")
            conn.execute("SELECT guardian.set_mode('warn')")
            for step in STEPS:
                step(conn, echo)
            echo("")
            echo("== summary")
            data = status_mod.status(conn)
            echo(f"  environment {data['environment']}, mode {data['mode']}, "
                 f"{len(data['watched_tables'])} watched tables, {len(data['jobs'])} scheduled jobs")
            echo("  open alerts: " + ", ".join(f"{k} {v}" for k, v in data["open_alerts"].items()))
            rows = conn.execute(
                "SELECT severity, type, left(message, 70), occurrences FROM guardian.open_alerts"
            ).fetchall()
            for line in _table(rows, ("severity", "type", "message", "n")):
                echo(line)
    finally:
        if keep:
            echo(f"\ncluster left running: psql '{cluster.dsn(DEMO_DB)}'")
            echo(f"stop it with: pg_ctl -D {cluster.datadir} stop")
        else:
            cluster.destroy()
            echo("\n== throwaway cluster stopped and removed (run with --keep to explore it)")


def step_environment(conn: psycopg.Connection, echo: Callable[[str], None]) -> None:
    echo("== environment identity: every change is audited as an alert")
    row = conn.execute("SELECT environment, mode FROM guardian.environment_status").fetchone()
    assert row is not None
    echo(f"  this database is {row[0]!r}, guard mode {row[1]!r}")


def step_drift(conn: psycopg.Connection, echo: Callable[[str], None]) -> None:
    echo("== environment drift: a production hotfix, caught as it happens and against the baseline")
    baseline = _scalar(conn, "SELECT guardian.approve_baseline()")
    echo(f"  the schema is baseline {baseline}; then someone changes production by hand:")
    conn.execute("SET application_name = 'psql (hotfix)'")
    conn.execute("ALTER TABLE dental.patients ADD COLUMN insurance_no text")
    conn.execute("DROP INDEX dental.appointments_patient_id_idx")
    conn.execute("RESET application_name")
    for severity, message in conn.execute(
        "SELECT severity, message FROM guardian.monitoring_alerts WHERE type = 'SCHEMA_CHANGE' "
        "ORDER BY last_seen_at DESC LIMIT 2"
    ).fetchall()[::-1]:
        echo(f"  {severity} SCHEMA_CHANGE: {message}")
    echo(f"  hourly drift_check job: {_scalar(conn, 'SELECT guardian.check_drift()')}")
    rows = conn.execute("SELECT kind, identity, change FROM guardian.diff_schema()").fetchall()
    for kind, identity, change in rows:
        echo(f"    {change:<8} {kind} {identity}")
    echo("  (pg-guardian drift --source <prod DSN> --target <staging DSN> compares two databases)")


def _scalar(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


STEPS: list[Callable[[psycopg.Connection, Callable[[str], None]], None]] = [
    step_environment,
    step_drift,
]
