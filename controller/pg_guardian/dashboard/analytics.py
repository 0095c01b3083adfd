"""The analytics page ``/analytics`` and its JSON twin ``/api/analytics``.

guardian.report() of every configured environment for one period, side by side (a
:class:`~pg_guardian.analytics.report.Combined`): the success-metric scorecard, totals against
the previous period, trend charts, response times, top offenders and relay delivery. Each
request makes one guardian.report() call per environment, all at once (Environments.gather);
an environment that is down, or whose report fails, is shown as such and the others render.

The period is a preset (``range`` = 24h, 7d, 30d or 90d back from now; 30d by default) or
``from`` and ``to`` (dates are local midnights in the time zone; ISO times are taken as they
are; ``to`` defaults to now). ``from``/``to``, when given, win over ``range``. ``tz`` (UTC by
default) is the zone days and hours are counted in. Bad input is a 400 naming it.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pg_guardian.analytics import charts, render
from pg_guardian.analytics.html import environment_charts
from pg_guardian.analytics.report import combine, fetch, parse_moment, parse_since
from pg_guardian.dashboard.app import JSON, Dashboard, dashboard, page, render_page
from pg_guardian.dashboard.settings import User
from pg_guardian.errors import GuardianError
from pg_guardian.vocabulary import SEVERITIES

PRESETS = {"24h": "24 h", "7d": "7 d", "30d": "30 d", "90d": "90 d"}
DEFAULT_PRESET = "30d"
DEFAULT_ZONE = "UTC"
MAX_SPAN = timedelta(days=366)
MAX_INPUT = 64


def routes() -> list[BaseRoute]:
    return [
        Route("/analytics", analytics_page),
        Route("/api/analytics", analytics_api),
    ]


@dataclass(frozen=True)
class Period:
    """The period asked for, checked: [start, end) in UTC, the zone, and how it was asked."""

    start: datetime
    end: datetime
    time_zone: str
    preset: str | None

    @property
    def previous_start(self) -> datetime:
        """The start of the period before, of the same length (what the totals compare with)."""
        return self.start - (self.end - self.start)

    def local(self, moment: datetime) -> str:
        return moment.astimezone(zoneinfo.ZoneInfo(self.time_zone)).strftime("%Y-%m-%d %H:%M")

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "time_zone": self.time_zone,
            "range": self.preset or "custom",
        }


def _zone(text: str) -> tuple[str, zoneinfo.ZoneInfo]:
    name = text.strip() or DEFAULT_ZONE
    problem = f"unknown time zone {name[:MAX_INPUT]!r}: use a name such as UTC, Europe/Berlin or America/New_York"
    if len(name) > MAX_INPUT:
        raise GuardianError(problem)
    try:
        return name, zoneinfo.ZoneInfo(name)
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
        pass
    # Postgres takes zone names in any case ('utc', 'europe/berlin'): so do we.
    canonical = {z.lower(): z for z in zoneinfo.available_timezones()}.get(name.lower())
    if canonical is None:
        raise GuardianError(problem)
    return canonical, zoneinfo.ZoneInfo(canonical)


def _moment(text: str, name: str, zone: zoneinfo.ZoneInfo) -> datetime:
    """A date (local midnight in the zone) or an ISO time (local unless it names an offset)."""
    if len(text) > MAX_INPUT:
        raise GuardianError(f"{name} is not a date or time: use e.g. 2026-03-01 or 2026-03-01T09:00+01:00")
    moment = parse_moment(text, name)  # checks it, with the message naming the field
    naive = datetime.fromisoformat(text.strip())
    return naive.replace(tzinfo=zone) if naive.tzinfo is None else moment


def parse_period(params: Mapping[str, str], now: datetime | None = None) -> Period:
    """The period of ``range`` or ``from``/``to``, in ``tz``; GuardianError (one line) naming bad input."""
    now = now or datetime.now(UTC)
    zone_name, zone = _zone(params.get("tz") or "")
    start_text = (params.get("from") or "").strip()
    end_text = (params.get("to") or "").strip()
    if start_text:
        start = _moment(start_text, "from", zone)
        end = _moment(end_text, "to", zone) if end_text else now
        preset = None
    elif end_text:
        raise GuardianError("to needs a from date as well (or choose a range: 24h, 7d, 30d, 90d)")
    else:
        preset = (params.get("range") or "").strip() or DEFAULT_PRESET
        if preset not in PRESETS:
            raise GuardianError(
                f"unknown range {preset[:MAX_INPUT]!r}: one of {', '.join(PRESETS)}, or from and to dates"
            )
        start, end = now - parse_since(preset), now
    if start >= end:
        raise GuardianError(f"from {start.isoformat()} is not before to {end.isoformat()}: the start must come first")
    if end - start > MAX_SPAN:
        raise GuardianError(f"the period is {(end - start).days} days long: the page shows at most {MAX_SPAN.days}")
    return Period(start.astimezone(UTC), end.astimezone(UTC), zone_name, preset)


def _gather(dash: Dashboard, period: Period) -> dict[str, Any]:
    """guardian.report() of every environment: one call each, in parallel."""

    def query(conn: psycopg.Connection) -> dict[str, Any]:
        return fetch(conn, period.start, period.end, None, period.time_zone)

    results = dash.environments.gather(query)
    combined = combine((r.env, r.value) for r in results if r.ok and r.value is not None)
    return {"results": results, "combined": combined}


def _view(data: dict[str, Any]) -> dict[str, Any]:
    """What the template draws: the scorecard, the figures side by side, charts per environment."""
    combined = data["combined"]
    sections: dict[str, list[tuple[str, dict[str, str]]]] = {}
    if combined.reports:
        for section, label, cells in render.rows(combined):
            if section != "Success metrics":
                sections.setdefault(section, []).append((label, dict(zip(combined.names, cells, strict=True))))
    environments = []
    for r in data["results"]:
        entry: dict[str, Any] = {"name": r.env, "up": r.env in combined.reports, "error": r.error}
        if entry["up"]:
            entry |= environment_charts(r.env, combined.reports[r.env])
        environments.append(entry)
    return {
        "combined": combined,
        "metrics": combined.metrics() if combined.reports else [],
        "sections": sections,
        "environments": environments,
        "first": combined.first if combined.reports else None,
    }


def _context(period: Period | None, params: Mapping[str, str]) -> dict[str, Any]:
    return {
        "period": period,
        "presets": PRESETS,
        "severities": SEVERITIES,
        "colours": charts.SEVERITY_COLOURS,
        "status_mark": render.STATUS_MARK,
        "facets": render.TOP_FACETS,
        "form": {
            "from": (params.get("from") or "")[:MAX_INPUT],
            "to": (params.get("to") or "")[:MAX_INPUT],
            "tz": period.time_zone if period else (params.get("tz") or DEFAULT_ZONE)[:MAX_INPUT],
            "range": period.preset if period else (params.get("range") or "")[:MAX_INPUT],
        },
    }


@page()
async def analytics_page(request: Request, user: User) -> Response:
    params = request.query_params
    try:
        period = parse_period(params)
    except GuardianError as exc:
        # The page again, with the picker and what was wrong, so the range can be fixed there.
        return render_page(request, "analytics.html", 400, error=str(exc), **_context(None, params))
    data = await run_in_threadpool(_gather, dashboard(request), period)
    return render_page(request, "analytics.html", error=None, **_context(period, params), **_view(data))


@page()
async def analytics_api(request: Request, user: User) -> Response:
    period = parse_period(request.query_params)  # GuardianError: a 400 with the message
    data = await run_in_threadpool(_gather, dashboard(request), period)
    combined = data["combined"]
    return JSON(
        {
            "period": period.as_dict(),
            "met": combined.met if combined.reports else None,
            "missed": combined.missed(),
            "environments": [r.as_dict() for r in data["results"]],
        }
    )
