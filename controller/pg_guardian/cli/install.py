"""``install``, ``upgrade``, ``uninstall``, ``status`` and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import psycopg

from pg_guardian import demo, install
from pg_guardian.cli.jobs import echo_scheduling
from pg_guardian.cli.options import connected, connection, dsn_option, format_option
from pg_guardian.cli.output import emit, exit_finding
from pg_guardian.core import status
from pg_guardian.core.environment import set_environment, set_mode
from pg_guardian.errors import GuardianError
from pg_guardian.jobs import scheduling
from pg_guardian.vocabulary import MODES


@click.command("install")
@connected("install")
@click.option(
    "--method",
    type=click.Choice(install.METHODS),
    default="auto",
    show_default=True,
    help="extension: CREATE EXTENSION (files on the server); sql: plain SQL for managed Postgres.",
)
@click.option("--version", "version", help="Version to install (default: the newest).")
@click.option("--environment", help="Declare the environment (production, staging, local, ...).")
@click.option("--mode", type=click.Choice(MODES), help="Set the guard mode.")
@click.option("--upgrade", "or_upgrade", is_flag=True, help="If already installed, upgrade instead of failing.")
def install_command(
    conn: psycopg.Connection,
    method: str,
    version: str | None,
    environment: str | None,
    mode: str | None,
    or_upgrade: bool,
) -> None:
    """Install pg_guardian into a database."""
    state = install.installed(conn)
    if state.version and or_upgrade:
        old, new = install.upgrade(conn, to=version)
        click.echo(
            f"pg_guardian {old} -> {new} ({state.method}) in {conn.info.dbname}"
            if old != new
            else f"pg_guardian {new} already installed in {conn.info.dbname}"
        )
    else:
        state = install.install(conn, method=method, version=version)
        click.echo(f"installed pg_guardian {state.version} ({state.method}) in {conn.info.dbname}")
        for note in state.notes:
            click.echo(f"  note: {note}")
    if environment:
        set_environment(conn, environment)
    if mode:
        set_mode(conn, mode)
    echo_scheduling(scheduling.schedule(conn))


@click.command("upgrade")
@connected("upgrade")
@click.option("--to", "to", help="Target version (default: the newest).")
def upgrade_command(conn: psycopg.Connection, to: str | None) -> None:
    """Upgrade pg_guardian in a database to a newer version."""
    old, new = install.upgrade(conn, to=to)
    click.echo(f"pg_guardian {old} -> {new}" if old != new else f"pg_guardian {new} is already current")


@click.command("uninstall")
@dsn_option
@click.option("--force", is_flag=True, help="Really uninstall.")
@click.option("--drop-alerts", is_flag=True, help="Also discard the alert history (kept by default).")
def uninstall_command(dsn: str | None, force: bool, drop_alerts: bool) -> None:
    """Remove pg_guardian from a database (keeps a copy of the alert history)."""
    if not force:
        raise GuardianError("uninstall removes every guardian trigger and table; re-run with --force")
    with connection(dsn, "uninstall") as conn:
        problem = scheduling.unschedule_remote(conn)
        if problem:
            click.echo(f"WARNING: {problem}", err=True)
        archive = install.uninstall(conn, drop_alerts=drop_alerts)
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


@click.command("status")
@connected("status")
@format_option
def status_command(conn: psycopg.Connection, fmt: str) -> None:
    """Version, environment, mode, watched tables, jobs and open alerts; exit 1 while no job runs."""
    data = status.status(conn)
    emit(data, fmt, text=_print_status)
    exit_finding(data.get("guard") and not data["guard"]["guarded"])


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the throwaway cluster lives (git-ignored).",
)
@click.option("--keep", is_flag=True, help="Leave the cluster running and print how to connect.")
@click.option(
    "--dashboard",
    "dashboard_port",
    type=click.IntRange(1, 65535),
    is_flag=False,
    flag_value=8765,
    default=None,
    help="Then serve the web dashboard on 127.0.0.1 (port 8765, or the one given) until Ctrl-C.",
)
def demo_command(directory: Path, keep: bool, dashboard_port: int | None) -> None:
    """Start a throwaway cluster with a sample dental schema and show the guardian at work."""
    demo.run(directory.resolve(), keep=keep, echo=click.echo, dashboard_port=dashboard_port)


COMMANDS = (install_command, upgrade_command, uninstall_command, status_command, demo_command)
