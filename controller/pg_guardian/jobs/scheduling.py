"""The guardian's jobs scheduled with pg_cron (``extension/sql/10_jobs``: ``12_scheduler.sql``,
``50_guard_status.sql``): in this database, or from pg_cron's own database with
``cron.schedule_in_database``; and whether anything runs them at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg.rows import dict_row

from pg_guardian import db
from pg_guardian.errors import ConnectionFailed

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


def _has_scheduler(conn: psycopg.Connection) -> bool:
    """Does this version of pg_guardian know where its jobs are scheduled (guardian.job_scheduler)?"""
    return _scalar(conn, "SELECT to_regclass('guardian.job_scheduler')") is not None


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
    if not _has_scheduler(conn):
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
    anything (uninstall goes on: the jobs then fail harmlessly and can be removed by hand).
    Nothing to do for a version of pg_guardian that predates job scheduling."""
    if not _has_scheduler(conn):
        return None
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
