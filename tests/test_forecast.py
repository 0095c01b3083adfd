"""Forecasts and predictive alerts: guardian.forecast() on scripted trends, each predictive
check raising its alert with an arrival close to the truth and resolving when the trend stops,
nothing on sawtooth, flat or bursty series, bad input refused with the fix, and the disk probe
with and without PL/Python."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from pg_guardian import install as install_mod
from pg_guardian.cluster import LocalCluster
from psycopg.rows import dict_row
from support.checks import findings, open_alerts, run_check, set_param
from support.queries import scalar

GiB = 1024**3
PREDICTIVE = {
    "sequences_forecast": "SEQUENCE_EXHAUSTION_PREDICTED",
    "xid_wraparound_forecast": "XID_WRAPAROUND_PREDICTED",
    "table_growth_forecast": "TABLE_GROWTH_PREDICTED",
    "connections_forecast": "CONNECTIONS_SATURATION_PREDICTED",
    "disk_space_forecast": "DISK_FULL_PREDICTED",
}


def script(
    db: psycopg.Connection,
    metric: str,
    subject: str,
    value: Callable[[float], float],
    *,
    hours: float,
    noise: float = 0.0,
    step_minutes: int = 10,
    seed: int = 17,
) -> datetime:
    """Write samples of value(days from now, <= 0) every step_minutes over the last `hours`."""
    now: datetime = scalar(db, "SELECT now()")
    rng = random.Random(seed)
    steps = int(hours * 60 / step_minutes)
    times = [now - timedelta(minutes=step_minutes * k) for k in range(steps, -1, -1)]
    values = [value((t - now).total_seconds() / 86400) + rng.gauss(0, noise) for t in times]
    db.execute(
        "INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value) "
        "SELECT %s, %s, unnest(%s::timestamptz[]), unnest(%s::float8[]) "
        "ON CONFLICT (metric, subject, sampled_at) DO UPDATE SET value = EXCLUDED.value",
        (metric, subject, times, values),
    )
    return now


def forecast(db: psycopg.Connection, metric: str, subject: str, horizon: str) -> list[dict[str, Any]]:
    cur = db.cursor(row_factory=dict_row)
    return list(cur.execute("SELECT * FROM guardian.forecast(%s, %s, %s::interval)", (metric, subject, horizon)))


def eta_days(row: dict[str, Any]) -> float:
    return float(row["metadata"]["eta_days"])


def test_forecast_of_a_linear_trend_keeps_the_truth_inside_a_widening_band(db: psycopg.Connection) -> None:
    now = script(db, "app.queue", "web", lambda d: 1000 + 50 * (d + 3), hours=72, noise=5)
    rows = forecast(db, "app.queue", "web", "10 days")
    assert len(rows) == 13 and rows[0]["method"] == "theil-sen"
    assert rows[-1]["forecast_at"] - rows[0]["forecast_at"] == timedelta(days=10)
    assert rows[0]["samples"] == 433 and rows[0]["fit_to"] - rows[0]["fit_from"] == timedelta(hours=72)
    assert rows[0]["slope_per_day"] == pytest.approx(50, abs=1.5) and rows[0]["r2"] > 0.98
    for row in rows:
        truth = 1000 + 50 * ((row["forecast_at"] - now).total_seconds() / 86400 + 3)
        assert row["lower_bound"] <= truth <= row["upper_bound"]
        assert row["expected"] == pytest.approx(truth, abs=0.03 * 50 * 13)
    widths = [r["upper_bound"] - r["lower_bound"] for r in rows]
    assert widths == sorted(widths) and widths[-1] > widths[0] > 2 * 1.96 * 5 * 0.8  # about +/- 2 sigma, wider ahead


def test_forecast_refuses_bad_input_naming_the_value_and_the_fix(db: psycopg.Connection) -> None:
    script(db, "app.queue", "web", lambda d: 5, hours=24)
    script(db, "app.queue", "young", lambda d: 5, hours=1)
    with pytest.raises(psycopg.errors.NoDataFound, match=r"no samples of metric 'app\.nope'") as err:
        forecast(db, "app.nope", "web", "1 day")
    assert "guardian.metric_samples" in (err.value.diag.message_hint or "")
    with pytest.raises(psycopg.errors.NoDataFound, match=r"no samples of metric 'app\.queue' for subject 'api'") as err:
        forecast(db, "app.queue", "api", "1 day")
    assert "web" in (err.value.diag.message_detail or "")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="too little history") as young:
        forecast(db, "app.queue", "young", "1 day")
    assert "7 samples spanning 01:00:00" in str(young.value)
    assert "min_history_hours" in (young.value.diag.message_hint or "")
    for horizon, message in [
        ("0", "forecast horizon 00:00:00 is not a positive interval"),
        ("-1 day", "forecast horizon -1 days is not a positive interval"),
        ("100 years", "forecast horizon 100 years is beyond the longest allowed, 730 days"),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message) as bad:
            forecast(db, "app.queue", "web", horizon)
        assert bad.value.diag.message_hint
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="forecast horizon NULL"):
        db.execute("SELECT * FROM guardian.forecast('app.queue', 'web', NULL)")


def test_readers_may_forecast(db: psycopg.Connection, make_role: Callable[..., str], connect: Any) -> None:
    script(db, "app.queue", "web", lambda d: 10 + d, hours=24)
    role = make_role("forecast_reader", "guardian_reader")
    reader = connect(db.info.dbname, user=role)
    assert len(forecast(reader, "app.queue", "web", "1 day")) == 13
    assert scalar(db, "SELECT prosecdef FROM pg_proc WHERE oid = 'guardian.forecast(text,text,interval)'::regprocedure")


def test_sequence_exhaustion_is_predicted_and_resolves_when_the_trend_stops(db: psycopg.Connection) -> None:
    # 60% a week ago, 2 points a day: 74% now, 100% in 13 days.
    script(db, "sequence.used", "public.orders_id_seq", lambda d: 74 + 2 * d, hours=7 * 24, noise=0.05)
    [row] = findings(db, "sequences_forecast", "SEQUENCE_EXHAUSTION_PREDICTED")
    assert row["severity"] == "MEDIUM" and row["table_name"] == "public.orders_id_seq"
    assert eta_days(row) == pytest.approx(13, abs=0.3)
    assert "will have used 100% of its range around" in row["detail"] and "(in 13" in row["detail"]
    assert "ALTER SEQUENCE public.orders_id_seq AS bigint" in row["remediation"]
    meta = row["metadata"]
    assert meta["slope_per_day"] == pytest.approx(2, abs=0.05) and meta["samples"] == 1008
    assert meta["r2"] > 0.99 and meta["limit"] == 100 and meta["window_hours"] == 168
    assert meta["current_value"] == pytest.approx(74, abs=0.2) and meta["warn_days"] == 30
    set_param(db, "health.sequences_forecast.crit_days", 14)
    [row] = findings(db, "sequences_forecast")
    assert row["severity"] == "HIGH"
    [alert] = open_alerts(db, "SEQUENCE_EXHAUSTION_PREDICTED")
    assert alert["occurrences"] == 2 and alert["severity"] == "HIGH"
    # The last day flat: the trend no longer holds, the alert resolves itself.
    db.execute(
        "UPDATE guardian.metric_samples SET value = 72 + 0.01 * extract(minute FROM sampled_at) / 60 "
        "WHERE metric = 'sequence.used' AND sampled_at > now() - interval '24 hours'"
    )
    assert findings(db, "sequences_forecast") == []
    assert open_alerts(db, "SEQUENCE_EXHAUSTION_PREDICTED") == []
    note = scalar(db, "SELECT resolution_note FROM guardian.monitoring_alerts WHERE type LIKE 'SEQUENCE_EXHAUSTION_%'")
    assert "condition cleared" in note


def test_a_far_arrival_and_too_little_history_predict_nothing(db: psycopg.Connection) -> None:
    script(db, "sequence.used", "public.slow_seq", lambda d: 50 + 1 * d, hours=7 * 24)  # 100% in 50 days
    script(db, "sequence.used", "public.young_seq", lambda d: 90 + 20 * d, hours=4)  # 4 h of history only
    assert findings(db, "sequences_forecast") == []
    set_param(db, "health.sequences_forecast.warn_days", 60)
    [row] = findings(db, "sequences_forecast")
    assert row["table_name"] == "public.slow_seq" and eta_days(row) == pytest.approx(50, abs=0.5)


def test_an_open_prediction_stays_until_it_moves_clearly_past_the_horizon(db: psycopg.Connection) -> None:
    script(db, "sequence.used", "public.orders_id_seq", lambda d: 74 + 2 * d, hours=7 * 24)  # 13 days
    set_param(db, "health.sequences_forecast.crit_days", 5)
    set_param(db, "health.sequences_forecast.warn_days", 14)
    assert len(findings(db, "sequences_forecast")) == 1
    set_param(db, "health.sequences_forecast.warn_days", 12)  # 13 days is within 12 * 1.25
    assert len(findings(db, "sequences_forecast")) == 1
    set_param(db, "health.sequences_forecast.warn_days", 10)  # but not within 10 * 1.25
    assert findings(db, "sequences_forecast") == []
    set_param(db, "health.sequences_forecast.warn_days", 12)  # and a new one needs 12 days
    assert findings(db, "sequences_forecast") == []


def test_xid_wraparound_is_predicted_only_past_autovacuum_freeze_max_age(db: psycopg.Connection) -> None:
    name = db.info.dbname
    # 1.0 billion three days ago, 50 million a day: 1.15 billion now, the stop limit in ~19.9 days.
    script(db, "xid.age", name, lambda d: 1.15e9 + 5e7 * d, hours=72, noise=1e5)
    [row] = findings(db, "xid_wraparound_forecast", "XID_WRAPAROUND_PREDICTED")
    assert row["record_id"] == name and row["severity"] == "MEDIUM"
    assert eta_days(row) == pytest.approx((2144483647 - 1.15e9) / 5e7, abs=0.3)
    assert "where PostgreSQL stops assigning transaction IDs" in row["detail"]
    assert "VACUUM (FREEZE, VERBOSE)" in row["remediation"]
    meta = row["metadata"]
    assert meta["autovacuum_freeze_max_age"] == 200000000 and meta["limit_age"] == 2144483647
    assert meta["warn_age_eta"] is not None  # when it passes health.xid_wraparound.warn_age (1.2 billion)
    # The normal climb below autovacuum_freeze_max_age (anti-wraparound vacuum will reset it)
    db.execute("DELETE FROM guardian.metric_samples WHERE metric = 'xid.age'")
    script(db, "xid.age", name, lambda d: 1.5e8 + 1e8 * d, hours=36)  # 2.1 billion in ~20 days
    assert findings(db, "xid_wraparound_forecast") == []
    assert open_alerts(db, "XID_WRAPAROUND_PREDICTED") == []


def test_table_growth_is_predicted_for_big_tables_only(db: psycopg.Connection) -> None:
    # 3 GiB now, 150 MiB a day: doubles in ~20.5 days.
    script(db, "table.size", "public.events", lambda d: 3 * GiB + 150 * 2**20 * d, hours=7 * 24, noise=2**20)
    # 100 MiB doubling in 2 days: too small to matter (min_bytes 1 GiB).
    script(db, "table.size", "public.small", lambda d: 100 * 2**20 * (1 + d / 2), hours=7 * 24)
    [row] = findings(db, "table_growth_forecast", "TABLE_GROWTH_PREDICTED")
    assert row["table_name"] == "public.events" and row["severity"] == "MEDIUM"
    assert eta_days(row) == pytest.approx(3 * 1024 / 150, abs=0.3)
    assert "will reach 6144 MB (2 times its size now)" in row["detail"] and "growing by 150 MB a day" in row["detail"]
    # An absolute limit nearer than the doubling.
    set_param(db, "health.table_growth_forecast.limit_bytes", 4 * GiB)
    [row] = findings(db, "table_growth_forecast")
    assert eta_days(row) == pytest.approx(1024 / 150, abs=0.3) and row["severity"] == "HIGH"
    assert "the limit health.table_growth_forecast.limit_bytes" in row["detail"]


def test_connections_saturation_is_predicted_against_the_available_connections(db: psycopg.Connection) -> None:
    name = db.info.dbname
    script(db, "connections.available", name, lambda d: 100, hours=72)
    script(db, "connections", name, lambda d: 70 + 10 * d, hours=72, noise=1)  # 100 in 3 days
    [row] = findings(db, "connections_forecast", "CONNECTIONS_SATURATION_PREDICTED")
    assert row["severity"] == "HIGH" and row["record_id"] == name
    assert eta_days(row) == pytest.approx(3, abs=0.2)
    assert "will reach 100, 100% of the 100 available" in row["detail"]
    assert row["metadata"]["available"] == 100 and "PgBouncer" in row["remediation"]


def test_disk_full_is_predicted_from_disk_free_samples(db: psycopg.Connection) -> None:
    assert scalar(db, "SELECT guardian.disk_probe_available()") is True
    gauges: dict[str, float] = dict(db.execute("SELECT metric, value FROM guardian._disk_samples()").fetchall())
    assert 0 < gauges["disk.free"] <= gauges["disk.size"]
    name = db.info.dbname
    script(db, "disk.size", name, lambda d: 1000 * GiB, hours=7 * 24)
    script(db, "disk.free", name, lambda d: 130 * GiB - 10 * GiB * d, hours=7 * 24, noise=0.1 * GiB)  # 13 days
    [row] = findings(db, "disk_space_forecast", "DISK_FULL_PREDICTED")
    assert row["severity"] == "MEDIUM" and eta_days(row) == pytest.approx(13, abs=0.3)
    assert "will be full around" in row["detail"] and "130 GB free now, shrinking by 10" in row["detail"]
    assert row["metadata"]["slope_per_day"] == pytest.approx(-10 * GiB, rel=0.01)
    set_param(db, "health.disk_space_forecast.reserve_pct", 5)  # 50 GiB reserve: 8 days
    [row] = findings(db, "disk_space_forecast")
    assert eta_days(row) == pytest.approx(8, abs=0.3) and "down to its 5% reserve" in row["detail"]


def test_sawtooth_flat_and_bursty_series_predict_nothing(db: psycopg.Connection) -> None:
    name = db.info.dbname
    # Disk: log files filling 20 GiB over 6 h, then rotated away; a week of it.
    script(db, "disk.free", name, lambda d: 100 * GiB - 20 * GiB * ((d * 4) % 1), hours=7 * 24)
    # A slower sawtooth (cleanup every two days) whose last day is all downhill.
    script(db, "disk.free", "other", lambda d: 100 * GiB - 40 * GiB * ((d / 2) % 1), hours=7 * 24)
    # Connections: a daily cycle, flat over the week.
    script(db, "connections", name, lambda d: 60 + 30 * math.sin(2 * math.pi * d), hours=7 * 24, noise=2)
    script(db, "connections.available", name, lambda d: 100, hours=7 * 24)
    # A table flat at 5 GiB with a nightly bulk load that is cleaned up, one right now.
    script(
        db,
        "table.size",
        "public.staging",
        lambda d: 5 * GiB + (4 * GiB if (d % 1) > 0.99 or d > -0.01 else 0),
        hours=7 * 24,
    )
    # A flat sequence with noise.
    script(db, "sequence.used", "public.flat_seq", lambda d: 80, hours=7 * 24, noise=0.5)
    for check in PREDICTIVE:
        assert findings(db, check) == [], check


def test_disk_probe_degrades_without_plpython_and_the_fix_works(cluster: LocalCluster, blank_dbname: str) -> None:
    with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as conn:
        install_mod.install(conn)
        conn.execute("INSERT INTO guardian.settings (key, value) VALUES ('cluster.checks_database', '\"*\"')")
        assert scalar(conn, "SELECT guardian.disk_probe_available()") is False
        assert conn.execute("SELECT * FROM guardian._disk_samples()").fetchall() == []
        for _ in range(2):
            [row] = run_check(conn, "disk_space_forecast")
            assert row["status"] == "degraded" and row["alert_type"] == "CHECK_DEGRADED"
            assert "CREATE EXTENSION plpython3u; SELECT guardian.install_disk_probe();" in row["remediation"]
        [alert] = open_alerts(conn, "CHECK_DEGRADED")
        assert alert["occurrences"] == 2  # one alert, counted
        with pytest.raises(psycopg.errors.FeatureNotSupported, match=r"plpython3u\) is not installed") as err:
            conn.execute("SELECT guardian.install_disk_probe()")
        assert "CREATE EXTENSION plpython3u" in (err.value.diag.message_hint or "")
        # Samples recorded from outside are forecast even without the probe.
        script(conn, "disk.free", blank_dbname, lambda d: 50 * GiB - 10 * GiB * d, hours=48)
        [row] = findings(conn, "disk_space_forecast", "DISK_FULL_PREDICTED")
        assert eta_days(row) == pytest.approx(5, abs=0.2)
        assert open_alerts(conn, "CHECK_DEGRADED") == []
        conn.execute("DELETE FROM guardian.metric_samples")
        conn.execute("CREATE EXTENSION plpython3u")
        assert scalar(conn, "SELECT guardian.install_disk_probe()") == "disk probe: PL/Python"
        assert scalar(conn, "SELECT guardian.disk_probe_available()") is True
        assert [r["status"] for r in run_check(conn, "disk_space_forecast")] == ["ok"]
        assert {r[0] for r in conn.execute("SELECT metric FROM guardian._disk_samples()")} == {"disk.free", "disk.size"}


def test_the_predictive_checks_are_registered_and_on(db: psycopg.Connection) -> None:
    rows = db.execute(
        "SELECT name, category, is_condition, enabled FROM guardian.check_status "
        "WHERE name LIKE '%\\_forecast' ORDER BY 1"
    ).fetchall()
    assert rows == [(name, "health", True, True) for name in sorted(PREDICTIVE)]
    for check, alert_type in PREDICTIVE.items():
        assert alert_type in scalar(db, "SELECT description FROM guardian.checks WHERE name = %s", (check,))
        assert scalar(db, "SELECT guardian.param(%s)", (f"health.{check}.warn_days",)) == 30
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"is above health\.sequences_forecast\.warn_days"):
        set_param(db, "health.sequences_forecast.crit_days", 31)
