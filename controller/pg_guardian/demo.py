"""``pg-guardian demo``: the guardian at work on a throwaway cluster with a dental schema."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import psycopg

from pg_guardian import install
from pg_guardian.cluster import LocalCluster
from pg_guardian.core import environment, status

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


def dashboard_config(directory: Path, dsn: str) -> tuple[Path, str, str]:
    """A dashboard configuration for the demo database: its path, user and a fresh password."""
    from pg_guardian.dashboard.auth import hash_password
    from pg_guardian.dashboard.settings import new_config

    user, password = "admin", secrets.token_urlsafe(12)
    path = directory / "dashboard.toml"
    path.write_text(new_config([("production", dsn)], user, "admin", hash_password(password)))
    path.chmod(0o600)
    return path, user, password


def run(directory: Path, *, keep: bool, echo: Callable[[str], None], dashboard_port: int | None = None) -> None:
    """Start the cluster, install, load the sample and walk through each capability.

    With ``dashboard_port`` the web dashboard then serves the demo database on 127.0.0.1 until
    interrupted; with ``keep`` the cluster outlives the command and the dashboard's
    configuration is left beside it.
    """
    cluster = LocalCluster(datadir=directory / "pgdata", cron_database=DEMO_DB)
    echo(f"== starting a throwaway PostgreSQL 15 cluster in {cluster.datadir} (port {cluster.port})")
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DEMO_DB}")
        with psycopg.connect(cluster.dsn(DEMO_DB), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")
            state = install.install(conn)
            echo(f"== installed pg_guardian {state.version} ({state.method} path), pg_cron preloaded")
            conn.execute(package_sql("demo_schema.sql"))
            conn.execute(package_sql("demo_data.sql"))
            echo("== sample dental schema: clinics, patients, appointments, invoices")
            environment.set_environment(conn, "production")
            environment.set_mode(conn, "warn")
            for step in STEPS:
                step(conn, echo)
            echo("")
            echo("== summary")
            data = status.status(conn)
            echo(
                f"  environment {data['environment']}, mode {data['mode']}, "
                f"{len(data['watched_tables'])} watched tables, {len(data['jobs'])} scheduled jobs"
            )
            echo("  open alerts: " + ", ".join(f"{k} {v}" for k, v in data["open_alerts"].items()))
            rows = conn.execute(
                "SELECT severity, type, left(message, 70), occurrences FROM guardian.open_alerts"
            ).fetchall()
            for line in _table(rows, ("severity", "type", "message", "n")):
                echo(line)
        if keep or dashboard_port is not None:
            config, user, password = dashboard_config(directory, cluster.dsn(DEMO_DB))
            echo(f"\n== dashboard: user {user}, password {password} (in {config})")
            if dashboard_port is not None:
                from pg_guardian.dashboard import serve

                echo(f"  serving http://127.0.0.1:{dashboard_port}/ until Ctrl-C")
                serve("127.0.0.1", dashboard_port, None, config)
            else:
                echo(f"  run: pg-guardian dashboard --config {config}")
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


def step_contamination(conn: psycopg.Connection, echo: Callable[[str], None]) -> None:
    echo("== contamination detection: watch the dental tables (warn mode in production)")
    for table in ("dental.clinics", "dental.patients"):
        cols = conn.execute("SELECT column_name || ':' || kind FROM guardian.watch(%s)", (table,)).fetchall()
        echo(f"  watch {table}: " + ", ".join(c[0] for c in cols))
    clinic = conn.execute("SELECT id FROM dental.clinics WHERE name = 'Greatest Smiles Dental'").fetchone()
    assert clinic is not None
    conn.execute(
        "INSERT INTO dental.patients (clinic_id, first_name, last_name, email, phone) VALUES "
        "(%(c)s, 'Celeste', 'Testa', 'celeste.t@gmail.com', '+1 415 872 1000'), "
        "(%(c)s, 'Martin', 'Tester', 'martin.tester@outlook.com', '+1 415 872 2000'), "
        "(%(c)s, 'Dana', 'Dummett', 'dana@dummett.co.uk', '+44 20 7946 5678'), "
        "(%(c)s, 'Grace', 'Sample', 'grace.sample@yahoo.co.uk', '+44 7700 183 456')",
        {"c": clinic[0]},
    )
    found = conn.execute("SELECT count(*) FROM guardian.findings").fetchone()
    echo(f"  real patients Testa, Tester, Dummett, Sample written: {found[0] if found else 0} findings")
    conn.execute(
        "INSERT INTO dental.clinics (id, name, email, phone) VALUES "
        "('550e8400-e29b-41d4-a716-446655440000', 'Test Clinic', 'user@tenant-a.test', '(415) 555-0123')"
    )
    echo("  fixture clinic written (warn mode lets it through) and reported:")
    rows = conn.execute(
        "SELECT severity, metadata->>'rule', left(message, 72) FROM guardian.monitoring_alerts "
        "WHERE type = 'TEST_DATA_CONTAMINATION' ORDER BY severity, 2"
    ).fetchall()
    for line in _table([tuple(r) for r in rows], ("severity", "rule", "message")):
        echo(line)

    echo("== strict mode: the write is rejected, and the rejection is still an alert")
    conn.execute("SELECT guardian.set_mode('strict')")
    try:
        conn.execute(
            "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) "
            "VALUES (%s, 'John', 'Doe', 'qa+e2e@mailinator.com')",
            (clinic[0],),
        )
    except psycopg.Error as exc:
        echo(f"  ERROR {exc.sqlstate}: {exc.diag.message_primary}")
        echo(f"  HINT: {exc.diag.message_hint}")
    row = conn.execute(
        "SELECT severity, message FROM guardian.monitoring_alerts WHERE type = 'STRICT_MODE_REJECTION'"
    ).fetchone()
    if row:
        echo(f"  recorded after the rollback: {row[0]} STRICT_MODE_REJECTION: {row[1][:80]}")
    conn.execute("SELECT guardian.set_mode('warn')")

    echo("== scanner: test data already in the tables, whatever the mode")
    rows = conn.execute(
        "SELECT record_id, column_name, rule, sample FROM guardian.scan('dental.clinics') ORDER BY rule"
    ).fetchall()
    for line in _table([tuple(r) for r in rows], ("record", "column", "rule", "sample")):
        echo(line)

    echo("== unusual activity: a script bulk-inserts 200 patients")
    conn.execute(
        "INSERT INTO dental.patients (clinic_id, first_name, last_name) "
        "SELECT %s, 'Import', 'Row ' || i FROM generate_series(1, 200) AS i",
        (clinic[0],),
    )
    conn.execute("SELECT guardian.rollup_activity()")
    rows = conn.execute(
        "SELECT severity, type, left(message, 80) FROM guardian.monitoring_alerts "
        "WHERE type IN ('BULK_OPERATION', 'RAPID_CREATION') ORDER BY 2"
    ).fetchall()
    for line in _table([tuple(r) for r in rows], ("severity", "type", "message")):
        echo(line)


def step_relay(conn: psycopg.Connection, echo: Callable[[str], None]) -> None:
    """The alert relay delivering the open alerts to a webhook receiver on 127.0.0.1."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pg_guardian.relay import Relay, config

    echo("== alert relay: open alerts delivered to a local webhook (Slack, email: the same way)")
    got: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/guardian"
        cfg = config.load(
            None,
            env={},
            overrides={"channels": {"webhook": {"type": "webhook", "url": url}}, "routes": [{"channels": ["webhook"]}]},
        )
        dsn = conn.info.dsn + (f" password={conn.info.password}" if conn.info.password else "")
        summary = Relay(dsn, cfg, once=True, log=logging.getLogger("pg_guardian.demo")).run()
        for body in got:
            key = str(body["idempotency_key"])
            echo(f"  POST {url}: {body['title']}  (Idempotency-Key {key[:22]}...)")
        echo(
            f"  routed {summary.routed} alert(s), delivered {summary.delivered} message(s); "
            "`pg-guardian relay status` shows the queue"
        )
    finally:
        server.shutdown()
        server.server_close()


def step_health_and_security(conn: psycopg.Connection, echo: Callable[[str], None]) -> None:
    echo("== health checks and security events: one finding shape, one alert path")
    conn.execute("GRANT SELECT ON dental.patients TO PUBLIC")
    echo("  GRANT SELECT ON dental.patients TO PUBLIC  -> raised at once by the event trigger")
    rows = conn.execute(
        "SELECT coalesce(severity, status), coalesce(alert_type, check_name), left(detail, 70) "
        "FROM guardian.run_checks() WHERE status <> 'ok' ORDER BY category, check_name"
    ).fetchall()
    echo("  guardian.run_checks(): every health, security and posture check, now")
    for line in _table([tuple(r) for r in rows], ("severity", "finding", "detail")):
        echo(line)
    conn.execute("REVOKE SELECT ON dental.patients FROM PUBLIC")
    conn.execute("SELECT guardian.run_checks('posture')")
    echo("  REVOKE ... FROM PUBLIC, checks again: the posture alert resolves itself")


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


def step_cleanup(conn: psycopg.Connection, echo: Callable[[str], None]) -> None:
    """Detection -> alert -> cleanup script -> quarantine -> restore, on a test clinic."""
    from pg_guardian import response

    echo("== auto-response: a test clinic, its cleanup script, quarantine and restore")
    conn.execute("SELECT guardian.watch('dental.clinics'), guardian.watch('dental.patients')")
    clinic = "c1a1c000-0000-4000-8000-00000000de30"
    conn.execute(
        "INSERT INTO dental.clinics (id, name, email) VALUES (%s, 'Demo Clinic', 'desk@example.com')",
        (clinic,),
    )
    conn.execute(
        """INSERT INTO dental.patients (clinic_id, first_name, last_name, email, allergies, balance)
           VALUES (%s, 'Ann', 'Lee', 'ann.lee@gmail.com', '{latex}', 42.50),
                  (%s, 'Bob', 'Ray', 'bob.ray@gmail.com', '{}', 0)""",
        (clinic, clinic),
    )
    conn.execute(
        """INSERT INTO dental.appointments (patient_id, clinic_id, starts_at, procedure)
           SELECT p.id, p.clinic_id, now() + interval '1 day', 'cleaning'
             FROM dental.patients AS p WHERE p.clinic_id = %s""",
        (clinic,),
    )
    snapshot = """SELECT md5(string_agg(t, '|' ORDER BY t))
                    FROM (SELECT c::text AS t FROM dental.clinics AS c
                          UNION ALL SELECT p::text FROM dental.patients AS p
                          UNION ALL SELECT a::text FROM dental.appointments AS a) AS x"""
    before = conn.execute(snapshot).fetchone()
    alert = conn.execute(
        """SELECT a.id, a.severity, a.message FROM guardian.open_alerts AS a
            WHERE a.type = 'TEST_DATA_CONTAMINATION'
              AND EXISTS (SELECT FROM guardian.findings AS f
                           WHERE f.alert_id = a.id AND f.record_key = jsonb_build_object('id', %s::uuid))
            ORDER BY a.message LIMIT 1""",
        (clinic,),
    ).fetchone()
    assert alert is not None
    echo("  INSERT 'Demo Clinic' <desk@example.com> + 2 patients + 2 appointments")
    echo(f"  -> {alert[1]} alert: {alert[2]}")
    script = response.cleanup_script(conn, alert=str(alert[0]))
    echo("  guardian.cleanup_script(alert): stored with the alert for Slack and email; its header:")
    lines = script.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("-- step"))
    for line in lines[start : lines.index("", start)]:
        echo(f"    {line}")
    summary = response.run_script(conn, script)
    echo(f"  ran it (one transaction, parsed by pglast first): {summary.split(';')[0]}")
    batch = conn.execute("SELECT batch_id FROM guardian.quarantine_status").fetchone()
    assert batch is not None
    echo(f"  {response.restore(conn, str(batch[0])).split(' by ')[0]}")
    same = conn.execute(snapshot).fetchone() == before
    echo(f"  every row back, byte for byte: {'yes' if same else 'NO'} (and allowlisted, so it is not flagged again)")


STEPS: list[Callable[[psycopg.Connection, Callable[[str], None]], None]] = [
    step_environment,
    step_contamination,
    step_cleanup,
    step_drift,
    step_health_and_security,
    step_relay,
]
