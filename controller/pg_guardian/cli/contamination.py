"""``watch``, ``unwatch``, ``scan`` and ``check-payload``: test data in tables and payloads."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import psycopg

from pg_guardian import contamination
from pg_guardian.cli.options import connected, connection, dsn_option, format_option
from pg_guardian.cli.output import emit, exit_finding
from pg_guardian.errors import GuardianError
from pg_guardian.vocabulary import KINDS, MODES


def _column_overrides(columns: tuple[str, ...]) -> dict[str, str | None]:
    """``--column NAME=KIND`` (or ``NAME=-``: not watched) as the overrides guardian.watch takes."""
    overrides: dict[str, str | None] = {}
    for item in columns:
        name, sep, kind = item.partition("=")
        if not sep or not name:
            raise GuardianError(f"--column {item!r} is not NAME=KIND; e.g. --column notes=free_text or --column code=-")
        overrides[name] = None if kind in ("-", "") else kind
    return overrides


@click.command("watch")
@dsn_option
@click.argument("table")
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME=KIND",
    help=f"Override a column's kind ({', '.join(KINDS)}), or NAME=- to skip it. Repeatable.",
)
@click.option("--mode", type=click.Choice(MODES), help="Per-table guard mode.")
def watch_command(dsn: str | None, table: str, columns: tuple[str, ...], mode: str | None) -> None:
    """Watch TABLE for test data (idempotent); prints the watched columns and their kinds."""
    overrides = _column_overrides(columns)
    with connection(dsn, "watch") as conn:
        rows = contamination.watch(conn, table, overrides, mode)
    for column, kind, source in rows:
        click.echo(f"{column:<24} {kind:<14} {source}")


@click.command("unwatch")
@connected("unwatch")
@click.argument("table")
def unwatch_command(conn: psycopg.Connection, table: str) -> None:
    """Stop watching TABLE (its findings and alerts stay)."""
    click.echo(f"{table} is no longer watched" if contamination.unwatch(conn, table) else f"{table} was not watched")


@click.command("scan")
@connected("scan")
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
def scan_command(conn: psycopg.Connection, tables: tuple[str, ...], record: bool, batch_pages: int, fmt: str) -> None:
    """Find test data already in TABLES (default: every watched table). Exit 1 if any is found."""
    targets = list(tables) or contamination.watched_tables(conn)
    if not targets:
        raise GuardianError("no tables to scan: name some, or watch tables first with `pg-guardian watch TABLE`")
    found: list[dict[str, Any]] = []
    for table in targets:
        total = sum(b[3] for b in contamination.scan_batches(conn, table, batch_pages))
        with click.progressbar(length=total, label=f"scanning {table}", file=sys.stderr, show_pos=True) as bar:
            for finding in contamination.scan(conn, table, record=record, batch_pages=batch_pages, progress=bar.update):
                found.append(finding.as_dict())

    def text(findings: list[dict[str, Any]]) -> None:
        for f in findings:
            click.echo(
                f"{f['severity']:<8} {f['table']}  record {f['record_id']}  {f['column_name']}: "
                f"{f['sample']}  ({f['rule']})"
            )
        recorded = "; recorded as alerts" if record and findings else ""
        click.echo(f"{len(findings)} finding(s) in {len(targets)} table(s){recorded}")

    emit(found, fmt, text=text)
    exit_finding(found)


@click.command("check-payload")
@dsn_option
@click.argument("source", type=click.File("r"), default="-")
@click.option("--operation", default="INSERT", show_default=True)
@click.option("--table", help="Table the payload is meant for (helps map keys to kinds).")
def check_payload_command(dsn: str | None, source: Any, operation: str, table: str | None) -> None:
    """Check a JSON document (file or stdin) against the rules before writing it. Exit 1 if flagged."""
    try:
        data = json.load(source)
    except json.JSONDecodeError as exc:
        raise GuardianError(f"{source.name} is not valid JSON: {exc}; pass a JSON object or array") from exc
    with connection(dsn, "check-payload") as conn:
        alerts = contamination.check_payload(conn, data, operation=operation, table=table)
    emit(alerts, "json")
    exit_finding(alerts)


COMMANDS = (watch_command, unwatch_command, scan_command, check_payload_command)
