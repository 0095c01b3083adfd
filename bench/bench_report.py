"""guardian.report() over a year of history: 1,000,000 alerts, a 90-day report in <= 1 s.

The history is shaped like a busy production database's: a dozen alert types (contamination,
strict-mode rejections, activity, health, security, drift now and then), severities from
CRITICAL to INFO, a third resolved with an outcome, one in a thousand still open, contamination
alerts carrying rules, columns and the writing session. Each report is timed as the median of 5
calls after one warm-up, against a baseline measured in the same run on the same rows: counting
the period's alerts by severity and type, the least any report must do.
"""

from __future__ import annotations

import os
import statistics
import time

import psycopg
from pg_guardian import install as install_mod

from bench.common import bench_cluster

ALERTS = 1_000_000
TARGET_90D = 1.0
RUNS = 5

FILL = """
INSERT INTO guardian.monitoring_alerts
       (severity, type, message, table_name, environment, metadata, context, created_at, last_seen_at,
        fingerprint, acknowledged_at, resolved_at, outcome)
SELECT s.sev, t.type, 'alert ' || i,
       CASE WHEN t.type IN ('TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION', 'BULK_OPERATION', 'RAPID_CREATION',
                            'OFF_HOURS_ACTIVITY')
            THEN (ARRAY['dental.patients', 'dental.clinics', 'dental.invoices', 'dental.appointments'])[1 + i % 4] END,
       'production',
       CASE WHEN t.type IN ('TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION')
            THEN jsonb_build_object('rule', 'rule_' || (i % 17),
                                    'columns', jsonb_build_array((ARRAY['email', 'first_name', 'phone'])[1 + i % 3]),
                                    'affected_records', 1 + i % 4, 'samples', jsonb_build_array('u***@example.com'))
            ELSE jsonb_build_object('detail', 'x') END,
       jsonb_build_object('session_user', 'app_' || (i % 6), 'application_name', 'svc' || (i % 5),
                          'client_addr', '10.0.' || (i % 3) || '.' || (i % 50), 'backend_pid', 1000 + i % 300),
       c.at, c.at, md5(i::text),
       CASE WHEN i % 1000 <> 0 THEN c.at + ((i::bigint * 7919) % 3600) * interval '1 second' END,
       CASE WHEN i % 1000 <> 0 THEN c.at + ((i::bigint * 7919) % 86400) * interval '1 second' END,
       CASE WHEN i % 1000 <> 0 AND i % 3 = 0
            THEN (ARRAY['cleaned', 'confirmed', 'false_positive', 'expected'])[1 + i % 4] END
  FROM generate_series(1, ALERTS) AS i,
       LATERAL (SELECT now() - interval '365 days' * (i / ALERTS::numeric) AS at) AS c,
       LATERAL (SELECT CASE WHEN i % 2000 = 0 THEN 'ENVIRONMENT_DRIFT'
                            ELSE (ARRAY['TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION', 'BULK_OPERATION',
                                        'RAPID_CREATION', 'OFF_HOURS_ACTIVITY', 'LOGIN_FAILED', 'CONNECTIONS_HIGH',
                                        'LONG_RUNNING_QUERY', 'SCHEMA_CHANGE', 'PRIVILEGE_GRANTED', 'DEAD_TUPLES',
                                        'JOB_FAILED'])[1 + i % 12] END AS type) AS t,
       LATERAL (SELECT (ARRAY['CRITICAL', 'HIGH', 'HIGH', 'MEDIUM', 'MEDIUM', 'MEDIUM', 'LOW', 'LOW', 'LOW',
                              'INFO'])[1 + (i / 12) % 10] AS sev) AS s
"""

BASELINE = """SELECT severity, type, count(*) FROM guardian.monitoring_alerts
               WHERE created_at >= now() - %s::interval GROUP BY 1, 2"""


def timed(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> float:
    conn.execute(query, params).fetchall()  # warm-up
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        conn.execute(query, params).fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with bench_cluster() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_report")
        dsn = pg.dsn("bench_report")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # GUARDIAN_TEST_INSTALL=sql: this checkout's SQL, as the tests do (no `make install`)
            install_mod.install(conn, method=os.environ.get("GUARDIAN_TEST_INSTALL", "auto"))
            conn.execute("SELECT guardian.set_environment('production')")
            start = time.perf_counter()
            # The history is loaded as a restore would: without the alert triggers (no relay
            # queue, no notifications), then vacuumed as autovacuum would.
            conn.execute("ALTER TABLE guardian.monitoring_alerts DISABLE TRIGGER USER")
            conn.execute(FILL.replace("ALERTS", str(ALERTS)))
            conn.execute("ALTER TABLE guardian.monitoring_alerts ENABLE TRIGGER USER")
            conn.execute("VACUUM ANALYZE guardian.monitoring_alerts")
            print(f"history: {ALERTS:,} alerts over 365 days loaded in {time.perf_counter() - start:.0f} s")
            print(f"{'period':>8} {'alerts':>9} {'report':>9} {'baseline':>9} {'ratio':>6} {'timeseries':>11}")
            for days in (7, 30, 90, 365):
                span = f"{days} days"
                count = conn.execute(
                    "SELECT count(*) FROM guardian.monitoring_alerts WHERE created_at >= now() - %s::interval", (span,)
                ).fetchone()
                report = timed(conn, "SELECT guardian.report(now() - %s::interval, now())", (span,))
                baseline = timed(conn, BASELINE, (span,))
                series = timed(
                    conn, "SELECT * FROM guardian.alert_timeseries(now() - %s::interval, now(), 'day')", (span,)
                )
                verdict = ""
                if days == 90:
                    verdict = f"   target <= {TARGET_90D:.1f} s: {'OK' if report <= TARGET_90D else 'MISSED'}"
                print(
                    f"{days:>6} d {count[0] if count else 0:>9,} {report * 1000:>7.0f} ms {baseline * 1000:>6.0f} ms "
                    f"{report / baseline:>5.1f}x {series * 1000:>8.0f} ms{verdict}"
                )


if __name__ == "__main__":
    main()
