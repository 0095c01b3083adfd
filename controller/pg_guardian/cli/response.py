"""``cleanup``, ``quarantine`` and ``lockdown``: what to do about what was found."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, cast

import click
import psycopg

from pg_guardian import response
from pg_guardian.cli.options import F, connected, format_option
from pg_guardian.cli.output import emit, exit_finding, table
from pg_guardian.errors import GuardianError


def _cleanup_target(func: F) -> F:
    """ALERT_ID, or --table with optional --record ids (as a scan returned them); --include-restricted.

    The command gets them as one ``target``: the keyword arguments of ``response.cleanup_plan``.
    """

    @functools.wraps(func)
    def command(
        *args: Any,
        alert_id: str | None,
        table: str | None,
        records: tuple[str, ...],
        include_restricted: bool,
        **kw: Any,
    ) -> Any:
        target = {
            "alert": alert_id,
            "table": table,
            "records": list(records),
            "include_restricted": include_restricted,
        }
        return func(*args, target=target, **kw)

    decorated: Any = click.option(
        "--include-restricted",
        is_flag=True,
        help="Also remove (and quarantine) rows that reference removed rows through ON DELETE RESTRICT / "
        "NO ACTION, with what depends on them; without it such rows refuse the cleanup.",
    )(command)
    decorated = click.option(
        "--record", "records", multiple=True, help="Only this record id of --table (repeatable), as scanned."
    )(decorated)
    decorated = click.option("--table", help="Clean up what a scan finds in this table now (schema.table).")(decorated)
    return cast(F, click.argument("alert_id", required=False)(decorated))


def _cleanup_warnings(rows: list[dict[str, Any]]) -> None:
    """A plan's warnings (rows protected by RESTRICT that are removed, or block), on stderr."""
    for r in rows:
        if r.get("warning"):
            click.echo(f"warning: step {r['step']} ({r['action']} {r['table_name']}): {r['warning']}", err=True)


def _print_plan(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    table(rows, columns)
    _cleanup_warnings(rows)


@click.group("cleanup")
def cleanup_group() -> None:
    """Cleanup of contaminated rows and the rows that depend on them (quarantined first)."""


@cleanup_group.command("plan")
@connected("cleanup plan")
@_cleanup_target
@format_option
def cleanup_plan(conn: psycopg.Connection, target: dict[str, Any], fmt: str) -> None:
    """Dry run: each step (foreign-key order) with the rows it would touch. Exit 1 if blocked."""
    rows = response.cleanup_plan(conn, **target)
    emit(rows, fmt, text=lambda _: _print_plan(rows, ("step", "table_name", "action", "rows", "via", "detail")))
    exit_finding(any(r["action"] == "blocked" and r["rows"] for r in rows))


@cleanup_group.command("script")
@connected("cleanup script")
@_cleanup_target
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the script here.")
def cleanup_script(conn: psycopg.Connection, target: dict[str, Any], output: Path | None) -> None:
    """Print the cleanup script (also stored with its alert); run it with psql -f."""
    script = response.cleanup_script(conn, **target)
    if output:
        output.write_text(script)
        click.echo(f"cleanup script written to {output}")
    else:
        click.echo(script, nl=False)


@cleanup_group.command("run")
@connected("cleanup run")
@_cleanup_target
@click.option("--force", is_flag=True, help="Really remove the rows (they are quarantined first).")
def cleanup_run(conn: psycopg.Connection, target: dict[str, Any], force: bool) -> None:
    """Generate the cleanup script and run it in one transaction (needs --force)."""
    rows = response.cleanup_plan(conn, **target)
    if not force:
        _print_plan(rows, ("step", "table_name", "action", "rows", "via"))
        total = sum(r["rows"] for r in rows if r["action"] != "blocked")
        raise GuardianError(
            f"cleanup run would remove or change {total} row(s) (quarantined first); re-run with --force"
        )
    _cleanup_warnings(rows)
    click.echo(response.run_script(conn, response.cleanup_script(conn, **target)))


@click.group("quarantine")
def quarantine_group() -> None:
    """Rows removed by cleanups, kept to be restored."""


def _print_batches(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("quarantine is empty")
    else:
        columns = ("batch_id", "status", "automatic", "row_count", "tables", "created_at", "created_by", "kept_until")
        table(rows, columns)


@quarantine_group.command("list")
@connected("quarantine list")
@click.option("--all", "include_restored", is_flag=True, help="Include restored batches.")
@format_option
def quarantine_list(conn: psycopg.Connection, include_restored: bool, fmt: str) -> None:
    """Quarantine batches, newest first, with the command that restores each."""
    emit(response.quarantine(conn, include_restored=include_restored), fmt, text=_print_batches)


def _print_quarantined_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        cols = f" ({', '.join(row['columns'])})" if row["columns"] else ""
        click.echo(
            f"{row['step']:>3} {row['table_name']} {row['action']}{cols} "
            f"{json.dumps(row['row_key'])}: "
            f"{json.dumps(row['row_data'], sort_keys=True)}"
        )


@quarantine_group.command("show")
@connected("quarantine show")
@click.argument("batch")
@format_option
def quarantine_show(conn: psycopg.Connection, batch: str, fmt: str) -> None:
    """The rows of one batch, as they were removed."""
    emit(response.quarantined_rows(conn, batch), fmt, text=_print_quarantined_rows)


@quarantine_group.command("restore")
@connected("quarantine restore")
@click.argument("batch")
@click.option(
    "--no-allowlist", is_flag=True, help="Do not allowlist the values that got the rows removed (may be flagged again)."
)
def quarantine_restore(conn: psycopg.Connection, batch: str, no_allowlist: bool) -> None:
    """Put a batch back, identical to what was removed (refused a second time)."""
    click.echo(response.restore(conn, batch, allowlist=not no_allowlist))


@quarantine_group.command("prune")
@connected("quarantine prune")
def quarantine_prune(conn: psycopg.Connection) -> None:
    """Apply quarantine retention now (retention.quarantine_days); says what went."""
    click.echo(response.prune(conn))


@click.group("lockdown")
def lockdown_group() -> None:
    """Emergency brake: application roles lose their write privileges until unlocked."""


@lockdown_group.command("start")
@connected("lockdown")
@click.argument("reason", nargs=-1, required=True)
def lockdown_start(conn: psycopg.Connection, reason: tuple[str, ...]) -> None:
    """Lock this environment down (REASON is recorded and alerted)."""
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
@connected("unlock")
@click.option("--note", help="Why it is over (recorded on the LOCKDOWN alert).")
def lockdown_unlock(conn: psycopg.Connection, note: str | None) -> None:
    """Lift the lockdown, giving back exactly what it took. Exit 1 if something could not be."""
    row = response.unlock(conn, note)
    click.echo(f"{row['environment']} unlocked")
    for problem in row["not_restored"]:
        click.echo(f"  not restored: {problem}")
    exit_finding(row["not_restored"])


@lockdown_group.command("status")
@connected("lockdown status")
@format_option
def lockdown_status(conn: psycopg.Connection, fmt: str) -> None:
    """Whether this environment is locked down, since when, by whom and why."""
    emit(
        response.lockdown_status(conn),
        fmt,
        text=lambda row: click.echo(response.describe_lockdown(row) if row else "not locked down"),
    )


@lockdown_group.command("roles")
@connected("lockdown roles")
@format_option
def lockdown_roles(conn: psycopg.Connection, fmt: str) -> None:
    """Which roles a lockdown would lock, and why each is in or out."""
    emit(response.lockdown_roles(conn), fmt, columns=("role_name", "locked", "reason"))


COMMANDS = (cleanup_group, quarantine_group, lockdown_group)
