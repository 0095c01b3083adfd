"""Guardian jobs run by the controller where pg_cron does not run them.

``run_due`` is one pass (``pg-guardian jobs run``); ``serve`` loops (``pg-guardian jobs
serve``). Both call ``guardian.run_job(name)``, the same SQL pg_cron runs, so a job is
lock-protected and recorded the same way whoever runs it. Schedules are five-field cron
expressions read in UTC, as pg_cron 1.4 reads them. Scheduling with pg_cron itself is
:mod:`pg_guardian.jobs.scheduling`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_guardian import db
from pg_guardian.errors import ConfigError, ConnectionFailed

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_SEARCH_LIMIT = timedelta(days=366 * 5)


@dataclass(frozen=True)
class Schedule:
    """A parsed cron schedule: the allowed values of each field (Sunday is 0)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, at: datetime) -> bool:
        """Does the minute ``at`` (UTC) match? Day of month and day of week are OR-ed when
        both are restricted, as in cron."""
        if at.minute not in self.minutes or at.hour not in self.hours or at.month not in self.months:
            return False
        return self._day_matches(at)

    def _day_matches(self, at: datetime) -> bool:
        day_ok = at.day in self.days
        weekday_ok = (at.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def previous(self, now: datetime) -> datetime | None:
        """The latest matching minute at or before ``now`` (None if none within five years)."""
        at = now.astimezone(UTC).replace(second=0, microsecond=0)
        limit = at - _SEARCH_LIMIT
        while at >= limit:
            if at.month not in self.months or not self._day_matches(at):
                at = at.replace(hour=0, minute=0) - timedelta(minutes=1)
            elif at.hour not in self.hours:
                at = at.replace(minute=0) - timedelta(minutes=1)
            elif at.minute not in self.minutes:
                at -= timedelta(minutes=1)
            else:
                return at
        return None


def parse_schedule(expr: str) -> Schedule:
    """Parse ``minute hour day-of-month month day-of-week`` (``*``, ``a``, ``a-b``, lists, ``/n``).

    Raises ConfigError naming the bad field.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(
            f"invalid job schedule {expr!r}: expected five fields (minute hour day-of-month month "
            "day-of-week), e.g. '*/5 * * * *'"
        )
    values: list[frozenset[int]] = []
    for text, (name, low, high) in zip(fields, _FIELDS, strict=True):
        allowed: set[int] = set()
        for part in text.split(","):
            base, _, step_text = part.partition("/")
            try:
                step = int(step_text) if step_text else 1
                if base == "*":
                    start, end = low, high
                elif "-" in base:
                    a, b = base.split("-", 1)
                    start, end = int(a), int(b)
                else:
                    start = int(base)
                    end = high if step_text else start
            except ValueError:
                start = end = step = -1
            if step < 1 or not (low <= start <= end <= high):
                raise ConfigError(
                    f"invalid {name} field {part!r} in job schedule {expr!r}: use *, a number "
                    f"from {low} to {high}, a range a-b, a list a,b or a step */n"
                )
            allowed.update(range(start, end + 1, step))
        if name == "day of week" and 7 in allowed:
            allowed.add(0)
        values.append(frozenset(allowed))
    minutes, hours, days, months, weekdays = values
    return Schedule(
        minutes,
        hours,
        days,
        months,
        weekdays,
        days_restricted=fields[2] != "*",
        weekdays_restricted=fields[4] != "*",
    )


@dataclass(frozen=True)
class JobRun:
    """One run of a job by the controller: what ``guardian.run_job`` said and how long it took."""

    name: str
    result: str
    seconds: float

    @property
    def failed(self) -> bool:
        return self.result.startswith("error")


def list_jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every guardian job with its schedule and last run (``guardian.job_status``)."""
    cur = conn.cursor(row_factory=dict_row)
    return list(
        cur.execute(
            """SELECT name, schedule, enabled, last_status, last_started_at, last_finished_at,
                  last_result, last_error, runs, failures, lag, overdue
             FROM guardian.job_status ORDER BY name"""
        ).fetchall()
    )


def due_jobs(conn: psycopg.Connection, now: datetime | None = None) -> list[str]:
    """Enabled jobs whose schedule fired since they last started (or were registered)."""
    now = now or datetime.now(UTC)
    due = []
    rows = conn.execute(
        "SELECT name, schedule, coalesce(last_started_at, created_at) FROM guardian.jobs WHERE enabled ORDER BY name"
    ).fetchall()
    for name, schedule, since in rows:
        fired = parse_schedule(schedule).previous(now)
        if fired is not None and fired > since:
            due.append(name)
    return due


def run_jobs(conn: psycopg.Connection, names: Iterable[str]) -> list[JobRun]:
    """Run jobs one by one, each in its own transaction; a failing job does not stop the rest."""
    names = list(names)
    runs = []
    known = {r[0] for r in conn.execute("SELECT name FROM guardian.jobs").fetchall()}
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown guardian job {name!r}; known jobs: {', '.join(sorted(known)) or 'none'}")
    for name in names:
        started = time.monotonic()
        row = conn.execute("SELECT guardian.run_job(%s)", (name,)).fetchone()
        if not conn.autocommit:
            conn.commit()
        runs.append(JobRun(name, str(row[0]) if row else "", time.monotonic() - started))
    return runs


def run_due(
    conn: psycopg.Connection,
    *,
    all_jobs: bool = False,
    names: Iterable[str] = (),
    now: datetime | None = None,
) -> list[JobRun]:
    """One pass: the named jobs, else every enabled job with ``all_jobs``, else the due ones."""
    selected = list(names)
    if not selected:
        if all_jobs:
            selected = [
                r[0] for r in conn.execute("SELECT name FROM guardian.jobs WHERE enabled ORDER BY name").fetchall()
            ]
        else:
            selected = due_jobs(conn, now)
    return run_jobs(conn, selected)


def _note_serving(conn: psycopg.Connection) -> None:
    """Record that `jobs serve` runs this database's jobs (so `status` knows; best effort)."""
    # An older version, or a role that may run jobs but not note it: the runs still count.
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT guardian.note_job_scheduler('jobs serve')")


def seconds_to_next_minute(now: datetime | None = None) -> float:
    """Seconds until the next minute boundary (plus a little, so the minute has turned)."""
    now = now or datetime.now(UTC)
    return 60.0 - now.second - now.microsecond / 1_000_000 + 0.05


def serve(
    dsn: str | None,
    *,
    echo: Callable[[str], None],
    passes: int | None = None,
    interval: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run due jobs at every minute (or every ``interval`` seconds) until stopped.

    Never stops on a failing job (run_job records it and raises JOB_FAILED) nor on a lost
    connection (it reconnects, backing off up to a minute). Returns the number of passes.
    Stops after ``passes`` passes when given, or on KeyboardInterrupt.
    """
    if interval is not None and interval <= 0:
        raise ConfigError(f"invalid --interval {interval}: give a number of seconds above 0")
    if passes is not None and passes < 1:
        raise ConfigError(f"invalid --passes {passes}: give at least 1")
    db.resolve_dsn(dsn)
    conn: psycopg.Connection | None = None
    backoff = 1.0
    done = 0
    try:
        while passes is None or done < passes:
            try:
                if conn is None or conn.closed:
                    conn = db.connect(dsn, "jobs serve", autocommit=True)
                    backoff = 1.0
                    _note_serving(conn)
                for run in run_due(conn):
                    echo(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z {run.name}: {run.result} ({run.seconds:.2f}s)")
            except (ConnectionFailed, psycopg.OperationalError) as exc:
                echo(
                    f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z connection lost: "
                    f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}; "
                    f"retrying in {backoff:.0f}s"
                )
                if conn is not None:
                    conn.close()
                conn = None
                done += 1
                if passes is None or done < passes:
                    sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            except psycopg.Error as exc:
                # An unexpected SQL error (guardian not installed, run_job missing): say so
                # and keep serving; the next pass may find it fixed.
                diag = exc.diag.message_primary or str(exc)
                echo(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z error: {diag}")
            done += 1
            if passes is None or done < passes:
                sleep(interval if interval is not None else seconds_to_next_minute())
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        if conn is not None:
            conn.close()
    return done
