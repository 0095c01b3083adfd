"""Install, upgrade and uninstall pg_guardian in a database, by either path.

``extension``: ``CREATE EXTENSION pg_guardian CASCADE`` where the server has the files
(``make install``). ``sql``: the same script as plain SQL, with ``guardian.migrations`` as the
version table, for managed Postgres. Every operation runs in one transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from pg_guardian import scripts
from pg_guardian.errors import InstallError

EXTENSION = "pg_guardian"
METHODS = ("auto", "extension", "sql")


@dataclass(frozen=True)
class InstallState:
    """What is installed in a database: version and path (``None`` when not installed).

    ``notes``: what an install or upgrade had to do differently here, for the user to read
    (a fallback to the plain-SQL path, features a non-superuser cannot have).
    """

    version: str | None
    method: str | None
    notes: tuple[str, ...] = ()


def migrations_dir() -> Path:
    """The folder with the plain-SQL path's own files (packaged, or the checkout's)."""
    packaged = Path(__file__).resolve().parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def installed(conn: psycopg.Connection) -> InstallState:
    """Which version of pg_guardian the database has, and how it was installed."""
    row = conn.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = %s", (EXTENSION,)).fetchone()
    if row:
        return InstallState(row[0], "extension")
    if conn.execute("SELECT to_regclass('guardian.migrations')").fetchone()[0] is not None:  # type: ignore[index]
        version = conn.execute(
            "SELECT version FROM guardian.migrations ORDER BY applied_at DESC, version DESC LIMIT 1"
        ).fetchone()
        return InstallState(version[0] if version else None, "sql")
    return InstallState(None, None)


def server_versions(conn: psycopg.Connection) -> list[str]:
    """Versions whose extension files are installed on the server."""
    rows = conn.execute(
        "SELECT version FROM pg_catalog.pg_available_extension_versions WHERE name = %s",
        (EXTENSION,),
    ).fetchall()
    return [r[0] for r in rows]


def plain_sql(script: str) -> str:
    """An extension script made runnable outside CREATE EXTENSION.

    Drops the psql guard (``\\echo ... \\quit``) and ``pg_extension_config_dump`` calls, the
    only two extension-only statements the scripts use.
    """
    lines = []
    for line in script.splitlines():
        if line.startswith("\\echo") or line.startswith("SELECT pg_catalog.pg_extension_config_dump("):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _check_version(version: str) -> None:
    known = scripts.known_versions()
    if version not in known:
        raise InstallError(f"unknown pg_guardian version {version!r}; this controller knows {', '.join(known)}")


def install(conn: psycopg.Connection, *, method: str = "auto", version: str | None = None) -> InstallState:
    """Install pg_guardian; refuse if it is already there. Leaves nothing behind on failure."""
    if method not in METHODS:
        raise InstallError(f"unknown install method {method!r}; use one of {', '.join(METHODS)}")
    version = version or scripts.default_version()
    _check_version(version)
    state = installed(conn)
    if state.version:
        raise InstallError(
            f"pg_guardian {state.version} is already installed ({state.method} path); "
            "run `pg-guardian upgrade` to move to a newer version, or `pg-guardian status` to inspect it"
        )
    on_server = version in server_versions(conn)
    if method == "extension" and not on_server:
        raise InstallError(
            f"the server has no pg_guardian {version} extension files; run `make install` on the "
            "database host (needs postgresql-server-dev-15), or install with --method sql"
        )
    notes: list[str] = []
    with _server_notes(conn, notes), conn.transaction():
        use_extension = method == "extension" or (method == "auto" and on_server)
        if use_extension:
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("CREATE EXTENSION {} VERSION {} CASCADE").format(
                            sql.Identifier(EXTENSION), sql.Literal(version)
                        )
                    )
            except psycopg.errors.InsufficientPrivilege as exc:
                reason = exc.diag.message_primary or str(exc)
                if method == "extension":
                    raise InstallError(
                        f"{reason}: CREATE EXTENSION pg_guardian needs a superuser; as the database "
                        "owner of a managed Postgres (RDS, Cloud SQL, Supabase) install with --method sql "
                        "(or the default --method auto, which falls back to it)"
                    ) from exc
                notes.append(f"CREATE EXTENSION refused ({reason}): installed as plain SQL instead")
                use_extension = False
        if not use_extension:
            exists = conn.execute("SELECT to_regnamespace('guardian')").fetchone()[0]  # type: ignore[index]
            if exists is not None:
                raise InstallError(
                    "schema guardian already exists but pg_guardian is not recorded in it; "
                    "drop or rename that schema first (it is not ours to overwrite)"
                )
            conn.execute("CREATE SCHEMA guardian")
            conn.execute((migrations_dir() / "version_table.sql").read_text())
            _apply_plain(conn, scripts.released_script(version), version, "install")
        _ensure_dblink(conn)
    state = installed(conn)
    return InstallState(state.version, state.method, tuple(notes))


@contextmanager
def _server_notes(conn: psycopg.Connection, notes: list[str]) -> Iterator[None]:
    """Collect the script's own NOTICEs (``pg_guardian: ...``): what this server cannot have."""

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if text.startswith("pg_guardian: "):
            notes.append(text.removeprefix("pg_guardian: "))

    conn.add_notice_handler(keep)
    try:
        yield
    finally:
        conn.remove_notice_handler(keep)


RECORDER_SCHEMA = "guardian_ext"


def _ensure_dblink(conn: psycopg.Connection) -> bool:
    """Install dblink (for strict-mode rejection records that survive the rollback) if the
    server has it and it is not there yet. Optional: without it rejections go to the log."""
    present = conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'dblink'").fetchone()
    if present:
        return True
    available = conn.execute("SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'dblink'").fetchone()
    if not available:
        return False
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(RECORDER_SCHEMA)))
            conn.execute(
                sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                    sql.Identifier(RECORDER_SCHEMA),
                    sql.Literal("pg_guardian: dblink, for strict-mode rejections that survive the rollback"),
                )
            )
            conn.execute(sql.SQL("CREATE EXTENSION dblink SCHEMA {}").format(sql.Identifier(RECORDER_SCHEMA)))
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def _apply_plain(conn: psycopg.Connection, script: str, version: str, kind: str) -> None:
    body = plain_sql(script)
    conn.execute(body)
    conn.execute(
        "INSERT INTO guardian.migrations (version, kind, script_sha256) VALUES (%s, %s, %s)",
        (version, kind, hashlib.sha256(body.encode()).hexdigest()),
    )


def upgrade(conn: psycopg.Connection, *, to: str | None = None) -> tuple[str, str]:
    """Upgrade to ``to`` (default: the newest version). Returns (old, new)."""
    target = to or scripts.default_version()
    _check_version(target)
    state = installed(conn)
    if not state.version:
        raise InstallError("pg_guardian is not installed here; run `pg-guardian install` first")
    if state.version == target:
        return state.version, target
    try:
        chain = scripts.update_chain(state.version, target)
    except LookupError as exc:
        raise InstallError(
            f"cannot upgrade pg_guardian from {state.version} to {target}: {exc}; downgrades are not supported"
        ) from exc
    with conn.transaction():
        if state.method == "extension":
            if target not in server_versions(conn):
                raise InstallError(
                    f"the server has no pg_guardian {target} extension files; run `make install` "
                    "on the database host first"
                )
            conn.execute(
                sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(sql.Identifier(EXTENSION), sql.Literal(target))
            )
        else:
            # The guardian's own event triggers would report the update's DDL and grants as a
            # user's changes (ALTER EXTENSION marks them as the extension's instead): they are
            # off for this transaction only, and back as they were before it commits.
            paused = _pause_event_triggers(conn)
            for path in chain:
                step_to = re.fullmatch(r".*--(.+)\.sql", path.name).group(1)  # type: ignore[union-attr]
                _apply_plain(conn, scripts.update_script(path), step_to, "update")
            for name, enabled in paused:
                conn.execute(
                    sql.SQL("ALTER EVENT TRIGGER {} {}").format(sql.Identifier(name), sql.SQL(_ENABLE[enabled]))
                )
    return state.version, target


_ENABLE = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}


def _pause_event_triggers(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Disable the guardian's enabled event triggers in this transaction (a superuser's; on
    managed Postgres there are none). Returns each one's name and state, to restore."""
    rows = conn.execute(
        """SELECT e.evtname, e.evtenabled FROM pg_catalog.pg_event_trigger AS e
             JOIN pg_catalog.pg_proc AS p ON p.oid = e.evtfoid
            WHERE p.pronamespace = 'guardian'::regnamespace AND e.evtenabled <> 'D'
            ORDER BY e.evtname"""
    ).fetchall()
    for name, _ in rows:
        conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(name)))
    return [(str(name), str(state)) for name, state in rows]


def uninstall(conn: psycopg.Connection, *, drop_alerts: bool = False) -> str | None:
    """Remove pg_guardian. Alert history is copied to ``guardian_history`` unless ``drop_alerts``.

    Returns the name of the archive table, if one was made. Roles are cluster-wide and stay.
    """
    state = installed(conn)
    if not state.version:
        raise InstallError("pg_guardian is not installed here; nothing to uninstall")
    locked = conn.execute("SELECT to_regclass('guardian.lockdown_status') IS NOT NULL").fetchone()
    if locked and locked[0] and conn.execute("SELECT 1 FROM guardian.lockdown_status").fetchone():
        # Uninstalling would drop the record of which privileges the lockdown took.
        raise InstallError(
            "a lockdown is active and uninstalling would lose what it took; "
            "lift it first with: SELECT guardian.unlock(); (pg-guardian lockdown unlock)"
        )
    archive = None
    with conn.transaction():
        if not drop_alerts:
            stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
            archive = f"guardian_history.monitoring_alerts_{stamp}"
            conn.execute("CREATE SCHEMA IF NOT EXISTS guardian_history")
            conn.execute(
                sql.SQL("CREATE TABLE {}.{} AS TABLE guardian.monitoring_alerts").format(
                    sql.Identifier("guardian_history"),
                    sql.Identifier(f"monitoring_alerts_{stamp}"),
                )
            )
        if conn.execute("SELECT to_regprocedure('guardian.unregister_jobs()')").fetchone()[0]:  # type: ignore[index]
            conn.execute("SELECT guardian.unregister_jobs()")
        # Triggers on user tables are not extension members; remove them first.
        triggers = conn.execute(
            """SELECT t.tgname, n.nspname, c.relname
                 FROM pg_catalog.pg_trigger AS t
                 JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
                 JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
                 JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                WHERE p.pronamespace = 'guardian'::regnamespace
                  AND t.tgrelid NOT IN (SELECT c.oid FROM pg_catalog.pg_class AS c
                                         WHERE c.relnamespace = 'guardian'::regnamespace)
                  AND NOT t.tgisinternal AND t.tgparentid = 0"""
        ).fetchall()
        for name, schema, table in triggers:
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), sql.Identifier(schema, table)))
        if state.method == "extension":
            conn.execute(sql.SQL("DROP EXTENSION {}").format(sql.Identifier(EXTENSION)))
            # CREATE EXTENSION made the schema but does not own it; it is empty now.
            conn.execute("DROP SCHEMA IF EXISTS guardian")
        else:
            conn.execute("DROP SCHEMA guardian CASCADE")
        if conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s "
            "AND obj_description(oid, 'pg_namespace') LIKE 'pg_guardian:%%'",
            (RECORDER_SCHEMA,),
        ).fetchone():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(RECORDER_SCHEMA)))
    return archive
