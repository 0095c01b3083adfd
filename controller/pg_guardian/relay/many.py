"""Relaying several databases from one process: one :class:`~pg_guardian.relay.runner.Relay` per
database of the configuration file's ``[databases.*]``, each in its own thread.

Every relay has the same channels and routes and connects with the database's ``relay_dsn``
(else its ``dsn``); each alert already carries its own database's environment, so messages say
where they come from. Every log line of a database's relay has ``target=<its name>``. A relay
that stops on an error (a role without ``guardian_relay``, pg_guardian missing) stops the others
and :meth:`Relays.run` raises that error, naming the database; a database that is down is
waited for, as with one relay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from pg_guardian.config import Database
from pg_guardian.errors import GuardianError
from pg_guardian.relay.config import Config
from pg_guardian.relay.logs import LOGGER_NAME
from pg_guardian.relay.runner import Relay, RunSummary

_JOIN_SLICE = 0.5  # the main thread wakes this often, so that a signal handler runs promptly


class _Target(logging.Filter):
    """Adds ``target`` (the configured database's name) to every record of one relay."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def filter(self, record: logging.LogRecord) -> bool:
        record.target = self.target
        return True


def target_logger(base: logging.Logger, name: str) -> logging.Logger:
    """A child of ``base`` (so its handlers print it) whose records say ``target=name``."""
    logger = base.getChild(f"target.{name}")
    if not any(isinstance(f, _Target) for f in logger.filters):
        logger.addFilter(_Target(name))
    return logger


def total(summaries: Mapping[str, RunSummary]) -> RunSummary:
    """The summaries added up."""
    out = RunSummary()
    for summary in summaries.values():
        out.add(**summary.as_dict())
    return out


class Relays:
    """One relay per database, run together until stopped (or, with ``once``, all drained)."""

    def __init__(
        self,
        databases: Sequence[Database],
        config: Config,
        *,
        once: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        base = log or logging.getLogger(LOGGER_NAME)
        self.relays = {
            d.name: Relay(d.delivery_dsn, config, once=once, log=target_logger(base, d.name)) for d in databases
        }
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Ask every relay to finish what it is sending and stop."""
        for relay in self.relays.values():
            relay.stop()

    def run(self) -> dict[str, RunSummary]:
        """Run every relay in its own thread until stop() (or, with ``once``, until each is drained);
        returns each database's summary. Raises GuardianError naming the database that failed."""
        threads = [
            threading.Thread(target=self._run_one, args=(name, relay), name=f"relay-{name}", daemon=True)
            for name, relay in self.relays.items()
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(_JOIN_SLICE)
        finally:
            self.stop()
            for thread in threads:
                thread.join()
        if self._errors:
            name, exc = next(iter(self._errors.items()))
            raise GuardianError(f"relay for database {name}: {exc}") from exc
        return {name: relay.summary for name, relay in self.relays.items()}

    def _run_one(self, name: str, relay: Relay) -> None:
        try:
            relay.run()
        except BaseException as exc:  # GuardianError or a bug: stop the others, run() raises it
            with self._lock:
                self._errors.setdefault(name, exc)
            self.stop()
