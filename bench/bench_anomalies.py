"""Anomaly detection: accuracy on labelled series, backtest time, and the job's cost for 1,000 series.

In a throwaway cluster with plpython3u and pg_guardian, in one run:

(a) Accuracy. The synthetic labelled suites of ``bench/anomaly_suites.py`` (A: database metrics,
    10-minute samples over 8 weeks; B: irregular server metrics, 6 days to 30 weeks), held-out
    seeds 100-104 (``BENCH_SEEDS``). Every series goes through ``guardian.backtest_anomalies``
    (kind NULL: decided from the data; the series' own time zone), and through three baselines
    computed here in Python on the same samples: an elementary z-score (mean and standard
    deviation of the trailing 14 days, |z| > 3), the same per local hour of the week, and a
    rolling median/MAD band (trailing day, |z| > 3). Scored event-level (a labelled window
    counts once if any alarm falls in it; each run of consecutive alarms outside the windows is
    one false positive). Also: how much got no verdict (cold start), and the detector's recall
    per kind of anomaly.
(b) Backtest time. One series of 8 weeks of 10-minute samples (8,064) through
    ``guardian.backtest_anomalies``: the first call on a new connection (which compiles the
    detector), then the median of 5, against the same arrays sent to a trivial SQL function of
    the same shape (``unnest`` of the arrays). Target: 2 s.
(c) Job cost. One series of 5 weeks of 10-minute samples is loaded into metric_samples and
    scored (``detect_anomalies``); its samples, verdicts and state are cloned to 999 more subjects
    (``BENCH_SERIES``) in SQL, the steady state of a database with 1,000 series. Then, three times,
    one new sample is added to every series and ``guardian.run_anomaly_detection`` is timed; the
    baseline, in the same rounds, reads every series' trailing history of samples and states
    (what the job must read) in one plain SQL statement.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from pg_guardian import install as install_mod

from bench.anomaly_suites import DAY, HOUR, FloatArray, IntArray, Series, make_suite, score_series, summarize
from bench.common import bench_cluster

SEEDS = "100,101,102,103,104"
SERIES = 1000
BACKTEST_RUNS = 5
JOB_ROUNDS = 3
TARGET_BACKTEST = 2.0
JOB_WEEKS = 5
METRIC = "writes.insert"
T = TypeVar("T")

# -- baselines (ported from the prototype; causal: sample i is judged by samples before it) ---


def zscore_rolling(ts: IntArray, x: FloatArray, tz: str, window: int = 14 * DAY, thr: float = 3.0) -> FloatArray:
    """Elementary z-score: mean and standard deviation of the trailing 14 days, |z| > 3, after a day."""
    n = len(ts)
    alarm = np.full(n, np.nan)
    cs = np.r_[0, np.cumsum(x)]
    cs2 = np.r_[0, np.cumsum(x * x)]
    lo = np.searchsorted(ts, ts - window, side="left")
    for i in range(n):
        a = lo[i]
        m = i - a
        if ts[i] - ts[0] < DAY or m < 10:
            continue
        mu = (cs[i] - cs[a]) / m
        sd = math.sqrt(max((cs2[i] - cs2[a]) / m - mu * mu, 0.0)) + 1e-9
        alarm[i] = float(abs((x[i] - mu) / sd) > thr)
    return alarm


def _local_epoch(ts: IntArray, tz: str) -> IntArray:
    """Wall-clock time in ``tz`` as seconds 'as if UTC' (what ``ts AT TIME ZONE tz`` gives)."""
    zone = ZoneInfo(tz)

    def offset(t: int) -> int:
        delta = dt.datetime.fromtimestamp(t, zone).utcoffset()
        return int(delta.total_seconds()) if delta else 0

    changes = -(10**9)  # the offset changes within this hour: look each sample up
    cache: dict[int, int] = {}
    off = np.empty(len(ts), dtype=np.int64)
    for i, t in enumerate(ts.tolist()):
        h = t // HOUR
        if h not in cache:
            first, last = offset(h * HOUR), offset(h * HOUR + HOUR - 1)
            cache[h] = first if first == last else changes
        off[i] = cache[h] if cache[h] != changes else offset(t)
    return np.asarray(ts.astype(np.int64) + off)


def zscore_how(ts: IntArray, x: FloatArray, tz: str, window: int = 14 * DAY, thr: float = 3.0) -> FloatArray:
    """Hour-of-week z-score: mean and deviation of the same local hour of the week in the trailing 14 days."""
    n = len(ts)
    alarm = np.full(n, np.nan)
    slot = ((_local_epoch(ts, tz) // HOUR) + 72) % 168  # the epoch began on a Thursday: slot 0 = Monday 00:00
    hist: dict[int, collections.deque[tuple[int, float]]] = collections.defaultdict(collections.deque)
    for i in range(n):
        q = hist[int(slot[i])]
        while q and q[0][0] < ts[i] - window:
            q.popleft()
        if len(q) >= 6:
            v = np.array([p[1] for p in q])
            alarm[i] = float(abs((x[i] - v.mean()) / (v.std() + 1e-9)) > thr)
        q.append((int(ts[i]), float(x[i])))
    return alarm


def median_mad(ts: IntArray, x: FloatArray, tz: str, window: int = DAY, thr: float = 3.0) -> FloatArray:
    """Rolling median/MAD band over the trailing day (at least 36 samples), |z| > 3."""
    n = len(ts)
    alarm = np.full(n, np.nan)
    lo = np.searchsorted(ts, ts - window, side="left")
    for i in range(n):
        a = lo[i]
        if i - a < 36:
            continue
        v = x[a:i]
        med = np.median(v)
        mad = 1.4826 * np.median(np.abs(v - med)) + 1e-9
        alarm[i] = float(abs((x[i] - med) / mad) > thr)
    return alarm


BASELINES: dict[str, Callable[[IntArray, FloatArray, str], FloatArray]] = {
    "z-score, 14 days, |z| > 3": zscore_rolling,
    "hour-of-week z-score": zscore_how,
    "rolling median/MAD": median_mad,
}
DETECTOR = "guardian.backtest_anomalies"

# -- helpers ---------------------------------------------------------------------------------


def _times(ts: IntArray) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t, dt.UTC) for t in ts.tolist()]


def _backtest(conn: psycopg.Connection, s: Series) -> list[bool | None]:
    rows = conn.execute(
        "SELECT date_part('epoch', sampled_at)::bigint, is_anomaly"
        "  FROM guardian.backtest_anomalies(%s::timestamptz[], %s::float8[], NULL, %s)",
        (_times(s.ts), s.x.tolist(), s.tz),
    ).fetchall()
    if [r[0] for r in rows] != s.ts.tolist():
        raise AssertionError(f"{s.name}: backtest_anomalies returned other samples than it was given")
    return [r[1] for r in rows]


def _timed(func: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def _fmt(summary: dict[str, float]) -> str:
    return (
        f"{summary['precision']:>9.2f} {summary['recall']:>6.2f} {summary['f1']:>5.2f} "
        f"{summary['tp']:>5} {summary['fp']:>6} {summary['events']:>6}"
    )


def _seeds() -> list[int]:
    return [int(v) for v in os.environ.get("BENCH_SEEDS", SEEDS).split(",") if v.strip()]


# -- (a) accuracy ----------------------------------------------------------------------------


def accuracy(conn: psycopg.Connection, seeds: Sequence[int]) -> None:
    print(f"\n(a) accuracy, event-level, seeds {', '.join(map(str, seeds))}")
    table: list[str] = []
    for suite in ("A", "B"):
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in (DETECTOR, *BASELINES)}
        by_kind: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        samples = no_verdict = series_without = events_without = n_series = 0
        first_verdict_h: list[float] = []
        det_seconds = 0.0
        for seed in seeds:
            start = time.perf_counter()
            suite_series = make_suite(suite, seed)
            gen_s = time.perf_counter() - start
            seconds = dict.fromkeys(results, 0.0)
            for s in suite_series:
                start = time.perf_counter()
                alarm = _backtest(conn, s)
                seconds[DETECTOR] += time.perf_counter() - start
                r = score_series(s.ts, alarm, s.windows)
                results[DETECTOR].append(r)
                for (_a, _b, kind), hit in zip(s.windows, r["detected"], strict=True):
                    by_kind[kind][0] += hit
                    by_kind[kind][1] += 1
                judged = np.array([v is not None for v in alarm])
                n_series += 1
                samples += len(alarm)
                no_verdict += int((~judged).sum())
                if not judged.any():
                    series_without += 1
                else:
                    first_verdict_h.append(float(s.ts[int(np.argmax(judged))] - s.ts[0]) / HOUR)
                for a, b, _kind in s.windows:
                    inside = (s.ts >= a) & (s.ts <= b)
                    if not judged[inside].any():
                        events_without += 1
                for name, baseline in BASELINES.items():
                    start = time.perf_counter()
                    base_alarm = baseline(s.ts, s.x, s.tz)
                    seconds[name] += time.perf_counter() - start
                    results[name].append(score_series(s.ts, base_alarm, s.windows))
            det_seconds += seconds[DETECTOR]
            print(
                f"  suite {suite} seed {seed}: {len(suite_series)} series, "
                f"{sum(len(s.ts) for s in suite_series):,} samples (made in {gen_s:.1f} s); "
                f"detector {seconds[DETECTOR]:.1f} s, baselines "
                + ", ".join(f"{seconds[name]:.1f}" for name in BASELINES)
                + " s",
                flush=True,
            )
        for name, res in results.items():
            table.append(f"  {suite:<5} {name:<28} {_fmt(summarize(res))}")
        events = sum(r["events"] for r in results[DETECTOR])
        table.append(
            f"  {suite:<5} cold start: {series_without} of {n_series} series without any verdict, "
            f"{no_verdict / samples:.1%} of {samples:,} samples, {events_without} of {events} events; "
            f"first verdict after a median {statistics.median(first_verdict_h) if first_verdict_h else math.nan:.1f} h"
        )
        table.append(
            f"  {suite:<5} detector recall by kind: "
            + ", ".join(f"{kind} {hit}/{total}" for kind, (hit, total) in sorted(by_kind.items()))
        )
        table.append(f"  {suite:<5} detector time: {det_seconds / samples * 8064:.2f} s per 8,064 samples")
    print(f"  {'suite':<5} {'detector':<28} precision recall    F1    TP     FP events")
    print("\n".join(table))


# -- (b) backtest time -----------------------------------------------------------------------

ECHO = """
CREATE FUNCTION public.bench_echo(
    p_times timestamptz[], p_values double precision[], p_kind text DEFAULT NULL, p_time_zone text DEFAULT 'UTC',
    p_sensitivity double precision DEFAULT 1)
RETURNS TABLE (sampled_at timestamptz, value double precision, expected double precision,
               lower_bound double precision, upper_bound double precision, score double precision,
               is_anomaly boolean, rule text, predictor text, note text)
LANGUAGE sql STABLE
AS $$
    SELECT u.t, u.v, u.v, u.v, u.v, 0::double precision, false, ''::text, ''::text, ''::text
      FROM unnest(p_times, p_values) AS u(t, v)
$$
"""


def backtest_time(dsn: str, s: Series) -> None:
    print(f"\n(b) backtest time: {s.name}, {len(s.ts):,} samples of 10 minutes ({s.tz}), median of {BACKTEST_RUNS}")
    args = (_times(s.ts), s.x.tolist(), s.tz)
    detector = "SELECT * FROM guardian.backtest_anomalies(%s::timestamptz[], %s::float8[], NULL, %s)"
    echo = "SELECT * FROM public.bench_echo(%s::timestamptz[], %s::float8[], NULL, %s)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ECHO)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cold, _ = _timed(lambda: conn.execute(detector, args).fetchall())
        conn.execute(echo, args).fetchall()  # warm-up

        def median(query: str) -> float:
            times = []
            for _ in range(BACKTEST_RUNS):
                took, rows = _timed(lambda: conn.execute(query, args).fetchall())
                assert len(rows) == len(s.ts)
                times.append(took)
            return statistics.median(times)

        took = median(detector)
        base = median(echo)
    verdict = "OK" if took <= TARGET_BACKTEST else "MISSED"
    print(f"  first call on a new connection (compiles the detector): {cold:.2f} s")
    print(
        f"  guardian.backtest_anomalies {took:.2f} s; baseline (unnest of the same arrays) {base * 1000:.0f} ms: "
        f"{took / base:.0f}x;   target <= {TARGET_BACKTEST:.0f} s: {verdict}"
    )


# -- (c) the job's cost ----------------------------------------------------------------------

CLONE_SAMPLES = """
INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
SELECT x.metric, format('public.t%%s', lpad(i::text, 4, '0')), x.sampled_at, x.value
  FROM guardian.metric_samples AS x, generate_series(1, %(n)s) AS i
 WHERE x.metric = %(metric)s AND x.subject = 'public.t0000'
"""
CLONE_SCORES = """
INSERT INTO guardian.anomaly_scores
       (metric, subject, sampled_at, expected, lower_bound, upper_bound, score, is_anomaly, rule, predictor, note,
        state)
SELECT s.metric, format('public.t%%s', lpad(i::text, 4, '0')), s.sampled_at, s.expected, s.lower_bound,
       s.upper_bound, s.score, s.is_anomaly, s.rule, s.predictor, s.note, s.state
  FROM guardian.anomaly_scores AS s, generate_series(1, %(n)s) AS i
 WHERE s.metric = %(metric)s AND s.subject = 'public.t0000'
"""
CLONE_SERIES = """
INSERT INTO guardian.anomaly_series
       (metric, subject, settings_hash, first_sample, scored_to, history, state_from, dirty_from, scalars, scored_at)
SELECT a.metric, format('public.t%%s', lpad(i::text, 4, '0')), a.settings_hash, a.first_sample, a.scored_to,
       a.history, a.state_from, a.dirty_from, a.scalars, a.scored_at
  FROM guardian.anomaly_series AS a, generate_series(1, %(n)s) AS i
 WHERE a.metric = %(metric)s AND a.subject = 'public.t0000'
"""
NEW_SAMPLE = """
INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
SELECT a.metric, a.subject, %(at)s, %(value)s FROM guardian.anomaly_series AS a WHERE a.metric = %(metric)s
"""
# What the job must read, at the least: every series' trailing history of samples and the
# detector's state of each, as arrays, through the same indexes.
READ_STATE = """
SELECT count(*), sum(g.n), sum(g.state_bytes)
  FROM guardian.anomaly_series AS a
 CROSS JOIN LATERAL (
       SELECT count(*) AS n, sum(octet_length(s.state)) AS state_bytes,
              array_agg(x.value ORDER BY x.sampled_at) AS vals, array_agg(s.state ORDER BY x.sampled_at) AS states
         FROM guardian.metric_samples AS x
         LEFT JOIN guardian.anomaly_scores AS s
           ON s.metric = x.metric AND s.subject = x.subject AND s.sampled_at = x.sampled_at
        WHERE x.metric = a.metric AND x.subject = a.subject AND x.sampled_at >= a.scored_to - a.history) AS g
 WHERE cardinality(g.vals) + cardinality(g.states) > 0
"""


def job_cost(conn: psycopg.Connection, s: Series, n_series: int) -> None:
    keep = JOB_WEEKS * 7 * 144
    print(f"\n(c) job cost: {n_series:,} series of {JOB_WEEKS} weeks of 10-minute samples ({s.name}, {s.tz})")
    conn.execute("SELECT guardian.set_anomaly_settings(p_metric => %s, p_time_zone => %s)", (METRIC, s.tz))
    times = _times(s.ts)
    with (
        conn.cursor() as cur,
        cur.copy("COPY guardian.metric_samples (metric, subject, sampled_at, value) FROM STDIN") as copy,
    ):
        for t, v in zip(times[:keep], s.x[:keep].tolist(), strict=True):
            copy.write_row((METRIC, "public.t0000", t, v))
    took, row = _timed(
        lambda: conn.execute(
            "SELECT count(*), count(is_anomaly), count(*) FILTER (WHERE is_anomaly)"
            "  FROM guardian.detect_anomalies(%s, 'public.t0000', %s, %s)",
            (METRIC, times[0], times[keep - 1]),
        ).fetchone()
    )
    total, judged, anomalies = row  # type: ignore[misc]
    print(
        f"  one series scored from scratch (detect_anomalies): {took:.1f} s, {judged:,} of {total:,} samples judged, "
        f"{anomalies} anomalies"
    )
    start = time.perf_counter()
    params = {"n": n_series - 1, "metric": METRIC}
    with conn.transaction():
        conn.execute(CLONE_SAMPLES, params)
        conn.execute(CLONE_SCORES, params)
        conn.execute(CLONE_SERIES, params)
    for table in ("metric_samples", "anomaly_scores", "anomaly_series"):
        conn.execute(f"VACUUM ANALYZE guardian.{table}")
    sizes = conn.execute(
        "SELECT pg_size_pretty(pg_total_relation_size('guardian.metric_samples')),"
        "       pg_size_pretty(pg_total_relation_size('guardian.anomaly_scores'))"
    ).fetchone()
    print(
        f"  cloned to {n_series:,} series and vacuumed in {time.perf_counter() - start:.0f} s "
        f"(metric_samples {sizes[0]}, anomaly_scores {sizes[1]})",  # type: ignore[index]
        flush=True,
    )
    job_times: list[float] = []
    base_times: list[float] = []
    for k in range(JOB_ROUNDS):
        at = times[keep + k]
        conn.execute(NEW_SAMPLE, {"at": at, "value": float(s.x[keep + k]), "metric": METRIC})
        start = time.perf_counter()
        ran = conn.execute("SELECT guardian.run_anomaly_detection(%s)", (at + dt.timedelta(minutes=1),)).fetchone()
        took = time.perf_counter() - start
        result = ran[0] if ran else None
        scored = re.match(r"(\d+) series scored", str(result))
        if not scored or int(scored.group(1)) != n_series:
            raise AssertionError(f"the job should have scored {n_series} series: {result}")
        base, read = _timed(lambda: conn.execute(READ_STATE).fetchone())
        count, samples_read, state_bytes = read  # type: ignore[misc]
        job_times.append(took)
        base_times.append(base)
        print(
            f"  round {k + 1}: job {took:.1f} s ({result}); baseline {base:.2f} s "
            f"({count:,} series, {samples_read / count:,.0f} samples and {state_bytes / count / 1024:,.0f} kB "
            f"of state each)",
            flush=True,
        )
    job = statistics.median(job_times)
    base = statistics.median(base_times)
    print(
        f"  median of {JOB_ROUNDS}: run_anomaly_detection {job:.1f} s a run, {job / n_series * 1000:.1f} ms a series; "
        f"baseline (reading the trailing history) {base:.2f} s: {job / base:.1f}x"
    )


def main() -> None:
    seeds = _seeds()
    n_series = int(os.environ.get("BENCH_SERIES", SERIES))
    started = time.perf_counter()
    with bench_cluster() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_anomalies")
        dsn = pg.dsn("bench_anomalies")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION plpython3u")
            # GUARDIAN_TEST_INSTALL=sql: this checkout's SQL, as the tests do (no `make install`)
            install_mod.install(conn, method=os.environ.get("GUARDIAN_TEST_INSTALL", "auto"))
            available = conn.execute("SELECT guardian.anomaly_detection_available()").fetchone()
            if not available or not available[0]:
                raise SystemExit("anomaly detection is not available in the benchmark's database (plpython3u?)")
            version = conn.execute("SELECT guardian._anomaly_detector_version()").fetchone()
            print(f"cluster ready; detector {version[0] if version else '?'} (md5 of its source)", flush=True)
            accuracy(conn, seeds)
        reference = next(s for s in make_suite("A", seeds[0]) if s.name == "A01_orders_inserts")
        backtest_time(dsn, reference)
        with psycopg.connect(dsn, autocommit=True) as conn:
            job_cost(conn, reference, n_series)
    print(f"\nanomalies benchmark: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
