"""A database's environment and guard mode (``guardian.set_environment``, ``guardian.set_mode``)."""

from __future__ import annotations

import psycopg


def set_environment(conn: psycopg.Connection, environment: str) -> None:
    """Declare the environment (production, staging, local, ...); the change is audited as an alert."""
    conn.execute("SELECT guardian.set_environment(%s)", (environment,))


def set_mode(conn: psycopg.Connection, mode: str) -> None:
    """Set the guard mode of the whole database (off, warn or strict)."""
    conn.execute("SELECT guardian.set_mode(%s)", (mode,))
