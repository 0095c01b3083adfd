"""Labelled synthetic metric series for the anomaly benchmark, and event-level scoring.

``make_suite("A" | "B", seed)`` returns a list of ``Series``: sample times (``ts``, UTC epoch
seconds, strictly increasing), values (``x``), the local time zone whose wall clock drives the
seasons (``tz``), and the labelled anomaly windows (``windows``: ``(start, end, kind)``, epoch
seconds, both ends included). Everything is deterministic given (suite, seed); the benchmark's
held-out seeds are 100-104 (the detector was developed on others).

Suite A: database metric series
-------------------------------
12 series of 10-minute samples on UTC bucket boundaries, 8 weeks each (8,064 samples), starting at
local midnight (+0-3 days) in one of five zones: Europe/Berlin (DST starts 31 March 2024),
America/New_York (DST ends 3 November 2024), Europe/London (DST ends 27 October 2024),
Asia/Tokyo (no DST) and Australia/Sydney (DST ends 7 April 2024), so several series cross a
daylight-saving change. 16 labelled anomalies a seed, spread over the series; A04 has none.

Seasonality (all in local wall-clock time):
  business day   a logistic rise between 06:30 and 08:30 and fall between 17:00 and 20:00, a
                 lunch dip around 12:30 (up to -25 %), a night floor of 2-10 % of the day level
                 (counts) or 10-30 % (gauges);
  consumer day   an evening peak at 19:00-21:30 (Gaussian, 3.5 h wide) over a daytime plateau from
                 07:00, night floor 15 % (A10);
  week           business: Saturday x0.2-0.5, Sunday x0.1-0.4, Monday x1.0-1.15; consumer:
                 Friday and Saturday x1.1-1.35.
Noise:
  counts (writes: A01-A04, A10, A12)  negative binomial around the seasonal mean, dispersion r
                 5-40 (variance = mean + mean^2 / r), from 1 to 300 writes per bucket at the peak;
  connections    AR(1), phi 0.8, sd 6 % of the level, rounded to whole connections;
  CPU            AR(1), phi 0.5, sd 5 %, plus white noise 3 %, plus benign unlabelled
                 autovacuum blips (one bucket in 144, +15-35 % of the level), clipped to 0.5-100 %;
  latency        log-normal, sigma 0.12, with benign blips (one in 288, x1.3-1.8);
  database size  cumulative growth whose increments follow the business day and are noisy.
Trend: writes +20 % over the 8 weeks, connections +5-30 %, CPU -10 to +25 %, size +0.2-0.6 % a
day.
Expected batches (recurring, NOT labelled: a detector must learn them as normal; an outage
zeroes them too):
  weekly         A02 Sunday 02:00 for 1.5 h +1,500 writes a bucket; A04 Saturday 23:00 for 1 h
                 +120; A12 Wednesday 03:00 for 1 h +1,200; A06 Sunday 03:00 for 2 h +25
                 connections; A07 Sunday 02:00 for 2 h +35 % CPU;
  monthly        A02 the 1st 01:00 for 2 h +2,500 writes; A10 the last day of the month 22:00 for
                 1 h +900; A07 the 1st 01:00 for 3 h +30 % CPU;
  daily          A10 00:30 for 20 minutes +250 deletes.
Injected anomalies (never overlapping each other or a batch, 6 h apart, not in the first week or
the last day):
  outage         writes stop (x0) for 1-3 h on a weekday between 09:00 and 16:00;
  spike          +4-10x the base rate for 10-30 minutes;
  dip            writes fall to 25-45 % for 1.5-3 h on a weekday between 09:00 and 15:00;
  night_activity +150-400 writes for 10-20 minutes between 21:00 and midnight in a table that
                 sees a few an hour (A03);
  level_shift    writes x0.45-0.6 or x1.7-2.2 from a weekday 09:00-17:00 to the end of the series
                 (A02); connections x1.35-1.6 or x0.55-0.7 (A06); database size: a step of 4-8 %
                 reached within an hour (A11, a bulk load);
  missed_batch   a weekly batch that did not run, after at least three runs (A12);
  ramp           connections creep up linearly by 0.8-1.5x their base over 3-8 h, then drop back
                 (a connection leak, A05);
  variance       CPU noise x4-6 for 2-5 h (A07);
  spike_sustained CPU pinned at 100 % for 30-60 minutes (A08);
  latency spike  x3.5-6 for 20-40 minutes (A09).
Labels: a transient anomaly or a ramp is labelled from 20 minutes before its onset to 30 minutes
after its end; a level shift only from 20 minutes before to 12 h after the change (after a deploy
the new level is the new normal: one alert at the change, and a detector that keeps alarming
after 12 h is charged a false positive for not re-baselining).

Suite B: server metrics, NAB-like
---------------------------------
14 series sampled irregularly: a 5-, 10-, 15- or 30-minute base interval with +/-20 % jitter, a
few missing samples (2 % of steps skip 1-3 intervals) and rare collector outages (0.15 % of steps
skip 1-6 h), not aligned to bucket boundaries; 6 days to 30 weeks long (B13 and B14 have 6 and 8
days). Time zones: UTC, America/Los_Angeles, Europe/Berlin, America/New_York, Asia/Kolkata.
About 33 labelled anomalies a seed.
  CPU (B01-B05)  a weak daily sine (5-35 %), a slow random-walk drift of the level (detrended, so
                 it wanders but ends where it started), multiplicative gamma noise (shape 6),
                 benign blips (one sample in 300-500, +0.5-1.5x the base); anomalies:
                 sustained_high (+2.5-4x the base for 1-4 h, capped at 100), level_shift (x0.35-0.5
                 or x2-3 from 30-85 % of the span on), spike_cluster (70 % of the samples of
                 0.5-1.5 h get +3-6x the base), drop (x0.1 for 1-3 h);
  bytes (B06, B07) disk writes and network in: log-normal noise (sigma 0.6-0.8) around a daily
                 sine, an expected daily backup (45 minutes at +8-12x the base, not labelled);
                 anomalies: sustained_high (x6-10 for 1.5-5 h), outage (x0.02 for 1-3 h);
  counts (B08-B10) request counts and taxi-like demand: negative binomial (r 6-60) around a
                 business or consumer day and week; anomalies: outage (x0.02 for 0.5-3 h on a
                 weekday 09:00-18:00), spike (x3-6 for 0.3-2 h), holiday (a weekday at x0.35 for
                 18 h from 05:00), surge_day (x1.8 for 6 h from 14:00-16:00), dip (x0.4 for 2-5 h
                 from 08:00-16:00);
  latency (B11)  log-normal (sigma 0.15) with benign blips (one in 150, x1.5-2.5); failure: x3-6
                 with jitter for 0.5-3 h;
  temperature (B12) a smooth gauge around 80: AR(1) phi 0.999 sd 3 plus AR(1) phi 0.9 sd 0.8;
                 drop (-20 to -35, reached within an hour, for 2-10 h), creep (+18 linearly over
                 6-16 h);
  short (B13, B14) days of history only: a daily sine (+/-30 %) plus AR(1) noise (phi 0.7, 8 %);
                 anomalies after 45 % of the span: stuck (flat at +50-80 % of the base for
                 0.5-2 h), flap (+/-80-120 % of the base, random sign each sample).
Labels follow NAB: each window is 10 % of the series' span divided by its number of anomalies,
centred on the onset and widened to cover the anomaly (+30 minutes) unless it is a level shift;
overlapping windows are split at their midpoint.

Scoring (``score_series``, ``summarize``)
-----------------------------------------
Event-level, per series, summed over series. A sample's verdict is an alarm, no alarm, or none
(cold start; counts as no alarm). A labelled window is detected (one true positive) if any alarm
falls in it, however many. Each maximal run of consecutive alarmed samples outside every window
is one false positive (an alarm run that starts in a window and goes on past its end adds one
for the part outside). Precision = TP / (TP + FP) (1 without alarms), recall = TP / windows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

MIN = 60
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Window = tuple[int, int, str]


@dataclass
class Series:
    """One labelled series: what a detector sees (ts, x, tz, kind) and the truth (windows, marks)."""

    name: str
    family: str
    tz: str
    ts: IntArray  # epoch seconds (UTC), strictly increasing
    x: FloatArray
    kind: str  # 'count' or 'gauge': what the collecting job would know
    windows: list[Window] = field(default_factory=list)  # labelled anomalies
    notes: list[str] = field(default_factory=list)  # expected batches, in words
    marks: list[Window] = field(default_factory=list)  # unlabelled batches and benign blips (diagnostics)


# -- local time ------------------------------------------------------------------------------


def local_parts(ts: IntArray, tz: str) -> tuple[FloatArray, IntArray, IntArray, IntArray, IntArray]:
    """Local wall clock: hour (fractional), weekday (0 = Monday), day of month, days in month, month."""
    zone = ZoneInfo(tz)
    n = len(ts)
    hour = np.empty(n)
    dow = np.empty(n, dtype=np.int64)
    dom = np.empty(n, dtype=np.int64)
    dim = np.empty(n, dtype=np.int64)
    mon = np.empty(n, dtype=np.int64)
    for i, t in enumerate(ts.tolist()):
        d = dt.datetime.fromtimestamp(t, zone)
        hour[i] = d.hour + d.minute / 60 + d.second / 3600
        dow[i] = d.weekday()
        dom[i] = d.day
        mon[i] = d.month
        nxt = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        dim[i] = (nxt - dt.timedelta(days=1)).day
    return hour, dow, dom, dim, mon


def local_time(tz: str, y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(tz)).timestamp())


def _sig(v: FloatArray) -> FloatArray:
    return np.asarray(1 / (1 + np.exp(-v)))


def business_profile(hour: FloatArray, rng: np.random.Generator, night: float = 0.05) -> FloatArray:
    on = rng.uniform(6.5, 8.5)
    off = rng.uniform(17.0, 20.0)
    day = _sig((hour - on) / 0.6) * _sig((off - hour) / 0.8)
    lunch = 1 - 0.25 * np.exp(-0.5 * ((hour - 12.5) / 0.6) ** 2) * rng.uniform(0, 1)
    return np.asarray(night + (1 - night) * day * lunch)


def consumer_profile(hour: FloatArray, rng: np.random.Generator, night: float = 0.15) -> FloatArray:
    peak = rng.uniform(19, 21.5)
    evening = np.exp(-0.5 * (((hour - peak + 12) % 24 - 12) / 3.5) ** 2)
    day = _sig((hour - 7) / 1.0) * 0.55
    return np.asarray(night + (1 - night) * np.clip(evening + day * (1 - evening), 0, 1))


def weekly_factor(dow: IntArray, rng: np.random.Generator, kind: str = "business") -> FloatArray:
    w = np.ones(len(dow))
    if kind == "business":
        w[dow == 5] = rng.uniform(0.2, 0.5)
        w[dow == 6] = rng.uniform(0.1, 0.4)
        w[dow == 0] *= rng.uniform(1.0, 1.15)
    elif kind == "consumer":
        w[(dow == 4) | (dow == 5)] = rng.uniform(1.1, 1.35)
    return w


def neg_binomial(rng: np.random.Generator, lam: FloatArray, r: float | None) -> FloatArray:
    """Negative binomial with mean ``lam`` and dispersion ``r`` (variance lam + lam^2 / r)."""
    lam = np.maximum(lam, 0)
    if r is None or r <= 0:
        return rng.poisson(lam).astype(float)
    g = rng.gamma(r, np.where(lam > 0, lam / r, 0.0))
    return rng.poisson(g).astype(float)


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> FloatArray:
    e = rng.normal(0, sd * math.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    acc = rng.normal(0, sd)
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


# -- expected batches (unlabelled) -------------------------------------------------------------


def mask_runs(ts: IntArray, mask: BoolArray, what: str, step: int = 600) -> list[Window]:
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    brk = np.flatnonzero(np.diff(idx) > 1)
    starts = np.r_[idx[0], idx[brk + 1]]
    ends = np.r_[idx[brk], idx[-1]]
    return [(int(ts[a]), int(ts[b]) + step, what) for a, b in zip(starts, ends, strict=True)]


def batch_mask_weekly(hour: FloatArray, dow: IntArray, day: int, start_h: float, dur_h: float) -> BoolArray:
    return np.asarray((dow == day) & (hour >= start_h) & (hour < start_h + dur_h))


def batch_mask_monthly(
    hour: FloatArray, dom: IntArray, dim: IntArray, which: int | str, start_h: float, dur_h: float
) -> BoolArray:
    sel = (dom == dim) if which == "last" else (dom == which)
    return np.asarray(sel & (hour >= start_h) & (hour < start_h + dur_h))


def batch_mask_daily(hour: FloatArray, start_h: float, dur_h: float) -> BoolArray:
    return np.asarray((hour >= start_h) & (hour < start_h + dur_h))


# -- placing anomalies -------------------------------------------------------------------------


class Placer:
    """Chooses non-overlapping anomaly onsets that satisfy local-time constraints."""

    def __init__(
        self,
        ts: IntArray,
        hour: FloatArray,
        dow: IntArray,
        rng: np.random.Generator,
        forbid_mask: BoolArray | None = None,
        earliest: int = 7 * DAY,
        latest_margin: int = DAY,
    ) -> None:
        self.ts, self.hour, self.dow, self.rng = ts, hour, dow, rng
        self.busy = np.zeros(len(ts), bool) if forbid_mask is None else forbid_mask.copy()
        self.t0 = int(ts[0]) + earliest
        self.t1 = int(ts[-1]) - latest_margin

    def pick(
        self,
        dur_s: float,
        hours: tuple[float, float] | None = None,
        weekdays: Sequence[int] | None = None,
        pad: int = 6 * HOUR,
        t0: int | None = None,
        t1: int | None = None,
    ) -> int:
        t0 = self.t0 if t0 is None else t0
        t1 = self.t1 if t1 is None else t1
        for _ in range(5000):
            i = int(self.rng.integers(0, len(self.ts)))
            t = self.ts[i]
            if t < t0 or t + dur_s > t1:
                continue
            if hours is not None and not (hours[0] <= self.hour[i] < hours[1]):
                continue
            if weekdays is not None and self.dow[i] not in weekdays:
                continue
            sel = (self.ts >= t - pad) & (self.ts <= t + dur_s + pad)
            if self.busy[sel].any():
                continue
            self.busy[sel] = True
            return i
        raise RuntimeError("could not place anomaly")


def _window_a(t_on: float, t_end: float, kind: str) -> Window:
    if kind == "level_shift":
        return (int(t_on - 20 * MIN), int(t_on + 12 * HOUR), kind)
    return (int(t_on - 20 * MIN), int(t_end + 30 * MIN), kind)


# -- suite A -----------------------------------------------------------------------------------

_STARTS_A = [
    ("Europe/Berlin", (2024, 3, 4)),  # DST starts 2024-03-31
    ("America/New_York", (2024, 10, 7)),  # DST ends 2024-11-03
    ("Europe/London", (2024, 9, 23)),  # DST ends 2024-10-27
    ("Asia/Tokyo", (2024, 5, 6)),  # no DST
    ("Australia/Sydney", (2024, 3, 18)),  # DST ends 2024-04-07
]


def suite_a(seed: int) -> list[Series]:
    rng = np.random.default_rng(seed)
    out: list[Series] = []
    n = 8 * 7 * 144

    def grid(zi: int) -> tuple[str, IntArray]:
        tz, (y, m, d) = _STARTS_A[zi % len(_STARTS_A)]
        t0 = local_time(tz, y, m, d) + int(rng.integers(0, 4)) * DAY
        t0 -= t0 % 600
        return tz, t0 + 600 * np.arange(n, dtype=np.int64)

    def writes(
        name: str,
        zi: int,
        base: float,
        r: float,
        anomalies: list[str],
        weekly_batch: tuple[int, float, float, float] | None = None,
        monthly_batch: tuple[int | str, float, float, float] | None = None,
        trend: float = 0.2,
        daily_batch: tuple[float, float, float] | None = None,
        consumer: bool = False,
    ) -> None:
        tz, ts = grid(zi)
        hour, dow, dom, dim, _ = local_parts(ts, tz)
        prof = consumer_profile(hour, rng) if consumer else business_profile(hour, rng, night=rng.uniform(0.02, 0.1))
        lam = base * prof * weekly_factor(dow, rng, "consumer" if consumer else "business")
        lam *= 1 + trend * (ts - ts[0]) / (ts[-1] - ts[0])
        notes: list[str] = []
        marks: list[Window] = []
        forbid = np.zeros(n, bool)
        add = np.zeros(n)
        if weekly_batch:
            day, sh, dh, size = weekly_batch
            mk = batch_mask_weekly(hour, dow, day, sh, dh)
            add[mk] += size
            forbid |= mk
            notes.append(f"weekly batch dow={day} {sh}:00 for {dh}h +{size}/bucket")
            marks += mask_runs(ts, mk, "weekly_batch")
        if monthly_batch:
            which, sh, dh, size = monthly_batch
            mk = batch_mask_monthly(hour, dom, dim, which, sh, dh)
            add[mk] += size
            forbid |= mk
            notes.append(f"monthly batch day={which} {sh}:00 for {dh}h +{size}/bucket")
            marks += mask_runs(ts, mk, "monthly_batch")
        if daily_batch:
            sh, dh, size = daily_batch
            mk = batch_mask_daily(hour, sh, dh)
            add[mk] += size
            forbid |= mk
            notes.append(f"daily batch {sh}:00 for {dh}h +{size}/bucket")
            marks += mask_runs(ts, mk, "daily_batch")
        pl = Placer(ts, hour, dow, rng, forbid)
        wins: list[Window] = []
        mult = np.ones(n)
        extra = np.zeros(n)
        for kind in anomalies:
            if kind == "outage":
                d = int(rng.integers(6, 19)) * 600
                i = pl.pick(d, hours=(9, 16), weekdays=range(5))
                mult[(ts >= ts[i]) & (ts < ts[i] + d)] = 0.0
            elif kind == "spike":
                d = int(rng.integers(1, 4)) * 600
                i = pl.pick(d)
                extra[(ts >= ts[i]) & (ts < ts[i] + d)] += rng.uniform(4, 10) * base
            elif kind == "dip":
                d = int(rng.integers(9, 19)) * 600
                i = pl.pick(d, hours=(9, 15), weekdays=range(5))
                mult[(ts >= ts[i]) & (ts < ts[i] + d)] = rng.uniform(0.25, 0.45)
            elif kind == "night_activity":
                d = int(rng.integers(1, 3)) * 600
                i = pl.pick(d, hours=(21, 24))
                extra[(ts >= ts[i]) & (ts < ts[i] + d)] += rng.uniform(150, 400)
            elif kind == "level_shift":
                i = pl.pick(12 * HOUR, hours=(9, 17), t0=int(ts[0]) + 14 * DAY, t1=int(ts[-1]) - 7 * DAY)
                d = int(ts[-1] - ts[i]) + 600
                f = rng.choice([rng.uniform(0.45, 0.6), rng.uniform(1.7, 2.2)])
                mult[ts >= ts[i]] *= f
                pl.busy[ts >= ts[i]] = True
            elif kind == "missed_batch":
                assert weekly_batch is not None
                mk = batch_mask_weekly(hour, dow, weekly_batch[0], weekly_batch[1], weekly_batch[2])
                starts_i = np.flatnonzero(mk & ~np.r_[False, mk[:-1]])
                i = int(starts_i[rng.integers(3, len(starts_i))])
                d = int(weekly_batch[2] * HOUR)
                add[(ts >= ts[i]) & (ts < ts[i] + d)] = 0.0
            else:
                raise ValueError(kind)
            wins.append(_window_a(ts[i], ts[i] + d, kind))
        x = neg_binomial(rng, lam * mult + extra, r) + neg_binomial(rng, add * np.where(mult > 0, 1, 0), 30)
        family = "count_high" if base >= 30 else "count_low"
        out.append(Series(name, family, tz, ts, x, "count", wins, notes, marks))

    writes("A01_orders_inserts", 0, base=300, r=40, anomalies=["outage", "spike"])
    writes(
        "A02_ledger_updates",
        1,
        base=80,
        r=25,
        anomalies=["dip", "level_shift"],
        weekly_batch=(6, 2, 1.5, 1500),
        monthly_batch=(1, 1, 2, 2500),
    )
    writes("A03_patients_updates", 2, base=3, r=8, anomalies=["night_activity", "outage"])
    writes("A04_audit_inserts", 3, base=1.0, r=5, anomalies=[], weekly_batch=(5, 23, 1, 120))
    writes(
        "A10_sessions_deletes",
        4,
        base=20,
        r=15,
        anomalies=["spike", "outage"],
        monthly_batch=("last", 22, 1, 900),
        daily_batch=(0.5, 0.34, 250),
        consumer=True,
    )
    writes("A12_events_inserts", 1, base=50, r=30, anomalies=["dip", "missed_batch"], weekly_batch=(2, 3, 1, 1200))

    def gauge(
        name: str,
        zi: int,
        fam: str,
        anomalies: list[str],
        weekly_bump: tuple[int, float, float, float] | None = None,
        monthly_bump: tuple[int | str, float, float, float] | None = None,
    ) -> None:
        tz, ts = grid(zi)
        hour, dow, dom, dim, _ = local_parts(ts, tz)
        prof = business_profile(hour, rng, night=rng.uniform(0.1, 0.3)) * weekly_factor(dow, rng, "business")
        forbid = np.zeros(n, bool)
        notes: list[str] = []
        marks: list[Window] = []
        bump = np.zeros(n)
        if weekly_bump:
            day, sh, dh, size = weekly_bump
            mk = batch_mask_weekly(hour, dow, day, sh, dh)
            bump[mk] += size
            forbid |= mk
            notes.append(f"weekly batch dow={day} {sh}:00 {dh}h +{size}")
            marks += mask_runs(ts, mk, "weekly_batch")
        if monthly_bump:
            which, sh, dh, size = monthly_bump
            mk = batch_mask_monthly(hour, dom, dim, which, sh, dh)
            bump[mk] += size
            forbid |= mk
            notes.append(f"monthly batch day={which} {sh}:00 {dh}h +{size}")
            marks += mask_runs(ts, mk, "monthly_batch")
        frac = (ts - ts[0]) / (ts[-1] - ts[0])
        noise: FloatArray | None = None
        if fam == "connections":
            base = rng.uniform(30, 80)
            level = base * (0.35 + 0.65 * prof) * (1 + rng.uniform(0.05, 0.3) * frac)
            noise = ar1(rng, n, 0.8, 0.06 * base)
        elif fam == "cpu":
            base = rng.uniform(25, 55)
            level = base * (0.25 + 0.75 * prof) * (1 + rng.uniform(-0.1, 0.25) * frac)
            noise = ar1(rng, n, 0.5, 0.05 * base) + rng.normal(0, 0.03 * base, n)
            blip = rng.random(n) < 1 / 144  # benign autovacuum blips, unlabelled
            noise[blip] += rng.uniform(0.15, 0.35, blip.sum()) * base
            marks += mask_runs(ts, blip, "blip")
        elif fam == "latency":
            base = rng.uniform(4, 12)
            level = base * (1 + 0.6 * prof)
        elif fam == "size":
            base = rng.uniform(5e9, 5e10)
            growth = base * rng.uniform(0.002, 0.006) / 144  # per bucket, weighted to business hours
            inc = growth * prof / prof.mean() * (1 + 0.5 * rng.standard_normal(n).clip(-1.8, 3))
            level = base + np.cumsum(inc)
        else:
            raise ValueError(fam)
        pl = Placer(ts, hour, dow, rng, forbid)
        wins: list[Window] = []
        add = np.zeros(n)
        mult = np.ones(n)
        nscale = np.ones(n)
        for anomaly in anomalies:
            kind = anomaly
            if kind == "ramp":
                d = int(rng.integers(18, 48)) * 600
                i = pl.pick(d + 2 * HOUR, hours=(8, 20))
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                amp = rng.uniform(0.8, 1.5) * base
                add[sel] += amp * (ts[sel] - ts[i]) / d
            elif kind == "level_shift":
                i = pl.pick(12 * HOUR, hours=(9, 17), t0=int(ts[0]) + 14 * DAY, t1=int(ts[-1]) - 7 * DAY)
                d = int(ts[-1] - ts[i])
                mult[ts >= ts[i]] *= rng.choice([rng.uniform(1.35, 1.6), rng.uniform(0.55, 0.7)])
                pl.busy[ts >= ts[i]] = True
            elif kind == "variance":
                d = int(rng.integers(12, 30)) * 600
                i = pl.pick(d)
                nscale[(ts >= ts[i]) & (ts < ts[i] + d)] = rng.uniform(4, 6)
            elif kind == "spike_sustained":
                d = int(rng.integers(3, 7)) * 600
                i = pl.pick(d)
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                add[sel] += 100
                mult[sel] = 0  # pinned at 100 % below
            elif kind == "spike":
                d = int(rng.integers(2, 5)) * 600
                i = pl.pick(d)
                mult[(ts >= ts[i]) & (ts < ts[i] + d)] *= rng.uniform(3.5, 6)
            elif kind == "jump":
                d = 3600
                i = pl.pick(d, hours=(8, 20), t0=int(ts[0]) + 14 * DAY, t1=int(ts[-1]) - 7 * DAY)
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                step = rng.uniform(0.04, 0.08) * base
                add[sel] += step * (ts[sel] - ts[i]) / d
                add[ts >= ts[i] + d] += step
                kind = "level_shift"
            else:
                raise ValueError(kind)
            wins.append(_window_a(ts[i], ts[i] + d, kind))
        if fam == "connections":
            assert noise is not None
            x = np.round(np.maximum(0, level * mult + add + noise * nscale + bump))
        elif fam == "cpu":
            assert noise is not None
            x = np.round(np.clip(level * mult + add + noise * nscale + bump, 0.5, 100), 1)
        elif fam == "latency":
            x = (level * mult + bump) * np.exp(rng.normal(0, 1, n) * (0.12 * nscale) + add)
            blip = rng.random(n) < 1 / 288
            x[blip] *= rng.uniform(1.3, 1.8, blip.sum())
            marks += mask_runs(ts, blip, "blip")
            x = np.round(x, 2)
        else:
            x = np.round(level + add + bump)
        out.append(Series(name, fam, tz, ts, x, "gauge", wins, notes, marks))

    gauge("A05_connections", 2, "connections", ["ramp"])
    gauge("A06_connections", 0, "connections", ["level_shift"], weekly_bump=(6, 3, 2, 25))
    gauge("A07_cpu", 1, "cpu", ["variance"], weekly_bump=(6, 2, 2, 35), monthly_bump=(1, 1, 3, 30))
    gauge("A08_cpu", 3, "cpu", ["spike_sustained"])
    gauge("A09_latency_ms", 4, "latency", ["spike"])
    gauge("A11_db_size_bytes", 0, "size", ["jump"])
    assert sum(len(s.windows) for s in out) == 16
    return sorted(out, key=lambda s: s.name)


# -- suite B -----------------------------------------------------------------------------------

Build = Callable[[IntArray, FloatArray, IntArray, list[str], list[Window]], tuple[FloatArray, list[Window]]]


def irregular_grid(rng: np.random.Generator, t0: int, span: int, step: int) -> IntArray:
    """Jittered sample times with a few missing samples and rare collector outages."""
    t = t0 + int(rng.integers(0, step))
    out = []
    end = t0 + span
    while t < end:
        out.append(t)
        gap = step * (1 + rng.uniform(-0.2, 0.2))
        if rng.random() < 0.02:
            gap += step * rng.integers(1, 4)  # a few missing samples
        if rng.random() < 0.0015:
            gap += rng.uniform(1, 6) * HOUR  # collector outage (not labelled)
        t += int(gap)
    return np.array(out, dtype=np.int64)


def nab_windows(ts: IntArray, anomalies: list[Window]) -> list[Window]:
    """NAB's windows: 10 % of the span shared equally, centred on each onset, split where they overlap."""
    span = ts[-1] - ts[0]
    w = 0.1 * span / max(1, len(anomalies))
    wins = []
    for t_on, t_end, kind in anomalies:
        a = t_on - w / 2
        b = t_on + w / 2
        if kind != "level_shift":
            b = max(b, t_end + 30 * MIN)
        wins.append((int(a), int(b), kind))
    wins.sort()
    for k in range(1, len(wins)):
        if wins[k][0] <= wins[k - 1][1]:
            mid = (wins[k][0] + wins[k - 1][1]) // 2
            wins[k - 1] = (wins[k - 1][0], mid, wins[k - 1][2])
            wins[k] = (mid + 1, wins[k][1], wins[k][2])
    return wins


def suite_b(seed: int) -> list[Series]:
    rng = np.random.default_rng(10_000 + seed)
    out: list[Series] = []
    zones = ["UTC", "America/Los_Angeles", "Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"]

    def mk(
        name: str,
        fam: str,
        step_min: int,
        weeks: float,
        build: Build,
        spec: list[str],
        tz: str | None = None,
        kind: str = "gauge",
    ) -> None:
        tz = tz or zones[int(rng.integers(0, len(zones)))]
        t0 = int(dt.datetime(2014, 2, 14, tzinfo=dt.UTC).timestamp()) + int(rng.integers(0, 200)) * DAY
        ts = irregular_grid(rng, t0, int(weeks * WEEK), step_min * MIN)
        hour, dow, _, _, _ = local_parts(ts, tz)
        marks: list[Window] = []
        x, anomalies = build(ts, hour, dow, spec, marks)
        out.append(Series(name, fam, tz, ts, x, kind, nab_windows(ts, anomalies), [], marks))

    def placer(ts: IntArray, hour: FloatArray, dow: IntArray, frac0: float = 0.15) -> Placer:
        return Placer(ts, hour, dow, rng, None, earliest=int(frac0 * (ts[-1] - ts[0])), latest_margin=6 * HOUR)

    def cpu_build(base: float, daily_amp: float, blip_rate: float) -> Build:
        def build(
            ts: IntArray, hour: FloatArray, dow: IntArray, spec: list[str], marks: list[Window]
        ) -> tuple[FloatArray, list[Window]]:
            n = len(ts)
            prof = 1 + daily_amp * np.sin(2 * np.pi * (hour - 9) / 24)
            walk = np.cumsum(rng.normal(0, 0.002, n))  # slow random drift of the level
            level = base * prof * np.exp(walk - np.linspace(0, walk[-1], n))
            x = level * rng.gamma(6, 1 / 6, n)
            blip = rng.random(n) < blip_rate
            x[blip] += base * rng.uniform(0.5, 1.5, blip.sum())
            marks.extend(mask_runs(ts, blip, "blip", 300))
            pl = placer(ts, hour, dow)
            anomalies: list[Window] = []
            span = int(ts[-1] - ts[0])
            for kind in spec:
                if kind == "sustained_high":
                    d = rng.uniform(1, 4) * HOUR
                    i = pl.pick(d)
                    sel = (ts >= ts[i]) & (ts < ts[i] + d)
                    x[sel] = np.minimum(100, x[sel] + base * rng.uniform(2.5, 4))
                elif kind == "level_shift":
                    i = pl.pick(12 * HOUR, t0=int(ts[0]) + int(0.3 * span), t1=int(ts[-1]) - int(0.15 * span))
                    d = float(ts[-1] - ts[i])
                    f = rng.choice([rng.uniform(0.35, 0.5), rng.uniform(2.0, 3.0)])
                    x[ts >= ts[i]] *= f
                    pl.busy[ts >= ts[i]] = True
                elif kind == "spike_cluster":
                    d = rng.uniform(0.5, 1.5) * HOUR
                    i = pl.pick(d)
                    idx = np.flatnonzero((ts >= ts[i]) & (ts < ts[i] + d))
                    hit = idx[rng.random(len(idx)) < 0.7]
                    x[hit] = np.minimum(100, x[hit] + base * rng.uniform(3, 6, len(hit)))
                elif kind == "drop":
                    d = rng.uniform(1, 3) * HOUR
                    i = pl.pick(d)
                    sel = (ts >= ts[i]) & (ts < ts[i] + d)
                    x[sel] = x[sel] * 0.1
                else:
                    raise ValueError(kind)
                anomalies.append((int(ts[i]), int(ts[i] + d), kind))
            return np.asarray(np.round(np.clip(x, 0, 100), 3), dtype=np.float64), anomalies

        return build

    mk("B01_cpu_asg_misconfig", "cpu", 5, 8, cpu_build(30, 0.25, 1 / 400), ["level_shift", "sustained_high"])
    mk("B02_ec2_cpu_a", "cpu", 5, 2, cpu_build(12, 0.1, 1 / 300), ["sustained_high", "spike_cluster"])
    mk("B03_ec2_cpu_b", "cpu", 5, 2, cpu_build(40, 0.05, 1 / 500), ["level_shift"])
    mk("B04_rds_cpu", "cpu", 5, 2, cpu_build(20, 0.35, 1 / 400), ["spike_cluster", "sustained_high"])
    mk("B05_grok_cpu", "cpu", 10, 3, cpu_build(50, 0.2, 1 / 300), ["drop", "spike_cluster", "sustained_high"])

    def bytes_build(base: float, sigma: float, backup_h: float) -> Build:
        def build(
            ts: IntArray, hour: FloatArray, dow: IntArray, spec: list[str], marks: list[Window]
        ) -> tuple[FloatArray, list[Window]]:
            n = len(ts)
            prof = 1 + 0.4 * np.sin(2 * np.pi * (hour - 10) / 24)
            x = base * prof * np.exp(rng.normal(0, sigma, n))
            backup = (hour >= backup_h) & (hour < backup_h + 0.75)
            x[backup] += base * rng.uniform(8, 12)
            marks.extend(mask_runs(ts, backup, "daily_batch", 300))
            pl = Placer(ts, hour, dow, rng, backup, earliest=int(0.15 * (ts[-1] - ts[0])), latest_margin=6 * HOUR)
            anomalies: list[Window] = []
            for kind in spec:
                if kind == "sustained_high":
                    d = rng.uniform(1.5, 5) * HOUR
                    i = pl.pick(d)
                    x[(ts >= ts[i]) & (ts < ts[i] + d)] *= rng.uniform(6, 10)
                elif kind == "outage":
                    d = rng.uniform(1, 3) * HOUR
                    i = pl.pick(d)
                    x[(ts >= ts[i]) & (ts < ts[i] + d)] *= 0.02
                else:
                    raise ValueError(kind)
                anomalies.append((int(ts[i]), int(ts[i] + d), kind))
            return np.round(x), anomalies

        return build

    mk("B06_disk_write_bytes", "bytes", 5, 2, bytes_build(2e6, 0.8, 3), ["sustained_high"])
    mk("B07_network_in", "bytes", 5, 2, bytes_build(5e7, 0.6, 1), ["outage", "sustained_high"])

    def count_build(base: float, r: float, consumer: bool = False) -> Build:
        def build(
            ts: IntArray, hour: FloatArray, dow: IntArray, spec: list[str], marks: list[Window]
        ) -> tuple[FloatArray, list[Window]]:
            n = len(ts)
            prof = consumer_profile(hour, rng) if consumer else business_profile(hour, rng, night=0.15)
            lam = base * prof * weekly_factor(dow, rng, "consumer" if consumer else "business")
            pl = placer(ts, hour, dow)
            anomalies: list[Window] = []
            mult = np.ones(n)
            for kind in spec:
                if kind == "outage":
                    d = rng.uniform(0.5, 3) * HOUR
                    i = pl.pick(d, hours=(9, 18), weekdays=range(5))
                    mult[(ts >= ts[i]) & (ts < ts[i] + d)] = 0.02
                elif kind == "spike":
                    d = rng.uniform(0.3, 2) * HOUR
                    i = pl.pick(d)
                    mult[(ts >= ts[i]) & (ts < ts[i] + d)] *= rng.uniform(3, 6)
                elif kind == "holiday":  # a whole weekday at the weekend's level
                    d = 18 * HOUR
                    i = pl.pick(d, hours=(5, 6), weekdays=range(5))
                    mult[(ts >= ts[i]) & (ts < ts[i] + d)] *= 0.35
                elif kind == "surge_day":  # a marathon, a sale: much more in the afternoon and evening
                    d = 6 * HOUR
                    i = pl.pick(d, hours=(14, 16))
                    mult[(ts >= ts[i]) & (ts < ts[i] + d)] *= 1.8
                elif kind == "dip":
                    d = rng.uniform(2, 5) * HOUR
                    i = pl.pick(d, hours=(8, 16))
                    mult[(ts >= ts[i]) & (ts < ts[i] + d)] *= 0.4
                else:
                    raise ValueError(kind)
                anomalies.append((int(ts[i]), int(ts[i] + d), kind))
            return neg_binomial(rng, lam * mult, r), anomalies

        return build

    mk("B08_elb_request_count", "count", 5, 2, count_build(60, 10), ["spike", "outage"], kind="count")
    mk(
        "B09_taxi_demand",
        "count",
        30,
        30,
        count_build(900, 60, consumer=True),
        ["surge_day", "holiday", "holiday", "dip", "spike"],
        tz="America/New_York",
        kind="count",
    )
    mk("B10_api_requests", "count", 15, 6, count_build(8, 6), ["outage", "spike"], kind="count")

    def latency_build(base: float) -> Build:
        def build(
            ts: IntArray, hour: FloatArray, dow: IntArray, spec: list[str], marks: list[Window]
        ) -> tuple[FloatArray, list[Window]]:
            n = len(ts)
            x = base * np.exp(rng.normal(0, 0.15, n))
            blip = rng.random(n) < 1 / 150
            x[blip] *= rng.uniform(1.5, 2.5, blip.sum())
            marks.extend(mask_runs(ts, blip, "blip", 300))
            pl = placer(ts, hour, dow)
            anomalies: list[Window] = []
            for kind in spec:
                d = rng.uniform(0.5, 3) * HOUR
                i = pl.pick(d)
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                x[sel] *= rng.uniform(3, 6) * np.exp(rng.normal(0, 0.3, sel.sum()))
                anomalies.append((int(ts[i]), int(ts[i] + d), kind))
            return np.round(x, 2), anomalies

        return build

    mk("B11_ec2_request_latency", "latency", 5, 2, latency_build(45), ["failure", "failure", "failure"])

    def temperature_build(
        ts: IntArray, hour: FloatArray, dow: IntArray, spec: list[str], marks: list[Window]
    ) -> tuple[FloatArray, list[Window]]:
        n = len(ts)
        level = 80 + ar1(rng, n, 0.999, 3.0) + ar1(rng, n, 0.9, 0.8)
        pl = placer(ts, hour, dow)
        anomalies: list[Window] = []
        for kind in spec:
            if kind == "drop":
                d = rng.uniform(2, 10) * HOUR
                i = pl.pick(d)
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                level[sel] -= rng.uniform(20, 35) * np.minimum(1, (ts[sel] - ts[i]) / HOUR)
            elif kind == "creep":
                d = rng.uniform(6, 16) * HOUR
                i = pl.pick(d)
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                level[sel] += 18 * (ts[sel] - ts[i]) / d
            else:
                raise ValueError(kind)
            anomalies.append((int(ts[i]), int(ts[i] + d), kind))
        return np.round(level, 3), anomalies

    mk("B12_machine_temperature", "temperature", 5, 11, temperature_build, ["drop", "creep", "drop", "drop"])

    def short_build(base: float) -> Build:
        def build(
            ts: IntArray, hour: FloatArray, dow: IntArray, spec: list[str], marks: list[Window]
        ) -> tuple[FloatArray, list[Window]]:
            n = len(ts)
            x = base * (1 + 0.3 * np.sin(2 * np.pi * (hour - 14) / 24)) + ar1(rng, n, 0.7, 0.08 * base)
            pl = placer(ts, hour, dow, frac0=0.45)
            anomalies: list[Window] = []
            for kind in spec:
                d = rng.uniform(0.5, 2) * HOUR
                i = pl.pick(d, pad=4 * HOUR)
                sel = (ts >= ts[i]) & (ts < ts[i] + d)
                if kind == "stuck":
                    x[sel] = x[i] + rng.uniform(0.5, 0.8) * base
                else:
                    x[sel] += base * rng.uniform(0.8, 1.2) * rng.choice([-1, 1], sel.sum())
                anomalies.append((int(ts[i]), int(ts[i] + d), kind))
            return np.round(x, 3), anomalies

        return build

    mk("B13_rogue_key_hold", "short", 5, 6 / 7, short_build(20), ["stuck", "flap"])
    mk("B14_rogue_key_updown", "short", 5, 8 / 7, short_build(50), ["flap", "stuck"])
    return sorted(out, key=lambda s: s.name)


def make_suite(name: str, seed: int) -> list[Series]:
    """Suite ``A`` (database metrics) or ``B`` (server metrics) for one seed."""
    if name == "A":
        return suite_a(seed)
    if name == "B":
        return suite_b(seed)
    raise ValueError(f"unknown suite {name!r}; use A or B")


# -- scoring -----------------------------------------------------------------------------------


def score_series(ts: IntArray, alarm: Sequence[Any] | FloatArray, windows: Sequence[Window]) -> dict[str, Any]:
    """Event-level result of one series: tp, fp, events, detected (per window) and alarmed samples.

    ``alarm`` holds a verdict per sample: true/1, false/0, or None/NaN (no verdict, counted as no
    alarm).
    """
    ts = np.asarray(ts)
    al = np.asarray([bool(a) if a is not None and a == a else False for a in alarm], dtype=bool)
    inside = np.zeros(len(ts), bool)
    detected = []
    for a, b, _kind in windows:
        sel = (ts >= a) & (ts <= b)
        inside |= sel
        detected.append(bool((al & sel).any()))
    outside = al & ~inside
    fp = int((outside & ~np.r_[False, outside[:-1]]).sum())
    return {"tp": sum(detected), "fp": fp, "events": len(windows), "detected": detected, "alarms": int(al.sum())}


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Totals over series (micro-averaged): tp, fp, events, precision, recall, f1."""
    tp = sum(r["tp"] for r in results)
    fp = sum(r["fp"] for r in results)
    events = sum(r["events"] for r in results)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / events if events else float("nan")
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "fp": fp, "events": events, "precision": p, "recall": r, "f1": f1}
