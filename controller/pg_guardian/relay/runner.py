"""The relay process: route new alerts into the outbox, and deliver it channel by channel.

One main thread LISTENs on ``guardian_alerts`` (polling every ``poll_interval`` in case a
notification is lost) and routes new alerts into notices; one worker thread per channel claims
messages, sends them and records the outcome. Every thread has its own connection and
reconnects on its own, so a database restart or a network error only delays delivery.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg

from pg_guardian import db
from pg_guardian.errors import ConnectionFailed, GuardianError
from pg_guardian.relay import store
from pg_guardian.relay.channels import DeliveryFailed, Sender, make_sender, pacer_for
from pg_guardian.relay.config import ChannelConfig, Config, Route
from pg_guardian.relay.logs import LOGGER_NAME, event
from pg_guardian.relay.model import Message

CHANNEL_NOTIFY = "guardian_alerts"
_WAIT_SLICE = 0.5  # how often a waiting thread looks at the stop flag
_LOGGED_PER_BATCH = 20  # dashboard-only alerts logged one by one per intake batch, then counted


class Stopped(Exception):
    """The relay was asked to stop while waiting for the database."""


@dataclass
class RunSummary:
    """What a relay run did (``--once`` prints it)."""

    routed: int = 0
    notices: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("routed", "notices", "delivered", "failed", "dead")}


class Link:
    """One relay connection: opened on demand, registered, reopened with backoff after errors."""

    def __init__(
        self,
        dsn: str | None,
        name: str,
        stop: threading.Event,
        log: logging.Logger,
        *,
        listen: bool = False,
    ) -> None:
        self.dsn, self.name, self.stop, self.log, self.listen = dsn, name, stop, log, listen
        self.conn: psycopg.Connection | None = None
        self.token = 0
        self._delay = 0.2

    def get(self) -> psycopg.Connection:
        """The open connection; waits (with backoff) for the database while it is down."""
        while self.conn is None or self.conn.closed:
            if self.stop.is_set():
                raise Stopped
            try:
                conn = db.connect(self.dsn, f"relay {self.name}", autocommit=True)
                store.check_ready(conn)
                self.token = store.register(conn)
                if self.listen:
                    conn.execute(f"LISTEN {CHANNEL_NOTIFY}")
                self.conn = conn
                self._delay = 0.2
                event(
                    self.log,
                    logging.INFO,
                    "relay.connected",
                    f"{self.name} connected",
                    connection=self.name,
                    token=self.token,
                    database=conn.info.dbname,
                )
            except ConnectionFailed as exc:
                self._backoff(str(exc))
            except psycopg.OperationalError as exc:
                self._backoff(_one_line(exc))
        return self.conn

    def _backoff(self, reason: str) -> None:
        event(
            self.log,
            logging.WARNING,
            "relay.db_unavailable",
            "database unavailable; retrying",
            connection=self.name,
            error=reason,
            retry_in=round(self._delay, 2),
        )
        self.stop.wait(self._delay)
        self._delay = min(self._delay * 2, 5.0)

    def broken(self, exc: BaseException) -> None:
        """Drop the connection after an error; the next get() reconnects."""
        event(
            self.log,
            logging.WARNING,
            "relay.db_error",
            "lost the database connection",
            connection=self.name,
            error=_one_line(exc),
        )
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sql_error(log: logging.Logger, where: str, exc: psycopg.Error) -> None:
    """Log an SQL error that rolled back one step; the relay carries on."""
    event(
        log,
        logging.ERROR,
        "relay.sql_error",
        f"{where}: {_one_line(exc)}",
        connection=where,
        sqlstate=exc.sqlstate,
        error=_one_line(exc),
    )


def backoff_seconds(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with ±20 % jitter: initial, 2x, 4x, ... up to maximum."""
    base = min(maximum, initial * (2 ** max(attempt - 1, 0)))
    return float(base * (rng or random).uniform(0.8, 1.2))


class ChannelWorker(threading.Thread):
    """Claims, sends and records the messages of one channel."""

    def __init__(self, relay: Relay, config: ChannelConfig, sender: Sender) -> None:
        super().__init__(name=f"relay-{config.name}", daemon=True)
        self.relay, self.config, self.sender = relay, config, sender
        self.wake = threading.Event()
        self.link = Link(relay.dsn, f"channel {config.name}", relay.stopping, relay.log)
        self.pacer = pacer_for(config.destination, config.min_interval)
        self.pool = (
            ThreadPoolExecutor(config.concurrency, thread_name_prefix=f"send-{config.name}")
            if config.concurrency > 1
            else None
        )
        self._unreported: list[UUID] = []  # delivered while the database was away
        self.db_lock = threading.Lock()  # the worker's connection, shared by its sending threads
        self.error: BaseException | None = None

    @property
    def claim_limit(self) -> int:
        if self.config.min_interval > 0 or self.config.concurrency == 1:
            return 1 if self.config.min_interval > 0 else min(self.relay.config.relay.batch_size, 8)
        return min(self.relay.config.relay.batch_size, self.config.concurrency * 8)

    def run(self) -> None:
        try:
            while not self.relay.stopping.is_set():
                try:
                    worked = self.step()
                except Stopped:
                    break
                except psycopg.OperationalError as exc:
                    self.link.broken(exc)
                    continue
                except psycopg.Error as exc:  # e.g. a race with another relay: try again shortly
                    sql_error(self.relay.log, f"channel {self.config.name}", exc)
                    self.relay.stopping.wait(1.0)
                    continue
                if self.relay.once:
                    if not worked:
                        break
                    continue
                if not worked:
                    self._idle()
        except BaseException as exc:  # a bug, or a refusal (role lacks guardian_relay): stop all
            self.error = exc
            self.relay.fail(exc)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            self.sender.close()
            self.link.close()

    def _idle(self) -> None:
        wait = self.relay.config.relay.poll_interval
        try:
            due = store.next_due_in(self.link.get(), self.config.name)
        except psycopg.OperationalError as exc:
            self.link.broken(exc)
            due = None
        except Stopped:
            return
        if due is not None:
            wait = min(wait, max(due, 0.05))
        wait = max(wait, self.pacer.ready_in())
        self.wake.wait(wait)
        self.wake.clear()

    def step(self) -> bool:
        """One round: claim what is due, send it, record it. False when nothing was due."""
        conn = self.link.get()
        if self._unreported:
            with self.db_lock:
                store.delivered(conn, self._unreported)
                self._unreported.clear()
        if not self.relay.once and self.pacer.ready_in() > 0:
            return False
        settings = self.relay.config.relay
        messages = store.claim(
            conn,
            self.config.name,
            self.link.token,
            self.claim_limit,
            group_interval=self.config.group_interval,
            lease=settings.lease,
            max_attempts=settings.max_attempts,
            sample=self.config.sample,
        )
        if not messages:
            return False
        if self.pool is None:
            for msg in messages:
                self._deliver(msg)
        else:
            # Each sending thread records its own outcome at once: a relay killed at any moment
            # has at most `concurrency` messages sent but not recorded (its duplicates).
            for fut in [self.pool.submit(self._deliver, m) for m in messages]:
                fut.result()
        return True

    def _deliver(self, msg: Message) -> None:
        self._record(msg, self._send(msg))

    def _send(self, msg: Message) -> DeliveryFailed | float:
        """Send one message; returns the seconds it took, or the failure."""
        wait = self.pacer.take()
        if wait > 0:
            time.sleep(wait)
        started = time.perf_counter()
        try:
            if not msg.alerts:
                raise DeliveryFailed("message has no alerts left (deleted?)", permanent=True)
            self.sender.send(msg)
        except DeliveryFailed as exc:
            if exc.retry_after:
                self.pacer.pause(exc.retry_after)
            return exc
        except Exception as exc:  # a bug in rendering must not stop the relay: retry, then dead-letter
            return DeliveryFailed(f"{type(exc).__name__}: {exc}")
        return time.perf_counter() - started

    def _record(self, msg: Message, outcome: DeliveryFailed | float) -> None:
        settings = self.relay.config.relay
        fields = {
            "channel": self.config.name,
            "message_id": str(msg.id),
            "idempotency_key": msg.idempotency_key,
            "alerts": msg.alert_count,
            "attempt": msg.attempts,
        }
        if not isinstance(outcome, DeliveryFailed):
            with self.db_lock:
                try:
                    store.delivered(self.link.get(), [msg.id])
                except psycopg.OperationalError as exc:
                    self._unreported.append(msg.id)
                    self.link.broken(exc)
            self.relay.summary.add(delivered=1)
            event(
                self.relay.log,
                logging.INFO,
                "message.delivered",
                f"delivered {msg.idempotency_key}",
                ms=round(outcome * 1000, 1),
                **fields,
            )
            return
        retry_in = (
            outcome.retry_after
            if outcome.retry_after is not None
            else backoff_seconds(msg.attempts, settings.backoff_initial, settings.backoff_max)
        )
        max_attempts = 0 if outcome.permanent else settings.max_attempts
        with self.db_lock:
            try:
                result = store.failed(self.link.get(), msg.id, self.link.token, str(outcome), retry_in, max_attempts)
            except psycopg.OperationalError as exc:
                self.link.broken(exc)
                result = "unrecorded"  # the lease dies with the session: it is retried anyway
        self.relay.summary.add(failed=1, dead=int(result == "dead"))
        level = logging.ERROR if result == "dead" else logging.WARNING
        name = "message.dead" if result == "dead" else "message.failed"
        event(
            self.relay.log,
            level,
            name,
            f"{self.config.name} delivery failed: {outcome}",
            error=str(outcome),
            outcome=result,
            retry_in=round(retry_in, 2) if result == "retry" else None,
            **fields,
        )


class Relay:
    """Routes alerts and runs one worker per channel until stopped (or, with ``once``, drained)."""

    def __init__(
        self,
        dsn: str | None,
        config: Config,
        *,
        once: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        self.dsn = db.resolve_dsn(dsn)
        self.config = config
        self.once = once
        self.log = log or logging.getLogger(LOGGER_NAME)
        self.stopping = threading.Event()
        self.summary = RunSummary()
        self.workers: dict[str, ChannelWorker] = {}
        self.link = Link(self.dsn, "main", self.stopping, self.log, listen=not once)
        self._error: BaseException | None = None
        self._logged = 0
        self._policy_routes: tuple[Route, ...] | None = None

    def stop(self) -> None:
        """Ask every thread to finish what it is sending and stop."""
        self.stopping.set()
        for worker in self.workers.values():
            worker.wake.set()

    def fail(self, exc: BaseException) -> None:
        """A thread hit an error it cannot recover from: stop everything, run() re-raises it."""
        if self._error is None:
            self._error = exc
        self.stop()

    def run(self) -> RunSummary:
        """Relay until stop() (or, with ``once``, until nothing is due). Raises GuardianError."""
        cfg = self.config
        if not cfg.monitoring_enabled:
            event(
                self.log,
                logging.WARNING,
                "relay.disabled",
                "monitoring is disabled (MONITORING_ENABLED=false): alerts are recorded, not sent",
            )
            return self.summary
        event(
            self.log,
            logging.INFO,
            "relay.started",
            "relay started",
            once=self.once,
            channels=list(cfg.channels),
            database=db.describe(self.dsn),
            poll_interval=cfg.relay.poll_interval,
        )
        for warning in cfg.warnings:
            event(self.log, logging.WARNING, "config.warning", warning)
        try:
            self.link.get()  # fail fast on a missing relay or a role without guardian_relay
            for name, chan in cfg.channels.items():
                self.workers[name] = ChannelWorker(self, chan, make_sender(chan, cfg.app_url, cfg.template_dir))
            if self.once:
                self._route_all()
                for worker in self.workers.values():
                    worker.start()
                for worker in self.workers.values():
                    worker.join()
            else:
                for worker in self.workers.values():
                    worker.start()
                self._serve()
        except Stopped:
            pass
        finally:
            self.stop()
            for worker in self.workers.values():
                if worker.is_alive():
                    worker.join()
            self.link.close()
        if self._error is not None:
            if isinstance(self._error, GuardianError):
                raise self._error
            raise GuardianError(f"relay stopped on an unexpected error: {self._error!r}") from self._error
        event(self.log, logging.INFO, "relay.stopped", "relay stopped", **self.summary.as_dict())
        return self.summary

    def _serve(self) -> None:
        poll = self.config.relay.poll_interval
        last = 0.0
        while not self.stopping.is_set():
            try:
                conn = self.link.get()
                notified = False
                if time.monotonic() - last >= poll or last == 0.0:
                    notified = True
                else:
                    for _ in conn.notifies(timeout=min(_WAIT_SLICE, poll), stop_after=1):
                        notified = True
                if notified:
                    self._route_all()
                    last = time.monotonic()
            except psycopg.OperationalError as exc:
                self.link.broken(exc)
                last = 0.0  # notifications were lost meanwhile: look as soon as we are back
            except psycopg.Error as exc:  # the batch was rolled back: its alerts are still queued
                sql_error(self.log, "main", exc)
                self.stopping.wait(1.0)
                last = 0.0

    def _route_all(self) -> None:
        """Route every waiting alert, one transaction per batch, waking the channels it feeds."""
        batch = self.config.relay.intake_batch
        while not self.stopping.is_set():
            conn = self.link.get()
            with conn.transaction():
                alerts = store.take_intake(conn, batch)
                notices = self.route(alerts, store.policy_routes(conn))
                queued = store.enqueue(conn, notices)
            self.summary.add(routed=len(alerts), notices=queued)
            for name in {n.channel for n in notices}:
                if name in self.workers:
                    self.workers[name].wake.set()
            if len(alerts) < batch:
                return

    def route(
        self, alerts: Sequence[store.IntakeAlert], policy_routes: tuple[Route, ...] | None = None
    ) -> list[store.Notice]:
        """Notices for each alert's channels; logs the alerts that go to no channel.

        ``policy_routes`` (the database policy's ``alerts.routes``) replace the configured routes.
        """
        cfg = self.config if policy_routes is None else replace(self.config, routes=policy_routes)
        if policy_routes != self._policy_routes:
            self._policy_routes = policy_routes
            event(
                self.log,
                logging.INFO,
                "routes.policy",
                "routing by the database policy's routes"
                if policy_routes is not None
                else "routing by the configured routes",
                routes=len(policy_routes) if policy_routes is not None else None,
            )
        now = datetime.now(UTC)
        max_age = timedelta(seconds=cfg.relay.max_age)
        notices: list[store.Notice] = []
        logged = stale = 0
        for alert in alerts:
            if cfg.relay.max_age and alert.last_seen_at < now - max_age:
                stale += 1
                continue
            channels = [c for c in cfg.route(alert.labels()) if c in cfg.channels]
            if not channels:
                logged += 1
                if logged <= _LOGGED_PER_BATCH:
                    event(
                        self.log,
                        logging.INFO,
                        "alert.logged",
                        f"{alert.severity}: {alert.type} (dashboard only)",
                        alert_id=str(alert.alert_id),
                        severity=alert.severity,
                        type=alert.type,
                        environment=alert.environment,
                        table=alert.table_name,
                        occurrences=alert.occurrences,
                    )
                continue
            for name in channels:
                chan = cfg.channels[name]
                notices.append(
                    store.Notice(
                        alert.alert_id,
                        name,
                        group_key(chan, alert),
                        chan.group_wait,
                        chan.repeat_interval,
                    )
                )
        if alerts:
            event(
                self.log,
                logging.INFO,
                "intake.routed",
                f"routed {len(alerts)} alert(s)",
                alerts=len(alerts),
                notices=len(notices),
                dashboard_only=logged,
                stale=stale,
            )
        return notices


def group_key(channel: ChannelConfig, alert: store.IntakeAlert) -> str | None:
    """The group an alert joins on a channel (None: a message of its own)."""
    if not channel.grouped:
        return None
    labels = alert.labels()
    return "|".join(f"{f}={labels.get(f) or ''}" for f in channel.group_by) or "all"


@contextmanager
def running(relay: Relay) -> Iterator[Relay]:
    """Run a relay in a background thread (tests, benchmarks, the demo); stopped on exit."""
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            relay.run()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="relay-main", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(timeout=30)
        if "error" in box:
            raise box["error"]
