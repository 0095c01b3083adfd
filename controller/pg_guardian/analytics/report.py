"""Fetch guardian.report() from one or several databases and put the answers side by side."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from pg_guardian.errors import GuardianError

_SINCE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
METRIC_STATUSES = ("met", "missed", "unknown", "not_applicable")


def parse_since(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``: how far back a report reaches."""
    match = _SINCE.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise GuardianError(f"--since {text!r} is not a duration: use a number and a unit, e.g. 30d, 12h, 2w or 90m")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_moment(text: str, flag: str) -> datetime:
    """An ISO date (midnight UTC) or date and time (UTC unless it names an offset)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise GuardianError(
            f"{flag} {text!r} is not a date or time: use e.g. 2026-03-01 or 2026-03-01T09:00+01:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def period(
    since: str | None, start: str | None, end: str | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The period asked for: ``--since`` back from now, or ``--from`` (and ``--to``, default now)."""
    now = now or datetime.now(UTC)
    if since and (start or end):
        raise GuardianError("use either --since or --from/--to, not both")
    if start:
        begin = parse_moment(start, "--from")
        finish = parse_moment(end, "--to") if end else now
        if begin >= finish:
            raise GuardianError(
                f"--from {begin.isoformat()} is not before --to {finish.isoformat()}: the start must come first"
            )
        return begin, finish
    if end:
        raise GuardianError("--to needs --from (or use --since)")
    return now - parse_since(since or "30d"), now


def fetch(
    conn: psycopg.Connection, start: datetime, end: datetime, environment: str | None, time_zone: str | None
) -> dict[str, Any]:
    """guardian.report() of one database."""
    row = conn.execute("SELECT guardian.report(%s, %s, %s, %s)", (start, end, environment, time_zone)).fetchone()
    if row is None or not isinstance(row[0], dict):
        raise GuardianError("guardian.report() returned nothing: is pg_guardian 0.2.0 or later installed?")
    return row[0]


@dataclass
class Combined:
    """Reports of one period from several databases, in the order asked for."""

    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.reports)

    @property
    def met(self) -> bool:
        return all(r.get("met", False) for r in self.reports.values())

    @property
    def first(self) -> dict[str, Any]:
        return next(iter(self.reports.values()))

    def metrics(self) -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
        """(name, label, {environment: metric}) for each success metric, in the report's order."""
        rows: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}
        for env, report in self.reports.items():
            for metric in report["success_metrics"]:
                rows.setdefault(metric["name"], (metric["label"], {}))[1][env] = metric
        return [(name, label, per_env) for name, (label, per_env) in rows.items()]

    def missed(self) -> list[str]:
        return [
            f"{env}: {label}"
            for _, label, per_env in self.metrics()
            for env, metric in per_env.items()
            if metric["status"] == "missed"
        ]

    def to_json(self) -> dict[str, Any]:
        return {"environments": self.names, "met": self.met, "missed": self.missed(), "reports": self.reports}


def combine(named: Iterable[tuple[str, dict[str, Any]]]) -> Combined:
    combined = Combined()
    for name, report in named:
        if name in combined.reports:
            name = f"{name} ({report['period']['database']})"
        combined.reports[name] = report
    return combined


def duration(seconds: float | None) -> str:
    """A short human duration: 45s, 6m, 2h 5m, 3d 4h; '-' for none."""
    if seconds is None:
        return "-"
    value = round(seconds)
    if value < 60:
        return f"{value}s"
    minutes, secs = divmod(value, 60)
    if minutes < 60:
        return f"{minutes}m" + (f" {secs}s" if secs and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f" {hours}h" if hours else "")
