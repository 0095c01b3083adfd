"""The environments (databases) the dashboard shows, each reached on its own.

Reads go through a few pooled read connections per environment; actions open a connection of
their own named after the dashboard user (``application_name = 'pg-guardian dashboard: alice'``,
which the guardian records in the context of the alerts the action raises and in schema
changes). An environment that cannot be reached is remembered as down for a few seconds, so
that a dead server does not slow every page; the others keep working. :func:`gather` asks every
environment at once and returns, per environment, either the answer or why it is down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import conninfo

from pg_guardian.dashboard.settings import Database
from pg_guardian.errors import GuardianError

T = TypeVar("T")
CONNECT_TIMEOUT = 3
STATEMENT_TIMEOUT_MS = 15_000
ACTION_STATEMENT_TIMEOUT_MS = 300_000
DOWN_FOR = 5.0  # seconds an unreachable environment is not retried
IDLE_CONNECTIONS = 4
PING_AFTER = 10.0  # seconds idle after which a pooled connection is checked before use


class Down(Exception):
    """The environment cannot be reached (or has no pg_guardian); the message says why."""


class NotInstalled(Down):
    """The database answers but has no pg_guardian."""


class Stale(Down):
    """A pooled connection turned out to be dead (a server restart, a terminated backend)."""


def describe(dsn: str) -> str:
    """A DSN without its password."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid dsn>"
    host = params.get("host") or "local socket"
    return f"database {params.get('dbname', '?')} on {host}:{params.get('port', 5432)}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _options(dsn: str, timeout_ms: int) -> str:
    options = f"-c statement_timeout={timeout_ms} -c lock_timeout=5000"
    extra = conninfo.conninfo_to_dict(dsn).get("options")
    return f"{extra} {options}" if extra else options


class Environment:
    """One configured database: pooled read connections, action connections, down state."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.name = database.name
        self._idle: list[tuple[psycopg.Connection, float]] = []
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.last_error: str | None = None

    def _connect(self, dsn: str, application: str, timeout_ms: int) -> psycopg.Connection:
        try:
            return psycopg.connect(
                dsn,
                autocommit=True,
                application_name=application,
                connect_timeout=CONNECT_TIMEOUT,
                options=_options(dsn, timeout_ms),
            )
        except psycopg.Error as exc:
            raise Down(f"cannot connect to {describe(dsn)}: {_reason(exc)}") from exc

    def mark_down(self, reason: str) -> None:
        with self._lock:
            self.last_error = reason
            self._down_until = time.monotonic() + DOWN_FOR
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    @contextmanager
    def reader(self) -> Iterator[psycopg.Connection]:
        """A read connection from the pool; Down when the environment cannot be reached."""
        if self.down:
            raise Down(self.last_error or "unreachable")
        with self._lock:
            conn, since = self._idle.pop() if self._idle else (None, 0.0)
        if conn is not None and time.monotonic() - since > PING_AFTER:
            # A connection idle for a while may have died with a server restart: check it
            # rather than report the environment down on its first query.
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                conn.close()
        reused = conn is not None and not conn.closed
        if conn is None or conn.closed:
            try:
                conn = self._connect(self.database.dsn, "pg-guardian dashboard", STATEMENT_TIMEOUT_MS)
            except Down as exc:
                self.mark_down(str(exc))
                raise
        ok = False
        try:
            yield conn
            ok = True
        except psycopg.OperationalError as exc:
            if conn.closed or conn.broken:
                reason = f"lost the connection to {describe(self.database.dsn)}: {_reason(exc)}"
                if reused:  # the caller tries once more on a new connection
                    raise Stale(reason) from exc
                self.mark_down(reason)
                raise Down(reason) from exc
            raise
        finally:
            healthy = ok and not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            with self._lock:
                if healthy and len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append((conn, time.monotonic()))
                    conn = None
            if conn is not None:
                conn.close()
        self.last_error = None

    @contextmanager
    def actor(self, user: str) -> Iterator[psycopg.Connection]:
        """A connection for one action by a dashboard user (admin DSN when configured)."""
        conn = self._connect(
            self.database.action_dsn, f"pg-guardian dashboard: {user}"[:63], ACTION_STATEMENT_TIMEOUT_MS
        )
        try:
            # guardian._actor() records '<user>@dashboard via <role>' as who acknowledged,
            # resolved, cleaned up, restored or approved (autocommit: it lasts the session).
            conn.execute("SELECT pg_catalog.set_config('pg_guardian.actor', %s, false)", (f"{user}@dashboard",))
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


@dataclass
class Result(Generic[T]):
    """One environment's answer, or why it has none."""

    env: str
    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self, convert: Callable[[T], Any] = lambda v: v) -> dict[str, Any]:
        if self.error is not None:
            return {"environment": self.env, "up": False, "error": self.error}
        return {
            "environment": self.env,
            "up": True,
            **({"data": convert(self.value)} if self.value is not None else {}),
        }


class Environments:
    """Every configured environment, and a thread pool to ask them all at once."""

    def __init__(self, databases: Sequence[Database]) -> None:
        self.items = {d.name: Environment(d) for d in databases}
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(self.items)), thread_name_prefix="dashboard-env")

    def __iter__(self) -> Iterator[Environment]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def names(self) -> list[str]:
        return list(self.items)

    def get(self, name: str) -> Environment | None:
        return self.items.get(name)

    def gather(self, query: Callable[[psycopg.Connection], T], names: Sequence[str] | None = None) -> list[Result[T]]:
        """Run ``query`` on a read connection of each environment, in parallel."""
        chosen = [self.items[n] for n in (names if names is not None else self.items) if n in self.items]

        def one(env: Environment) -> Result[T]:
            try:
                try:
                    with env.reader() as conn:
                        return Result(env.name, query(conn))
                except Stale:
                    with env.reader() as conn:
                        return Result(env.name, query(conn))
            except (Down, GuardianError) as exc:
                return Result(env.name, error=str(exc))
            except psycopg.Error as exc:
                return Result(env.name, error=sql_message(exc))

        return list(self._pool.map(one, chosen))

    def close(self) -> None:
        """Close the idle connections (the app may start again: the thread pool stays)."""
        for env in self:
            env.close()


def sql_message(exc: psycopg.Error) -> str:
    """What the database said, with its detail and hint, in one line."""
    diag = exc.diag
    parts = [diag.message_primary or _reason(exc)]
    if diag.message_detail:
        parts.append(diag.message_detail.rstrip("."))
    if diag.message_hint:
        parts.append(diag.message_hint)
    return "; ".join(parts)
