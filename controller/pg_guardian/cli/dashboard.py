"""``pg-guardian dashboard``: the web dashboard (:mod:`pg_guardian.dashboard`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pg_guardian.cli.options import config_option


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--dsn",
    "dsns",
    multiple=True,
    help="A database (repeatable, named after it); default: the config's [databases.*], else $DATABASE_URL.",
)
@config_option
def dashboard(host: str, port: int, dsns: tuple[str, ...], config_path: Path | None) -> None:
    """Serve the web dashboard: every environment at a glance, alerts, the cleanup page."""
    from pg_guardian import dashboard as dashboard_mod
    from pg_guardian.dashboard.settings import default_name

    config = config_path or (Path(os.environ["GUARDIAN_CONFIG"]) if os.environ.get("GUARDIAN_CONFIG") else None)
    databases = [(default_name(dsn), dsn) for dsn in dsns] or None
    dashboard_mod.serve(host, port, databases, config)


COMMANDS = (dashboard,)
