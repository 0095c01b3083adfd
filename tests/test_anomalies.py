"""Anomaly detection: guardian.detect_anomalies, the anomaly_detection job and its alerts,
declared windows, settings, backtests, and bad input. The series are scripted: seasonal
counts with noise, a known spike, a batch that recurs, a daylight-saving change."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import install as install_mod
from pg_guardian.cli import main
from support.queries import scalar

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
STEP = timedelta(minutes=10)
VERDICT = "sampled_at, value, expected, lower_bound, upper_bound, score, is_anomaly"


def office_hours(at: datetime, tz: str = "UTC") -> float:
    """Writes of a business table: busy 08:00-18:00 local on weekdays, quiet at night and weekends."""
    local = at.astimezone(ZoneInfo(tz))
    busy = 8 <= local.hour < 18 and local.weekday() < 5
    return 60.0 if busy else 3.0


def series(
    days: float,
    *,
    level: Callable[[datetime], float] = office_hours,
    spikes: dict[datetime, float] | None = None,
    seed: int = 1,
    start: datetime = START,
) -> list[tuple[datetime, float]]:
    """Counts every 10 minutes: Poisson-like noise around ``level``, plus ``spikes`` added."""
    rng = random.Random(seed)
    out = []
    for k in range(int(days * 144)):
        at = start + k * STEP
        mean = level(at)
        value = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        out.append((at, float(value + (spikes or {}).get(at, 0))))
    return out


def load(
    db: psycopg.Connection,
    samples: list[tuple[datetime, float]],
    metric: str = "writes.update",
    subject: str = "public.patients",
) -> None:
    db.execute(
        "INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value) "
        "SELECT %s, %s, t, v FROM unnest(%s::timestamptz[], %s::double precision[]) AS u(t, v)",
        (metric, subject, [s[0] for s in samples], [s[1] for s in samples]),
    )


def verdicts(
    db: psycopg.Connection,
    metric: str = "writes.update",
    subject: str = "public.patients",
    start: datetime = START,
    end: datetime | None = None,
) -> list[tuple]:
    return db.execute(
        f"SELECT {VERDICT} FROM guardian.detect_anomalies(%s, %s, %s, %s)",
        (metric, subject, start, end or START + timedelta(days=400)),
    ).fetchall()


def flagged(rows: list[tuple]) -> list[datetime]:
    return [r[0] for r in rows if r[6]]


SPIKE = START + timedelta(days=9, hours=22)  # Wednesday 22:00, usually 0-6 writes


def test_a_spike_is_flagged_with_its_band_and_ordinary_days_are_not(db: psycopg.Connection) -> None:
    load(db, series(14, spikes={SPIKE: 300}))
    rows = verdicts(db)
    assert len(rows) == 14 * 144
    assert flagged(rows) == [SPIKE]
    spike = next(r for r in rows if r[0] == SPIKE)
    assert spike[1] > spike[4] > spike[2] >= spike[3] >= 0  # value above the band, band around expected
    assert spike[4] < 30 and spike[5] > 5


def test_a_backtest_equals_what_the_job_said_seeing_only_the_prefix(db: psycopg.Connection) -> None:
    data = series(12, spikes={SPIKE: 300, START + timedelta(days=10, hours=3): 250})
    # Live: the job runs after each chunk of samples, seeing only what has arrived.
    cut = 2 * 144
    load(db, data[:cut], subject="public.live")
    assert "1 series scored" in scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (data[cut - 1][0],))
    for k in range(cut, len(data), 37):
        load(db, data[k : k + 37], subject="public.live")
        scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (data[min(k + 36, len(data) - 1)][0],))
    live = verdicts(db, subject="public.live")
    # Afterwards: the whole history at once, as a backtest of a CSV would see it.
    load(db, data, subject="public.later")
    later = verdicts(db, subject="public.later")
    backtest = db.execute(
        f"SELECT {VERDICT} FROM guardian.backtest_anomalies(%s::timestamptz[], %s::double precision[], 'count')",
        ([s[0] for s in data], [s[1] for s in data]),
    ).fetchall()
    assert live == later == backtest
    assert SPIKE in flagged(live)
    # And a prefix alone gives the same verdicts as the whole series up to the cut.
    prefix = db.execute(
        f"SELECT {VERDICT} FROM guardian.backtest_anomalies(%s::timestamptz[], %s::double precision[], 'count')",
        ([s[0] for s in data[:1000]], [s[1] for s in data[:1000]]),
    ).fetchall()
    assert prefix == backtest[:1000]


def test_no_verdict_until_a_day_of_history_and_it_says_so(db: psycopg.Connection) -> None:
    notices: list[str] = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    load(db, series(0.5))
    rows = verdicts(db)
    assert rows and all(r[6] is None for r in rows)
    assert any("a day of history and 24 samples" in n for n in notices)
    load(db, series(1.5)[72:])
    rows = verdicts(db)
    judged = [r[0] for r in rows if r[6] is not None]
    assert judged and min(judged) >= START + timedelta(days=1)


def test_seasons_follow_local_time_across_a_daylight_saving_change(db: psycopg.Connection) -> None:
    # Europe/Berlin moves to summer time on 2026-03-29: office hours start an hour earlier in UTC.
    def berlin(at: datetime) -> float:
        return office_hours(at, "Europe/Berlin")

    data = series(35, level=berlin, seed=5)
    load(db, data, subject="public.local")
    load(db, data, subject="public.utc")
    db.execute("SELECT guardian.set_anomaly_settings('writes.update', 'public.local', p_time_zone => 'Europe/Berlin')")
    after = datetime(2026, 3, 30, tzinfo=UTC)  # the first Monday of summer time
    local = [t for t in flagged(verdicts(db, subject="public.local")) if t >= after]
    utc = [t for t in flagged(verdicts(db, subject="public.utc")) if t >= after]
    assert local == []
    assert utc, "a UTC baseline sees the office open an hour early"


def test_a_recurring_batch_stops_being_flagged(db: psycopg.Connection) -> None:
    # Every Sunday at 02:00, a batch of 400 updates (the first on day 13).
    batches = {START + timedelta(days=d, hours=2): 400.0 for d in (13, 20, 27, 34)}
    load(db, series(36, spikes=batches, seed=3))
    hits = flagged(verdicts(db))
    first, *later = sorted(batches)
    assert first in hits
    assert not set(later) & set(hits)


def test_expect_declares_a_planned_load_and_incidents_are_not_learnt(db: psycopg.Connection) -> None:
    load(db, series(14, spikes={SPIKE: 300}))
    assert flagged(verdicts(db)) == [SPIKE]
    db.execute(
        "SELECT guardian.expect('writes.update', 'public.patients', %s, %s, 'reindex')", (SPIKE - STEP, SPIKE + STEP)
    )
    assert flagged(verdicts(db)) == []  # scored again with the window
    assert scalar(db, "SELECT created_by FROM guardian.anomaly_windows") == "postgres"
    db.execute("DELETE FROM guardian.anomaly_windows")
    assert flagged(verdicts(db)) == [SPIKE]


def test_the_job_raises_activity_and_metric_anomalies_in_words(db: psycopg.Connection) -> None:
    data = series(9)
    load(db, data)
    load(db, [(t, 40.0 + (k % 3)) for k, (t, _) in enumerate(data)], metric="connections", subject="a")
    now = data[-1][0]
    assert "2 series scored" in scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (now,))
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type LIKE '%%_ANOMALY'") == 0
    late = now + STEP  # Wednesday 00:00: 3 expected
    load(db, [(late, 312.0)])
    load(db, [(late, 400.0)], metric="connections", subject="a")
    assert "2 anomalies" in scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (late,))
    alerts = dict(
        db.execute("SELECT type, message FROM guardian.monitoring_alerts WHERE type LIKE '%%_ANOMALY'").fetchall()
    )
    assert alerts["ACTIVITY_ANOMALY"].startswith("312 updates to public.patients between 00:00 and 00:10; usually 0–")
    assert alerts["ACTIVITY_ANOMALY"].endswith("at this hour on Wednesdays")
    assert alerts["METRIC_ANOMALY"].startswith("connections of a was 400 at 00:00; usually 3")
    meta = scalar(db, "SELECT metadata FROM guardian.monitoring_alerts WHERE type = 'ACTIVITY_ANOMALY'")
    assert meta["value"] == 312 and meta["direction"] == "up" and meta["lower_bound"] < meta["upper_bound"] < 312
    assert "guardian.expect('writes.update', 'public.patients'" in meta["fix"]
    # Nothing new: nothing scored, nothing raised again.
    assert scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (late,)).startswith("0 series scored")


def test_a_first_scoring_of_a_long_history_does_not_alert_on_its_past(db: psycopg.Connection) -> None:
    data = series(14, spikes={SPIKE: 300})
    load(db, data)
    scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (data[-1][0],))
    assert flagged(verdicts(db)) == [SPIKE]
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'ACTIVITY_ANOMALY'") == 0


def test_switched_off_or_less_sensitive_series(db: psycopg.Connection) -> None:
    small = START + timedelta(days=9, hours=3)  # Wednesday 03:00, usually about 3
    data = series(10, spikes={small: 14})
    load(db, data)
    db.execute("SELECT guardian.set_anomaly_settings('writes.update', p_enabled => false)")
    assert scalar(db, "SELECT guardian.run_anomaly_detection(%s)", (data[-1][0],)).startswith("0 series scored")
    assert small not in flagged(verdicts(db))  # on demand it is judged; at the default, not an anomaly

    def backtest(sensitivity: float) -> list[datetime]:
        return flagged(
            db.execute(
                f"SELECT {VERDICT} FROM guardian.backtest_anomalies(%s::timestamptz[], %s::double precision[], "
                "'count', 'UTC', %s)",
                ([s[0] for s in data], [s[1] for s in data], sensitivity),
            ).fetchall()
        )

    assert small in backtest(4)
    assert len(backtest(0.25)) <= len(backtest(1)) < len(backtest(4))
    db.execute("SELECT guardian.set_anomaly_settings('writes.update', 'public.patients', p_sensitivity => 4)")
    assert small in flagged(verdicts(db))  # scored again with the new setting
    who = "SELECT changed_by FROM guardian.anomaly_settings WHERE subject = 'public.patients'"
    assert scalar(db, who) == "postgres"


def test_an_edited_sample_is_judged_again(db: psycopg.Connection) -> None:
    load(db, series(9))
    verdicts(db)
    at = START + timedelta(days=8, hours=23)
    db.execute("UPDATE guardian.metric_samples SET value = 500 WHERE sampled_at = %s", (at,))
    assert scalar(db, "SELECT dirty_from FROM guardian.anomaly_series") == at
    assert at in flagged(verdicts(db))


def test_readers_may_read_and_backtest_but_not_declare(
    db: psycopg.Connection, dbname: str, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> None:
    load(db, series(2))
    reader = connect(dbname, make_role("anomaly_reader", "guardian_reader"))
    assert len(verdicts(reader)) == 2 * 144
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT guardian.expect('*', '*', now(), now() + interval '1 hour')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT guardian._anomaly_resume(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")


@pytest.mark.parametrize(
    ("query", "args", "message"),
    [
        (
            "SELECT * FROM guardian.detect_anomalies('no.such', 'x', now() - interval '1 day', now())",
            (),
            "unknown metric 'no.such'",
        ),
        (
            "SELECT * FROM guardian.detect_anomalies('writes.update', 'public.nope', now() - interval '1 day', now())",
            (),
            "metric writes.update has no samples for subject 'public.nope'",
        ),
        (
            "SELECT * FROM guardian.detect_anomalies('writes.update', 'public.patients', now(), "
            "now() - interval '1 day')",
            (),
            "range starts",
        ),
        (
            "SELECT * FROM guardian.detect_anomalies('writes.update', 'public.patients', %s, %s)",
            (START, START),
            "is empty",
        ),
        (
            "SELECT * FROM guardian.detect_anomalies('writes.update', 'public.patients', '-infinity', now())",
            (),
            "must have finite bounds",
        ),
        (
            "SELECT * FROM guardian.backtest_anomalies(ARRAY[now(), now() + interval '1 minute'], "
            "ARRAY[1, 'NaN']::float8[])",
            (),
            "sample 2",
        ),
        (
            "SELECT * FROM guardian.backtest_anomalies(ARRAY[now()], ARRAY[1, 2]::float8[])",
            (),
            "as many values as times (1 times, 2 values)",
        ),
        (
            "SELECT * FROM guardian.backtest_anomalies(ARRAY[now()], ARRAY[1]::float8[], 'rate')",
            (),
            "unknown kind 'rate'",
        ),
        (
            "SELECT * FROM guardian.backtest_anomalies(ARRAY[now()], ARRAY[1]::float8[], NULL, 'CEST')",
            (),
            "unknown time zone 'CEST'",
        ),
        (
            "SELECT guardian.record_metric('writes.update', 'public.patients', 'Infinity')",
            (),
            "metric value Infinity is not a finite number",
        ),
        ("SELECT guardian.set_anomaly_settings(p_sensitivity => 9)", (), "sensitivity 9 is out of range"),
        ("SELECT guardian.expect('no.such', '*', now(), now() + interval '1 hour')", (), "unknown metric 'no.such'"),
    ],
)
def test_bad_input_is_refused_with_the_value_and_the_fix(
    db: psycopg.Connection, query: str, args: tuple, message: str
) -> None:
    load(db, series(0.2))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        db.execute(query, args)
    assert message in info.value.diag.message_primary
    assert info.value.diag.message_hint or "sample 2" not in message


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": "", "GUARDIAN_CONFIG": ""})
    return result.exit_code, result.stdout, result.stderr


def test_the_report_and_the_cli_list_what_was_found(db: psycopg.Connection, dsn: str) -> None:
    data = series(14, spikes={SPIKE: 300})
    load(db, data)
    spike = next(v for t, v in data if t == SPIKE)
    code, out, _ = cli("anomalies", "--dsn", dsn, "--since", "500d")
    assert code == 1
    assert out.splitlines() == [
        f"{SPIKE:%Y-%m-%d %H:%M} UTC  ACTIVITY_ANOMALY  {spike:g} updates to public.patients between 22:00 and 22:10; "
        + out.split("22:10; ")[1].splitlines()[0]
    ]
    assert "at this hour on Wednesdays" in out
    code, out, _ = cli("anomalies", "--dsn", dsn, "--since", "500d", "--metric", "writes.insert")
    assert (code, out, _) == (
        2,
        "",
        "error: unknown metric 'writes.insert': it has no samples (hint: List the series "
        "with: SELECT DISTINCT metric, subject FROM guardian.metric_samples;)\n",
    )
    report = scalar(db, "SELECT guardian.report(%s, %s)", (START, START + timedelta(days=14)))
    assert report["anomalies"]["by_type"] == {"ACTIVITY_ANOMALY": 1, "METRIC_ANOMALY": 0}
    assert report["anomalies"]["top_series"] == [{"value": "writes.update public.patients", "alerts": 1}]
    assert report["anomalies"]["latest"][0]["value"] == spike
    code, out, _ = cli("report", "--dsn", dsn, "--from", "2026-03-02", "--to", "2026-03-16")
    assert "anomalous samples: activity / metric  1 / 0" in " ".join(out.split()).replace("metric 1", "metric  1")


def test_backtest_a_csv_file_with_labels(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    data = series(10, spikes={SPIKE: 300})
    path = tmp_path / "samples.csv"
    path.write_text(
        "time,value,label\n" + "".join(f"{t.isoformat()},{v:g},{1 if t == SPIKE else 0}\n" for t, v in data)
    )
    code, out, _ = cli("anomalies", "backtest", str(path), "--dsn", dsn, "--kind", "count")
    assert code == 1
    lines = out.splitlines()
    assert lines[2].startswith(f"{SPIKE:%Y-%m-%d %H:%M:%S}+00:00  {next(v for t, v in data if t == SPIKE):g}")
    assert lines[-2] == f"{len(data)} samples, {len(data) - 144} judged (from 2026-03-03 00:00 UTC), 1 anomalous"
    assert lines[-1] == "labelled events: 1, detected 1, false alarms 0; precision 1.00, recall 1.00"
    assert scalar(db, "SELECT count(*) FROM guardian.metric_samples") == 0  # nothing kept
    path.write_text("time,value\n2026-03-01T00:00:00Z,NaN\n")
    code, _, err = cli("anomalies", "backtest", str(path), "--dsn", dsn)
    assert (code, err) == (2, "error: samples.csv data row 1: value 'NaN' is not finite; leave a missing sample out\n")


def test_without_plpython_it_says_so_and_can_be_added_later(blank_dbname: str, cluster) -> None:
    with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as conn:
        install_mod.install(conn)
        assert scalar(conn, "SELECT guardian.anomaly_detection_available()") is False
        load(conn, series(2))
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            verdicts(conn)
        assert (
            "CREATE EXTENSION plpython3u; SELECT guardian.install_anomaly_detector();" in info.value.diag.message_hint
        )
        assert (
            scalar(conn, "SELECT guardian.run_anomaly_detection()")
            == "anomaly detection is unavailable here (no plpython3u)"
        )
        fix = scalar(conn, "SELECT metadata->>'fix' FROM guardian.monitoring_alerts WHERE type = 'CHECK_DEGRADED'")
        assert "install_anomaly_detector()" in fix
        conn.execute("CREATE EXTENSION plpython3u")
        assert scalar(conn, "SELECT guardian.install_anomaly_detector()") == "anomaly detector: PL/Python"
        assert scalar(conn, "SELECT guardian.anomaly_detection_available()") is True
        assert len(verdicts(conn)) == 2 * 144


def test_a_read_only_transaction_judges_without_keeping(db: psycopg.Connection) -> None:
    load(db, series(10, spikes={SPIKE: 300}))
    with db.transaction():
        db.execute("SET TRANSACTION READ ONLY")
        judged = verdicts(db)
    assert flagged(judged) == [SPIKE]
    assert scalar(db, "SELECT count(*) FROM guardian.anomaly_scores") == 0  # nothing kept
    assert verdicts(db) == judged  # and the kept verdicts are the same
