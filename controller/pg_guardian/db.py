"""Connections: the one place that knows how the controller talks to Postgres."""

from __future__ import annotations

import os

import psycopg
from psycopg import conninfo

from pg_guardian.errors import ConfigError, ConnectionFailed

CONNECT_TIMEOUT = 10
STATEMENT_TIMEOUT_MS = 300_000


def resolve_dsn(dsn: str | None) -> str:
    """The DSN from ``--dsn``, else ``DATABASE_URL``; a clear error when neither is set."""
    value = dsn or os.environ.get("DATABASE_URL")
    if not value:
        raise ConfigError("no database given: pass --dsn 'postgresql://user@host/db' or set DATABASE_URL")
    try:
        conninfo.conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid DSN {value!r}: {exc}; expected e.g. postgresql://user@host:5432/db") from exc
    return value


def connect(
    dsn: str | None,
    command: str,
    *,
    autocommit: bool = False,
    statement_timeout_ms: int | None = STATEMENT_TIMEOUT_MS,
) -> psycopg.Connection:
    """Open a connection named ``pg-guardian <command>`` with connect and statement timeouts."""
    value = resolve_dsn(dsn)
    options = f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else ""
    params = conninfo.conninfo_to_dict(value)
    if params.get("options"):
        options = f"{params['options']} {options}".strip()
    try:
        return psycopg.connect(
            value,
            application_name=f"pg-guardian {command}",
            connect_timeout=CONNECT_TIMEOUT,
            options=options or None,
            autocommit=autocommit,
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConnectionFailed(
            f"cannot connect to {describe(value)}: {reason}; check the DSN and that the server is running"
        ) from exc


def describe(dsn: str) -> str:
    """A DSN without its password, for messages and logs."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid dsn>"
    params.pop("password", None)
    host = params.get("host", "local socket")
    return f"database {params.get('dbname', '?')!s} on {host}:{params.get('port', 5432)}"
