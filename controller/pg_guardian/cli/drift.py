"""``drift`` and ``fingerprint``: compare the schemas of environments."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import click

from pg_guardian import config, db, drift
from pg_guardian.cli.options import config_option, connection, dsn_option, format_option
from pg_guardian.cli.output import emit, exit_finding
from pg_guardian.drift import catalog, migration
from pg_guardian.errors import GuardianError


def _parse_envs(envs: tuple[str, ...], config_path: Path | None) -> dict[str, str]:
    """``NAME=DSN`` as given; a bare ``NAME`` takes its DSN from the config's ``[databases.NAME]``."""
    parsed: dict[str, str] = {}
    named: list[str] = []
    for item in envs:
        name, sep, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not name or (sep and not spec):
            raise GuardianError(f"--env {item!r} is not NAME=DSN; e.g. --env production=postgresql://host/db")
        if name in parsed:
            raise GuardianError(f"--env {name} is given twice")
        parsed[name] = spec
        if not sep:
            named.append(name)
    if named:
        found, where = config.load_databases(config_path, os.environ)
        if where is None:
            raise GuardianError(
                f"--env {named[0]!r} is not NAME=DSN, and no configuration file names databases: "
                f"give --env {named[0]}=postgresql://host/db, or --config FILE with [databases.{named[0]}]"
            )
        for entry in config.pick(found, named, where, "--env", "or pass --env {name}=DSN"):
            parsed[entry.name] = entry.dsn
    return parsed


def _configured(config_path: Path | None) -> dict[str, str] | None:
    """Every database of the configuration, in file order; None without a configuration file."""
    found, where = config.load_databases(config_path, os.environ)
    if where is None:
        return None
    if len(found) < 2:
        names = ", ".join(d.name for d in found) or "none"
        raise GuardianError(
            f"drift compares two or more databases, and {where} names {len(found)} ({names}): "
            "add [databases.NAME] with dsn = 'postgresql://...' there, or give --env NAME=DSN twice"
        )
    return {d.name: d.dsn for d in found}


def _specs(
    source: str | None, target: str | None, envs: tuple[str, ...], emit_sql: bool, config_path: Path | None
) -> dict[str, str]:
    """What to compare, by name: ``source`` and ``target``, each ``--env``, or every database
    of the configuration (the first is the reference)."""
    if envs and (source or target):
        raise GuardianError("use either --source/--target or --env NAME=DSN ..., not both")
    if not envs:
        specs = None if source or target else _configured(config_path)
        if specs is None:
            if not source or not target:
                raise GuardianError(
                    "give --source and --target (a DSN or fingerprint file each), or --env NAME=DSN twice, "
                    "or --config FILE naming [databases.*]"
                )
            return {"source": source, "target": target}
    else:
        specs = _parse_envs(envs, config_path)
    if len(specs) < 2:
        raise GuardianError("--env needs at least two environments, e.g. --env production=DSN --env staging=DSN")
    if emit_sql:
        raise GuardianError("--sql works on one pair: use --source DSN --target DSN")
    return specs


def _echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)


@click.command("drift")
@click.option("--source", help="Reference: a DSN or a fingerprint file (e.g. production).")
@click.option("--target", help="Environment to check against it: a DSN or a fingerprint file.")
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="NAME[=DSN]",
    help="Compare several environments (repeat; the first is the reference). "
    "A bare NAME is the configuration's [databases.NAME].",
)
@config_option
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
def drift_command(
    source: str | None,
    target: str | None,
    envs: tuple[str, ...],
    config_path: Path | None,
    fmt: str,
    schemas: tuple[str, ...],
    exclude: tuple[str, ...],
    include_cosmetic: bool,
    emit_sql: bool,
    unsafe: bool,
) -> None:
    """Compare the schemas of environments; exit 0 no drift, 1 drift, 2 error.

    Each side is a DSN (pg_guardian need not be installed there) or a file written by
    `pg-guardian fingerprint`. With neither --source/--target nor --env, every database of the
    configuration file's [databases.*] is compared, the first one being the reference.
    """
    specs = _specs(source, target, envs, emit_sql, config_path)
    fingerprints = {name: fp.only(schemas, exclude) for name, fp in drift.fetch_all(specs).items()}
    if not (source or target):
        many = drift.diff_many(fingerprints)
        emit(
            [d.to_dict() for d in many],
            fmt,
            text=lambda _: _echo_lines(drift.render_many_text(many, list(specs), include_cosmetic=include_cosmetic)),
        )
        exit_finding(any(include_cosmetic or not d.cosmetic for d in many))
        return
    source_fp, target_fp = fingerprints["source"], fingerprints["target"]
    differences = drift.diff(source_fp, target_fp)
    counted = drift.counted(differences, include_cosmetic)
    if emit_sql:
        header = (
            f"pg-guardian drift --sql: bring {target_fp.origin}\n"
            f"in line with {source_fp.origin}. Review before running."
        )
        script = migration.render(migration.plan(counted, source_fp, target_fp), unsafe=unsafe, header=header)
        click.echo(script, nl=False)
    else:
        emit(
            [d.to_dict() for d in differences],
            fmt,
            text=lambda _: _echo_lines(drift.render_text(differences, include_cosmetic=include_cosmetic)),
        )
    exit_finding(counted)


@click.command("fingerprint")
@dsn_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the fingerprint to this file instead of standard output.",
)
def fingerprint_command(dsn: str | None, output: Path | None) -> None:
    """Print a database's schema fingerprint (JSON) for `drift` or guardian.import_fingerprint()."""
    with connection(dsn, "fingerprint") as conn:
        document = catalog.read_fingerprint(conn, db.describe(db.resolve_dsn(dsn))).to_document()
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {len(document['objects'])} objects (checksum {document['checksum']}) to {output}", err=True)
    else:
        click.echo(text, nl=False)


COMMANDS = (drift_command, fingerprint_command)
