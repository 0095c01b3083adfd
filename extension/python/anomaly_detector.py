"""Seasonal-analog anomaly detector (SAD) for one metric series, resumable sample by sample.

What it does, in plain words
----------------------------
For every new sample the detector asks "what value would be normal here?", "how far off is
this one, measured in the usual noise of this series?" and "is that far enough, for long enough,
and not explained by something we know is normal?".  Everything it uses comes from earlier
samples only (the verdict of sample i never depends on samples after i).

Transform.  Values are first put on a scale where the noise is roughly the same at low and high
levels: counts (integers, Poisson-like noise, or ``kind='count'``) use the Anscombe square root
``sqrt(x + 3/8)``; other series get identity, square root or ``log(x + c)``, chosen once, at the end
of the warm-up, from the warm-up samples (monotone or negative -> identity; if the level varies
3x or more, a power-law fit of local noise against local level picks the power; otherwise the
transform whose local residuals are the most symmetric).

Predictors (the "expected" value).  Three candidate baselines, all medians of earlier *usable*
samples (anomalies, incidents and cold-start-policy samples are not usable):
  week    the same local wall-clock time of week (+/- ``tau``) 1..``weeks`` weeks back, each analog
          shifted by the change of the trailing 7-day mean level since it was taken (trend);
  day     the same local time of day 1..``days`` days back;
  recent  the median of the last ``recent_n`` samples of the last ``recent_max``.
Local time is wall-clock time in ``tz``, so daily and weekly patterns follow DST changes.  Once
weekly analogs exist in ``full_weeks`` weeks the weekly predictor is used; before that week or
day, whichever had the smaller mean absolute error over the last ``select_window``.  "recent"
replaces it only if its error is ``recent_penalty`` times smaller (series without seasonality).
A level correction then adds the median residual of the last ``level_window`` (a ratio for
counts) when both halves of that window agree, so a persistent level shift is absorbed within
hours instead of alarming for weeks.

Scale.  The typical size of a residual is a robust spread (1.4826 * MAD) of the residuals of the
last ``scale_window`` that were taken within +/- ``scale_tod`` of the same time of day (all of them
if fewer than ``scale_min_n``), never below a floor (Poisson noise for counts, the value
resolution otherwise).  It is refreshed at most every ``scale_refresh`` per hour of day.
``z = (value - expected) / scale`` in the transformed space is the ``score``; ``lower``/``upper``
are expected -/+ ``z_sust`` scales (divided by ``sensitivity``), transformed back.

Rules (why an alarm is raised, ``rule``):
  point   |z| beyond ``z_point`` (gauges: confirmed by the ``gauge_confirm - 1`` previous samples
          being beyond the k_of_n threshold, so one odd gauge reading does not alarm);
  k_of_n  ``k`` of the last ``nwin`` samples, this one included, beyond ``z_sust``;
  window  the mean z of the last w samples (counts: the Anscombe z of the window *sum*), for w in
          ``agg_ws``, standardised by its own history, beyond ``z_agg`` (only with a seasonal
          predictor and after 7 days of history);
  hold    an alarm continues while z keeps the same sign and stays beyond ``z_keep``.
Calibration: every threshold is at least ``calib_mult`` times the ``calib_rank``-th largest peak of
the same statistic among the excursions of the last ``calib_window`` that did not alarm and were
not expected (so a series that regularly wanders to z=7 needs more than 7 to alarm).  Before the
weekly predictor is established the thresholds are raised by ``cold_extra``.  All alarm
thresholds are divided by ``sensitivity`` (0.25 .. 4; 2 = more alarms, 0.5 = fewer).

Vetoes (a *new* alarm event is dropped, ``note``):
  level   it is anomalous only because of the level correction;
  cold    in the cold stage, the recent level explains it (``cold_veto``);
  week    another predictor is in use but a credible weekly predictor explains it (``week_veto``).

Expected and recurring behaviour (suppressed, and not learnt as anomalies, ``note``):
  expected   the sample lies in a declared ``expected_windows`` interval (maintenance, planned load);
  policy     cold-start policies: no upward alarms in the first 7 days (``week1_up=False``) and no
             upward alarm on a month's first/last day before a month of history
             (``month_prior``), each for the series ``policy_scope`` / ``month_scope`` selects
             ('all', or only count series: the default, a gauge's first-week rise is alarmed);
  seen       a value this close was seen at this local time of week in ``seen_min_weeks`` of the
             last ``weeks`` weeks;
  recurring  a same-sign excursion at least ``recur_frac`` as large happened at this local time
             1..``recur_weeks`` weeks back, or 1..7 days back, or on the matching day of the
             previous month (same day number, last day, or same n-th weekday): a recurring
             batch.  The earlier excursions are then readmitted into the baselines (the state
             rows of those earlier samples change, see ``Result.changed``).
Samples in ``incident_windows`` are never learnt from (excluded from baselines, scale and
calibration), but alarms are raised there.

Cold start.  A series gets no verdict (``alarm`` nan, ``expected`` nan) until both ``min_history``
seconds have passed since its first sample and ``min_samples`` samples have been seen: at that
moment the transform is decided from those warm-up samples, the warm-up samples are processed
(they feed the baselines) and the first verdict is given.  After that a sample still gets no
verdict while no predictor exists (no same-time analog in the last ``days`` days and fewer than
3 usable samples in the last ``recent_max``), and missing values (nan) never get one.  Until two
weeks of weekly analogs exist thresholds are raised (``cold_extra``); the window rules start after
7 days.

Resuming.  ``resume()`` takes the series' trailing ``history_seconds(params)`` of already-scored
samples (their state rows and the scalars of the previous call) plus the new samples, and gives
exactly the verdicts ``run()`` over the whole series would give.  The caller should pass at least
that much history (and at least ``max(agg_ws)`` rows); the warm-up must fit in it.
The state is one row of ``STATE_WIDTH`` float64 per sample plus a small JSON-serialisable dict.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN = 60
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
STATE_VERSION = 1

DEFAULTS: dict[str, object] = {
    # --- transform and cold start
    "transform": "auto",  # 'auto' | 'sqrt' | 'log' | 'identity'
    "transform_rule": "v2",  # auto rule: 'v1' (integer/dispersion/tail) or 'v2' (power law / symmetry)
    "min_history": DAY,  # no verdicts before this much history (seconds) ...
    "min_samples": 24,  # ... and this many samples
    # --- predictors
    "tau": 35 * MIN,  # analog tolerance around the same local wall-clock time (seconds)
    "weeks": 4,  # weekly analogs 1..weeks weeks back
    "days": 7,  # daily analogs 1..days days back
    "full_weeks": 2,  # weekly predictor used unconditionally once analogs exist in this many weeks
    "trend_adjust": True,  # weekly analogs shifted by the change of the trailing 7-day mean level
    "recent_n": 12,  # 'recent' predictor: median of the last recent_n usable samples ...
    "recent_max": 12 * HOUR,  # ... not older than this (seconds) ...
    "recent_zmax": 99.0,  # ... with |z| below this
    "selection": True,  # choose week / day / recent by trailing mean absolute error
    "select_window": 3 * DAY,
    "recent_penalty": 1.25,  # recent must beat the seasonal predictor's error by this factor
    "level": True,  # level correction by the median residual of the last level_window
    "level_window": 6 * HOUR,
    "level_min_n": 6,
    # --- scale
    "scale_window": 14 * DAY,
    "scale_tod": 90 * MIN,  # residual scale from samples within +/- this time of day ...
    "scale_min_n": 40,  # ... if at least this many, else all residuals of the window
    "scale_refresh": HOUR,  # recompute a time-of-day scale / the calibration at most this often
    # --- alarm rules
    "z_point": 6.0,
    "gauge_confirm": 2,
    "z_sust": 3.5,
    "k": 3,
    "nwin": 4,
    "agg_ws": [6, 24],  # window rules over the last w samples (at most two windows)
    "z_agg": 5.0,
    "agg_min_z": 1.0,
    "z_keep": 2.5,
    "calib": True,
    "calib_rank": 2,
    "calib_mult": 1.25,
    "calib_window": 14 * DAY,
    "sensitivity": 1.0,  # all alarm thresholds are divided by this
    # --- vetoes, cold start and expected behaviour
    "level_veto": True,
    "cold_extra": 1.0,
    "cold_extra_win": 1.0,
    "week1_win": False,
    "cold_veto": True,
    "week_veto": True,
    "week1_up": False,
    "month_prior": True,
    "policy_scope": "counts",  # series week1_up applies to: 'all' | 'counts'
    "month_scope": "counts",  # series month_prior applies to: 'all' | 'counts'
    "seen": True,
    "seen_tau": 20 * MIN,
    "seen_tol": 2.5,
    "seen_min_weeks": 2,
    "recur": True,
    "recur_tau": 40 * MIN,
    "recur_frac": 0.5,
    "recur_weeks": 4,
    "recur_min_weeks": 1,
    "recur_min_days": 1,
    "recur_month": True,
    "exclude_flagged": True,
}

# (kind, low, high) for numbers, or ("choice", options) / ("bool",) / ("windows",)
_SPEC: dict[str, tuple[Any, ...]] = {
    "transform": ("choice", ("auto", "sqrt", "log", "identity")),
    "transform_rule": ("choice", ("v1", "v2")),
    "min_history": ("int", 0, 90 * DAY),
    "min_samples": ("int", 4, 100_000),
    "tau": ("int", 1, 6 * HOUR),
    "weeks": ("int", 1, 8),
    "days": ("int", 1, 14),
    "full_weeks": ("int", 1, 8),
    "trend_adjust": ("bool",),
    "recent_n": ("int", 3, 1000),
    "recent_max": ("int", MIN, 7 * DAY),
    "recent_zmax": ("float", 0.5, 1e9),
    "selection": ("bool",),
    "select_window": ("int", HOUR, 28 * DAY),
    "recent_penalty": ("float", 0.1, 100.0),
    "level": ("bool",),
    "level_window": ("int", MIN, 7 * DAY),
    "level_min_n": ("int", 2, 10_000),
    "scale_window": ("int", DAY, 56 * DAY),
    "scale_tod": ("int", MIN, DAY),
    "scale_min_n": ("int", 1, 100_000),
    "scale_refresh": ("int", 1, DAY),
    "z_point": ("float", 0.5, 1000.0),
    "gauge_confirm": ("int", 1, 100),
    "z_sust": ("float", 0.5, 1000.0),
    "k": ("int", 1, 1000),
    "nwin": ("int", 1, 1000),
    "agg_ws": ("windows",),
    "z_agg": ("float", 0.5, 1000.0),
    "agg_min_z": ("float", 0.0, 1000.0),
    "z_keep": ("float", 0.0, 1000.0),
    "calib": ("bool",),
    "calib_rank": ("int", 1, 1000),
    "calib_mult": ("float", 0.0, 100.0),
    "calib_window": ("int", HOUR, 56 * DAY),
    "sensitivity": ("float", 0.25, 4.0),
    "level_veto": ("bool",),
    "cold_extra": ("float", 0.0, 100.0),
    "cold_extra_win": ("float", 0.0, 100.0),
    "week1_win": ("bool",),
    "cold_veto": ("bool",),
    "week_veto": ("bool",),
    "week1_up": ("bool",),
    "month_prior": ("bool",),
    "policy_scope": ("choice", ("all", "counts")),
    "month_scope": ("choice", ("all", "counts")),
    "seen": ("bool",),
    "seen_tau": ("int", 1, 6 * HOUR),
    "seen_tol": ("float", 0.0, 1000.0),
    "seen_min_weeks": ("int", 1, 8),
    "recur": ("bool",),
    "recur_tau": ("int", 1, 6 * HOUR),
    "recur_frac": ("float", 0.0, 100.0),
    "recur_weeks": ("int", 1, 8),
    "recur_min_weeks": ("int", 1, 8),
    "recur_min_days": ("int", 0, 7),
    "recur_month": ("bool",),
    "exclude_flagged": ("bool",),
}
assert set(_SPEC) == set(DEFAULTS)

# excursion thresholds for the calibration bookkeeping: point, k_of_n, window 1, window 2
_EXC_START = (3.0, 2.5, 3.0, 3.0)
_MAX_AGG = 2

# ---- state layout: one row per sample
C_FLAGS = 0  # bit set, see F_*
C_ESEAS = 1  # expectation before the level correction (transformed space)
C_RESID = 2  # value - expected (transformed space)
C_Z = 3  # score
C_PWEEK = 4  # the three predictors (transformed space), for the selection's error bookkeeping
C_PDAY = 5
C_PRECENT = 6
C_LEV7 = 7  # trailing 7-day mean of usable values, for the trend adjustment
C_ZAGG = 8  # 8, 9: window statistics (unstandardised)
C_ERAW = 10  # expected value (original units), 0 where none
C_ZW = 11  # z fed to the gauge window rule (0 for alarmed / expected samples)
C_EXC = 12  # 12..15: signed peak of a calibration excursion closed at this sample (0 = none)
STATE_WIDTH = 16

F_PROC = 1  # processed (the transform was known)
F_USABLE = 2  # feeds the predictors
F_SCALE = 4  # feeds the scale, the selection errors and the window-rule scales
F_EXPF = 8  # suppressed as expected
F_ALARM = 16
F_INCIDENT = 32
F_AGG1 = 64  # window statistic 1 / 2 may feed its scale
F_AGG2 = 128


def history_seconds(params: dict[str, Any] | None = None) -> int:
    """Trailing history resume() needs before the first new sample, for these parameters.

    The furthest look-back: weekly analogs / seen / recurrence (weeks back + tolerance), the
    previous month's matching day (up to 37 days back: the same n-th weekday), the scale,
    selection, level and calibration windows, the 7-day trend level; plus 2 h for DST
    (analogs are taken in local time), rounded up to a whole hour."""
    p = check_params(params)
    need = max(
        p["weeks"] * WEEK + p["tau"],
        p["weeks"] * WEEK + p["seen_tau"],
        p["days"] * DAY + p["tau"],
        p["recur_weeks"] * WEEK + p["recur_tau"],
        7 * DAY + p["recur_tau"],
        (37 * DAY + p["recur_tau"]) if p["recur_month"] else 0,
        p["scale_window"],
        p["calib_window"],
        p["select_window"],
        p["level_window"],
        p["recent_max"],
        7 * DAY,
        p["min_history"],
    )
    return int(math.ceil((need + 2 * HOUR) / HOUR) * HOUR)


def check_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Merge ``params`` with DEFAULTS and validate; ValueError naming the key, the value and the fix."""
    p: dict[str, Any] = dict(DEFAULTS)
    if params is None:
        p["agg_ws"] = list(p["agg_ws"])
        return p
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict (or None), got {type(params).__name__}: pass e.g. {{'z_point': 6.0}}")
    for key, val in params.items():
        spec = _SPEC.get(key)
        if spec is None:
            raise ValueError(f"unknown parameter {key!r} (value {val!r}): remove it; known: {', '.join(sorted(_SPEC))}")
        kind = spec[0]
        if kind == "choice":
            if val not in spec[1]:
                raise ValueError(f"parameter {key!r}={val!r} is invalid: use one of {', '.join(spec[1])}")
        elif kind == "bool":
            if not isinstance(val, bool):
                raise ValueError(f"parameter {key!r}={val!r} is invalid: use true or false")
        elif kind == "windows":
            ok = isinstance(val, list | tuple) and len(val) <= _MAX_AGG
            ok = ok and all(isinstance(w, int) and not isinstance(w, bool) and 2 <= w <= 1000 for w in val)
            if not ok:
                raise ValueError(
                    f"parameter {key!r}={val!r} is invalid: "
                    f"use a list of at most {_MAX_AGG} integers in 2..1000, e.g. [6, 24]"
                )
            val = [int(w) for w in val]
        else:
            lo, hi = spec[1], spec[2]
            if kind == "int":
                good = isinstance(val, int) and not isinstance(val, bool)
                if not good and isinstance(val, float) and val.is_integer():
                    val, good = int(val), True
            else:
                good = isinstance(val, int | float) and not isinstance(val, bool) and math.isfinite(val)
                val = float(val) if good else val
            if not good or not lo <= val <= hi:
                what = "an integer" if kind == "int" else "a number"
                raise ValueError(f"parameter {key!r}={val!r} is invalid: use {what} between {lo} and {hi}")
        p[key] = val
    p["agg_ws"] = list(p["agg_ws"])
    if p["full_weeks"] > p["weeks"]:
        raise ValueError(f"parameter 'full_weeks'={p['full_weeks']!r} is invalid: use at most weeks={p['weeks']}")
    if p["k"] > p["nwin"]:
        raise ValueError(f"parameter 'k'={p['k']!r} is invalid: use at most nwin={p['nwin']}")
    return p


HISTORY_SECONDS: int = history_seconds(None)


@dataclass
class Result:
    """Outputs for the new samples (indices m..n-1) and the state for all n samples."""

    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    alarm: FloatArray
    rule: list[str]
    predictor: list[str]
    note: list[str]
    state: FloatArray
    changed: IntArray
    scalars: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# helpers


def _fmed(a: Any) -> float:
    """Median of a small 1-d array (np.median has a large per-call overhead)."""
    s = np.sort(np.asarray(a, dtype=np.float64), kind="quicksort")
    m = len(s)
    if m == 0:
        return float("nan")
    h = m // 2
    return float(s[h]) if m % 2 else 0.5 * float(s[h - 1] + s[h])


def _mad(v: FloatArray) -> float:
    return 1.4826 * _fmed(np.abs(v - _fmed(v)))


def _utc_offsets(ts: IntArray, tz: str) -> IntArray:
    """UTC offset (seconds) of ``tz`` at each timestamp: offsets probed every 12 h, each change
    located to the second by bisection (assumes at most one change per 12 h, true of real zones)."""
    n = len(ts)
    if n == 0 or tz in ("UTC", "Etc/UTC"):
        return np.zeros(n, dtype=np.int64)
    z = ZoneInfo(tz)

    def off(t: int) -> int:
        u = dt.datetime.fromtimestamp(t, z).utcoffset()
        return int(u.total_seconds()) if u is not None else 0

    t0, t1 = int(ts[0]), int(ts[-1])
    grid = [*range(t0, t1, 12 * HOUR), t1]
    offs = [off(g) for g in grid]
    out = np.full(n, offs[0], dtype=np.int64)
    for a, b, oa, ob in zip(grid[:-1], grid[1:], offs[:-1], offs[1:], strict=True):
        if oa == ob:
            continue
        lo, hi = a, b
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if off(mid) == oa:
                lo = mid
            else:
                hi = mid
        out[int(np.searchsorted(ts, hi, side="left")) :] = ob
    return out


def _civil(le: int) -> dt.datetime:
    """Naive datetime of a local epoch (seconds 'as if UTC')."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(le))


def _month_boundary(le: int) -> bool:
    d = _civil(le)
    nxt = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return d.day == 1 or d.day == (nxt - dt.timedelta(days=1)).day


def _prev_month_centres(le: int) -> list[int]:
    """Local epochs of the matching time on the previous month's same day number, last day (if
    this is a last day) and same n-th weekday."""
    d = _civil(le)
    pm_last = d.replace(day=1) - dt.timedelta(days=1)
    cands = []
    with contextlib.suppress(ValueError):  # no such day number in the previous month
        cands.append(d.replace(year=pm_last.year, month=pm_last.month))
    nxt = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    if (nxt - dt.timedelta(days=1)).day == d.day:
        cands.append(pm_last.replace(hour=d.hour, minute=d.minute, second=d.second))
    nth = (d.day - 1) // 7
    first = pm_last.replace(day=1, hour=d.hour, minute=d.minute, second=d.second)
    cand = first + dt.timedelta(days=(d.weekday() - first.weekday()) % 7 + 7 * nth)
    if cand.month == first.month:
        cands.append(cand)
    epoch = dt.datetime(1970, 1, 1)
    return sorted({int((c - epoch).total_seconds()) for c in cands})


def _choose_transform(x0: FloatArray) -> str:
    """v2 rule (see the module docstring)."""
    x0 = x0[np.isfinite(x0)]
    if len(x0) < 8:
        return "identity"
    d = np.diff(x0)
    nz = d[d != 0]
    if len(nz) > 10 and (np.mean(nz > 0) > 0.9 or np.mean(nz < 0) > 0.9):
        return "identity"
    if x0.min() < 0:
        return "identity"
    integer = bool(np.all(np.abs(x0 - np.round(x0)) < 1e-9))
    fano = np.mean(d * d) / 2 / max(float(np.mean(x0)), 1e-9)
    if integer and np.mean(x0) < 50 and fano >= 0.5:
        return "sqrt"
    nb = max(4, len(x0) // 24)
    blocks = [x0[b : b + nb] for b in range(0, len(x0) - nb + 1, nb)]
    lv = np.array([_fmed(b) for b in blocks])
    sp = np.array([_fmed(np.abs(np.diff(b))) for b in blocks])
    m = (lv > 0) & (sp > 0)
    if m.sum() >= 8 and lv[m].max() / lv[m].min() >= 3:
        slope = float(np.polyfit(np.log(lv[m]), np.log(sp[m]), 1)[0])
        return "identity" if slope < 0.25 else ("sqrt" if slope < 0.75 else "log")
    c = max(float(np.percentile(x0, 5)), 0.05 * _fmed(x0), 1e-6)
    best, best_sk = "identity", None
    fns = (("identity", lambda v: v), ("sqrt", np.sqrt), ("log", lambda v: np.log(v + c)))
    for name, f in fns:
        r = np.concatenate([f(b) - _fmed(f(b)) for b in blocks])
        q10, q50, q90 = np.percentile(r, [10, 50, 90])
        if q90 - q10 <= 0:
            continue
        sk = abs(float((q90 + q10 - 2 * q50) / (q90 - q10)))
        if best_sk is None or sk < best_sk - 0.02:
            best, best_sk = name, sk
    return best


def _choose_transform_v1(x0: FloatArray) -> str:
    x0 = x0[np.isfinite(x0)]
    if len(x0) < 8:
        return "identity"
    d = np.diff(x0)
    nz = d[d != 0]
    if len(nz) > 10 and (np.mean(nz > 0) > 0.9 or np.mean(nz < 0) > 0.9):
        return "identity"
    if x0.min() < 0:
        return "identity"
    integer = bool(np.all(np.abs(x0 - np.round(x0)) < 1e-9))
    fano = np.mean(d * d) / 2 / max(float(np.mean(x0)), 1e-9)
    if integer and 0.5 <= fano <= 100:
        return "sqrt"
    q50, q99 = np.percentile(x0, [50, 99])
    if x0.min() > 0 and q99 > 3 * q50:
        return "log"
    if integer and fano > 100:
        return "log"
    return "identity"


def _fwd(x: FloatArray, tr: str, c: float) -> FloatArray:
    if tr == "sqrt":
        return np.sqrt(np.maximum(x, 0) + 0.375)
    if tr == "log":
        return np.log(np.maximum(x, 0) + c)
    return np.asarray(x, dtype=np.float64)


def _inv(y: float, tr: str, c: float) -> float:
    if tr == "sqrt":
        return y * y - 0.375 if y > math.sqrt(0.375) else 0.0
    if tr == "log":
        return math.exp(min(y, 700.0)) - c
    return y


def _in_windows(ts: IntArray, windows: Iterable[Sequence[Any]], name: str) -> npt.NDArray[np.bool_]:
    mask = np.zeros(len(ts), dtype=bool)
    for w in windows:
        try:
            a, b = int(w[0]), int(w[1])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{name}: window {w!r} is invalid: use (from_epoch, to_epoch) pairs") from None
        if len(ts):
            mask[int(np.searchsorted(ts, a, "left")) : int(np.searchsorted(ts, b, "right"))] = True
    return mask


def _fresh_scalars(tz: str, kind: str | None) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "tz": tz,
        "kind": kind,
        "t0": None,  # the series' first timestamp
        "count": 0,  # samples scored so far
        "last_ts": None,
        "transform": None,  # decided at the end of the warm-up
        "c": 0.0,
        "floor": 1.0,
        "count_mode": False,
        "warm_count": None,  # global index of the first sample that can get a verdict
        "last_alarm_sign": 0,
        "scale_cache": {},  # hour of day -> [time, scale, window scale 1, window scale 2]
        "calib": None,  # [time, thresholds (point+, point-, sust+, sust-, win1+, win1-, win2+, win2-)]
        "excursions": [[0, 0.0, False] for _ in range(2 + _MAX_AGG)],  # open: sign, peak, touched
    }


def _empty_result(n: int, m: int, state: FloatArray, scalars: dict[str, Any]) -> Result:
    k = n - m
    nan = np.full(k, np.nan)
    return Result(
        expected=nan.copy(),
        lower=nan.copy(),
        upper=nan.copy(),
        score=nan.copy(),
        alarm=nan.copy(),
        rule=[""] * k,
        predictor=[""] * k,
        note=[""] * k,
        state=state,
        changed=np.zeros(0, dtype=np.int64),
        scalars=scalars,
    )


# ----------------------------------------------------------------------------------------------
# public API


def run(
    ts: Any,
    x: Any,
    *,
    tz: str = "UTC",
    kind: str | None = None,
    params: dict[str, Any] | None = None,
    expected_windows: Iterable[Sequence[Any]] = (),
    incident_windows: Iterable[Sequence[Any]] = (),
) -> Result:
    """Score a whole series from scratch (= resume() with no previous state)."""
    return resume(
        ts,
        x,
        tz=tz,
        kind=kind,
        params=params,
        expected_windows=expected_windows,
        incident_windows=incident_windows,
    )


def resume(
    ts: Any,
    x: Any,
    *,
    tz: str = "UTC",
    kind: str | None = None,
    params: dict[str, Any] | None = None,
    scalars: dict[str, Any] | None = None,
    state: Any = None,
    expected_windows: Iterable[Sequence[Any]] = (),
    incident_windows: Iterable[Sequence[Any]] = (),
) -> Result:
    """Score the new samples m..n-1 of (ts, x) given the state of the first m (already scored) ones.

    ts: epoch seconds, strictly increasing; x: values (nan = missing).  ``state`` (m rows) and
    ``scalars`` come from the previous Result (both None for a fresh start, m = 0); the caller
    passes the trailing history_seconds(params) of scored samples before the new ones."""
    p = check_params(params)
    if kind not in (None, "count", "gauge"):
        raise ValueError(f"kind={kind!r} is invalid: use 'count', 'gauge' or None (decide from the data)")
    try:
        if not isinstance(tz, str):
            raise TypeError
        ZoneInfo(tz)
    except (TypeError, ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"tz={tz!r} is invalid: use an IANA time zone name such as 'Europe/Paris' or 'UTC'") from None
    ts_a = np.asarray(ts, dtype=np.int64).reshape(-1)
    x_a = np.asarray(x, dtype=np.float64).reshape(-1)
    n = len(ts_a)
    if len(x_a) != n:
        raise ValueError(f"ts and x have different lengths ({n} and {len(x_a)}): pass one value per timestamp")
    if n > 1 and not bool(np.all(np.diff(ts_a) > 0)):
        raise ValueError("ts is not strictly increasing: sort the samples and drop duplicate timestamps")
    if bool(np.any(np.isinf(x_a))):
        raise ValueError("x contains +/-inf: pass finite values (nan for a missing value)")
    if (scalars is None) != (state is None):
        raise ValueError("pass both scalars and state from the previous Result, or neither for a fresh start")
    if scalars is None:
        sc = _fresh_scalars(tz, kind)
        st_in = np.zeros((0, STATE_WIDTH))
    else:
        if not isinstance(scalars, dict) or scalars.get("version") != STATE_VERSION:
            raise ValueError("scalars are not from this detector version: start afresh (scalars=None, state=None)")
        sc = {k: (v.copy() if isinstance(v, dict | list) else v) for k, v in scalars.items()}
        sc["excursions"] = [list(e) for e in scalars["excursions"]]
        sc["scale_cache"] = {int(k): list(v) for k, v in scalars["scale_cache"].items()}
        st_in = np.asarray(state, dtype=np.float64)
        if st_in.size == 0:
            st_in = np.zeros((0, STATE_WIDTH))
        if st_in.ndim != 2 or st_in.shape[1] != STATE_WIDTH:
            raise ValueError(f"state has shape {st_in.shape}: pass (m, {STATE_WIDTH}) rows from Result.state")
    m = len(st_in)
    if m > n:
        raise ValueError(f"state has {m} rows but only {n} samples were given: pass the scored samples plus new ones")
    if sc["last_ts"] is not None:
        if m and int(ts_a[m - 1]) != sc["last_ts"]:
            raise ValueError(
                "the state rows do not end at the last scored sample (ts[m-1] != scalars['last_ts']): "
                "pass the trailing scored samples with their state rows, then the new samples"
            )
        if m < n and int(ts_a[m]) <= sc["last_ts"]:
            raise ValueError("a new sample is not after the last scored one: pass only later samples as new")
    if n == m:
        return _empty_result(n, m, st_in.copy(), sc)
    if sc["t0"] is None:
        sc["t0"] = int(ts_a[0])
    base = int(sc["count"]) - m  # global index of row 0
    t0 = int(sc["t0"])

    valid = np.isfinite(x_a)
    inc = _in_windows(ts_a, incident_windows, "incident_windows")
    expw = _in_windows(ts_a, expected_windows, "expected_windows")

    # ---- per-row state arrays
    flags = np.zeros(n, dtype=np.int64)
    flags[:m] = st_in[:, C_FLAGS].astype(np.int64)
    e_seas = np.full(n, np.nan)
    resid = np.full(n, np.nan)
    zs = np.zeros(n)
    pred = np.full((3, n), np.nan)
    lev7 = np.full(n, np.nan)
    aw = p["agg_ws"]
    naw = len(aw)
    zagg = np.full((_MAX_AGG, n), np.nan)
    eraw = np.zeros(n)
    zw = np.zeros(n)
    excp = np.zeros((2 + _MAX_AGG, n))
    if m:
        e_seas[:m] = st_in[:, C_ESEAS]
        resid[:m] = st_in[:, C_RESID]
        zs[:m] = st_in[:, C_Z]
        pred[:, :m] = st_in[:, C_PWEEK : C_PRECENT + 1].T
        lev7[:m] = st_in[:, C_LEV7]
        zagg[:, :m] = st_in[:, C_ZAGG : C_ZAGG + _MAX_AGG].T
        eraw[:m] = st_in[:, C_ERAW]
        zw[:m] = st_in[:, C_ZW]
        excp[:, :m] = st_in[:, C_EXC : C_EXC + 2 + _MAX_AGG].T
    proc = (flags & F_PROC) != 0
    usable = (flags & F_USABLE) != 0
    scale_ok = (flags & F_SCALE) != 0
    expf = (flags & F_EXPF) != 0
    alarm = (flags & F_ALARM) != 0
    agg_ok = np.vstack([(flags & F_AGG1) != 0, (flags & F_AGG2) != 0])
    # incidents (also labelled after the fact) are never learnt from
    usable &= ~inc
    scale_ok &= ~inc
    agg_ok &= ~inc

    # ---- outputs for the new rows
    k_new = n - m
    o_exp = np.full(k_new, np.nan)
    o_lo = np.full(k_new, np.nan)
    o_hi = np.full(k_new, np.nan)
    o_score = np.full(k_new, np.nan)
    o_alarm = np.full(k_new, np.nan)
    o_rule = [""] * k_new
    o_pred = [""] * k_new
    o_note = [""] * k_new

    # ---- transform, decided at the end of the warm-up
    if sc["transform"] is None:
        gi = base + np.arange(n)
        cand = np.flatnonzero((ts_a >= t0 + p["min_history"]) & (gi >= p["min_samples"]))
        if len(cand):
            j_we = int(cand[0])
            x0 = x_a[:j_we][valid[:j_we]]
            tr = p["transform"]
            if tr == "auto":
                if kind == "count":
                    tr = "sqrt"
                else:
                    tr = _choose_transform(x0) if p["transform_rule"] == "v2" else _choose_transform_v1(x0)
            c = 0.0
            if tr == "log":
                med0 = _fmed(x0) if len(x0) else 1.0
                c = max(float(np.percentile(x0, 5)) if len(x0) else 1.0, 0.05 * med0, 1e-6)
            integer0 = len(x0) > 0 and x0.min() >= 0 and bool(np.all(np.abs(x0 - np.round(x0)) < 1e-9))
            count_mode = tr == "sqrt" and kind != "gauge" and (integer0 or kind == "count")
            if count_mode:
                floor = 0.5  # Poisson noise in sqrt(x + 3/8) space
            elif tr == "log":
                floor = 0.02
            else:
                y0 = _fwd(x0, tr, c) if len(x0) else np.zeros(1)
                vals = np.unique(np.round(y0, 9))
                q = float(np.min(np.diff(vals))) if len(vals) > 1 else 1.0
                floor = max(q, 1e-3 * _fmed(np.abs(y0)), 1e-9)
            sc.update(transform=tr, c=float(c), floor=float(floor), count_mode=bool(count_mode))
            sc["warm_count"] = base + j_we
    tr = sc["transform"]
    if tr is None:
        st = np.zeros((n, STATE_WIDTH))
        st[:m] = st_in
        for col in (C_ESEAS, C_RESID, C_PWEEK, C_PDAY, C_PRECENT, C_LEV7, C_ZAGG, C_ZAGG + 1):
            st[m:, col] = np.nan
        sc["count"] = base + n
        sc["last_ts"] = int(ts_a[-1])
        return _empty_result(n, m, st, sc)
    c = float(sc["c"])
    floor = float(sc["floor"])
    mult = bool(sc["count_mode"])
    ymin = math.sqrt(0.375) if tr == "sqrt" else -math.inf
    warm_count = int(sc["warm_count"])
    unproc = np.flatnonzero(~proc)
    j_start = int(unproc[0]) if len(unproc) else n

    y = np.full(n, np.nan)
    y[valid] = _fwd(x_a[valid], tr, c)
    xv = np.where(valid, x_a, 0.0)

    # ---- local time and look-up tables (vectorised, only for the rows to process)
    le = ts_a + _utc_offsets(ts_a, tz)
    order = np.argsort(le, kind="stable")
    le_sorted = le[order]
    tod = le % DAY
    J = np.arange(j_start, n)
    tsJ = ts_a[J]
    leJ = le[J]
    lo7 = np.searchsorted(ts_a, tsJ - 7 * DAY, "left")
    lo_lev = np.searchsorted(ts_a, tsJ - p["level_window"], "left")
    lo_sc = np.searchsorted(ts_a, tsJ - p["scale_window"], "left")
    lo_sel = np.searchsorted(ts_a, tsJ - p["select_window"], "left")
    lo_rec = np.searchsorted(ts_a, tsJ - p["recent_max"], "left")
    tau = p["tau"]
    wk_a = [np.searchsorted(le_sorted, leJ - k * WEEK - tau, "left") for k in range(1, p["weeks"] + 1)]
    wk_b = [np.searchsorted(le_sorted, leJ - k * WEEK + tau, "right") for k in range(1, p["weeks"] + 1)]
    dy_a = [np.searchsorted(le_sorted, leJ - k * DAY - tau, "left") for k in range(1, p["days"] + 1)]
    dy_b = [np.searchsorted(le_sorted, leJ - k * DAY + tau, "right") for k in range(1, p["days"] + 1)]
    full7_t = t0 + 7 * DAY

    # ---- carried scalars
    scache: dict[int, list[float]] = sc["scale_cache"]
    calib = sc["calib"]
    ex_state = sc["excursions"]
    prev_sign = int(sc["last_alarm_sign"]) if j_start == m else 0
    sens = float(p["sensitivity"])
    sq = math.sqrt

    def gather(jr: int, j: int, ra: list[IntArray], rb: list[IntArray], adjust: bool) -> tuple[float, int]:
        vals = []
        hit = 0
        for a_, b_ in zip(ra, rb, strict=True):
            a, b = int(a_[jr]), int(b_[jr])
            if a >= b:
                continue
            js = order[a:b]
            js = js[js < j]
            js = js[usable[js]]
            if len(js) == 0:
                continue
            hit += 1
            v = y[js]
            if adjust:
                adj = lev7[j] - lev7[js]
                adj[(ts_a[js] < full7_t) | ~np.isfinite(adj)] = 0.0
                v = v + adj
            vals.append(v)
        if not vals:
            return math.nan, 0
        return _fmed(np.concatenate(vals)), hit

    def terr(k: int, a: int, j: int) -> float | None:
        e = np.abs(y[a:j] - pred[k, a:j])
        ok = scale_ok[a:j] & np.isfinite(e)
        nn = int(np.count_nonzero(ok))
        return float(np.sum(e[ok])) / nn if nn >= 36 else None

    def recurrence(j: int, exc: float) -> IntArray | None:
        sign = 1 if exc > 0 else -1
        need = p["recur_frac"] * abs(exc)
        rt = p["recur_tau"]

        def support(centres: Iterable[int]) -> list[IntArray]:
            hits = []
            for cc in centres:
                a = int(np.searchsorted(le_sorted, cc - rt, "left"))
                b = int(np.searchsorted(le_sorted, cc + rt, "right"))
                js = order[a:b]
                js = js[js < j]
                if len(js) == 0:
                    continue
                r = resid[js]
                okm = np.isfinite(r) & (sign * r >= need) & (sign * zs[js] >= p["z_sust"])
                if okm.any():
                    hits.append(js[okm])
            return hits

        lj = int(le[j])
        h = support([lj - k * WEEK for k in range(1, p["recur_weeks"] + 1)])
        if h and len(h) >= p["recur_min_weeks"]:
            return np.concatenate(h)
        if p["recur_min_days"]:
            h = support([lj - k * DAY for k in range(1, 8)])
            if h and len(h) >= p["recur_min_days"]:
                return np.concatenate(h)
        if p["recur_month"]:
            h = support(_prev_month_centres(lj))
            if h:
                return np.concatenate(h)
        return None

    def seen_before(j: int, s: float) -> bool:
        cnt = 0
        for k in range(1, p["weeks"] + 1):
            cc = int(le[j]) - k * WEEK
            a = int(np.searchsorted(le_sorted, cc - p["seen_tau"], "left"))
            b = int(np.searchsorted(le_sorted, cc + p["seen_tau"], "right"))
            js = order[a:b]
            js = js[js < j]
            js = js[usable[js]]
            if len(js) and bool(np.any(np.abs(y[js] - y[j]) <= p["seen_tol"] * s)):
                cnt += 1
        return cnt >= p["seen_min_weeks"]

    for jr in range(len(J)):
        j = j_start + jr
        t = int(ts_a[j])
        g = base + j
        out = j - m  # output index (>= 0 for new rows)
        proc[j] = True
        a7 = int(lo7[jr])
        u7 = usable[a7:j]
        c7 = int(np.count_nonzero(u7))
        if c7 > 0:
            lev7[j] = float(np.sum(y[a7:j][u7])) / c7
        if not valid[j]:
            prev_sign = 0
            continue
        yj = float(y[j])

        # 1. predictors
        pw, nweeks = gather(jr, j, wk_a, wk_b, p["trend_adjust"] and t >= full7_t and math.isfinite(lev7[j]))
        pdy, _ = gather(jr, j, dy_a, dy_b, False)
        ar = int(lo_rec[jr])
        sel = usable[ar:j] & (np.abs(zs[ar:j]) < p["recent_zmax"])
        rv = y[ar:j][sel][-p["recent_n"] :]
        prc = _fmed(rv) if len(rv) >= 3 else math.nan
        pred[0, j], pred[1, j], pred[2, j] = pw, pdy, prc

        # 2. choose a predictor
        a_sel = int(lo_sel[jr])
        chosen = -1  # 0 week, 1 day, 2 recent
        if math.isfinite(pw) and nweeks >= p["full_weeks"]:
            chosen = 0
        else:
            opts = [k for k in (0, 1) if math.isfinite(pred[k, j])]
            if opts:
                chosen = opts[-1]
                if len(opts) == 2 and p["selection"]:
                    ew, ed = terr(0, a_sel, j), terr(1, a_sel, j)
                    if ew is not None and ed is not None and ew < ed:
                        chosen = 0
        if p["selection"] and math.isfinite(prc):
            er = terr(2, a_sel, j)
            es = terr(chosen, a_sel, j) if chosen >= 0 else None
            if chosen < 0 or (er is not None and es is not None and er * p["recent_penalty"] < es):
                chosen = 2
        if chosen < 0:
            usable[j] = not inc[j]
            prev_sign = 0
            continue
        # cold stage: no established weekly predictor (recent: the first two weeks)
        cold = t - t0 < 2 * WEEK if chosen == 2 else not (chosen == 0 and nweeks >= p["full_weeks"])
        e_s = max(float(pred[chosen, j]), ymin)
        e_seas[j] = e_s
        hkey = int(tod[j] // HOUR)

        # 3. level correction: median residual (ratio for counts) of the last level_window
        e_i = e_s
        if p["level"]:
            al = int(lo_lev[jr])
            jj = np.arange(al, j)
            jj = jj[valid[al:j] & ~expf[al:j] & np.isfinite(e_seas[al:j])]
            if len(jj) >= p["level_min_n"]:
                h = len(jj) // 2
                ce = scache.get(hkey)
                s_prev = ce[1] if ce is not None else floor
                if mult:
                    q = y[jj] / e_seas[jj]
                    m1, m2, mm = _fmed(q[:h]), _fmed(q[h:]), _fmed(q)
                    if abs(m1 - m2) * e_s <= max(s_prev, 0.25 * abs(mm - 1) * e_s):
                        e_i = max(e_s * mm, ymin)
                else:
                    q = y[jj] - e_seas[jj]
                    m1, m2, mm = _fmed(q[:h]), _fmed(q[h:]), _fmed(q)
                    if abs(m1 - m2) <= max(s_prev, 0.25 * abs(mm)):
                        e_i = max(e_s + mm, ymin)

        # 4. scale (cached per hour of day)
        ce = scache.get(hkey)
        if ce is None or t - ce[0] >= p["scale_refresh"]:
            a_s = int(lo_sc[jr])
            mk = scale_ok[a_s:j]
            r_hist = resid[a_s:j][mk]
            s_new: float | None = None
            if len(r_hist) >= 20:
                d_t = np.abs(((tod[a_s:j][mk] - tod[j]) + DAY // 2) % DAY - DAY // 2)
                near = r_hist[d_t <= p["scale_tod"]]
                s_new = _mad(near if len(near) >= p["scale_min_n"] else r_hist)
            else:
                hv = y[a_s:j][usable[a_s:j]]
                if len(hv) >= 4:
                    s_new = 1.4826 * _fmed(np.abs(np.diff(hv))) / math.sqrt(2) * 2.0
            s_new = max(s_new if s_new is not None else floor, floor)
            sa_new = [1.0] * _MAX_AGG
            for wi in range(naw):
                ag = zagg[wi, a_s:j][agg_ok[wi, a_s:j]]
                v = _mad(ag) if len(ag) >= 50 else 1.0
                sa_new[wi] = max(v, 0.8 if mult else 0.8 / math.sqrt(aw[wi]))
            ce = [float(t if len(r_hist) >= 20 else t - p["scale_refresh"]), float(s_new), *sa_new]
            scache[hkey] = ce
        s = ce[1]

        z = (yj - e_i) / s
        z_s = (yj - e_s) / s
        resid[j] = yj - e_i
        zs[j] = z
        eraw[j] = _inv(e_i, tr, c)
        za = [0.0] * _MAX_AGG
        for wi in range(naw):
            w = aw[wi]
            lo_a = max(0, j - w + 1)
            if mult:
                xw = np.where((alarm[lo_a:j] | expf[lo_a:j]), eraw[lo_a:j], xv[lo_a:j])
                s_obs = float(np.sum(xw)) + float(x_a[j])
                s_exp = float(np.sum(eraw[lo_a : j + 1]))
                zagg[wi, j] = (sq(max(s_obs, 0.0) + 0.375) - sq(max(s_exp, 0.0) + 0.375)) / s
            else:
                zagg[wi, j] = (float(np.sum(zw[lo_a:j])) + z) / (j + 1 - lo_a)
            agg_ok[wi, j] = j - lo_a + 1 == w and bool(scale_ok[lo_a:j].all()) and not inc[j]
            za[wi] = float(zagg[wi, j]) / ce[2 + wi]
        lo_k = max(0, j - p["nwin"] + 1)
        wz = np.sort(zs[lo_k : j + 1])
        sign = 1 if z > 0 else -1
        kk = p["k"]
        s_sust = (float(wz[-kk]) if sign > 0 else float(wz[kk - 1])) if len(wz) >= kk else 0.0
        stat = [z, s_sust, *za]

        extra = p["cold_extra"] if cold else 0.0
        zb = (p["z_sust"] + extra) / sens
        if g < warm_count:
            # warm-up sample, processed when the transform was decided: learnt from, no output
            usable[j] = not inc[j]
            scale_ok[j] = not inc[j]
            zw[j] = z
            prev_sign = 0
            continue
        pname = ("week", "day", "recent")[chosen]
        if out >= 0:
            o_exp[out] = eraw[j]
            o_lo[out] = _inv(max(e_i - zb * s, ymin), tr, c) if tr == "sqrt" else _inv(e_i - zb * s, tr, c)
            o_hi[out] = _inv(e_i + zb * s, tr, c)
            o_score[out] = z
            o_pred[out] = pname

        # 5. rules with calibrated thresholds
        if calib is None or t - calib[0] >= p["scale_refresh"]:
            a_c = int(np.searchsorted(ts_a, t - p["calib_window"], "left"))
            th = []
            for si in range(2 + _MAX_AGG):
                col = excp[si, a_c:j]
                for sg in (1, -1):
                    pk = np.sort(col[sg * col > 0] * sg)
                    r_ = p["calib_rank"]
                    th.append(float(pk[-r_]) if (p["calib"] and len(pk) >= r_) else 0.0)
            calib = [float(t), th]
        th = calib[1]
        cm = p["calib_mult"]
        sgi = 0 if sign > 0 else 1
        t_point = max(p["z_point"], cm * th[sgi]) + extra
        t_sust = max(p["z_sust"], cm * th[2 + sgi]) + extra
        ew_ = p["cold_extra_win"] if cold else 0.0
        t_win = [max(p["z_agg"], cm * th[4 + 2 * wi + sgi]) + ew_ for wi in range(naw)]
        tp_s, ts_s = t_point / sens, t_sust / sens
        rule = ""
        gc = p["gauge_confirm"]
        confirmed = mult or gc <= 1 or (j >= gc - 1 and bool(np.all(sign * zs[j - gc + 1 : j] >= ts_s)))
        if sign * z >= tp_s and confirmed:
            rule = "point"
        elif sign * s_sust >= ts_s and sign * z >= ts_s:
            rule = "k_of_n"
        elif (
            chosen != 2
            and (p["week1_win"] or t - t0 >= 7 * DAY)
            and sign * z >= p["agg_min_z"] / sens
            and any(sign * za[wi] >= t_win[wi] / sens for wi in range(naw))
        ):
            rule = "window"
        cont = prev_sign == sign
        if not rule and cont and sign * z >= p["z_keep"] / sens:
            rule = "hold"
        note = ""
        if rule and not cont:
            # 6. vetoes for a new alarm event
            need = (p["agg_min_z"] if rule == "window" else p["z_sust"]) / sens
            zveto = p["z_sust"] / sens
            if p["level_veto"] and sign * z_s < need:
                rule, note = "", "level"
            elif (
                cold
                and p["cold_veto"]
                and chosen != 2
                and rule != "window"
                and math.isfinite(prc)
                and sign * (yj - max(prc, ymin)) / s < zveto
            ):
                rule, note = "", "cold"
            elif (
                p["week_veto"]
                and chosen != 0
                and math.isfinite(pw)
                and nweeks >= p["full_weeks"]
                and sign * (yj - max(pw, ymin)) / s < zveto
            ):
                rule, note = "", "week"
        is_al = bool(rule)

        # 7. expected behaviour: declared windows, cold-start policies, seen before, recurrence
        expected_flag = False
        policy = False
        if is_al and expw[j]:
            is_al, expected_flag, note = False, True, "expected"
        if (
            is_al
            and z > 0
            and not cont
            and (
                (not p["week1_up"] and t - t0 < 7 * DAY and (p["policy_scope"] == "all" or mult))
                or (
                    p["month_prior"]
                    and t - t0 < 32 * DAY
                    and (p["month_scope"] == "all" or mult)
                    and _month_boundary(int(le[j]))
                )
            )
        ):
            is_al, expected_flag, policy, note = False, True, True, "policy"
        if is_al and p["seen"] and not cont and rule in ("point", "k_of_n") and seen_before(j, s):
            is_al, expected_flag, note = False, True, "seen"
        if is_al and p["recur"] and not cont:
            sup = recurrence(j, yj - e_i)
            if sup is not None:
                is_al, expected_flag, note = False, True, "recurring"
                usable[sup] = valid[sup] & ~inc[sup]
        if not is_al:
            rule = ""
        alarm[j] = is_al
        expf[j] = expected_flag
        if out >= 0:
            o_alarm[out] = float(is_al)
            o_rule[out] = rule
            o_note[out] = note
        zw[j] = 0.0 if (is_al or expected_flag) else z
        if is_al or policy:
            prev_sign = sign if is_al else 0
            usable[j] = not p["exclude_flagged"]
            scale_ok[j] = not p["exclude_flagged"]
        else:
            prev_sign = 0
            usable[j] = True
            scale_ok[j] = (not expected_flag and abs(z) < t_point) or not p["exclude_flagged"]
        if inc[j]:
            usable[j] = scale_ok[j] = False

        # 8. excursion bookkeeping for the calibration
        touched = expected_flag or bool(inc[j])
        for si in range(2 + naw):
            v = stat[si]
            c0 = _EXC_START[si]
            gs = 1 if v >= c0 else (-1 if v <= -c0 else 0)
            es_ = ex_state[si]
            if gs != es_[0]:
                if es_[0] != 0 and not es_[2]:
                    excp[si, j] = es_[0] * es_[1]
                es_[0], es_[1], es_[2] = gs, 0.0, False
            if gs:
                es_[1] = max(es_[1], abs(float(v)))
                es_[2] = bool(es_[2] or touched)

    # ---- state out
    fl = (
        proc * F_PROC
        + usable * F_USABLE
        + scale_ok * F_SCALE
        + expf * F_EXPF
        + alarm * F_ALARM
        + inc * F_INCIDENT
        + agg_ok[0] * F_AGG1
        + agg_ok[1] * F_AGG2
    )
    st = np.empty((n, STATE_WIDTH))
    st[:, C_FLAGS] = fl
    st[:, C_ESEAS] = e_seas
    st[:, C_RESID] = resid
    st[:, C_Z] = zs
    st[:, C_PWEEK : C_PRECENT + 1] = pred.T
    st[:, C_LEV7] = lev7
    st[:, C_ZAGG : C_ZAGG + _MAX_AGG] = zagg.T
    st[:, C_ERAW] = eraw
    st[:, C_ZW] = zw
    st[:, C_EXC : C_EXC + 2 + _MAX_AGG] = excp.T
    if m:
        a_, b_ = st[:m], st_in
        diff = (a_ != b_) & ~(np.isnan(a_) & np.isnan(b_))
        changed = np.flatnonzero(diff.any(axis=1)).astype(np.int64)
    else:
        changed = np.zeros(0, dtype=np.int64)

    sc["count"] = base + n
    sc["last_ts"] = int(ts_a[-1])
    sc["last_alarm_sign"] = int(prev_sign)
    sc["scale_cache"] = {str(k): [float(v) for v in vals] for k, vals in sorted(scache.items())}
    sc["calib"] = None if calib is None else [float(calib[0]), [float(v) for v in calib[1]]]
    sc["excursions"] = [[int(e[0]), float(e[1]), bool(e[2])] for e in ex_state]
    return Result(
        expected=o_exp,
        lower=o_lo,
        upper=o_hi,
        score=o_score,
        alarm=o_alarm,
        rule=o_rule,
        predictor=o_pred,
        note=o_note,
        state=st,
        changed=changed,
        scalars=sc,
    )
