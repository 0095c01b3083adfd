"""``rules``: label records, review the rules learned from them, refresh curated lists."""

from __future__ import annotations

import click
import psycopg

from pg_guardian import learning
from pg_guardian.cli.options import connected, format_option
from pg_guardian.cli.output import emit, exit_finding


@click.group("rules")
def rules_command() -> None:
    """Rules learned from labelled records, and curated lists.

    Label records test or real (`rules label`), review what the database learns from them
    (`rules suggest`), make a suggestion a rule (`rules accept`) or drop it (`rules dismiss`);
    `rules update` refreshes the curated lists from the installed packages.
    """


@rules_command.command("label")
@connected("rules label")
@click.argument("table")
@click.argument("record_ids", nargs=-1, required=True)
@click.option("--test", "what", flag_value="test", help="The records are test data.")
@click.option("--real", "what", flag_value="real", help="The records are real.")
def label_command(conn: psycopg.Connection, table: str, record_ids: tuple[str, ...], what: str | None) -> None:
    """Label records of TABLE (primary keys as `pg-guardian scan` prints them) as test data or real."""
    if what is None:
        raise click.UsageError("say what the records are: --test or --real")
    count = learning.label(conn, table, list(record_ids), what)
    click.echo(f"{count} record(s) of {table} labelled {what}")


@rules_command.command("suggest")
@connected("rules suggest")
@click.argument("table", required=False)
@format_option
def suggest_command(conn: psycopg.Connection, table: str | None, fmt: str) -> None:
    """Rules learned from the labelled records of TABLE (default: every labelled table).

    Each shows its examples (labelled test values it matches), a few unlabelled values of the
    table it would flag now, how many rows it matches now and its estimated precision. Exit 1
    when there are suggestions, 0 when none.
    """
    found = learning.suggest(conn, table)

    def text(rows: list[dict[str, object]]) -> None:
        if not rows:
            click.echo("no suggestions: label more records (pg-guardian rules label TABLE ID... --test)")
        for s in rows:
            click.echo(
                f"#{s['suggestion_id']}  {s['table']}.{s['column_name']} ({s['kind']})  {s['match_type']}: "
                f"{s['pattern'] or ', '.join(s['terms'] or [])}"  # type: ignore[arg-type]
            )
            click.echo(
                f"    est. precision {s['est_precision']:.3f}  matches now {s['matches_now']}  "
                f"labelled test {s['test_hits']}, real {s['real_hits']}"
            )
            click.echo(f"    examples: {', '.join(s['examples'])}")  # type: ignore[arg-type]
            if s["sample_matches"]:
                click.echo(f"    would also flag: {', '.join(s['sample_matches'])}")  # type: ignore[arg-type]
        if rows:
            click.echo(f"{len(rows)} suggestion(s); accept with: pg-guardian rules accept ID")

    emit(found, fmt, text=text)
    exit_finding(found)


@rules_command.command("accept")
@connected("rules accept")
@click.argument("suggestion_ids", nargs=-1, type=int, required=True)
def accept_command(conn: psycopg.Connection, suggestion_ids: tuple[int, ...]) -> None:
    """Turn suggestions into rules (pack learned, severity MEDIUM); prints each rule's name."""
    with conn.transaction():
        names = [learning.accept(conn, s) for s in suggestion_ids]
    for suggestion, name in zip(suggestion_ids, names, strict=True):
        click.echo(f"suggestion {suggestion} is now rule {name}")


@rules_command.command("dismiss")
@connected("rules dismiss")
@click.argument("suggestion_ids", nargs=-1, type=int, required=True)
def dismiss_command(conn: psycopg.Connection, suggestion_ids: tuple[int, ...]) -> None:
    """Dismiss suggestions: the same rule is not suggested again for that column."""
    with conn.transaction():
        for s in suggestion_ids:
            learning.dismiss(conn, s)
    click.echo(f"{len(suggestion_ids)} suggestion(s) dismissed")


@rules_command.command("update")
@connected("rules update")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@format_option
def update_command(conn: psycopg.Connection, dry_run: bool, fmt: str) -> None:
    """Refresh the curated lists (disposable mailbox domains) from the installed packages.

    The rules' examples must still match and pass, or nothing changes. Upgrade the package
    first (pip install -U disposable-email-domains) to get a newer list.
    """
    results = learning.update_lists(conn, dry_run=dry_run)

    def text(rows: list[dict[str, object]]) -> None:
        for r in rows:
            verb = "updated" if r["applied"] else "would update"
            click.echo(
                f"{r['rule']}: {verb} from {r['source']} {r['version']}: {r['entries']} entries "
                f"(+{r['added']} -{r['removed']})"
            )

    emit(results, fmt, text=text)


COMMANDS = (rules_command,)
