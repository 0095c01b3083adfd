"""The ``pg-guardian`` command line: parse, call a capability module, print, exit.

Exit codes: 0 ok, 1 a finding (drift found, contamination found), 2 an error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pg_guardian import __version__, db
from pg_guardian import install as install_mod
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
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
    )(func)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class GuardianGroup(click.Group):
    """Turns GuardianError into a one-line message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GuardianError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=GuardianGroup)
@click.version_option(__version__, prog_name="pg-guardian")
def main() -> None:
    """pg_guardian: keep test data and unsafe changes out of production Postgres."""


@main.command()
@dsn_option
@click.option("--method", type=click.Choice(install_mod.METHODS), default="auto", show_default=True,
              help="extension: CREATE EXTENSION (files on the server); sql: plain SQL for managed Postgres.")
@click.option("--version", "version", help="Version to install (default: the newest).")
@click.option("--environment", help="Declare the environment (production, staging, local, ...).")
@click.option("--mode", type=click.Choice(["off", "warn", "strict"]), help="Set the guard mode.")
@click.option("--upgrade", "or_upgrade", is_flag=True, help="If already installed, upgrade instead of failing.")
def install(dsn: str | None, method: str, version: str | None, environment: str | None,
            mode: str | None, or_upgrade: bool) -> None:
    """Install pg_guardian into a database."""
    with db.connect(dsn, "install", autocommit=True) as conn:
        state = install_mod.installed(conn)
        if state.version and or_upgrade:
            old, new = install_mod.upgrade(conn, to=version)
            click.echo(f"pg_guardian {old} -> {new} ({state.method}) in {conn.info.dbname}"
                       if old != new else f"pg_guardian {new} already installed in {conn.info.dbname}")
        else:
            state = install_mod.install(conn, method=method, version=version)
            click.echo(f"installed pg_guardian {state.version} ({state.method}) in {conn.info.dbname}")
        if environment:
            conn.execute("SELECT guardian.set_environment(%s)", (environment,))
        if mode:
            conn.execute("SELECT guardian.set_mode(%s)", (mode,))


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
        archive = install_mod.uninstall(conn, drop_alerts=drop_alerts)
        click.echo("pg_guardian uninstalled" + (f"; alert history kept in {archive}" if archive else ""))


def _print_status(data: dict[str, Any]) -> None:
    if not data["installed"]:
        click.echo(f"pg_guardian is not installed in {data['database']}")
        return
    click.echo(f"pg_guardian {data['version']} ({data['install_method']}) in {data['database']}")
    click.echo(f"  environment: {data['environment']}   mode: {data['mode']}")
    feats = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in data["features"].items())
    click.echo(f"  features: {feats}")
    for key in ("lockdown",):
        if data.get(key):
            click.echo(f"  {key}: {data[key]}")
    watched = data.get("watched_tables") or []
    click.echo(f"  watched tables ({len(watched)}):")
    for row in watched:
        click.echo(f"    {row['table']}  [{row['mode']}]")
    jobs = data.get("jobs") or []
    click.echo(f"  scheduled jobs ({len(jobs)}):")
    for job in jobs:
        extra = "".join(f"  {k}={v}" for k, v in job.items() if k not in ("jobname",) and v is not None)
        click.echo(f"    {job['jobname']}{extra}")
    alerts = data["open_alerts"]
    click.echo("  open alerts: " + "  ".join(f"{k} {v}" for k, v in alerts.items()))


@main.command()
@dsn_option
@format_option
def status(dsn: str | None, fmt: str) -> None:
    """Version, environment, mode, watched tables, jobs and open alerts."""
    with db.connect(dsn, "status", autocommit=True) as conn:
        data = status_mod.status(conn)
    if fmt == "json":
        emit_json(data)
    else:
        _print_status(data)


@main.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".demo"),
              show_default=True, help="Where the throwaway cluster lives (git-ignored).")
@click.option("--keep", is_flag=True, help="Leave the cluster running and print how to connect.")
def demo(directory: Path, keep: bool) -> None:
    """Start a throwaway cluster with a sample dental schema and show the guardian at work."""
    from pg_guardian import demo as demo_mod

    demo_mod.run(directory.resolve(), keep=keep, echo=click.echo)


# -- drift (issue 5) ---------------------------------------------------------------------------


def _parse_envs(envs: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in envs:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise GuardianError(
                f"--env {item!r} is not NAME=DSN; e.g. --env production=postgresql://host/db")
        if name in parsed:
            raise GuardianError(f"--env {name} is given twice")
        parsed[name.strip()] = spec.strip()
    return parsed


@main.command()
@click.option("--source", help="Reference: a DSN or a fingerprint file (e.g. production).")
@click.option("--target", help="Environment to check against it: a DSN or a fingerprint file.")
@click.option("--env", "envs", multiple=True, metavar="NAME=DSN",
              help="Compare several environments (repeat; the first is the reference).")
@format_option
@click.option("--schema", "schemas", multiple=True, help="Only this schema (repeatable).")
@click.option("--exclude-schema", "exclude", multiple=True, help="Skip this schema (repeatable).")
@click.option("--include-cosmetic", is_flag=True,
              help="Count formatting-only differences (whitespace, comments, case) as drift.")
@click.option("--sql", "emit_sql", is_flag=True,
              help="Print the SQL that would bring the target in line with the source.")
@click.option("--unsafe", is_flag=True,
              help="With --sql: allow destructive statements (DROP, column type changes).")
def drift(source: str | None, target: str | None, envs: tuple[str, ...], fmt: str,
          schemas: tuple[str, ...], exclude: tuple[str, ...], include_cosmetic: bool,
          emit_sql: bool, unsafe: bool) -> None:
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
            raise GuardianError("--env needs at least two environments, "
                                "e.g. --env production=DSN --env staging=DSN")
        if emit_sql:
            raise GuardianError("--sql works on one pair: use --source DSN --target DSN")
    else:
        if not source or not target:
            raise GuardianError("give --source and --target (a DSN or fingerprint file each), "
                                "or --env NAME=DSN twice")
        specs = {"source": source, "target": target}
    fetched = drift_mod.fetch_all(specs)
    fingerprints = {name: fp.only(schemas, exclude) for name, fp in fetched.items()}

    if not envs:
        differences = drift_mod.diff(fingerprints["source"], fingerprints["target"])
        drifted = bool(drift_mod.counted(differences, include_cosmetic))
        if emit_sql:
            statements = drift_sql.migration(
                drift_mod.counted(differences, include_cosmetic),
                fingerprints["source"], fingerprints["target"])
            header = (f"pg-guardian drift --sql: bring {fingerprints['target'].origin}\n"
                      f"in line with {fingerprints['source'].origin}. Review before running.")
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
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the fingerprint to this file instead of standard output.")
def fingerprint(dsn: str | None, output: Path | None) -> None:
    """Print a database's schema fingerprint (JSON) for `drift` or guardian.import_fingerprint()."""
    from pg_guardian import catalog

    with db.connect(dsn, "fingerprint", autocommit=True) as conn:
        document = catalog.read_fingerprint(conn, db.describe(db.resolve_dsn(dsn))).to_document()
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {len(document['objects'])} objects "
                   f"(checksum {document['checksum']}) to {output}", err=True)
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
