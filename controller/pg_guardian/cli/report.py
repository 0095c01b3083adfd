"""``report``: the alert history of a period, from one database or several side by side."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from pg_guardian import config as controller_config
from pg_guardian.analytics import render
from pg_guardian.analytics.report import Combined, combine, fetch, period
from pg_guardian.cli.options import config_option, connection
from pg_guardian.cli.output import exit_finding
from pg_guardian.errors import GuardianError

FORMATS = ("text", "markdown", "html", "json", "csv")


def _render(combined: Combined, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(combined.to_json(), indent=2, default=str) + "\n"
    if fmt == "markdown":
        return render.markdown(combined)
    if fmt == "csv":
        return render.csv_text(combined)
    if fmt == "html":
        from pg_guardian.analytics.html import html

        return html(combined)
    return render.text(combined)


@click.command("report")
@click.option("--dsn", help="Database to report on (default: DATABASE_URL, else every configured database).")
@config_option
@click.option("--env", "envs", multiple=True, metavar="NAME", help="A configured database (repeat: a column each).")
@click.option("--since", help="How far back from now, e.g. 30d, 12h, 2w (default 30d).")
@click.option("--from", "start", metavar="WHEN", help="Start: a date (midnight UTC) or an ISO time.")
@click.option("--to", "end", metavar="WHEN", help="End (default now); needs --from.")
@click.option("--time-zone", default="UTC", show_default=True, help="Days and hours are counted in this zone.")
@click.option("--environment", "only", metavar="NAME", help="Only alerts raised in this guardian environment.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file.")
def report_command(
    dsn: str | None,
    config_path: Path | None,
    envs: tuple[str, ...],
    since: str | None,
    start: str | None,
    end: str | None,
    time_zone: str,
    only: str | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Alerts, response times, top offenders, trends and the success metrics of a period.

    Exit 0 when every success metric is met (or cannot be measured), 1 when one is missed,
    2 on an error.
    """
    begin, finish = period(since, start, end)
    dsn = dsn or (None if envs else os.environ.get("DATABASE_URL"))
    if dsn and envs:
        raise GuardianError("use either --dsn or --env NAME ..., not both")
    targets: list[tuple[str | None, str | None]] = [(None, dsn)]
    if not dsn:
        found, where = controller_config.load_databases(config_path, os.environ)
        chosen = controller_config.pick(found, envs, where, "--env", "or pass --dsn") if envs else found
        if chosen:
            targets = [(d.name, d.dsn) for d in chosen]
    named = []
    for name, target in targets:
        with connection(target, "report") as conn:
            data = fetch(conn, begin, finish, only, time_zone)
        named.append((name or data["period"]["guardian_environment"], data))
    text = _render(combine(named), fmt)
    if output is not None:
        output.write_text(text)
        click.echo(f"wrote {output} ({len(text.encode()):,} bytes)", err=True)
    else:
        click.echo(text, nl=False)
    exit_finding(not combine(named).met)


COMMANDS = (report_command,)
