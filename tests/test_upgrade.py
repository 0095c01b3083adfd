"""0.1.0 -> current: install the released 0.1.0 from its frozen script, use it, upgrade, and
compare the catalog with a fresh install and the data with what was put in (both paths, and
as a managed-Postgres owner who is no superuser)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from pg_guardian import install as install_mod
from pg_guardian import response, scripts
from pg_guardian.cluster import LocalCluster
from psycopg import sql
from support.queries import catalog_snapshot, scalar
from support.response import SNAPSHOT, TEST_CLINIC, contamination_alert, load_dental, seed_test_clinic

RELEASED = "0.1.0"
# Generated from the rules (guardian._compile_rules): their bodies are data, compared by name.
COMPILED = (
    "guardian._anchors(text,text)",
    "guardian._uuid_bounds(text)",
    "guardian._gate(text,boolean)",
    "guardian._listed_domains(text[])",
)
CURRENT = scripts.default_version()

# The privilege snapshot is renewed by an upgrade (the guardian's own functions come and go):
# it is checked by the privilege_changes check finding nothing afterwards.
# What 0.2.0 adds to the configuration tables (the digest, the metric history, anomaly detection
# and the forecasts), row by row.
ADDED = {
    "jobs": (
        "(report_digest,",
        "(metrics_collect,",
        "(anomaly_detection,",
        "(source_risk,",
        "(column_models,",
        "(suspect_scan,",
    ),
    "parameters": (
        "(report.digest_days,",
        "(forecast.hysteresis_pct,",
        "(forecast.max_horizon_days,",
        "(forecast.min_history_hours,",
        "(forecast.min_samples,",
        "(forecast.min_trend_to_noise,",
        "(forecast.recent_hours,",
        "(forecast.window_hours,",
        "(health.connections_forecast.crit_days,",
        "(health.connections_forecast.limit_pct,",
        "(health.connections_forecast.warn_days,",
        "(health.disk_space_forecast.crit_days,",
        "(health.disk_space_forecast.reserve_pct,",
        "(health.disk_space_forecast.warn_days,",
        "(health.sequences_forecast.crit_days,",
        "(health.sequences_forecast.limit_pct,",
        "(health.sequences_forecast.warn_days,",
        "(health.table_growth_forecast.crit_days,",
        "(health.table_growth_forecast.factor,",
        "(health.table_growth_forecast.limit_bytes,",
        "(health.table_growth_forecast.min_bytes,",
        "(health.table_growth_forecast.warn_days,",
        "(health.xid_wraparound_forecast.crit_days,",
        "(health.xid_wraparound_forecast.limit_age,",
        "(health.xid_wraparound_forecast.warn_days,",
        "(learning.min_support,",
        "(learning.sample_rows,",
        "(learning.risk_threshold,",
        "(learning.risk_window_days,",
        "(learning.model_sample_rows,",
        "(learning.model_grams,",
        "(learning.suspect_margin,",
    ),
    "checks": (
        "(connections_forecast,",
        "(disk_space_forecast,",
        "(sequences_forecast,",
        "(table_growth_forecast,",
        "(xid_wraparound_forecast,",
    ),
}
RENEWED = {"acl_snapshot", "acl_baseline"}
# 0.2.0 brings the built-in rules' matching up to date (curated lists, test-tool rules): only
# the rules a team wrote must come through unchanged.
BUILTIN_RULES_REFRESHED = True


def _tables(conn: psycopg.Connection) -> dict[str, list[str]]:
    rows = conn.execute(
        """SELECT c.relname, array_agg(quote_ident(a.attname) ORDER BY a.attnum)
             FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
            WHERE c.relnamespace = 'guardian'::regnamespace AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped AND c.relname NOT LIKE 'migrations%'
            GROUP BY c.relname"""
    ).fetchall()
    return {name: list(columns) for name, columns in rows}


def _data(conn: psycopg.Connection, tables: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every row of every guardian table, as text, over the columns the old version had."""
    out = {}
    for table, columns in tables.items():
        query = sql.SQL("SELECT ROW({})::text FROM guardian.{} ORDER BY 1").format(
            sql.SQL(", ").join(sql.SQL(c) for c in columns), sql.Identifier(table)
        )
        out[table] = [r[0] for r in conn.execute(query).fetchall()]
    return out


def _use(conn: psycopg.Connection) -> dict[str, Any]:
    """Put into 0.1.0 what a team would have there: environment, watched tables, alerts in
    every state, a rule, an allowlist entry, a quarantine batch, a baseline, relay state."""
    conn.execute("SELECT guardian.set_environment('staging')")
    load_dental(conn)
    seed_test_clinic(conn)
    seeded = scalar(conn, SNAPSHOT)
    conn.execute(
        "INSERT INTO guardian.rules "
        "(name, kinds, match_type, terms, severity, description, example_match, example_nonmatch) "
        "VALUES ('staging_domain', '{email}', 'domains', '{staging.kamdental.com}', 'HIGH', 'staging accounts', "
        "'dr@staging.kamdental.com', 'dr@kamdental.com')"
    )
    conn.execute(
        "SELECT guardian.allow('placeholder_full_name', 'dental.patients', NULL, 'John Doe', "
        "p_reason => 'a real patient of that name')"
    )
    alert = contamination_alert(conn)
    script = scalar(conn, "SELECT guardian.cleanup_script(%s::uuid)", (alert,))
    summary = response.run_script(conn, script)
    batch = scalar(conn, "SELECT id FROM guardian.quarantine_batches ORDER BY created_at DESC LIMIT 1")
    assert "quarantined" in summary
    assert scalar(conn, "SELECT count(*) FROM dental.clinics WHERE id = %s", (TEST_CLINIC,)) == 0
    conn.execute("SELECT guardian.raise_alert('SCHEMA_CHANGE', 'LOW', 'acknowledged before the upgrade')")
    conn.execute(
        "SELECT guardian.acknowledge_alert(id) FROM guardian.monitoring_alerts "
        "WHERE message = 'acknowledged before the upgrade'"
    )
    conn.execute("SELECT guardian.raise_alert('SCHEMA_CHANGE', 'LOW', 'resolved before the upgrade')")
    conn.execute(
        "SELECT guardian.resolve_alert(id, 'done') FROM guardian.monitoring_alerts "
        "WHERE message = 'resolved before the upgrade'"
    )
    conn.execute("SELECT guardian.approve_baseline()")
    conn.execute("SELECT guardian.create_silence(ARRAY['type=SCHEMA_CHANGE'], '2 hours', 'migration window')")
    conn.execute("SELECT guardian.relay_register()")
    conn.execute("SELECT guardian.set_param('health.connections.warn_pct', 70)")
    conn.execute("SELECT count(*) FROM guardian.run_checks('posture')")
    return {"batch": batch, "seeded": seeded}


def _managed_owner(cluster: LocalCluster, make_role: Callable[..., str], *databases: str) -> str:
    role = make_role("upgrade_master")
    with psycopg.connect(cluster.dsn(), autocommit=True) as su:
        su.execute("ALTER ROLE upgrade_master CREATEROLE CREATEDB")
        # 0.1.0 could be installed by a non-superuser only with these memberships granted first.
        su.execute("GRANT guardian_owner, guardian_admin TO upgrade_master")
        for name in databases:
            su.execute(sql.SQL("ALTER DATABASE {} OWNER TO upgrade_master").format(sql.Identifier(name)))
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                conn.execute("ALTER SCHEMA public OWNER TO upgrade_master")
    return role


@pytest.mark.parametrize("path", ["extension", "sql", "managed"])
def test_upgrade_from_the_released_0_1_0_keeps_data_and_matches_a_fresh_install(
    cluster: LocalCluster,
    blank_dbname: str,
    make_role: Callable[..., str],
    dbname: str,
    path: str,
) -> None:
    user = "postgres"
    fresh_db = dbname
    if path == "managed":
        with psycopg.connect(cluster.dsn(), autocommit=True) as su:
            su.execute("CREATE DATABASE upgrade_fresh")
        fresh_db = "upgrade_fresh"
        user = _managed_owner(cluster, make_role, blank_dbname, fresh_db)
    else:
        # Like the fresh template: with PL/Python, so both get the anomaly detector itself.
        with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as su:
            su.execute("CREATE EXTENSION plpython3u")
    method = "extension" if path == "extension" else "sql"
    try:
        with psycopg.connect(cluster.dsn(blank_dbname, user=user), autocommit=True) as conn:
            state = install_mod.install(conn, method=method, version=RELEASED)
            assert (state.version, state.method) == (RELEASED, method)
            used = _use(conn)
            tables = _tables(conn)
            before = _data(conn, tables)
            assert len(before["monitoring_alerts"]) >= 5 and before["quarantine"]

            assert install_mod.upgrade(conn) == (RELEASED, CURRENT)
            assert scalar(conn, "SELECT guardian.version()") == CURRENT
            after = _data(conn, tables)
            for table in tables:
                if table == "rules" and BUILTIN_RULES_REFRESHED:
                    mine = [r for r in before[table] if r.startswith("(staging_domain,")]
                    assert mine and [r for r in after[table] if r.startswith("(staging_domain,")] == mine
                elif table not in RENEWED:
                    kept = [r for r in after[table] if not r.startswith(ADDED.get(table, ()))]
                    assert kept == before[table], table
            # What 0.2.0 adds to the configuration tables, and nothing else.
            for table, names in ADDED.items():
                assert sorted(set(after[table]) - set(before[table])) == sorted(
                    r for r in after[table] if r.startswith(names)
                ) and len([r for r in after[table] if r.startswith(names)]) == len(names), table
            assert (
                scalar(
                    conn,
                    "SELECT count(*) FROM guardian.run_checks(p_check => 'privilege_changes') WHERE status <> 'ok'",
                )
                == 0
            )

            # It still guards, and the 0.1.0 quarantine batch restores what 0.1.0 removed.
            restored = response.restore(conn, str(used["batch"]), allowlist=False)
            assert "restored" in restored
            assert scalar(conn, SNAPSHOT) == used["seeded"]
            conn.execute("INSERT INTO dental.clinics (name, email) VALUES ('Demo Dental', 'x@example.com')")
            assert (
                scalar(
                    conn,
                    "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION' "
                    "AND created_at > now() - interval '1 minute' AND message LIKE '%Dem%'",
                )
                >= 1
            )
            assert scalar(conn, "SELECT count(*) FROM dental.clinics WHERE id = %s", (TEST_CLINIC,)) == 1

            with psycopg.connect(cluster.dsn(fresh_db, user=user), autocommit=True) as fresh:
                if path == "managed":
                    install_mod.install(fresh)
                upgraded_catalog, fresh_catalog = catalog_snapshot(conn), catalog_snapshot(fresh)
            for catalog in (upgraded_catalog, fresh_catalog):
                catalog["functions"] = [f[:-1] if f[0] in COMPILED else f for f in catalog["functions"]]
            for kind in fresh_catalog:
                up, new = set(upgraded_catalog[kind]), set(fresh_catalog[kind])
                assert up == new, (kind, sorted(up - new), sorted(new - up))
    finally:
        if path == "managed":
            for name in (blank_dbname, "upgrade_fresh"):
                with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                    conn.execute("REASSIGN OWNED BY upgrade_master TO postgres")
            with psycopg.connect(cluster.dsn(), autocommit=True) as su:
                su.execute("DROP DATABASE IF EXISTS upgrade_fresh")
