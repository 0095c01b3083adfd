"""``relay`` (with ``relay status`` and ``relay retry``), ``silence`` and ``config``."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import click
import psycopg
from click.core import ParameterSource

from pg_guardian import config as controller_config
from pg_guardian.cli.options import config_option, connected, connection, dsn_option, format_option
from pg_guardian.cli.output import emit, exit_finding
from pg_guardian.config import parse_duration
from pg_guardian.errors import ConfigError
from pg_guardian.relay import Relay, RunSummary, config, logs, many, silences, status, store


@click.group("relay", invoke_without_command=True)
@dsn_option
@config_option
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit (1 if a delivery failed).")
@click.option("--poll-interval", help="Look for alerts at least this often, e.g. 5s (default from config).")
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="NAME",
    help="Without --dsn: relay only the configuration's [databases.NAME] (repeatable; default: every one).",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="Structured log lines on stderr.",
)
@click.pass_context
def relay_group(
    ctx: click.Context,
    dsn: str | None,
    config_path: Path | None,
    once: bool,
    poll_interval: str | None,
    envs: tuple[str, ...],
    log_format: str,
) -> None:
    """Deliver alerts to Slack, email and webhooks (runs until stopped; see also `relay status`).

    Without --dsn or DATABASE_URL, every database of the configuration's [databases.*] is
    relayed (with its relay_dsn, else its dsn), each by its own worker; --env restricts to some.

    Exit codes: 0 stopped cleanly (or --once delivered everything due), 1 --once had failed
    deliveries (they stay queued for retry), 2 configuration or database error.
    """
    if ctx.invoked_subcommand is not None:
        return
    if envs and ctx.get_parameter_source("dsn") == ParameterSource.COMMANDLINE:
        raise ConfigError("use either --dsn or --env NAME ..., not both")
    overrides = {"relay": {"poll_interval": poll_interval}} if poll_interval else None
    cfg = config.load(config_path, overrides=overrides)
    targets: list[controller_config.Database] = []
    if envs or not dsn:
        found, where = controller_config.load_databases(config_path, os.environ)
        targets = controller_config.pick(found, envs, where, "--env", "or leave --env out") if envs else found
    if targets:
        _relay_many(targets, cfg, once, logs.setup(log_format))
        return
    worker = Relay(dsn, cfg, once=once, log=logs.setup(log_format))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    summary = worker.run()
    if once:
        click.echo(_summary(summary))
        exit_finding(summary.failed)


def _summary(summary: RunSummary) -> str:
    return " ".join(f"{k}={v}" for k, v in summary.as_dict().items())


def _relay_many(targets: list[controller_config.Database], cfg: config.Config, once: bool, log: logging.Logger) -> None:
    """Relay each configured database in its own thread; --once prints each summary and the total."""
    relays = many.Relays(targets, cfg, once=once, log=log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: relays.stop())
    summaries = relays.run()
    if once:
        for name, summary in summaries.items():
            click.echo(f"{name}: {_summary(summary)}")
        total = many.total(summaries)
        click.echo(_summary(total))
        exit_finding(total.failed)


def _print_relay_status(data: dict[str, Any]) -> None:
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


@relay_group.command("status")
@connected("relay status")
@format_option
@click.option(
    "--stale-after",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds a notice may wait before status reports a problem.",
)
def relay_status(conn: psycopg.Connection, fmt: str, stale_after: float) -> None:
    """Relay queue per channel: depth, oldest undelivered, failures. Exit 1 if something is stuck."""
    data = status.status(conn, stale_after=stale_after)
    emit(data, fmt, text=_print_relay_status)
    exit_finding(not data["healthy"])


@relay_group.command("retry")
@connected("relay retry")
@click.option("--channel", help="Only this channel's dead letters (default: all).")
def relay_retry(conn: psycopg.Connection, channel: str | None) -> None:
    """Re-send dead-lettered messages from scratch (after fixing the channel)."""
    click.echo(f"{store.retry_dead(conn, channel)} dead-lettered message(s) queued again")


@click.group("silence")
def silence_group() -> None:
    """Hold back relay notices of matching alerts for a while (nothing is lost)."""


@silence_group.command("add")
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
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ConfigError(f"--for: {exc}") from exc
    with connection(dsn, "silence add") as conn:
        sid = silences.create(conn, list(matchers), seconds, comment, channel)
    click.echo(f"silence {sid} until {duration} from now: {', '.join(matchers)}")


def _print_silences(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no active silences")
    for row in rows:
        click.echo(
            f"{row['id']}  until {row['ends_at']:%Y-%m-%d %H:%M %Z}  [{row['channel']}]  "
            f"{row['matchers']}  holds {row['held_notices']}  "
            f"by {row['created_by']}: {row['comment']}"
        )


@silence_group.command("list")
@connected("silence list")
@format_option
def silence_list(conn: psycopg.Connection, fmt: str) -> None:
    """Silences in force (or starting later) and how many notices each holds."""
    emit(silences.active(conn), fmt, text=_print_silences)


@silence_group.command("expire")
@connected("silence expire")
@click.argument("silence_id")
def silence_expire(conn: psycopg.Connection, silence_id: str) -> None:
    """End a silence now (by id or a unique prefix); what it held goes out."""
    click.echo(f"silence {silences.expire(conn, silence_id)['id']} expired")


@click.group("config")
def config_group() -> None:
    """Controller configuration."""


def _print_config(data: dict[str, Any]) -> None:
    click.echo("configuration ok (" + "; ".join(data["sources"]) + ")")
    enabled = "yes" if data["monitoring_enabled"] else "no"
    click.echo(f"  monitoring enabled: {enabled}   app_url: {data['app_url'] or '-'}")
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


@config_group.command("check")
@config_option
@format_option
def config_check(config_path: Path | None, fmt: str) -> None:
    """Check the configuration (file, environment) and show it, secrets masked; 2 if invalid."""
    emit(config.load(config_path).describe(), fmt, text=_print_config)


COMMANDS = (relay_group, silence_group, config_group)
