"""Metric history: the metrics_collect job's samples, admins' own samples, roll-up and retention."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest
from support.queries import scalar


@pytest.fixture
def orders(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("CREATE TABLE public.orders (id serial PRIMARY KEY, note text)")
    db.execute("SELECT guardian.watch('public.orders')")
    return db


def samples(db: psycopg.Connection, metric: str, subject: str | None = None) -> list[tuple[datetime, float]]:
    return db.execute(
        "SELECT sampled_at, value FROM guardian.metric_samples "
        "WHERE metric = %s AND (%s::text IS NULL OR subject = %s) ORDER BY sampled_at",
        (metric, subject, subject),
    ).fetchall()


def test_collect_samples_writes_alerts_and_gauges_of_the_finished_bucket(orders: psycopg.Connection) -> None:
    orders.execute("INSERT INTO public.orders (note) SELECT 'n' FROM generate_series(1, 7)")
    orders.execute("UPDATE public.orders SET note = 'm' WHERE id <= 2")
    orders.execute("SELECT guardian.raise_alert('METRIC_TEST', 'LOW', 'one')")
    orders.execute("SELECT guardian.rollup_activity()")
    # A sequence's position is only visible to a role that may read it (as for the check).
    orders.execute("GRANT SELECT ON SEQUENCE public.orders_id_seq TO guardian_owner")
    now = scalar(orders, "SELECT now()")
    bucket = scalar(orders, "SELECT date_bin('10 minutes', now(), 'epoch')")
    # The bucket is done two minutes after it ends.
    result = scalar(orders, "SELECT guardian.collect_metrics(%s)", (bucket + timedelta(minutes=12),))
    # (at the top of an hour the result also says what the roll-up did)
    assert " gauge sample(s)" in result and int(result.split()[0]) >= 5
    assert samples(orders, "writes.insert", "public.orders") == [(bucket, 7.0)]
    assert samples(orders, "writes.update", "public.orders") == [(bucket, 2.0)]
    assert samples(orders, "writes.delete", "public.orders") == [(bucket, 0.0)]  # a quiet bucket is a sample
    assert samples(orders, "alerts.raised", "METRIC_TEST") == [(bucket, 1.0)]
    assert samples(orders, "alerts.raised", "*")[0][1] >= 1
    gauges = dict(
        orders.execute(
            "SELECT metric, value FROM guardian.metric_samples WHERE sampled_at = %s AND metric IN "
            "('connections', 'connections.available', 'database.size', 'xid.age', 'table.size', 'table.dead_tuples')",
            (bucket + timedelta(minutes=10),),
        ).fetchall()
    )
    assert gauges["connections"] >= 1 and gauges["connections.available"] > gauges["connections"]
    assert gauges["database.size"] > 0 and gauges["table.size"] > 0 and gauges["xid.age"] >= 0
    used = samples(orders, "sequence.used", "public.orders_id_seq")
    assert used == [(bucket + timedelta(minutes=10), 0.0)]  # 7 of 2,147,483,647, in percent to two decimals
    assert bucket <= now


def test_collecting_again_writes_the_same_samples(orders: psycopg.Connection) -> None:
    orders.execute("INSERT INTO public.orders (note) VALUES ('a')")
    orders.execute("SELECT guardian.rollup_activity()")
    at = scalar(orders, "SELECT date_bin('10 minutes', now(), 'epoch') + interval '12 minutes'")
    orders.execute("SELECT guardian.collect_metrics(%s)", (at,))
    first = orders.execute(
        "SELECT * FROM guardian.metric_samples WHERE metric LIKE 'writes.%' ORDER BY 1, 2, 3"
    ).fetchall()
    orders.execute("SELECT guardian.collect_metrics(%s)", (at,))
    again = orders.execute(
        "SELECT * FROM guardian.metric_samples WHERE metric LIKE 'writes.%' ORDER BY 1, 2, 3"
    ).fetchall()
    assert first == again and len(first) == 3


def test_the_job_runs_every_ten_minutes(db: psycopg.Connection) -> None:
    row = db.execute("SELECT schedule, enabled FROM guardian.jobs WHERE name = 'metrics_collect'").fetchone()
    assert row == ("*/10 * * * *", True)


def test_admins_record_their_own_samples_and_bad_values_are_refused(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.record_metric('app.orders.created', 'shop', 12, '2026-03-01 10:00+00')")
    db.execute("SELECT guardian.record_metric('app.orders.created', 'shop', 13, '2026-03-01 10:00+00')")
    assert samples(db, "app.orders.created") == [(datetime.fromisoformat("2026-03-01 10:00+00:00"), 13.0)]
    for value in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"metric value {value} is not a finite number"):
            db.execute("SELECT guardian.record_metric('app.x', 's', %s::float8)", (value,))
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute("INSERT INTO guardian.metric_samples VALUES ('app.x', 's', now(), %s::float8)", (value,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="metric name 'Orders Created' is not"):
        db.execute("SELECT guardian.record_metric('Orders Created', 's', 1)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"a sample of app\.x needs a subject"):
        db.execute("SELECT guardian.record_metric('app.x', ' ', 1)")


def test_old_samples_are_rolled_up_by_the_hour_and_dropped_after_retention(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO guardian.metrics (name, kind, unit, description, retention, rollup_after) VALUES "
        "('app.logins', 'count', 'logins', 'logins', '10 days', '2 days'), "
        "('app.queue', 'gauge', 'jobs', 'queue depth', '10 days', '2 days')"
    )
    at = datetime.fromisoformat("2026-03-20 12:05+00:00")
    # Every 10 minutes for 12 days: logins 1, 2, 3, ... within each hour; queue 10 * minute/10.
    db.execute(
        """INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
           SELECT m, 'web', t, CASE m WHEN 'app.logins' THEN 1 + extract(minute FROM t) / 10
                                      ELSE 10 * extract(minute FROM t) / 10 END
             FROM generate_series('2026-03-08 12:00+00'::timestamptz, %s, interval '10 minutes') AS t,
                  unnest(ARRAY['app.logins', 'app.queue']) AS m""",
        (at,),
    )
    rolled, dropped = db.execute("SELECT * FROM guardian._metric_retention(%s)", (at,)).fetchone()
    assert dropped == 2 * (2 * 144 + 1)  # the two days (and the edge) before the 10-day retention, both metrics
    hours = 2 * 24  # the two days before the roll-up age
    assert rolled == 2 * hours * 5  # each hour's 5 later samples merge into its first
    cutoff = datetime.fromisoformat("2026-03-18 12:00+00:00")
    old = samples(db, "app.logins", "web")
    rolled_up = [(t, v) for t, v in old if cutoff - timedelta(hours=hours) <= t < cutoff]
    assert len(rolled_up) == hours and all(v == 1 + 2 + 3 + 4 + 5 + 6 for _, v in rolled_up)
    assert all(v == 25.0 for t, v in samples(db, "app.queue", "web") if cutoff - timedelta(hours=hours) <= t < cutoff)
    # Newer than the roll-up age: whole; older than retention: gone.
    assert len([t for t, _ in old if t >= cutoff]) == 2 * 24 * 6 + 1
    assert min(t for t, _ in old) >= at - timedelta(days=10)
    # Running it again changes nothing.
    assert db.execute("SELECT * FROM guardian._metric_retention(%s)", (at,)).fetchone() == (0, 0)
    assert samples(db, "app.logins", "web") == old
