"""``jobs``, ``checks`` and ``metrics``: the guardian's jobs, its checks, and metrics about both."""

from __future__ import annotations

from typing import Any

import click
import psycopg

from pg_guardian import db
from pg_guardian.cli.options import connected, dsn_option, format_option
from pg_guardian.cli.output import emit, exit_finding
from pg_guardian.jobs import checks, metrics, runner, scheduling
from pg_guardian.vocabulary import CHECK_CATEGORIES


def echo_scheduling(result: scheduling.Scheduling) -> None:
    """Say where the jobs run, or, on stderr, that nothing runs them and what to run."""
    if result.scheduled:
        click.echo(f"jobs: {result.detail}")
    else:
        click.echo(f"WARNING: the guardian's jobs are not scheduled: {result.detail}", err=True)
        click.echo(f"  fix: {result.fix}", err=True)


@click.group("jobs")
def jobs_group() -> None:
    """Guardian jobs: list them, run them once, or keep running them where pg_cron does not."""


@jobs_group.command("list")
@connected("jobs list")
@format_option
def jobs_list(conn: psycopg.Connection, fmt: str) -> None:
    """Each job: schedule (UTC), last run, lag, overdue."""
    columns = ("name", "schedule", "enabled", "last_status", "last_finished_at", "overdue", "last_result")
    emit(runner.list_jobs(conn), fmt, columns=columns)


def _print_runs(runs: list[runner.JobRun]) -> None:
    if not runs:
        click.echo("no job is due")
    for r in runs:
        click.echo(f"{r.name}: {r.result} ({r.seconds:.2f}s)")


@jobs_group.command("run")
@connected("jobs run")
@click.option("--all", "all_jobs", is_flag=True, help="Run every enabled job, due or not.")
@click.option("--job", "names", multiple=True, help="Run this job (repeatable), due or not.")
@format_option
def jobs_run(conn: psycopg.Connection, all_jobs: bool, names: tuple[str, ...], fmt: str) -> None:
    """One pass: run the jobs that are due (or --all, or --job NAME). Exit 1 if one failed."""
    runs = runner.run_due(conn, all_jobs=all_jobs, names=names)
    data = [{"job": r.name, "result": r.result, "seconds": round(r.seconds, 3)} for r in runs]
    emit(data, fmt, text=lambda _: _print_runs(runs))
    exit_finding(any(r.failed for r in runs))


@jobs_group.command("serve")
@dsn_option
@click.option("--passes", type=int, help="Stop after this many passes (default: never).")
@click.option("--interval", type=float, help="Seconds between passes (default: each minute).")
@click.option("--metrics-port", type=int, help="Also serve Prometheus metrics on this port (/metrics).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
def jobs_serve(
    dsn: str | None, passes: int | None, interval: float | None, metrics_port: int | None, metrics_host: str
) -> None:
    """Keep running due jobs, for databases where pg_cron does not run them."""
    stop = metrics.serve_in_background(metrics_host, metrics_port, [db.resolve_dsn(dsn)]) if metrics_port else None
    try:
        runner.serve(dsn, echo=click.echo, passes=passes, interval=interval)
    finally:
        if stop:
            stop()


@jobs_group.command("register")
@connected("jobs register")
def jobs_register(conn: psycopg.Connection) -> None:
    """Schedule the jobs with pg_cron, here or from its own database (exit 1 and the fix if not)."""
    result = scheduling.register(conn)
    for row in result.jobs:
        click.echo(f"{row['job']}: {'scheduled ' if row['scheduled'] else ''}{row['detail']}")
    echo_scheduling(result)
    exit_finding(not result.scheduled)


@click.group("metrics")
def metrics_group() -> None:
    """Prometheus metrics: each job's last success, guarded or not, open alerts."""


def _dsns_option(func: Any) -> Any:
    return click.option("--dsn", "dsns", multiple=True, help="A database (repeatable); default: $DATABASE_URL.")(func)


def _resolve_all(dsns: tuple[str, ...]) -> list[str]:
    return [db.resolve_dsn(d) for d in dsns] or [db.resolve_dsn(None)]


@metrics_group.command("show")
@_dsns_option
def metrics_show(dsns: tuple[str, ...]) -> None:
    """Print the metrics once (what /metrics answers)."""
    click.echo(metrics.render(_resolve_all(dsns)), nl=False)


@metrics_group.command("serve")
@_dsns_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9187, show_default=True, type=int, help="Port to listen on.")
def metrics_serve(dsns: tuple[str, ...], host: str, port: int) -> None:
    """Serve /metrics until stopped, for a dead man's switch outside the database."""
    server = metrics.make_server(host, port, _resolve_all(dsns))
    click.echo(f"serving http://{host}:{server.server_address[1]}/metrics")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


@click.group("checks")
def checks_group() -> None:
    """Health checks, security events and posture checks."""


def _print_check_runs(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["status"] in ("ok", "disabled"):
            continue
        label = r["severity"] or r["status"].upper()
        click.echo(f"[{label}] {r['alert_type'] or r['check_name']}: {r['detail']}")
        if r["remediation"]:
            click.echo(f"    fix: {r['remediation']}")
    count = {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "finding", "degraded", "error")}
    click.echo(
        f"{count['ok']} checks ok, {count['finding']} findings, {count['degraded'] + count['error']} degraded or failed"
    )


@checks_group.command("run")
@connected("checks run")
@click.option("--category", type=click.Choice(CHECK_CATEGORIES), help="Only this category (default: all).")
@click.option("--check", "check", help="Only this check.")
@format_option
def checks_run(conn: psycopg.Connection, category: str | None, check: str | None, fmt: str) -> None:
    """Run checks now; every finding is also an alert. Exit 1 if anything was found."""
    rows = checks.run(conn, category=category, check=check)
    emit(rows, fmt, text=_print_check_runs)
    exit_finding(any(r["status"] == "finding" for r in rows))


@checks_group.command("list")
@connected("checks list")
@format_option
def checks_list(conn: psycopg.Connection, fmt: str) -> None:
    """Each check with its category and how its last run went."""
    columns = ("category", "name", "enabled", "last_status", "last_findings", "last_detail")
    emit(checks.status(conn), fmt, columns=columns)


@checks_group.command("params")
@connected("checks params")
@format_option
def checks_params(conn: psycopg.Connection, fmt: str) -> None:
    """Every threshold: value in this environment, default, range, unit."""
    emit(checks.parameters(conn), fmt, columns=("name", "value", "default_value", "min_value", "max_value", "unit"))


@checks_group.command("set")
@connected("checks set")
@click.argument("name")
@click.argument("value")
@click.option("--environment", default="*", show_default=True, help="Only for this environment.")
def checks_set(conn: psycopg.Connection, name: str, value: str, environment: str) -> None:
    """Set threshold NAME to VALUE ("default" removes the override)."""
    result = checks.set_parameter(conn, name, None if value == "default" else value, environment)
    click.echo(f"{name} = {result}" + ("" if environment == "*" else f" in {environment}"))


COMMANDS = (jobs_group, metrics_group, checks_group)
