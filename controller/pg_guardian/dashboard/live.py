"""The live alert feed: LISTEN guardian_alerts in every environment, server-sent events out.

The guardian notifies ``guardian_alerts`` once per transaction that inserted alerts, and when
an open alert repeats (extension/sql/00_core/20_alerts.sql, 30_relay/10_relay_tables.sql); the
payload is empty. On each notification the hub reads what is new (alerts created, open alerts
repeated, since a moment before the last look: a transaction's ``created_at`` is when it
began, so a long one commits alerts that look older) and sends each alert it has not sent in
that state to every open page. One asyncio task per environment; one that is down is retried
with a back-off and shows as down to the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_guardian.dashboard import queries
from pg_guardian.dashboard.envs import CONNECT_TIMEOUT, Environment, Environments, describe

log = logging.getLogger("pg_guardian.dashboard")
CHANNEL = "guardian_alerts"
OVERLAP = timedelta(minutes=5)
KEEPALIVE = 15.0
SEEN = 5000
CATCH_UP = 500  # alerts read per wake-up, newest first


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Hub:
    """Fans notifications from every environment out to subscribers (one queue per page)."""

    def __init__(self, environments: Environments) -> None:
        self.environments = environments
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.status: dict[str, dict[str, Any]] = {e.name: {"up": None, "error": None} for e in environments}
        self._seen: dict[str, OrderedDict[str, int]] = {e.name: OrderedDict() for e in environments}
        self.stopping = False

    def start(self) -> None:
        for env in self.environments:
            self._tasks.append(asyncio.create_task(self._watch(env), name=f"listen {env.name}"))

    async def stop(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            # A stalled page misses events rather than holding memory.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((event, data))

    async def events(self) -> AsyncIterator[str]:
        """Server-sent events for one page: alerts, environment status, and keep-alives."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(maxsize=500)
        self._subscribers.add(queue)
        try:
            yield "retry: 2000\n\n"
            for env, state in self.status.items():
                yield _sse("status", {"environment": env, **state})
            while not self.stopping:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    break
                yield _sse(*item)
        finally:
            self._subscribers.discard(queue)

    def _set_status(self, env: str, up: bool, error: str | None) -> None:
        if self.status[env] != {"up": up, "error": error}:
            self.status[env] = {"up": up, "error": error}
            self.publish("status", {"environment": env, "up": up, "error": error})

    def _fresh(self, env: str, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen = self._seen[env]
        out = []
        for alert in alerts:
            key = str(alert["id"])
            if seen.get(key) == alert["occurrences"]:
                continue
            seen[key] = alert["occurrences"]
            seen.move_to_end(key)
            out.append(alert)
        while len(seen) > SEEN:
            seen.popitem(last=False)
        return out

    async def _catch_up(self, env: Environment, conn: psycopg.AsyncConnection[Any], since: datetime) -> datetime:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT now() AS now")
        row = await cur.fetchone()
        assert row is not None
        await cur.execute(
            f"""SELECT * FROM (
                    SELECT {queries.ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a WHERE a.created_at > %(since)s
                    UNION
                    SELECT {queries.ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a
                     WHERE a.resolved_at IS NULL AND a.last_seen_at > %(since)s) AS x
                 ORDER BY x.last_seen_at DESC LIMIT %(limit)s""",
            {"since": since, "limit": CATCH_UP},
        )
        # The newest first, so that a busy window never hides what just happened; sent oldest
        # first, and only what this feed has not sent yet.
        rows = [dict(r) for r in await cur.fetchall()]
        rows.reverse()
        for alert in self._fresh(env.name, rows):
            self.publish("alert", {"environment": env.name, "alert": jsonable(alert)})
        now: datetime = row["now"]
        return now - OVERLAP

    async def _watch(self, env: Environment) -> None:
        backoff = 1.0
        dsn = env.database.dsn
        while not self.stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    dsn, autocommit=True, application_name="pg-guardian dashboard live", connect_timeout=CONNECT_TIMEOUT
                )
            except psycopg.Error as exc:
                self._set_status(env.name, False, f"cannot connect to {describe(dsn)}: {_reason(exc)}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    row = await (await conn.execute("SELECT now()")).fetchone()
                    assert row is not None
                    since: datetime = row[0] - OVERLAP
                    # What is already there is not news: remember it without sending it.
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(
                        f"SELECT {queries.ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a "
                        "WHERE a.created_at > %s OR (a.resolved_at IS NULL AND a.last_seen_at > %s)",
                        (since, since),
                    )
                    self._fresh(env.name, [dict(r) for r in await cur.fetchall()])
                    self._set_status(env.name, True, None)
                    backoff = 1.0
                    while not self.stopping:
                        notified = False
                        async for _ in conn.notifies(timeout=KEEPALIVE, stop_after=1):
                            notified = True
                        if notified:
                            since = await self._catch_up(env, conn, since)
                        else:
                            await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self._set_status(env.name, False, f"lost {describe(dsn)}: {_reason(exc)}")
                log.warning("live feed of %s: %s", env.name, _reason(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(jsonable(data), separators=(',', ':'))}\n\n"
