"""The ``pg-guardian`` command line: parse, call a capability module, print, exit.

Exit codes: 0 ok, 1 a finding (drift found, contamination found), 2 an error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from pg_guardian import __version__, db
from pg_guardian import install as install_mod
from pg_guardian import jobs as jobs_mod
from pg_guardian import status as status_mod
from pg_guardian.errors import GuardianError

F = TypeVar("F", bound=Callable[..., Any])


def dsn_option(func: F) -> F:
    """``--dsn``, falling back to ``DATABASE_URL``."""
    return click.option(
        "--dsn",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="Database to act on, e.g. postgresql://user@host:5432/db.",
    )(func)


def format_option(func: F) -> F:
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)(func)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class GuardianGroup(click.Group):
    """Turns GuardianError and database errors into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GuardianError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except psycopg.Error as exc:
            diag = exc.diag
            message = diag.message_primary or str(exc).strip().splitlines()[0]
            hint = f" (hint: {diag.message_hint})" if diag.message_hint else ""
            click.echo(f"error: {message}{hint}", err=True)
            ctx.exit(2)


@click.group(cls=GuardianGroup)
@click.version_option(__version__, prog_name="pg-guardian")
def main() -> None:
    """pg_guardian: keep test data and unsafe changes out of production Postgres."""


@main.command()
@dsn_option
@click.option(
    "--method",
    type=click.Choice(install_mod.METHODS),
    default="auto",
    show_default=True,
    help="extension: CREATE EXTENSION (files on the server); sql: plain SQL for managed Postgres.",
)
@click.option("--version", "version", help="Version to install (default: the newest).")
@click.option("--environment", help="Declare the environment (production, staging, local, ...).")
@click.option("--mode", type=click.Choice(["off", "warn", "strict"]), help="Set the guard mode.")
@click.option("--upgrade", "or_upgrade", is_flag=True, help="If already installed, upgrade instead of failing.")
def install(
    dsn: str | None, method: str, version: str | None, environment: str | None, mode: str | None, or_upgrade: bool
) -> None:
    """Install pg_guardian into a database."""
    with db.connect(dsn, "install", autocommit=True) as conn:
        state = install_mod.installed(conn)
        if state.version and or_upgrade:
            old, new = install_mod.upgrade(conn, to=version)
            click.echo(
                f"pg_guardian {old} -> {new} ({state.method}) in {conn.info.dbname}"
                if old != new
                else f"pg_guardian {new} already installed in {conn.info.dbname}"
            )
        else:
            state = install_mod.install(conn, method=method, version=version)
            click.echo(f"installed pg_guardian {state.version} ({state.method}) in {conn.info.dbname}")
            for note in state.notes:
                click.echo(f"  note: {note}")
        if environment:
            conn.execute("SELECT guardian.set_environment(%s)", (environment,))
        if mode:
            conn.execute("SELECT guardian.set_mode(%s)", (mode,))
        _echo_scheduling(jobs_mod.schedule(conn))


def _echo_scheduling(result: jobs_mod.Scheduling) -> None:
    """Say where the jobs run, or, on stderr, that nothing runs them and what to run."""
    if result.scheduled:
        click.echo(f"jobs: {result.detail}")
    else:
        click.echo(f"WARNING: the guardian's jobs are not scheduled: {result.detail}", err=True)
        click.echo(f"  fix: {result.fix}", err=True)


@main.command()
@dsn_option
@click.option("--to", "to", help="Target version (default: the newest).")
def upgrade(dsn: str | None, to: str | None) -> None:
    """Upgrade pg_guardian in a database to a newer version."""
    with db.connect(dsn, "upgrade", autocommit=True) as conn:
        old, new = install_mod.upgrade(conn, to=to)
        click.echo(f"pg_guardian {old} -> {new}" if old != new else f"pg_guardian {new} is already current")


@main.command()
@dsn_option
@click.option("--force", is_flag=True, help="Really uninstall.")
@click.option("--drop-alerts", is_flag=True, help="Also discard the alert history (kept by default).")
def uninstall(dsn: str | None, force: bool, drop_alerts: bool) -> None:
    """Remove pg_guardian from a database (keeps a copy of the alert history)."""
    if not force:
        raise GuardianError("uninstall removes every guardian trigger and table; re-run with --force")
    with db.connect(dsn, "uninstall", autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('guardian.job_scheduler')").fetchone()[0]:  # type: ignore[index]
            problem = jobs_mod.unschedule_remote(conn)
            if problem:
                click.echo(f"WARNING: {problem}", err=True)
        archive = install_mod.uninstall(conn, drop_alerts=drop_alerts)
        click.echo("pg_guardian uninstalled" + (f"; alert history kept in {archive}" if archive else ""))


def _print_status(data: dict[str, Any]) -> None:
    if not data["installed"]:
        click.echo(f"pg_guardian is not installed in {data['database']}")
        return
    click.echo(f"pg_guardian {data['version']} ({data['install_method']}) in {data['database']}")
    click.echo(f"  environment: {data['environment']}   mode: {data['mode']}")
    guard = data.get("guard")
    if guard and guard["guarded"]:
        where = f" in database {guard['scheduled_in']}" if guard.get("scheduled_in") else ""
        click.echo(f"  guarded: yes (jobs run by {guard['scheduler']}{where})")
    elif guard:
        click.echo(f"  guarded: NO: {guard['problem']}")
        click.echo(f"    fix: {guard['fix']}")
    feats = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in data["features"].items())
    click.echo(f"  features: {feats}")
    if data.get("lockdown"):
        click.echo(f"  lockdown: {data['lockdown']}")
    watched = data.get("watched_tables") or []
    click.echo(f"  watched tables ({len(watched)}):")
    for row in watched:
        click.echo(f"    {row['table']}  [{row['mode']}]")
    jobs = data.get("jobs") or []
    click.echo(f"  scheduled jobs ({len(jobs)}):")
    for job in jobs:
        extra = "".join(f"  {k}={v}" for k, v in job.items() if k not in ("jobname",) and v is not None)
        click.echo(f"    {job['jobname']}{extra}")
    checks = data.get("checks")
    if checks:
        click.echo("  checks: " + ", ".join(f"{k} {v}" for k, v in checks["by_status"].items()))
        for row in checks["attention"]:
            click.echo(f"    {row['name']} {row['status']}: {row['detail']}")
    alerts = data["open_alerts"]
    click.echo("  open alerts: " + "  ".join(f"{k} {v}" for k, v in alerts.items()))


@main.command()
@dsn_option
@format_option
def status(dsn: str | None, fmt: str) -> None:
    """Version, environment, mode, watched tables, jobs and open alerts; exit 1 while no job runs."""
    with db.connect(dsn, "status", autocommit=True) as conn:
        data = status_mod.status(conn)
    if fmt == "json":
        emit_json(data)
    else:
        _print_status(data)
    if data.get("guard") and not data["guard"]["guarded"]:
        sys.exit(1)


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the throwaway cluster lives (git-ignored).",
)
@click.option("--keep", is_flag=True, help="Leave the cluster running and print how to connect.")
def demo(directory: Path, keep: bool) -> None:
    """Start a throwaway cluster with a sample dental schema and show the guardian at work."""
    from pg_guardian import demo as demo_mod

    demo_mod.run(directory.resolve(), keep=keep, echo=click.echo)


# ---- alert relay: relay, relay status/retry, silence, config check (issue 4) ----------------


def config_option(func: F) -> F:
    """``--config``, falling back to ``GUARDIAN_CONFIG``."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Controller configuration (TOML); default: $GUARDIAN_CONFIG, else defaults and environment.",
    )(func)


@main.group(invoke_without_command=True)
@dsn_option
@config_option
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit (1 if a delivery failed).")
@click.option("--poll-interval", help="Look for alerts at least this often, e.g. 5s (default from config).")
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="Structured log lines on stderr.",
)
@click.pass_context
def relay(
    ctx: click.Context,
    dsn: str | None,
    config_path: Path | None,
    once: bool,
    poll_interval: str | None,
    log_format: str,
) -> None:
    """Deliver alerts to Slack, email and webhooks (runs until stopped; see also `relay status`).

    Exit codes: 0 stopped cleanly (or --once delivered everything due), 1 --once had failed
    deliveries (they stay queued for retry), 2 configuration or database error.
    """
    if ctx.invoked_subcommand is not None:
        return
    import signal

    from pg_guardian import config as config_mod
    from pg_guardian.relay import Relay
    from pg_guardian.relay import logs as relay_logs

    overrides = {"relay": {"poll_interval": poll_interval}} if poll_interval else None
    cfg = config_mod.load(config_path, overrides=overrides)
    log = relay_logs.setup(log_format)
    worker = Relay(dsn, cfg, once=once, log=log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    summary = worker.run()
    if once:
        click.echo(" ".join(f"{k}={v}" for k, v in summary.as_dict().items()))
        ctx.exit(1 if summary.failed else 0)


@relay.command("status")
@dsn_option
@format_option
@click.option(
    "--stale-after",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds a notice may wait before status reports a problem.",
)
def relay_status(dsn: str | None, fmt: str, stale_after: float) -> None:
    """Relay queue per channel: depth, oldest undelivered, failures. Exit 1 if something is stuck."""
    from pg_guardian.relay import status as relay_status_mod

    with db.connect(dsn, "relay status", autocommit=True) as conn:
        data = relay_status_mod.status(conn, stale_after=stale_after)
    if fmt == "json":
        emit_json(data)
    else:
        click.echo(
            f"relay in {data['database']}: {data['relay_connections']} relay connection(s), "
            f"{data['intake_backlog']} alert(s) waiting to be routed"
        )
        header = (
            f"  {'channel':12} {'pending':>8} {'silenced':>8} {'sending':>8} {'retrying':>8} "
            f"{'dead':>5} {'sent/1h':>8} {'oldest':>8}"
        )
        click.echo(header)
        for row in data["channels"]:
            oldest = row["oldest_undelivered_seconds"]
            click.echo(
                f"  {row['channel']:12} {row['pending']:>8} {row['silenced']:>8} {row['sending']:>8} "
                f"{row['retrying']:>8} {row['dead_messages']:>5} {row['delivered_last_hour']:>8} "
                f"{'-' if oldest is None else f'{oldest:.0f}s':>8}"
            )
            if row["last_error"]:
                click.echo(f"    last error: {row['last_error'][:200]}")
        for problem in data["problems"]:
            click.echo(f"  problem: {problem}")
    if not data["healthy"]:
        sys.exit(1)


@relay.command("retry")
@dsn_option
@click.option("--channel", help="Only this channel's dead letters (default: all).")
def relay_retry(dsn: str | None, channel: str | None) -> None:
    """Re-send dead-lettered messages from scratch (after fixing the channel)."""
    with db.connect(dsn, "relay retry", autocommit=True) as conn:
        row = conn.execute("SELECT guardian.relay_retry(%s)", (channel,)).fetchone()
    click.echo(f"{row[0] if row else 0} dead-lettered message(s) queued again")


@main.group()
def silence() -> None:
    """Hold back relay notices of matching alerts for a while (nothing is lost)."""


@silence.command("add")
@dsn_option
@click.option(
    "-m",
    "--match",
    "matchers",
    multiple=True,
    required=True,
    help="field=value, field!=value, field=~regex or field!~regex; repeat for more.",
)
@click.option("--for", "duration", required=True, help="How long, e.g. 30m, 2h, 1d.")
@click.option("--comment", required=True, help="Why (shown in silence list).")
@click.option("--channel", help="Only this channel (default: every channel).")
def silence_add(dsn: str | None, matchers: tuple[str, ...], duration: str, comment: str, channel: str | None) -> None:
    """Create a silence, e.g. -m type=TEST_DATA_CONTAMINATION -m environment=staging --for 2h."""
    from pg_guardian import config as config_mod
    from pg_guardian.errors import ConfigError
    from pg_guardian.relay import silences

    try:
        seconds = config_mod.parse_duration(duration)
    except ValueError as exc:
        raise ConfigError(f"--for: {exc}") from exc
    with db.connect(dsn, "silence add", autocommit=True) as conn:
        sid = silences.create(conn, list(matchers), seconds, comment, channel)
    click.echo(f"silence {sid} until {duration} from now: {', '.join(matchers)}")


@silence.command("list")
@dsn_option
@format_option
def silence_list(dsn: str | None, fmt: str) -> None:
    """Silences in force (or starting later) and how many notices each holds."""
    from pg_guardian.relay import silences

    with db.connect(dsn, "silence list", autocommit=True) as conn:
        rows = silences.active(conn)
    if fmt == "json":
        emit_json(rows)
        return
    if not rows:
        click.echo("no active silences")
    for row in rows:
        click.echo(
            f"{row['id']}  until {row['ends_at']:%Y-%m-%d %H:%M %Z}  [{row['channel']}]  "
            f"{row['matchers']}  holds {row['held_notices']}  "
            f"by {row['created_by']}: {row['comment']}"
        )


@silence.command("expire")
@dsn_option
@click.argument("silence_id")
def silence_expire(dsn: str | None, silence_id: str) -> None:
    """End a silence now (by id or a unique prefix); what it held goes out."""
    from pg_guardian.relay import silences

    with db.connect(dsn, "silence expire", autocommit=True) as conn:
        row = silences.expire(conn, silence_id)
    click.echo(f"silence {row['id']} expired")


@main.group("config")
def config_group() -> None:
    """Controller configuration."""


@config_group.command("check")
@config_option
@format_option
def config_check(config_path: Path | None, fmt: str) -> None:
    """Check the configuration (file, environment) and show it, secrets masked; 2 if invalid."""
    from pg_guardian import config as config_mod

    cfg = config_mod.load(config_path)
    data = cfg.describe()
    if fmt == "json":
        emit_json(data)
        return
    click.echo("configuration ok (" + "; ".join(data["sources"]) + ")")
    enabled = "yes" if cfg.monitoring_enabled else "no"
    click.echo(f"  monitoring enabled: {enabled}   app_url: {cfg.app_url or '-'}")
    for name, chan in data["channels"].items():
        smtp = f"{chan.get('host')}:{chan.get('port')} ({chan.get('security')})"
        where = chan.get("url") or (smtp if chan["type"] == "email" else "")
        click.echo(f"  channel {name} [{chan['type']}] {where}")
    for route in data["routes"]:
        match = " ".join(f"{k}={','.join(v)}" for k, v in route["match"].items()) or "every alert"
        click.echo(
            f"  route {match} -> {', '.join(route['channels']) or '(log only)'}"
            + (" (continue)" if route["continue"] else "")
        )
    if data["default_routes"]:
        click.echo("  (the design's default routes: CRITICAL to every channel, HIGH to Slack and webhooks)")
    for warning in data["warnings"]:
        click.echo(f"  warning: {warning}")


# --- jobs, health checks and security events (issue 6) -------------------------------------


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    cells = [columns] + [tuple("" if r.get(c) is None else str(r.get(c)) for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


@main.group()
def jobs() -> None:
    """Guardian jobs: list them, run them once, or keep running them where pg_cron does not."""


@jobs.command("list")
@dsn_option
@format_option
def jobs_list(dsn: str | None, fmt: str) -> None:
    """Each job: schedule (UTC), last run, lag, overdue."""
    with db.connect(dsn, "jobs list", autocommit=True) as conn:
        rows = jobs_mod.list_jobs(conn)
    if fmt == "json":
        emit_json(rows)
    else:
        _table(rows, ("name", "schedule", "enabled", "last_status", "last_finished_at", "overdue", "last_result"))


@jobs.command("run")
@dsn_option
@click.option("--all", "all_jobs", is_flag=True, help="Run every enabled job, due or not.")
@click.option("--job", "names", multiple=True, help="Run this job (repeatable), due or not.")
@format_option
def jobs_run(dsn: str | None, all_jobs: bool, names: tuple[str, ...], fmt: str) -> None:
    """One pass: run the jobs that are due (or --all, or --job NAME). Exit 1 if one failed."""
    with db.connect(dsn, "jobs run", autocommit=True) as conn:
        runs = jobs_mod.run_due(conn, all_jobs=all_jobs, names=names)
    if fmt == "json":
        emit_json([{"job": r.name, "result": r.result, "seconds": round(r.seconds, 3)} for r in runs])
    elif not runs:
        click.echo("no job is due")
    for r in runs if fmt == "text" else []:
        click.echo(f"{r.name}: {r.result} ({r.seconds:.2f}s)")
    if any(r.failed for r in runs):
        sys.exit(1)


@jobs.command("serve")
@dsn_option
@click.option("--passes", type=int, help="Stop after this many passes (default: never).")
@click.option("--interval", type=float, help="Seconds between passes (default: each minute).")
@click.option("--metrics-port", type=int, help="Also serve Prometheus metrics on this port (/metrics).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
def jobs_serve(
    dsn: str | None, passes: int | None, interval: float | None, metrics_port: int | None, metrics_host: str
) -> None:
    """Keep running due jobs, for databases where pg_cron does not run them."""
    from pg_guardian import metrics

    stop = metrics.serve_in_background(metrics_host, metrics_port, [db.resolve_dsn(dsn)]) if metrics_port else None
    try:
        jobs_mod.serve(dsn, echo=click.echo, passes=passes, interval=interval)
    finally:
        if stop:
            stop()


@main.group("metrics")
def metrics_group() -> None:
    """Prometheus metrics: each job's last success, guarded or not, open alerts."""


@metrics_group.command("show")
@click.option("--dsn", "dsns", multiple=True, help="A database (repeatable); default: $DATABASE_URL.")
def metrics_show(dsns: tuple[str, ...]) -> None:
    """Print the metrics once (what /metrics answers)."""
    from pg_guardian import metrics

    click.echo(metrics.render([db.resolve_dsn(d) for d in dsns] or [db.resolve_dsn(None)]), nl=False)


@metrics_group.command("serve")
@click.option("--dsn", "dsns", multiple=True, help="A database (repeatable); default: $DATABASE_URL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9187, show_default=True, type=int, help="Port to listen on.")
def metrics_serve(dsns: tuple[str, ...], host: str, port: int) -> None:
    """Serve /metrics until stopped, for a dead man's switch outside the database."""
    from pg_guardian import metrics

    server = metrics.make_server(host, port, [db.resolve_dsn(d) for d in dsns] or [db.resolve_dsn(None)])
    click.echo(f"serving http://{host}:{server.server_address[1]}/metrics")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


@jobs.command("register")
@dsn_option
def jobs_register(dsn: str | None) -> None:
    """Schedule the jobs with pg_cron, here or from its own database (exit 1 and the fix if not)."""
    with db.connect(dsn, "jobs register", autocommit=True) as conn:
        result = jobs_mod.register(conn)
    for row in result.jobs:
        click.echo(f"{row['job']}: {'scheduled ' if row['scheduled'] else ''}{row['detail']}")
    _echo_scheduling(result)
    if not result.scheduled:
        sys.exit(1)


@main.group()
def checks() -> None:
    """Health checks, security events and posture checks."""


@checks.command("run")
@dsn_option
@click.option(
    "--category",
    type=click.Choice(["health", "security", "posture", "jobs"]),
    help="Only this category (default: all).",
)
@click.option("--check", "check", help="Only this check.")
@format_option
def checks_run(dsn: str | None, category: str | None, check: str | None, fmt: str) -> None:
    """Run checks now; every finding is also an alert. Exit 1 if anything was found."""
    from pg_guardian import checks as checks_mod

    with db.connect(dsn, "checks run", autocommit=True) as conn:
        rows = checks_mod.run(conn, category=category, check=check)
    if fmt == "json":
        emit_json(rows)
    else:
        for r in rows:
            if r["status"] in ("ok", "disabled"):
                continue
            label = r["severity"] or r["status"].upper()
            click.echo(f"[{label}] {r['alert_type'] or r['check_name']}: {r['detail']}")
            if r["remediation"]:
                click.echo(f"    fix: {r['remediation']}")
        count = {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "finding", "degraded", "error")}
        click.echo(
            f"{count['ok']} checks ok, {count['finding']} findings, "
            f"{count['degraded'] + count['error']} degraded or failed"
        )
    if any(r["status"] == "finding" for r in rows):
        sys.exit(1)


@checks.command("list")
@dsn_option
@format_option
def checks_list(dsn: str | None, fmt: str) -> None:
    """Each check with its category and how its last run went."""
    from pg_guardian import checks as checks_mod

    with db.connect(dsn, "checks list", autocommit=True) as conn:
        rows = checks_mod.status(conn)
    if fmt == "json":
        emit_json(rows)
    else:
        _table(rows, ("category", "name", "enabled", "last_status", "last_findings", "last_detail"))


@checks.command("params")
@dsn_option
@format_option
def checks_params(dsn: str | None, fmt: str) -> None:
    """Every threshold: value in this environment, default, range, unit."""
    from pg_guardian import checks as checks_mod

    with db.connect(dsn, "checks params", autocommit=True) as conn:
        rows = checks_mod.parameters(conn)
    if fmt == "json":
        emit_json(rows)
    else:
        _table(rows, ("name", "value", "default_value", "min_value", "max_value", "unit"))


@checks.command("set")
@dsn_option
@click.argument("name")
@click.argument("value")
@click.option("--environment", default="*", show_default=True, help="Only for this environment.")
def checks_set(dsn: str | None, name: str, value: str, environment: str) -> None:
    """Set threshold NAME to VALUE ("default" removes the override)."""
    from pg_guardian import checks as checks_mod

    with db.connect(dsn, "checks set", autocommit=True) as conn:
        result = checks_mod.set_parameter(conn, name, None if value == "default" else value, environment)
    click.echo(f"{name} = {result}" + ("" if environment == "*" else f" in {environment}"))


# --- contamination: watch, scan, payload check ----------------------------------------------


@main.command()
@dsn_option
@click.argument("table")
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME=KIND",
    help="Override a column's kind (email, person_name, organization, phone, identifier, "
    "free_text), or NAME=- to skip it. Repeatable.",
)
@click.option("--mode", type=click.Choice(["off", "warn", "strict"]), help="Per-table guard mode.")
def watch(dsn: str | None, table: str, columns: tuple[str, ...], mode: str | None) -> None:
    """Watch TABLE for test data (idempotent); prints the watched columns and their kinds."""
    from pg_guardian import contamination

    overrides: dict[str, str | None] = {}
    for item in columns:
        name, sep, kind = item.partition("=")
        if not sep or not name:
            raise GuardianError(f"--column {item!r} is not NAME=KIND; e.g. --column notes=free_text or --column code=-")
        overrides[name] = None if kind in ("-", "") else kind
    with db.connect(dsn, "watch", autocommit=True) as conn:
        rows = contamination.watch(conn, table, overrides, mode)
    for column, kind, source in rows:
        click.echo(f"{column:<24} {kind:<14} {source}")


@main.command()
@dsn_option
@click.argument("table")
def unwatch(dsn: str | None, table: str) -> None:
    """Stop watching TABLE (its findings and alerts stay)."""
    with db.connect(dsn, "unwatch", autocommit=True) as conn:
        row = conn.execute("SELECT guardian.unwatch(%s)", (table,)).fetchone()
    click.echo(f"{table} is no longer watched" if row and row[0] else f"{table} was not watched")


@main.command()
@dsn_option
@click.argument("tables", nargs=-1)
@click.option("--record", is_flag=True, help="Also record the findings as alerts.")
@click.option(
    "--batch-pages",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Heap pages per batch (each batch is its own short transaction).",
)
@format_option
def scan(dsn: str | None, tables: tuple[str, ...], record: bool, batch_pages: int, fmt: str) -> None:
    """Find test data already in TABLES (default: every watched table). Exit 1 if any is found."""
    from pg_guardian import contamination

    found: list[dict[str, Any]] = []
    with db.connect(dsn, "scan", autocommit=True) as conn:
        targets = list(tables) or contamination.watched_tables(conn)
        if not targets:
            raise GuardianError("no tables to scan: name some, or watch tables first with `pg-guardian watch TABLE`")
        for table in targets:
            batches = contamination.scan_batches(conn, table, batch_pages)
            total = sum(b[3] for b in batches)
            with click.progressbar(length=total, label=f"scanning {table}", file=sys.stderr, show_pos=True) as bar:
                for finding in contamination.scan(
                    conn, table, record=record, batch_pages=batch_pages, progress=bar.update
                ):
                    found.append(finding.as_dict())
    if fmt == "json":
        emit_json(found)
    else:
        for f in found:
            click.echo(
                f"{f['severity']:<8} {f['table']}  record {f['record_id']}  {f['column_name']}: "
                f"{f['sample']}  ({f['rule']})"
            )
        click.echo(
            f"{len(found)} finding(s) in {len(targets)} table(s)" + ("; recorded as alerts" if record and found else "")
        )
    sys.exit(1 if found else 0)


@main.command("check-payload")
@dsn_option
@click.argument("source", type=click.File("r"), default="-")
@click.option("--operation", default="INSERT", show_default=True)
@click.option("--table", help="Table the payload is meant for (helps map keys to kinds).")
def check_payload_cmd(dsn: str | None, source: Any, operation: str, table: str | None) -> None:
    """Check a JSON document (file or stdin) against the rules before writing it. Exit 1 if flagged."""
    import json as json_mod

    from pg_guardian import contamination

    try:
        data = json_mod.load(source)
    except json_mod.JSONDecodeError as exc:
        raise GuardianError(f"{source.name} is not valid JSON: {exc}; pass a JSON object or array") from exc
    with db.connect(dsn, "check-payload", autocommit=True) as conn:
        alerts = contamination.check_payload(conn, data, operation=operation, table=table)
    emit_json(alerts)
    sys.exit(1 if alerts else 0)


# -- drift (issue 5) ---------------------------------------------------------------------------


def _parse_envs(envs: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in envs:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise GuardianError(f"--env {item!r} is not NAME=DSN; e.g. --env production=postgresql://host/db")
        if name in parsed:
            raise GuardianError(f"--env {name} is given twice")
        parsed[name.strip()] = spec.strip()
    return parsed


@main.command()
@click.option("--source", help="Reference: a DSN or a fingerprint file (e.g. production).")
@click.option("--target", help="Environment to check against it: a DSN or a fingerprint file.")
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="NAME=DSN",
    help="Compare several environments (repeat; the first is the reference).",
)
@format_option
@click.option("--schema", "schemas", multiple=True, help="Only this schema (repeatable).")
@click.option("--exclude-schema", "exclude", multiple=True, help="Skip this schema (repeatable).")
@click.option(
    "--include-cosmetic", is_flag=True, help="Count formatting-only differences (whitespace, comments, case) as drift."
)
@click.option(
    "--sql", "emit_sql", is_flag=True, help="Print the SQL that would bring the target in line with the source."
)
@click.option("--unsafe", is_flag=True, help="With --sql: allow destructive statements (DROP, column type changes).")
def drift(
    source: str | None,
    target: str | None,
    envs: tuple[str, ...],
    fmt: str,
    schemas: tuple[str, ...],
    exclude: tuple[str, ...],
    include_cosmetic: bool,
    emit_sql: bool,
    unsafe: bool,
) -> None:
    """Compare the schemas of environments; exit 0 no drift, 1 drift, 2 error.

    Each side is a DSN (pg_guardian need not be installed there) or a file written by
    `pg-guardian fingerprint`.
    """
    from pg_guardian import drift as drift_mod
    from pg_guardian import drift_sql

    if envs and (source or target):
        raise GuardianError("use either --source/--target or --env NAME=DSN ..., not both")
    if envs:
        specs = _parse_envs(envs)
        if len(specs) < 2:
            raise GuardianError("--env needs at least two environments, e.g. --env production=DSN --env staging=DSN")
        if emit_sql:
            raise GuardianError("--sql works on one pair: use --source DSN --target DSN")
    else:
        if not source or not target:
            raise GuardianError("give --source and --target (a DSN or fingerprint file each), or --env NAME=DSN twice")
        specs = {"source": source, "target": target}
    fetched = drift_mod.fetch_all(specs)
    fingerprints = {name: fp.only(schemas, exclude) for name, fp in fetched.items()}

    if not envs:
        differences = drift_mod.diff(fingerprints["source"], fingerprints["target"])
        drifted = bool(drift_mod.counted(differences, include_cosmetic))
        if emit_sql:
            statements = drift_sql.migration(
                drift_mod.counted(differences, include_cosmetic), fingerprints["source"], fingerprints["target"]
            )
            header = (
                f"pg-guardian drift --sql: bring {fingerprints['target'].origin}\n"
                f"in line with {fingerprints['source'].origin}. Review before running."
            )
            click.echo(drift_sql.render(statements, unsafe=unsafe, header=header), nl=False)
        elif fmt == "json":
            emit_json([d.to_dict() for d in differences])
        else:
            for line in drift_mod.render_text(differences, include_cosmetic=include_cosmetic):
                click.echo(line)
    else:
        many = drift_mod.diff_many(fingerprints)
        drifted = any(include_cosmetic or not d.cosmetic for d in many)
        if fmt == "json":
            emit_json([d.to_dict() for d in many])
        else:
            lines = drift_mod.render_many_text(many, list(specs), include_cosmetic=include_cosmetic)
            for line in lines:
                click.echo(line)
    if drifted:
        click.get_current_context().exit(1)


@main.command()
@dsn_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the fingerprint to this file instead of standard output.",
)
def fingerprint(dsn: str | None, output: Path | None) -> None:
    """Print a database's schema fingerprint (JSON) for `drift` or guardian.import_fingerprint()."""
    from pg_guardian import catalog

    with db.connect(dsn, "fingerprint", autocommit=True) as conn:
        document = catalog.read_fingerprint(conn, db.describe(db.resolve_dsn(dsn))).to_document()
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {len(document['objects'])} objects (checksum {document['checksum']}) to {output}", err=True)
    else:
        click.echo(text, nl=False)


# --- auto-response: cleanup scripts, quarantine, lockdown, policies (issue 7) ---------------


def _cleanup_target(func: F) -> F:
    """ALERT_ID, or --table with optional --record ids (as a scan returned them); --include-restricted."""
    func = click.option(
        "--include-restricted",
        is_flag=True,
        help="Also remove (and quarantine) rows that reference removed rows through ON DELETE RESTRICT / "
        "NO ACTION, with what depends on them; without it such rows refuse the cleanup.",
    )(func)
    func = click.option(
        "--record", "records", multiple=True, help="Only this record id of --table (repeatable), as scanned."
    )(func)
    func = click.option("--table", help="Clean up what a scan finds in this table now (schema.table).")(func)
    return click.argument("alert_id", required=False)(func)


def _cleanup_warnings(rows: list[dict[str, Any]]) -> None:
    """A plan's warnings (rows protected by RESTRICT that are removed, or block), on stderr."""
    for r in rows:
        if r.get("warning"):
            click.echo(f"warning: step {r['step']} ({r['action']} {r['table_name']}): {r['warning']}", err=True)


@main.group()
def cleanup() -> None:
    """Cleanup of contaminated rows and the rows that depend on them (quarantined first)."""


@cleanup.command("plan")
@dsn_option
@_cleanup_target
@format_option
def cleanup_plan(
    dsn: str | None,
    alert_id: str | None,
    table: str | None,
    records: tuple[str, ...],
    include_restricted: bool,
    fmt: str,
) -> None:
    """Dry run: each step (foreign-key order) with the rows it would touch. Exit 1 if blocked."""
    from pg_guardian import response

    with db.connect(dsn, "cleanup plan", autocommit=True) as conn:
        rows = response.cleanup_plan(
            conn, alert=alert_id, table=table, records=list(records), include_restricted=include_restricted
        )
    if fmt == "json":
        emit_json(rows)
    else:
        _table(rows, ("step", "table_name", "action", "rows", "via", "detail"))
        _cleanup_warnings(rows)
    if any(r["action"] == "blocked" and r["rows"] for r in rows):
        sys.exit(1)


@cleanup.command("script")
@dsn_option
@_cleanup_target
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the script here.")
def cleanup_script(
    dsn: str | None,
    alert_id: str | None,
    table: str | None,
    records: tuple[str, ...],
    include_restricted: bool,
    output: Path | None,
) -> None:
    """Print the cleanup script (also stored with its alert); run it with psql -f."""
    from pg_guardian import response

    with db.connect(dsn, "cleanup script", autocommit=True) as conn:
        script = response.cleanup_script(
            conn, alert=alert_id, table=table, records=list(records), include_restricted=include_restricted
        )
    if output:
        output.write_text(script)
        click.echo(f"cleanup script written to {output}")
    else:
        click.echo(script, nl=False)


@cleanup.command("run")
@dsn_option
@_cleanup_target
@click.option("--force", is_flag=True, help="Really remove the rows (they are quarantined first).")
def cleanup_run(
    dsn: str | None,
    alert_id: str | None,
    table: str | None,
    records: tuple[str, ...],
    include_restricted: bool,
    force: bool,
) -> None:
    """Generate the cleanup script and run it in one transaction (needs --force)."""
    from pg_guardian import response

    with db.connect(dsn, "cleanup run", autocommit=True) as conn:
        rows = response.cleanup_plan(
            conn, alert=alert_id, table=table, records=list(records), include_restricted=include_restricted
        )
        total = sum(r["rows"] for r in rows if r["action"] != "blocked")
        if not force:
            _table(rows, ("step", "table_name", "action", "rows", "via"))
            _cleanup_warnings(rows)
            raise GuardianError(
                f"cleanup run would remove or change {total} row(s) (quarantined first); re-run with --force"
            )
        _cleanup_warnings(rows)
        script = response.cleanup_script(
            conn, alert=alert_id, table=table, records=list(records), include_restricted=include_restricted
        )
        click.echo(response.run_script(conn, script))


@main.group("quarantine")
def quarantine_group() -> None:
    """Rows removed by cleanups, kept to be restored."""


@quarantine_group.command("list")
@dsn_option
@click.option("--all", "include_restored", is_flag=True, help="Include restored batches.")
@format_option
def quarantine_list(dsn: str | None, include_restored: bool, fmt: str) -> None:
    """Quarantine batches, newest first, with the command that restores each."""
    from pg_guardian import response

    with db.connect(dsn, "quarantine list", autocommit=True) as conn:
        rows = response.quarantine(conn, include_restored=include_restored)
    if fmt == "json":
        emit_json(rows)
    elif not rows:
        click.echo("quarantine is empty")
    else:
        _table(
            rows, ("batch_id", "status", "automatic", "row_count", "tables", "created_at", "created_by", "kept_until")
        )


@quarantine_group.command("show")
@dsn_option
@click.argument("batch")
@format_option
def quarantine_show(dsn: str | None, batch: str, fmt: str) -> None:
    """The rows of one batch, as they were removed."""
    from pg_guardian import response

    with db.connect(dsn, "quarantine show", autocommit=True) as conn:
        rows = response.quarantined_rows(conn, batch)
    if fmt == "json":
        emit_json(rows)
    else:
        for row in rows:
            cols = f" ({', '.join(row['columns'])})" if row["columns"] else ""
            click.echo(
                f"{row['step']:>3} {row['table_name']} {row['action']}{cols} "
                f"{json.dumps(row['row_key'])}: "
                f"{json.dumps(row['row_data'], sort_keys=True)}"
            )


@quarantine_group.command("restore")
@dsn_option
@click.argument("batch")
@click.option(
    "--no-allowlist", is_flag=True, help="Do not allowlist the values that got the rows removed (may be flagged again)."
)
def quarantine_restore(dsn: str | None, batch: str, no_allowlist: bool) -> None:
    """Put a batch back, identical to what was removed (refused a second time)."""
    from pg_guardian import response

    with db.connect(dsn, "quarantine restore", autocommit=True) as conn:
        click.echo(response.restore(conn, batch, allowlist=not no_allowlist))


@quarantine_group.command("prune")
@dsn_option
def quarantine_prune(dsn: str | None) -> None:
    """Apply quarantine retention now (retention.quarantine_days); says what went."""
    from pg_guardian import response

    with db.connect(dsn, "quarantine prune", autocommit=True) as conn:
        click.echo(response.prune(conn))


@main.group("lockdown")
def lockdown_group() -> None:
    """Emergency brake: application roles lose their write privileges until unlocked."""


@lockdown_group.command("start")
@dsn_option
@click.argument("reason", nargs=-1, required=True)
def lockdown_start(dsn: str | None, reason: tuple[str, ...]) -> None:
    """Lock this environment down (REASON is recorded and alerted)."""
    from pg_guardian import response

    with db.connect(dsn, "lockdown", autocommit=True) as conn:
        row = response.lockdown(conn, " ".join(reason))
    click.echo(
        f"{row['environment']} locked down: {row['revoked']} write grant(s) taken from "
        f"{', '.join(row['roles']) or 'no application roles'}"
        + (f", {row['read_only_roles']} role(s) read-only" if row["read_only_roles"] else "")
        + (f", {row['sessions_ended']} session(s) ended" if row["sessions_ended"] else "")
    )
    for kept in row["not_revoked"]:
        click.echo(f"  kept: {', '.join(kept['privileges'])} on {kept['table']} for {kept['role']}: {kept['reason']}")
    click.echo("lift it with: pg-guardian lockdown unlock")


@lockdown_group.command("unlock")
@dsn_option
@click.option("--note", help="Why it is over (recorded on the LOCKDOWN alert).")
def lockdown_unlock(dsn: str | None, note: str | None) -> None:
    """Lift the lockdown, giving back exactly what it took. Exit 1 if something could not be."""
    from pg_guardian import response

    with db.connect(dsn, "unlock", autocommit=True) as conn:
        row = response.unlock(conn, note)
    click.echo(f"{row['environment']} unlocked")
    for problem in row["not_restored"]:
        click.echo(f"  not restored: {problem}")
    if row["not_restored"]:
        sys.exit(1)


@lockdown_group.command("status")
@dsn_option
@format_option
def lockdown_status(dsn: str | None, fmt: str) -> None:
    """Whether this environment is locked down, since when, by whom and why."""
    from pg_guardian import response

    with db.connect(dsn, "lockdown status", autocommit=True) as conn:
        row = response.lockdown_status(conn)
    if fmt == "json":
        emit_json(row)
    else:
        click.echo(response.describe_lockdown(row) if row else "not locked down")


@lockdown_group.command("roles")
@dsn_option
@format_option
def lockdown_roles(dsn: str | None, fmt: str) -> None:
    """Which roles a lockdown would lock, and why each is in or out."""
    from pg_guardian import response

    with db.connect(dsn, "lockdown roles", autocommit=True) as conn:
        rows = response.lockdown_roles(conn)
    if fmt == "json":
        emit_json(rows)
    else:
        _table(rows, ("role_name", "locked", "reason"))


def policy_file_option(func: F) -> F:
    return click.option(
        "-f",
        "--file",
        "policy_path",
        type=click.Path(path_type=Path),
        envvar="GUARDIAN_POLICY",
        show_envvar=True,
        default=Path("guardian-policy.toml"),
        show_default=True,
        help="The policy file (TOML).",
    )(func)


def env_option(func: F) -> F:
    return click.option("--env", "environment", required=True, help="The environment section to use, e.g. production.")(
        func
    )


@main.group("policy")
def policy_group() -> None:
    """Per-environment policies: check, render, diff and apply a TOML policy file."""


@policy_group.command("check")
@policy_file_option
@click.option("--dsn", help="Also check that the rules, tables, columns and roles exist there.")
@config_option
def policy_check(policy_path: Path, dsn: str | None, config_path: Path | None) -> None:
    """Check the file and list every problem with its line; 2 if there is one."""
    from pg_guardian import policy as policy_mod

    pol = policy_mod.load(policy_path)
    found: list[str] = []
    if dsn:
        with db.connect(dsn, "policy check", autocommit=True) as conn:
            for name in sorted(pol.environments):
                found.extend(p for p in policy_mod.problems(conn, pol, name) if p not in found)
    if config_path or os.environ.get("GUARDIAN_CONFIG"):
        from pg_guardian import config as config_mod

        cfg = config_mod.load(config_path)
        found.extend(policy_mod.check_routes(pol, set(cfg.channels)))
    if found:
        raise policy_mod.PolicyError(
            f"policy {policy_path} does not fit "
            f"({len(found)} problem{'s' if len(found) != 1 else ''}):\n" + "\n".join(f"  - {p}" for p in found),
            problems=found,
        )
    click.echo(f"policy {policy_path} ok: environments {', '.join(sorted(pol.environments))}")
    for name, overrides in sorted(pol.overrides.items()):
        click.echo(f"  {name}: overridden from the environment: {', '.join(overrides)}")


@policy_group.command("render")
@policy_file_option
@env_option
@click.option("--force", is_flag=True, help="Render for applying to a database of another environment.")
def policy_render(policy_path: Path, environment: str, force: bool) -> None:
    """Print the SQL that makes a database match ENV's policy (changes only what differs)."""
    from pg_guardian import policy as policy_mod

    pol = policy_mod.load(policy_path)
    click.echo(policy_mod.render(pol, environment, force=force), nl=False)


@policy_group.command("diff")
@policy_file_option
@env_option
@dsn_option
@format_option
def policy_diff(policy_path: Path, environment: str, dsn: str | None, fmt: str) -> None:
    """How the database differs from ENV's policy. Exit 1 if it does."""
    from pg_guardian import policy as policy_mod

    pol = policy_mod.load(policy_path)
    with db.connect(dsn, "policy diff", autocommit=True) as conn:
        found = policy_mod.problems(conn, pol, environment)
        changes = policy_mod.diff(conn, pol, environment)
        notes = policy_mod.unmanaged(conn, pol, environment)
    if fmt == "json":
        emit_json({"differences": [vars(c) for c in changes], "problems": found, "unmanaged": notes})
    else:
        for change in changes:
            click.echo(change.describe())
        for problem in found:
            click.echo(f"problem: {problem}")
        for note in notes:
            click.echo(f"note: {note}")
        if not changes and not found:
            click.echo(f"the database matches the {environment} policy")
    if changes or found:
        sys.exit(1)


@policy_group.command("apply")
@policy_file_option
@env_option
@dsn_option
@click.option("--force", is_flag=True, help="Apply even though the database is another environment.")
def policy_apply(policy_path: Path, environment: str, dsn: str | None, force: bool) -> None:
    """Make the database match ENV's policy, in one transaction (nothing changes on any error)."""
    from pg_guardian import policy as policy_mod

    pol = policy_mod.load(policy_path)
    with db.connect(dsn, "policy apply", autocommit=True) as conn:
        result = policy_mod.apply(conn, pol, environment, force=force)
    if not result.changes:
        click.echo(f"nothing to change: the database already matches the {environment} policy")
        return
    for change in result.changes:
        click.echo(f"  {change.describe()}")
    click.echo(
        f"applied the {environment} policy to {result.database_environment}: "
        f"{len(result.changes)} change(s)" + (" (forced)" if result.forced else "")
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
