"""``policy``: check, render, diff and apply a per-environment TOML policy file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pg_guardian import config
from pg_guardian.cli.options import F, config_option, connection, dsn_option, format_option
from pg_guardian.cli.output import emit, exit_finding
from pg_guardian.relay.config import load as load_relay_config
from pg_guardian.response import policy


def _policy_file_option(func: F) -> F:
    return click.option(
        "-f",
        "--file",
        "policy_path",
        type=click.Path(path_type=Path),
        envvar="GUARDIAN_POLICY",
        show_envvar=True,
        default=Path("guardian-policy.toml"),
        show_default=True,
        help="The policy file (TOML).",
    )(func)


def _env_option(func: F) -> F:
    return click.option("--env", "environment", required=True, help="The environment section to use, e.g. production.")(
        func
    )


@click.group("policy")
def policy_group() -> None:
    """Per-environment policies: check, render, diff and apply a TOML policy file."""


@policy_group.command("check")
@_policy_file_option
@click.option("--dsn", help="Also check that the rules, tables, columns and roles exist there.")
@config_option
def policy_check(policy_path: Path, dsn: str | None, config_path: Path | None) -> None:
    """Check the file and list every problem with its line; 2 if there is one."""
    pol = policy.load(policy_path)
    found: list[str] = []
    if dsn:
        with connection(dsn, "policy check") as conn:
            for name in sorted(pol.environments):
                found.extend(p for p in policy.problems(conn, pol, name) if p not in found)
    if config_path or os.environ.get(config.ENV_VAR):
        found.extend(policy.check_routes(pol, set(load_relay_config(config_path).channels)))
    if found:
        raise policy.PolicyError(
            f"policy {policy_path} does not fit "
            f"({len(found)} problem{'s' if len(found) != 1 else ''}):\n" + "\n".join(f"  - {p}" for p in found),
            problems=found,
        )
    click.echo(f"policy {policy_path} ok: environments {', '.join(sorted(pol.environments))}")
    for name, overrides in sorted(pol.overrides.items()):
        click.echo(f"  {name}: overridden from the environment: {', '.join(overrides)}")


@policy_group.command("render")
@_policy_file_option
@_env_option
@click.option("--force", is_flag=True, help="Render for applying to a database of another environment.")
def policy_render(policy_path: Path, environment: str, force: bool) -> None:
    """Print the SQL that makes a database match ENV's policy (changes only what differs)."""
    click.echo(policy.render(policy.load(policy_path), environment, force=force), nl=False)


@policy_group.command("diff")
@_policy_file_option
@_env_option
@dsn_option
@format_option
def policy_diff(policy_path: Path, environment: str, dsn: str | None, fmt: str) -> None:
    """How the database differs from ENV's policy. Exit 1 if it does."""
    pol = policy.load(policy_path)
    with connection(dsn, "policy diff") as conn:
        found = policy.problems(conn, pol, environment)
        changes = policy.diff(conn, pol, environment)
        notes = policy.unmanaged(conn, pol, environment)

    def text(_: object) -> None:
        for change in changes:
            click.echo(change.describe())
        for problem in found:
            click.echo(f"problem: {problem}")
        for note in notes:
            click.echo(f"note: {note}")
        if not changes and not found:
            click.echo(f"the database matches the {environment} policy")

    emit({"differences": [vars(c) for c in changes], "problems": found, "unmanaged": notes}, fmt, text=text)
    exit_finding(changes or found)


@policy_group.command("apply")
@_policy_file_option
@_env_option
@dsn_option
@click.option("--force", is_flag=True, help="Apply even though the database is another environment.")
def policy_apply(policy_path: Path, environment: str, dsn: str | None, force: bool) -> None:
    """Make the database match ENV's policy, in one transaction (nothing changes on any error)."""
    pol = policy.load(policy_path)
    with connection(dsn, "policy apply") as conn:
        result = policy.apply(conn, pol, environment, force=force)
    if not result.changes:
        click.echo(f"nothing to change: the database already matches the {environment} policy")
        return
    for change in result.changes:
        click.echo(f"  {change.describe()}")
    click.echo(
        f"applied the {environment} policy to {result.database_environment}: "
        f"{len(result.changes)} change(s)" + (" (forced)" if result.forced else "")
    )


COMMANDS = (policy_group,)
