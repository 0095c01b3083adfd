"""The pages and their JSON twins under /api: every one reads, none writes."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pg_guardian.dashboard import auth, queries
from pg_guardian.dashboard.app import JSON, Dashboard, dashboard, page, render_page, safe_next
from pg_guardian.dashboard.envs import Down, Environment
from pg_guardian.dashboard.settings import User
from pg_guardian.errors import GuardianError

DRIFT_CACHE_SECONDS = 60.0


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", overview_page),
        Route("/api/overview", overview_api),
        Route("/events", events),
        Route("/alerts", alerts_page),
        Route("/api/alerts", alerts_api),
        Route("/api/alerts/{alert_id}", alert_api),
        Route("/admin/cleanup/{alert_id}", alert_page),
        Route("/api/cleanup/{alert_id}", alert_api),
        Route("/admin/cleanup/{alert_id}/script.sql", script_download),
        Route("/api/silences", silences_api),
        Route("/contamination", contamination_page),
        Route("/api/contamination", contamination_api),
        Route("/api/scans/{scan_id}", scan_api),
        Route("/drift", drift_page),
        Route("/api/drift", drift_api),
        Route("/health", health_page),
        Route("/api/health", health_api),
        Route("/metrics", metrics_endpoint),
    ]


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


# -- login --------------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    dash = dashboard(request)
    if auth.current_user(request, dash.settings):
        return RedirectResponse(safe_next(request.query_params.get("next", "/")), status_code=303)
    return render_page(request, "login.html", next=safe_next(request.query_params.get("next", "/")), error=None)


async def login_submit(request: Request) -> Response:
    dash = dashboard(request)
    form = await request.form()
    token = form.get(auth.CSRF_FIELD)
    if not auth.csrf_ok(request, token if isinstance(token, str) else None):
        raise HTTPException(403, "missing or wrong CSRF token: reload the login page and try again")
    username = str(form.get("username", "")).strip()[:100]
    password = str(form.get("password", ""))[:1000]
    target = safe_next(str(form.get("next", "/")))
    keys = (f"user:{username.lower()}", f"client:{auth.client_address(request)}")
    wait = dash.limiter.retry_after(*keys)
    if wait > 0:
        message = f"too many failed logins: try again in {int(wait) + 1} s"
        dash.audit(
            username,
            "login",
            environment=None,
            target=None,
            outcome="rate limited",
            detail=auth.client_address(request),
        )
        if "application/json" in request.headers.get("accept", ""):
            return JSON({"error": message, "status": 429}, status_code=429, headers={"Retry-After": str(int(wait) + 1)})
        return render_page(request, "login.html", 429, next=target, error=message)
    user = dash.settings.users.get(username)
    ok = await run_in_threadpool(auth.verify_password, user, password)
    if not ok or user is None:
        dash.limiter.failed(*keys)
        dash.audit(
            username, "login", environment=None, target=None, outcome="refused", detail=auth.client_address(request)
        )
        return render_page(request, "login.html", 401, next=target, error="wrong user name or password")
    dash.limiter.succeeded(*keys)
    auth.login(request, user)
    dash.audit(user, "login", environment=None, target=None, outcome="ok", detail=auth.client_address(request))
    return RedirectResponse(target, status_code=303)


@page()
async def logout(request: Request, user: User) -> Response:
    auth.logout(request)
    dashboard(request).audit(user, "logout", environment=None, target=None, outcome="ok")
    return RedirectResponse("/login", status_code=303)


# -- overview -----------------------------------------------------------------------------------


def _overview_bundle(hours: int) -> Any:
    def query(conn: psycopg.Connection) -> dict[str, Any]:
        data = queries.overview(conn)
        data["recent"] = queries.recent_alerts(conn, 20)
        data["activity"] = queries.activity(conn, hours)
        return data

    return query


def _overview(dash: Dashboard) -> dict[str, Any]:
    results = dash.environments.gather(_overview_bundle(dash.settings.activity_hours))
    feed: list[dict[str, Any]] = []
    envs = []
    for r in results:
        entry: dict[str, Any] = {"name": r.env, "up": r.ok, "error": r.error}
        if r.ok and r.value is not None:
            data = dict(r.value)
            for alert in data.pop("recent"):
                feed.append({"env": r.env, **alert})
            entry["data"] = data
        envs.append(entry)
    feed.sort(key=lambda a: a["created_at"], reverse=True)
    return {"environments": envs, "feed": feed[:30], "hours": dash.settings.activity_hours}


@page()
async def overview_page(request: Request, user: User) -> Response:
    data = await run_in_threadpool(_overview, dashboard(request))
    return render_page(request, "overview.html", **data)


@page()
async def overview_api(request: Request, user: User) -> Response:
    data = await run_in_threadpool(_overview, dashboard(request))
    return JSON(data)


@page()
async def events(request: Request, user: User) -> Response:
    hub = dashboard(request).hub
    return StreamingResponse(
        hub.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- alerts -------------------------------------------------------------------------------------


def _choices(request: Request, name: str, allowed: set[str] | None = None, pattern: Any = None) -> list[str]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        for value in raw.split(","):
            value = value.strip()
            if not value:
                continue
            if name in ("severity", "type"):
                value = value.upper()
            if (allowed is not None and value not in allowed) or (pattern is not None and not pattern.match(value)):
                choices = f" (one of {', '.join(sorted(allowed))})" if allowed else ""
                raise HTTPException(400, f"unknown {name} {value!r}{choices}")
            values.append(value)
    return values


def parse_filter(request: Request, dash: Dashboard) -> tuple[queries.AlertFilter, bool]:
    """The alerts page's filters, checked; 400 naming the bad value."""
    envs = _choices(request, "env", set(dash.environments.names()))
    severities = _choices(request, "severity", set(queries.SEVERITIES))
    types = _choices(request, "type", pattern=queries.ALERT_TYPE)
    state = request.query_params.get("state", "open") or "open"
    if state not in queries.STATES:
        raise HTTPException(400, f"unknown state {state!r} (one of {', '.join(queries.STATES)})")
    outcomes = _choices(request, "outcome", {*queries.OUTCOMES, queries.NO_OUTCOME})
    if outcomes:  # an outcome is said when an alert is resolved: the filter shows resolved alerts
        state = "resolved"
    raw_limit = request.query_params.get("limit", "200") or "200"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise HTTPException(400, f"limit {raw_limit!r} must be a whole number from 1 to 1000")
    table = (request.query_params.get("table") or "").strip() or None
    text = (request.query_params.get("q") or "").strip() or None
    if (table and len(table) > 200) or (text and len(text) > 200):
        raise HTTPException(400, "table and q are at most 200 characters")
    group = request.query_params.get("group", "") in ("1", "fingerprint", "on")
    flt = queries.AlertFilter(envs, severities, types, table, state, text, int(raw_limit), outcomes)
    return flt, group


def _alerts(dash: Dashboard, flt: queries.AlertFilter, group: bool) -> dict[str, Any]:
    names = flt.environments or dash.environments.names()
    fetch = queries.alert_groups if group else queries.alerts

    def query(conn: psycopg.Connection) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
        return fetch(conn, flt), queries.alert_types(conn), queries.silences(conn)

    rows: list[dict[str, Any]] = []
    down: dict[str, str] = {}
    types: set[str] = set()
    silences: list[dict[str, Any]] = []
    for r in dash.environments.gather(query, names):
        if not r.ok or r.value is None:
            down[r.env] = r.error or "down"
            continue
        found, env_types, env_silences = r.value
        rows.extend({"env": r.env, **row} for row in found)
        types.update(env_types)
        silences.extend({"env": r.env, **s} for s in env_silences)
    rows.sort(key=lambda a: a["last_seen" if group else "created_at"], reverse=True)
    return {
        "alerts": rows[: flt.limit],
        "grouped": group,
        "down": down,
        "types": sorted(types | set(flt.types)),
        "silences": silences,
        "filter": {
            "env": flt.environments,
            "severity": flt.severities,
            "type": flt.types,
            "table": flt.table or "",
            "state": flt.state,
            "q": flt.text or "",
            "limit": flt.limit,
            "outcome": flt.outcomes,
        },
    }


@page()
async def alerts_page(request: Request, user: User) -> Response:
    dash = dashboard(request)
    flt, group = parse_filter(request, dash)
    data = await run_in_threadpool(_alerts, dash, flt, group)
    return render_page(request, "alerts.html", severities=queries.SEVERITIES, states=queries.STATES, **data)


@page()
async def alerts_api(request: Request, user: User) -> Response:
    dash = dashboard(request)
    flt, group = parse_filter(request, dash)
    data = await run_in_threadpool(_alerts, dash, flt, group)
    data.pop("types")
    return JSON(data)


@page()
async def silences_api(request: Request, user: User) -> Response:
    dash = dashboard(request)
    results = await run_in_threadpool(dash.environments.gather, queries.silences)
    return JSON([r.as_dict() for r in results])


def alert_id(request: Request) -> UUID:
    raw = request.path_params["alert_id"]
    try:
        return UUID(raw)
    except ValueError:
        raise HTTPException(404, f"{raw[:60]!r} is not an alert id (alert ids are UUIDs)") from None


def find_alert(dash: Dashboard, ident: UUID, env_name: str | None) -> tuple[Environment, dict[str, Any]]:
    """The environment that has the alert, and the alert; 404 saying where it was looked for."""
    if env_name:
        env = dash.environments.get(env_name)
        if env is None:
            raise HTTPException(404, f"no environment named {env_name!r}")
        names = [env_name]
    else:
        names = dash.environments.names()
    down = []
    for r in dash.environments.gather(lambda conn: queries.alert(conn, ident), names):
        if r.ok and r.value is not None:
            found = dash.environments.get(r.env)
            assert found is not None
            return found, r.value
        if not r.ok:
            down.append(f"{r.env} ({r.error})")
    where = f"; not searched: {', '.join(down)}" if down else ""
    raise HTTPException(404, f"no alert {ident} in {', '.join(names)}{where}")


def _alert_detail(dash: Dashboard, ident: UUID, env_name: str | None, include_restricted: bool) -> dict[str, Any]:
    from pg_guardian import response

    env, alert = find_alert(dash, ident, env_name)
    data: dict[str, Any] = {"env": env.name, "alert": alert}
    try:
        with env.reader() as conn:
            data["findings"] = queries.findings(conn, ident)
            data["records"] = queries.findings_count(conn, ident)
            data["script"] = queries.stored_script(conn, ident)
            data["batches"] = queries.quarantine_batches(conn, ident)
            try:
                plan = response.cleanup_plan(conn, alert=str(ident), include_restricted=include_restricted)
                data["plan"] = plan
                data["plan_error"] = None
            except GuardianError as exc:
                data["plan"], data["plan_error"] = [], str(exc)
    except Down as exc:
        raise HTTPException(503, f"environment {env.name} is down: {exc}") from exc
    plan = data["plan"]
    data["plan_rows"] = sum(int(r["rows"]) for r in plan if r["action"] != "blocked")
    data["blocked"] = [r for r in plan if r["action"] == "blocked" and r["rows"]]
    data["include_restricted"] = include_restricted
    return data


@page()
async def alert_page(request: Request, user: User) -> Response:
    dash = dashboard(request)
    ident = alert_id(request)
    restricted = request.query_params.get("include_restricted") == "1"
    data = await run_in_threadpool(_alert_detail, dash, ident, request.query_params.get("env"), restricted)
    return render_page(request, "alert.html", **data)


@page()
async def alert_api(request: Request, user: User) -> Response:
    dash = dashboard(request)
    ident = alert_id(request)
    restricted = request.query_params.get("include_restricted") == "1"
    data = await run_in_threadpool(_alert_detail, dash, ident, request.query_params.get("env"), restricted)
    return JSON(data)


@page()
async def script_download(request: Request, user: User) -> Response:
    dash = dashboard(request)
    ident = alert_id(request)

    def get() -> tuple[str, dict[str, Any] | None]:
        env, _ = find_alert(dash, ident, request.query_params.get("env"))
        with env.reader() as conn:
            return env.name, queries.stored_script(conn, ident)

    env_name, script = await run_in_threadpool(get)
    if script is None:
        raise HTTPException(404, f"no cleanup script stored for alert {ident}: an admin generates one on its page")
    return Response(
        script["script"],
        media_type="application/sql; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cleanup-{env_name}-{ident}.sql"'},
    )


# -- contamination ------------------------------------------------------------------------------


@page()
async def contamination_page(request: Request, user: User) -> Response:
    dash = dashboard(request)
    results = await run_in_threadpool(dash.environments.gather, queries.contamination)
    scans = [s.as_dict() for s in dash.scans.recent()]
    return render_page(request, "contamination.html", results=results, scans=scans)


@page()
async def contamination_api(request: Request, user: User) -> Response:
    dash = dashboard(request)
    results = await run_in_threadpool(dash.environments.gather, queries.contamination)
    return JSON({"environments": [r.as_dict() for r in results], "scans": [s.as_dict() for s in dash.scans.recent()]})


@page()
async def scan_api(request: Request, user: User) -> Response:
    scan = dashboard(request).scans.get(request.path_params["scan_id"])
    if scan is None:
        raise HTTPException(404, f"no scan {request.path_params['scan_id'][:40]!r} (this dashboard keeps the last 50)")
    return JSON(scan.as_dict())


# -- drift --------------------------------------------------------------------------------------


def _matrix(dash: Dashboard, refresh: bool) -> dict[str, Any]:
    """The environment matrix (as ``pg-guardian drift --env``), cached for a minute."""
    from pg_guardian import drift as drift_mod
    from pg_guardian.drift import catalog

    cached = dash.drift_cache.get("matrix")
    if cached and not refresh and time.monotonic() - cached["at"] < DRIFT_CACHE_SECONDS:
        return dict(cached["data"])
    fingerprints: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for r in dash.environments.gather(lambda conn: catalog.read_fingerprint(conn, None)):
        if r.ok:
            fingerprints[r.env] = r.value
        else:
            missing[r.env] = r.error or "down"
    differences = drift_mod.diff_many(fingerprints) if len(fingerprints) > 1 else []
    # A table missing (or extra) somewhere has all its columns, constraints and indexes missing
    # there too: one row for the table, with how many such objects it carries.
    rows: list[dict[str, Any]] = []
    by_identity: dict[str, dict[str, Any]] = {}
    for d in differences:
        parent = by_identity.get(d.parent or "")
        if parent is not None and d.change in ("added", "removed") and parent["environments"] == d.environments:
            parent["hidden_children"] += 1
            continue
        row = d.to_dict() | {"group": d.group, "hidden_children": 0}
        by_identity[d.identity] = row
        rows.append(row)
    data = {
        "reference": next(iter(fingerprints), None),
        "compared": list(fingerprints),
        "missing": missing,
        "differences": rows,
        "taken_at": time.time(),
    }
    dash.drift_cache["matrix"] = {"at": time.monotonic(), "data": data}
    return data


def _drift(dash: Dashboard, refresh: bool, cosmetic: bool, baseline_env: str | None) -> dict[str, Any]:
    matrix = _matrix(dash, refresh)
    if not cosmetic:
        matrix = matrix | {"differences": [d for d in matrix["differences"] if not d["cosmetic"]]}
    per_env = dash.environments.gather(queries.drift)
    baseline: dict[str, Any] | None = None
    if baseline_env:
        if dash.environments.get(baseline_env) is None:
            raise HTTPException(404, f"no environment named {baseline_env!r}")
        r = dash.environments.gather(lambda conn: queries.baseline_differences(conn, cosmetic), [baseline_env])[0]
        baseline = {"env": baseline_env, "error": r.error, "differences": r.value or []}
    return {"matrix": matrix, "environments": per_env, "baseline": baseline, "cosmetic": cosmetic}


@page()
async def drift_page(request: Request, user: User) -> Response:
    dash = dashboard(request)
    q = request.query_params
    data = await run_in_threadpool(_drift, dash, q.get("refresh") == "1", q.get("cosmetic") == "1", q.get("baseline"))
    return render_page(request, "drift.html", **data)


@page()
async def drift_api(request: Request, user: User) -> Response:
    dash = dashboard(request)
    q = request.query_params
    data = await run_in_threadpool(_drift, dash, q.get("refresh") == "1", q.get("cosmetic") == "1", q.get("baseline"))
    data["environments"] = [r.as_dict() for r in data["environments"]]
    return JSON(data)


# -- health and security ------------------------------------------------------------------------


def _health(dash: Dashboard) -> dict[str, Any]:
    def query(conn: psycopg.Connection) -> dict[str, Any]:
        return {"health": queries.health(conn), "security": queries.security(conn)}

    return {"results": dash.environments.gather(query)}


@page()
async def health_page(request: Request, user: User) -> Response:
    data = await run_in_threadpool(_health, dashboard(request))
    return render_page(request, "health.html", **data)


@page()
async def health_api(request: Request, user: User) -> Response:
    data = await run_in_threadpool(_health, dashboard(request))
    return JSON({"environments": [r.as_dict() for r in data["results"]]})


# -- metrics ------------------------------------------------------------------------------------


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition; with ``metrics_token`` configured, only with that bearer token."""
    import hmac

    dash = dashboard(request)
    token = dash.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSON(
                {"error": "metrics need 'Authorization: Bearer <metrics_token>'", "status": 401},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="pg-guardian metrics"'},
            )
    body = await run_in_threadpool(generate_latest, dash.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
