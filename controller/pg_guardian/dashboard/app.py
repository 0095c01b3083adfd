"""The dashboard's ASGI app: environments, sessions, errors, security headers, metrics.

:func:`create_app` builds it from the configuration; :func:`serve` runs it with uvicorn. The
pages are in :mod:`pages` (the analytics page in :mod:`analytics`), the actions (every one
admin-only, CSRF-checked and audited as the dashboard user) in :mod:`actions`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pg_guardian.dashboard import auth, metrics, queries, render
from pg_guardian.dashboard.envs import Environments
from pg_guardian.dashboard.live import Hub
from pg_guardian.dashboard.scans import Scans
from pg_guardian.dashboard.settings import Settings, User, load
from pg_guardian.errors import GuardianError

log = logging.getLogger("pg_guardian.dashboard")
audit_log = logging.getLogger("pg_guardian.dashboard.audit")
MAX_BODY = 1024 * 1024
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class Dashboard:
    """What every request needs: settings, environments, live hub, scans, templates, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.environments = Environments(settings.databases)
        self.hub = Hub(self.environments)
        self.scans = Scans()
        self.limiter = auth.RateLimiter(settings.login_attempts, settings.login_window)
        self.registry, self.latency = metrics.registry(self.environments)
        self.drift_cache: dict[str, Any] = {}
        self._audit_lock = threading.Lock()
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("pg_guardian.dashboard", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )
        env.filters["ago"] = render.ago
        env.filters["when"] = render.when
        env.filters["sql"] = render.highlight_sql
        env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=_default)
        env.globals["activity_svg"] = render.activity_svg
        env.globals["outcomes"] = queries.OUTCOMES
        self.templates = Jinja2Templates(env=env)

    def audit(
        self,
        user: User | str,
        action: str,
        *,
        environment: str | None,
        target: str | None,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        """One line per action, as the dashboard user: the audit log file and the log.

        ``user`` is a name only for failed logins (the name that was tried).
        """
        entry = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "user": user.name if isinstance(user, User) else user,
            "role": user.role if isinstance(user, User) else None,
            "action": action,
            "environment": environment,
            "target": target,
            "outcome": outcome,
            "detail": detail,
        }
        line = json.dumps(entry, default=_default)
        audit_log.info(line)
        if self.settings.audit_log:
            with self._audit_lock, self.settings.audit_log.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


class JSON(JSONResponse):
    """JSON that knows timestamps, intervals, numerics and UUIDs."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_default, ensure_ascii=False, separators=(",", ":")).encode()


def dashboard(conn: HTTPConnection) -> Dashboard:
    value: Dashboard = conn.app.state.dashboard
    return value


def wants_json(request: HTTPConnection) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/events" or "application/json" in request.headers.get("accept", "")


def page(
    role: str | None = "viewer",
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """An endpoint that needs a login (and the admin role for ``role='admin'``).

    Not logged in: pages redirect to the login form, the API answers 401. POSTs also need the
    session's CSRF token (403 without it), checked before anything else is read.
    """

    def wrap(func: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(func)
        async def endpoint(request: Request) -> Response:
            dash = dashboard(request)
            user = auth.current_user(request, dash.settings)
            if user is None:
                if wants_json(request) or request.method != "GET":
                    raise HTTPException(401, "log in first: POST /login with username and password")
                return RedirectResponse(f"/login?next={safe_next(request.url.path)}", status_code=303)
            if request.method == "POST":
                form = await request.form()
                token = form.get(auth.CSRF_FIELD)
                if not auth.csrf_ok(request, token if isinstance(token, str) else None):
                    dash.audit(user, "csrf refused", environment=None, target=request.url.path, outcome="refused")
                    raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
            if role == "admin" and not user.is_admin:
                dash.audit(
                    user,
                    f"{request.method} {request.url.path}",
                    environment=None,
                    target=None,
                    outcome="refused: not an admin",
                )
                raise HTTPException(403, f"user {user.name} is a viewer: this needs the admin role")
            request.state.user = user
            return await func(request, user)

        return endpoint

    return wrap


def safe_next(path: str) -> str:
    """Only a local path may be a redirect target."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def render_page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    dash = dashboard(request)
    user: User | None = getattr(request.state, "user", None)
    flashes = request.session.pop("flash", []) if user else []
    base = {
        "user": user,
        "csrf": auth.csrf_token(request),
        "flashes": flashes,
        "env_names": dash.environments.names(),
        "path": request.url.path,
    }
    return dash.templates.TemplateResponse(request, name, base | context, status_code=status_code)


def flash(request: Request, kind: str, text: str) -> None:
    messages = list(request.session.get("flash", []))
    messages.append([kind, text])
    request.session["flash"] = messages[-5:]


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if wants_json(request):
        return JSON({"error": exc.detail, "status": exc.status_code}, status_code=exc.status_code, headers=headers)
    if exc.status_code == 401:
        return RedirectResponse(f"/login?next={safe_next(request.url.path)}", status_code=303)
    return render_page(request, "error.html", exc.status_code, status=exc.status_code, message=exc.detail)


async def guardian_error(request: Request, exc: Exception) -> Response:
    return await http_error(request, HTTPException(400, str(exc)))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("dashboard error on %s %s", request.method, request.url.path, exc_info=exc)
    message = "internal error: the dashboard's log has the details"
    if wants_json(request):
        return JSON({"error": message, "status": 500}, status_code=500)
    try:
        return render_page(request, "error.html", 500, status=500, message=message)
    except Exception:  # the error page itself failed: plain text, still no trace
        return Response(message + "\n", status_code=500, media_type="text/plain")


class Instrument:
    """Security headers on every response, and each request's latency by route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_of(scope)
            if route != "/events":
                dash: Dashboard = scope["app"].state.dashboard
                dash.latency.labels(scope["method"], route, str(status[0])).observe(time.perf_counter() - started)


def _route_of(scope: Scope) -> str:
    app = scope.get("app")
    for route in getattr(app, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


def create_app(
    databases: Sequence[tuple[str, str]] | None = None,
    config_path: Path | None = None,
    *,
    settings: Settings | None = None,
    live: bool = True,
) -> Starlette:
    """The dashboard app for the configured databases (``databases`` replaces the file's).

    Raises ConfigError (every problem listed) for a bad configuration. ``live=False`` leaves
    out the LISTEN tasks (the live feed), e.g. for API tests.
    """
    from pg_guardian.dashboard import actions, analytics, pages

    settings = settings or load(config_path, databases)
    for warning in settings.warnings:
        log.warning("%s", warning)
    dash = Dashboard(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if live:
            dash.hub.start()
        try:
            yield
        finally:
            await dash.hub.stop()
            dash.environments.close()

    routes = [
        *pages.routes(),
        *actions.routes(),
        *analytics.routes(),
        Mount("/static", StaticFiles(packages=[("pg_guardian.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Instrument),
            Middleware(
                SessionMiddleware,
                secret_key=settings.secret_key,
                session_cookie="pg_guardian_session",
                max_age=int(settings.session_max_age),
                same_site="lax",
                https_only=settings.secure_cookies,
            ),
        ],
        exception_handlers={HTTPException: http_error, GuardianError: guardian_error, Exception: server_error},
        lifespan=lifespan,
        max_body_size=MAX_BODY,
    )
    app.state.dashboard = dash
    return app


def serve(
    host: str,
    port: int,
    databases: list[tuple[str, str]] | None,
    config_path: Path | None,
) -> None:
    """Run the dashboard until interrupted (uvicorn). Raises ConfigError for a bad configuration."""
    import uvicorn

    if not log.handlers:  # the audit lines (INFO) and warnings go to stderr, one per line
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    app = create_app(databases, config_path)
    dash = dashboard_of(app)
    if host not in ("127.0.0.1", "localhost", "::1") and not dash.settings.secure_cookies:
        log.warning(
            "serving on %s without secure_cookies: put it behind HTTPS and set [dashboard] secure_cookies = true", host
        )
    log.warning("pg-guardian dashboard on http://%s:%s/ for %s", host, port, ", ".join(dash.environments.names()))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
        proxy_headers=True,
        server_header=False,
    )


def dashboard_of(app: Starlette) -> Dashboard:
    value: Dashboard = app.state.dashboard
    return value
