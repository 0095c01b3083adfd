"""Guardian jobs run by the controller where pg_cron does not run them.

``run_due`` is one pass (``pg-guardian jobs run``); ``serve`` loops (``pg-guardian jobs
serve``). Both call ``guardian.run_job(name)``, the same SQL pg_cron runs, so a job is
lock-protected and recorded the same way whoever runs it. Schedules are five-field cron
expressions read in UTC, as pg_cron 1.4 reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import conninfo
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


# pg_cron's database, when pg_cron is loaded (a placeholder of the same name is not pg_cron).
CRON_DATABASE = (
    "SELECT nullif(setting, '') FROM pg_catalog.pg_settings "
    "WHERE name = 'cron.database_name' AND context = 'postmaster'"
)
CRON_SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"


@dataclass
class Scheduling:
    """Where the guardian's jobs are scheduled, or why they are not and what to run."""

    scheduled: bool
    database: str | None
    detail: str
    fix: str | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)


def remote_job_name(job: str, database: str) -> str:
    """The pg_cron job name of a job scheduled from pg_cron's database for ``database``.

    pg_cron names are unique per user, and one user may guard several databases: the name
    carries the database (hashed when it would pass pg_cron's 63-byte limit).
    """
    name = f"guardian_{job}@{database}"
    if len(name.encode()) > 63:
        name = f"guardian_{job}@{hashlib.sha256(database.encode()).hexdigest()[:16]}"
    return name


def _scalar(conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _create_pg_cron(conn: psycopg.Connection) -> str | None:
    """Create the pg_cron extension here if it is missing; the refusal's reason, if refused."""
    if _scalar(conn, "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'"):
        return None
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION pg_cron")
    except psycopg.Error as exc:
        return exc.diag.message_primary or str(exc)
    return None


def schedule(conn: psycopg.Connection) -> Scheduling:
    """Schedule the guardian jobs of ``conn``'s database wherever pg_cron can run them.

    In this database when ``cron.database_name`` names it (creating the pg_cron extension if it
    is missing and allowed), else from pg_cron's database with ``cron.schedule_in_database``.
    When neither is possible, the result says exactly what to run; nothing is half done.
    """
    here = conn.info.dbname
    user = conn.info.user
    if _scalar(conn, "SELECT to_regclass('guardian.job_scheduler')") is None:
        return Scheduling(False, None, "this version of pg_guardian predates job scheduling", "pg-guardian upgrade")
    cron_db = _scalar(conn, CRON_DATABASE)
    serve = f"keep `pg-guardian jobs serve` running for database {here}"
    if cron_db is None:
        return Scheduling(
            False,
            None,
            "pg_cron is not loaded on this server",
            f"{serve}, or add pg_cron to shared_preload_libraries, restart, and run `pg-guardian jobs register`",
        )
    if cron_db == here:
        refused = _create_pg_cron(conn)
        if refused:
            return Scheduling(
                False,
                cron_db,
                f"pg_cron runs in this database but its extension is not created ({refused})",
                "as a superuser run here: CREATE EXTENSION pg_cron; then `pg-guardian jobs register`",
            )
        try:
            rows = list(
                conn.cursor(row_factory=dict_row)
                .execute("SELECT job, scheduled, detail FROM guardian.register_jobs()")
                .fetchall()
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            return Scheduling(
                False,
                cron_db,
                f"{user} may not schedule pg_cron jobs: {exc.diag.message_primary}",
                f"as a superuser run: GRANT USAGE ON SCHEMA cron TO {user}; then `pg-guardian jobs register`",
            )
        count = sum(1 for r in rows if r["scheduled"])
        return Scheduling(True, cron_db, f"{count} job(s) scheduled with pg_cron in this database", None, rows)
    return _schedule_remote(conn, cron_db, serve)


def _schedule_remote(conn: psycopg.Connection, cron_db: str, serve: str) -> Scheduling:
    here = conn.info.dbname
    user = conn.info.user
    dsn = conninfo.make_conninfo(conn.info.dsn, dbname=cron_db, password=conn.info.password or None)
    grant = (
        f"as a superuser in database {cron_db} run: GRANT USAGE ON SCHEMA cron TO {user}; "
        f"GRANT EXECUTE ON FUNCTION {CRON_SCHEDULE_IN_DATABASE} TO {user}; then `pg-guardian jobs register`"
    )
    try:
        cron = db.connect(dsn, "jobs register", autocommit=True)
    except ConnectionFailed as exc:
        return Scheduling(
            False,
            cron_db,
            f"pg_cron runs in database {cron_db}, which {user} cannot reach: {exc}",
            f"let {user} connect to {cron_db} (GRANT CONNECT, pg_hba.conf), or {serve}",
        )
    with cron:
        refused = _create_pg_cron(cron)
        if refused:
            return Scheduling(
                False,
                cron_db,
                f"pg_cron runs in database {cron_db} but its extension is not created there ({refused})",
                f"as a superuser in database {cron_db} run: CREATE EXTENSION pg_cron; then `pg-guardian jobs register`",
            )
        may = _scalar(
            cron,
            "SELECT has_schema_privilege('cron', 'USAGE') AND has_function_privilege(%s, 'EXECUTE')",
            (CRON_SCHEDULE_IN_DATABASE,),
        )
        if not may:
            return Scheduling(
                False, cron_db, f"{user} may not schedule jobs in other databases with pg_cron ({cron_db})", grant
            )
        jobs = conn.execute("SELECT name, schedule, enabled FROM guardian.jobs ORDER BY name").fetchall()
        rows: list[dict[str, Any]] = []
        names = [remote_job_name(name, here) for name, _, _ in jobs]
        with cron.transaction():
            for (name, schedule_expr, enabled), cron_name in zip(jobs, names, strict=True):
                if enabled:
                    cron.execute(
                        "SELECT cron.schedule_in_database(%s, %s, %s, %s)",
                        (cron_name, schedule_expr, f"SELECT guardian.run_job('{name}')", here),
                    )
                    rows.append({"job": name, "scheduled": True, "detail": f"{schedule_expr} as {cron_name}"})
                else:
                    cron.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (cron_name,))
                    rows.append({"job": name, "scheduled": False, "detail": "disabled"})
            # Jobs of this database that the guardian no longer has.
            cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job "
                "WHERE database = %s AND jobname LIKE 'guardian\\_%%' AND jobname <> ALL(%s)",
                (here, names),
            )
        conn.execute("SELECT guardian.note_job_scheduler('pg_cron', %s)", (cron_db,))
    count = sum(1 for r in rows if r["scheduled"])
    return Scheduling(
        True,
        cron_db,
        f"{count} job(s) scheduled with pg_cron from database {cron_db} (cron.schedule_in_database)",
        None,
        rows,
    )


def unschedule_remote(conn: psycopg.Connection) -> str | None:
    """Remove the jobs scheduled for this database from pg_cron's database; what went wrong, if
    anything (uninstall goes on: the jobs then fail harmlessly and can be removed by hand)."""
    row = conn.execute("SELECT kind, database FROM guardian.job_scheduler").fetchone()
    if not row or row[0] != "pg_cron" or row[1] == conn.info.dbname:
        return None
    here = conn.info.dbname
    dsn = conninfo.make_conninfo(conn.info.dsn, dbname=row[1], password=conn.info.password or None)
    try:
        with db.connect(dsn, "uninstall", autocommit=True) as cron:
            cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s AND jobname LIKE 'guardian\\_%%'",
                (here,),
            )
    except (ConnectionFailed, psycopg.Error) as exc:
        return (
            f"could not remove this database's jobs from pg_cron in database {row[1]} ({exc}); there run: "
            f"SELECT cron.unschedule(jobid) FROM cron.job WHERE database = '{here}' AND jobname LIKE 'guardian\\_%';"
        )
    return None


def guard_status(conn: psycopg.Connection) -> dict[str, Any]:
    """``guardian.guard_status()``: is anything running the jobs here, and if not, what to run."""
    row = conn.cursor(row_factory=dict_row).execute("SELECT * FROM guardian.guard_status()").fetchone()
    return dict(row) if row else {"guarded": False, "problem": "guard status unavailable", "fix": None}


def register(conn: psycopg.Connection) -> Scheduling:
    """``pg-guardian jobs register``: schedule the jobs (see :func:`schedule`)."""
    return schedule(conn)
