"""Actions: every one needs an admin, the session's CSRF token, and is audited as the user.

Each runs on a connection of its own named ``pg-guardian dashboard: <user>`` (the environment's
``admin_dsn`` when configured) and goes through the same functions as the CLI: acknowledge and
resolve through guardian.acknowledge_alert / resolve_alert (with the outcome the admin says, if
any), cleanups as ``pg-guardian cleanup
run`` does (plan, script, run in one transaction), restores through guardian.restore, silences
through guardian.create_silence / expire_silence. The connection sets ``pg_guardian.actor``
to ``<user>@dashboard``, so the database records the person with the role the dashboard connects
as (``acknowledged_by``, ``resolved_by``, the batch's ``requested_by`` and ``restored_by``, the
baseline's ``approved_by``: ``alice@dashboard via guardian_dash``, see guardian._actor()); the
batch's ``created_by`` stays the role whose rights ran the cleanup. The user also goes into every
free-text field the SQL keeps (resolution note, silence comment, allowlist reason), into the
connection's application_name (kept in the context of alerts the action raises and in
guardian.schema_changes) and into the dashboard's audit log.

Forms get a redirect back with a message; clients that send ``Accept: application/json`` get
JSON (4xx with ``error`` when refused).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pg_guardian.dashboard import queries
from pg_guardian.dashboard.app import JSON, Dashboard, dashboard, flash, page, safe_next
from pg_guardian.dashboard.envs import Down, Environment, sql_message
from pg_guardian.dashboard.settings import User, parse_duration
from pg_guardian.errors import GuardianError

MAX_BULK = 500
NOTE_MAX = 2000


def routes() -> list[BaseRoute]:
    return [
        Route("/actions/alerts", bulk_alerts, methods=["POST"]),
        Route("/actions/silences", create_silence, methods=["POST"]),
        Route("/actions/silences/expire", expire_silence, methods=["POST"]),
        Route("/admin/cleanup/{alert_id}/script", generate_script, methods=["POST"]),
        Route("/admin/cleanup/{alert_id}/run", run_cleanup, methods=["POST"]),
        Route("/admin/cleanup/{alert_id}/restore", restore_batch, methods=["POST"]),
        Route("/admin/cleanup/{alert_id}/allow", allow_from_alert, methods=["POST"]),
        Route("/actions/allowlist", allow_entry, methods=["POST"]),
        Route("/actions/allowlist/delete", delete_allowlist, methods=["POST"]),
        Route("/actions/rules", toggle_rule, methods=["POST"]),
        Route("/actions/scan", start_scan, methods=["POST"]),
        Route("/actions/baseline", approve_baseline, methods=["POST"]),
    ]


def _text(form: FormData, name: str, *, required: bool = False, limit: int = NOTE_MAX) -> str | None:
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit:
        raise HTTPException(400, f"{name} is longer than {limit} characters")
    if required and not text:
        raise HTTPException(400, f"{name} is required")
    return text or None


def _env(dash: Dashboard, form: FormData) -> Environment:
    name = _text(form, "env", required=True, limit=100)
    env = dash.environments.get(name or "")
    if env is None:
        raise HTTPException(400, f"unknown environment {name!r}")
    return env


def _outcome(form: FormData) -> str | None:
    """The optional outcome of a resolution (one of queries.OUTCOMES); 400 for another."""
    outcome = _text(form, "outcome", limit=40)
    if outcome is not None and outcome not in queries.OUTCOMES:
        raise HTTPException(400, f"unknown outcome {outcome!r} (one of {', '.join(queries.OUTCOMES)}, or none)")
    return outcome


def _uuid(value: str | None, what: str) -> UUID:
    try:
        return UUID(value or "")
    except ValueError:
        raise HTTPException(400, f"{(value or '')[:60]!r} is not a {what} id (a UUID)") from None


def by(user: User, text: str | None = None) -> str:
    """A free-text field that names the dashboard user."""
    suffix = f"(by {user.name} via pg-guardian dashboard)"
    return f"{text} {suffix}" if text else suffix


def done(request: Request, message: str, back: str, data: dict[str, Any] | None = None, kind: str = "ok") -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSON({"ok": kind == "ok", "message": message, **(data or {})})
    flash(request, kind, message)
    return RedirectResponse(safe_next(back), status_code=303)


def _back(form: FormData, default: str) -> str:
    value = form.get("next")
    return value if isinstance(value, str) and value.startswith("/") else default


def act(
    dash: Dashboard,
    env: Environment,
    user: User,
    action: str,
    target: str | None,
    work: Callable[[psycopg.Connection], Any],
) -> Any:
    """Run ``work`` on an action connection of the user; audit the outcome; 4xx for refusals."""
    try:
        with env.actor(user.name) as conn:
            result = work(conn)
    except Down as exc:
        dash.audit(user, action, environment=env.name, target=target, outcome="failed", detail=str(exc))
        raise HTTPException(503, f"environment {env.name} is down: {exc}") from exc
    except HTTPException as exc:
        dash.audit(user, action, environment=env.name, target=target, outcome="refused", detail=str(exc.detail))
        raise
    except (GuardianError, psycopg.Error) as exc:
        text = sql_message(exc) if isinstance(exc, psycopg.Error) else str(exc)
        dash.audit(user, action, environment=env.name, target=target, outcome="refused", detail=text)
        status = 403 if isinstance(exc, psycopg.errors.InsufficientPrivilege) else 409
        raise HTTPException(status, f"{env.name}: {text}") from exc
    dash.audit(
        user,
        action,
        environment=env.name,
        target=target,
        outcome="ok",
        detail=result if isinstance(result, str) else None,
    )
    return result


# -- alerts -------------------------------------------------------------------------------------


@page("admin")
async def bulk_alerts(request: Request, user: User) -> Response:
    """Acknowledge or resolve the checked alerts (``alert`` = ``env:id``, repeated), with a note
    and, for a resolution, an optional ``outcome`` (cleaned, confirmed, false_positive, expected)."""
    dash = dashboard(request)
    form = await request.form()
    action = _text(form, "action", required=True, limit=20)
    if action not in ("acknowledge", "resolve"):
        raise HTTPException(400, f"unknown action {action!r} (acknowledge or resolve)")
    note = _text(form, "note")
    outcome = _outcome(form) if action == "resolve" else None
    picked: dict[str, list[UUID]] = {}
    values = [v for v in form.getlist("alert") if isinstance(v, str)]
    if not values:
        raise HTTPException(400, "no alerts chosen: tick the alerts to " + action)
    if len(values) > MAX_BULK:
        raise HTTPException(400, f"at most {MAX_BULK} alerts at once")
    for value in values:
        env_name, _, ident = value.partition(":")
        if dash.environments.get(env_name) is None:
            raise HTTPException(400, f"unknown environment {env_name!r} in {value[:80]!r}")
        picked.setdefault(env_name, []).append(_uuid(ident, "alert"))

    def work(ids: list[UUID]) -> Callable[[psycopg.Connection], str]:
        def run(conn: psycopg.Connection) -> str:
            with conn.transaction():
                for ident in ids:
                    if action == "acknowledge":
                        conn.execute("SELECT guardian.acknowledge_alert(%s)", (ident,))
                    else:
                        conn.execute("SELECT guardian.resolve_alert(%s, %s, %s)", (ident, by(user, note), outcome))
            said = (f"; outcome: {outcome}" if outcome else "") + (f"; note: {note}" if note else "")
            return f"{len(ids)} alert(s)" + said

        return run

    total = 0
    for env_name, ids in picked.items():
        env = dash.environments.get(env_name)
        assert env is not None
        target = ",".join(str(i) for i in ids)
        await run_in_threadpool(act, dash, env, user, action, target, work(ids))
        total += len(ids)
    verb = "acknowledged" if action == "acknowledge" else "resolved"
    said = f" as {outcome.replace('_', ' ')}" if outcome else ""
    return done(request, f"{verb} {total} alert(s){said}", _back(form, "/alerts"), {"count": total})


# -- silences -----------------------------------------------------------------------------------

_MATCHER = re.compile(r"^\s*[a-z_]+\s*(=~|!~|!=|=).*$")


@page("admin")
async def create_silence(request: Request, user: User) -> Response:
    """A silence in one environment or all (``env`` = ``*``): matchers one per line."""
    from pg_guardian.relay import silences

    dash = dashboard(request)
    form = await request.form()
    env_name = _text(form, "env", required=True, limit=100)
    matchers = [m.strip() for m in (_text(form, "matchers", required=True) or "").splitlines() if m.strip()]
    bad = [m for m in matchers if not _MATCHER.match(m)]
    if bad:
        raise HTTPException(
            400, f"invalid matcher {bad[0]!r}: use field=value, field!=value, field=~regex, field!~regex"
        )
    try:
        seconds = parse_duration(_text(form, "duration", required=True, limit=20))
    except ValueError as exc:
        raise HTTPException(400, f"duration: {exc}") from None
    comment = _text(form, "comment", required=True)
    channel = _text(form, "channel", limit=40)
    everywhere = env_name == "*"
    envs = dash.environments.names() if everywhere else [env_name or ""]
    made, skipped = [], []
    for name in envs:
        env = dash.environments.get(name)
        if env is None:
            raise HTTPException(400, f"unknown environment {name!r}")
        try:
            made.append(
                await run_in_threadpool(
                    act,
                    dash,
                    env,
                    user,
                    "create silence",
                    "; ".join(matchers),
                    lambda conn: str(silences.create(conn, matchers, seconds, by(user, comment), channel)),
                )
            )
        except HTTPException as exc:
            if not everywhere or exc.status_code != 503:
                raise
            skipped.append(name)
    if not made:
        raise HTTPException(503, f"no silence created: {', '.join(skipped)} down")
    message = f"silence created in {', '.join(n for n in envs if n not in skipped)}"
    if skipped:
        message += f"; not in {', '.join(skipped)} (down): create it there when it is back"
    return done(request, message, _back(form, "/alerts"), {"silences": made, "skipped": skipped})


@page("admin")
async def expire_silence(request: Request, user: User) -> Response:
    from pg_guardian.relay import silences

    dash = dashboard(request)
    form = await request.form()
    env = _env(dash, form)
    ident = _uuid(_text(form, "id", required=True, limit=40), "silence")

    def work(conn: psycopg.Connection) -> str:
        if not queries.silence_exists(conn, ident):
            raise HTTPException(404, f"no silence {ident} in {env.name}")
        silences.expire(conn, str(ident))
        return f"silence {ident} expired"

    message = await run_in_threadpool(act, dash, env, user, "expire silence", str(ident), work)
    return done(request, message, _back(form, "/alerts"))


# -- the alert admin page -----------------------------------------------------------------------


def _alert_env(dash: Dashboard, request: Request, form: FormData) -> tuple[Environment, UUID]:
    raw = request.path_params["alert_id"]
    try:
        ident = UUID(raw)
    except ValueError:
        raise HTTPException(404, f"{raw[:60]!r} is not an alert id (alert ids are UUIDs)") from None
    return _env(dash, form), ident


def _page_of(env: Environment, ident: UUID) -> str:
    return f"/admin/cleanup/{ident}?env={env.name}"


@page("admin")
async def generate_script(request: Request, user: User) -> Response:
    """Generate (and store with the alert) its cleanup script."""
    from pg_guardian import response

    dash = dashboard(request)
    form = await request.form()
    env, ident = _alert_env(dash, request, form)
    restricted = form.get("include_restricted") == "1"

    def work(conn: psycopg.Connection) -> str:
        response.cleanup_script(conn, alert=str(ident), include_restricted=restricted)
        return "cleanup script generated"

    message = await run_in_threadpool(act, dash, env, user, "generate cleanup script", str(ident), work)
    return done(request, message, _page_of(env, ident))


@page("admin")
async def run_cleanup(request: Request, user: User) -> Response:
    """Run the cleanup as ``pg-guardian cleanup run --force`` does, once the admin has typed the
    number of rows the plan touches; refused when the plan changed since."""
    from pg_guardian import response

    dash = dashboard(request)
    form = await request.form()
    env, ident = _alert_env(dash, request, form)
    restricted = form.get("include_restricted") == "1"
    confirmed = _text(form, "confirm_rows", required=True, limit=20) or ""

    def work(conn: psycopg.Connection) -> str:
        plan = response.cleanup_plan(conn, alert=str(ident), include_restricted=restricted)
        blocked = [r for r in plan if r["action"] == "blocked" and r["rows"]]
        if blocked:
            raise HTTPException(
                409,
                f"the cleanup is blocked: {blocked[0]['detail'] or blocked[0]['table_name']}; "
                "review the plan (include restricted dependents only if they must go too)",
            )
        total = sum(int(r["rows"]) for r in plan if r["action"] != "blocked")
        if confirmed != str(total):
            raise HTTPException(
                409, f"the plan touches {total} row(s) but {confirmed!r} was confirmed: review it and confirm again"
            )
        if total == 0:
            raise HTTPException(409, "nothing to clean up: the plan touches no rows")
        script = response.cleanup_script(conn, alert=str(ident), include_restricted=restricted)
        return response.run_script(conn, script)

    summary = await run_in_threadpool(act, dash, env, user, "run cleanup", str(ident), work)
    return done(request, summary or "cleanup done", _page_of(env, ident) + "#quarantine", {"summary": summary})


@page("admin")
async def restore_batch(request: Request, user: User) -> Response:
    """Put a quarantine batch of this alert back (its values allowlisted unless unticked)."""
    from pg_guardian import response

    dash = dashboard(request)
    form = await request.form()
    env, ident = _alert_env(dash, request, form)
    batch = _uuid(_text(form, "batch", required=True, limit=40), "quarantine batch")
    # A form says yes or no with its checkbox; an API client that says nothing gets the default.
    allowlist = "1" in form.getlist("allowlist") if "allowlist_choice" in form else True

    def work(conn: psycopg.Connection) -> str:
        found = queries.quarantine_batch(conn, batch)
        if found is None or found["alert_id"] != ident:
            raise HTTPException(404, f"no quarantine batch {batch} of alert {ident} in {env.name}")
        return response.restore(conn, str(batch), allowlist=allowlist)

    summary = await run_in_threadpool(act, dash, env, user, "restore", str(batch), work)
    return done(request, summary, _page_of(env, ident) + "#quarantine", {"summary": summary})


def _allow(dash: Dashboard, env: Environment, user: User, form: FormData, alert: UUID | None = None) -> int:
    """Allowlist an entry; from an alert's page also resolve that alert as a false positive
    (in the same transaction: 404 when there is no such alert, and nothing is allowlisted)."""
    rule = _text(form, "rule", limit=63)
    table = _text(form, "table", limit=200)
    column = _text(form, "column", limit=63)
    value = _text(form, "value", limit=1000)
    reason = _text(form, "reason", required=True)
    if not (rule or table or value):
        raise HTTPException(400, "an allowlist entry needs a rule, a table or a value")
    target = " ".join(f"{k}={v}" for k, v in (("rule", rule), ("table", table), ("column", column)) if v)

    def work(conn: psycopg.Connection) -> int:
        with conn.transaction():
            found = queries.alert(conn, alert) if alert is not None else None
            if alert is not None and found is None:
                raise HTTPException(404, f"no alert {alert} in {env.name}")
            entry = queries.allow(conn, rule=rule, table=table, column=column, value=value, reason=by(user, reason))
            if found is not None:
                # Allowlisting says the alert was a false positive. guardian.allow() resolves the
                # alerts an entry covers whole; one for a value is this alert's only by our say.
                # An alert resolved before keeps its note; its outcome is corrected.
                note = None if found["resolved_at"] else by(user, f"allowlisted (entry {entry}): {reason}")
                conn.execute("SELECT guardian.resolve_alert(%s, %s, 'false_positive')", (alert, note))
            return entry

    result: int = act(dash, env, user, "allowlist", target if alert is None else f"{target} alert={alert}", work)
    return result


@page("admin")
async def allow_from_alert(request: Request, user: User) -> Response:
    """Allowlist from an alert's page: the alert is resolved with outcome false_positive."""
    dash = dashboard(request)
    form = await request.form()
    env, ident = _alert_env(dash, request, form)
    entry = await run_in_threadpool(_allow, dash, env, user, form, ident)
    return done(
        request,
        f"allowlisted (entry {entry}); the alert is resolved as a false positive",
        _page_of(env, ident),
        {"id": entry},
    )


# -- contamination ------------------------------------------------------------------------------


@page("admin")
async def allow_entry(request: Request, user: User) -> Response:
    dash = dashboard(request)
    form = await request.form()
    env = _env(dash, form)
    entry = await run_in_threadpool(_allow, dash, env, user, form)
    return done(request, f"allowlisted in {env.name} (entry {entry})", _back(form, "/contamination"), {"id": entry})


@page("admin")
async def delete_allowlist(request: Request, user: User) -> Response:
    dash = dashboard(request)
    form = await request.form()
    env = _env(dash, form)
    raw = _text(form, "id", required=True, limit=20) or ""
    if not raw.isdigit():
        raise HTTPException(400, f"allowlist id {raw!r} is not a number")

    def work(conn: psycopg.Connection) -> str:
        if not queries.delete_allowlist(conn, int(raw)):
            raise HTTPException(404, f"no allowlist entry {raw} in {env.name}")
        return f"allowlist entry {raw} removed"

    message = await run_in_threadpool(act, dash, env, user, "remove allowlist entry", raw, work)
    return done(request, message, _back(form, "/contamination"))


@page("admin")
async def toggle_rule(request: Request, user: User) -> Response:
    dash = dashboard(request)
    form = await request.form()
    env = _env(dash, form)
    rule = _text(form, "rule", required=True, limit=63) or ""
    enabled = form.get("enabled") == "1"

    def work(conn: psycopg.Connection) -> str:
        if not queries.set_rule_enabled(conn, rule, enabled):
            raise HTTPException(404, f"no rule {rule!r} in {env.name}")
        return f"rule {rule} {'enabled' if enabled else 'disabled'} in {env.name}"

    message = await run_in_threadpool(act, dash, env, user, "enable rule" if enabled else "disable rule", rule, work)
    return done(request, message, _back(form, "/contamination"))


@page("admin")
async def start_scan(request: Request, user: User) -> Response:
    """Scan a watched table on a thread; the page shows its progress."""
    dash = dashboard(request)
    form = await request.form()
    env = _env(dash, form)
    table = _text(form, "table", required=True, limit=200) or ""
    record = form.get("record") == "1"

    def check() -> str | None:
        with env.reader() as conn:
            return queries.watched_table(conn, table)

    try:
        name = await run_in_threadpool(check)
    except Down as exc:
        raise HTTPException(503, f"environment {env.name} is down: {exc}") from exc
    if name is None:
        raise HTTPException(400, f"{table!r} is not a watched table of {env.name}")
    scan = dash.scans.start(env, name, record=record, user=user.name)
    dash.audit(user, "scan", environment=env.name, target=name, outcome="started", detail=f"record={record}")
    return done(request, f"scanning {name} in {env.name}", _back(form, "/contamination"), {"scan": scan.id})


# -- drift --------------------------------------------------------------------------------------


@page("admin")
async def approve_baseline(request: Request, user: User) -> Response:
    """Snapshot the live schema and make it the baseline (guardian.approve_baseline())."""
    dash = dashboard(request)
    form = await request.form()
    env = _env(dash, form)

    def work(conn: psycopg.Connection) -> str:
        row = conn.execute("SELECT guardian.approve_baseline()").fetchone()
        assert row is not None
        return f"baseline {row[0]} approved in {env.name}"

    message = await run_in_threadpool(act, dash, env, user, "approve baseline", None, work)
    dash.drift_cache.clear()
    return done(request, message, _back(form, "/drift"))
