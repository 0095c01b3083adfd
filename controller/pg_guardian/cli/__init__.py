"""The ``pg-guardian`` command line: parse, call a capability module, print, exit.

Exit codes (:mod:`pg_guardian.vocabulary`): 0 ok, 1 a finding (drift found, contamination
found), 2 an error.

One module per command group, each calling the capability of the same name: :mod:`.install`
(install, upgrade, uninstall, status, demo), :mod:`.contamination` (watch, unwatch, scan,
check-payload), :mod:`.relay` (relay, silence, config), :mod:`.drift` (drift, fingerprint),
:mod:`.jobs` (jobs, checks, metrics), :mod:`.response` (cleanup, quarantine, lockdown),
:mod:`.policy`, :mod:`.dashboard` and :mod:`.report`; :data:`COMMAND_MODULES` says which defines
each command. What they share:
:mod:`.options` (the common options and the one way to connect) and :mod:`.output` (the one
printer, and exiting with a finding). No SQL here: each command calls its capability.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import psycopg

from pg_guardian import __version__
from pg_guardian.errors import GuardianError
from pg_guardian.vocabulary import EXIT_ERROR

__all__ = ["COMMAND_MODULES", "GuardianGroup", "main"]

# The module of this package that defines each command. A module is imported when one of its
# commands runs (or for --help), so that `pg-guardian status` does not load pglast or Jinja2.
COMMAND_MODULES = {
    "install": "install",
    "upgrade": "install",
    "uninstall": "install",
    "status": "install",
    "demo": "install",
    "watch": "contamination",
    "unwatch": "contamination",
    "scan": "contamination",
    "check-payload": "contamination",
    "relay": "relay",
    "silence": "relay",
    "config": "relay",
    "drift": "drift",
    "fingerprint": "drift",
    "jobs": "jobs",
    "checks": "jobs",
    "metrics": "jobs",
    "cleanup": "response",
    "quarantine": "response",
    "lockdown": "response",
    "policy": "policy",
    "dashboard": "dashboard",
    "report": "report",
    "anomalies": "anomalies",
    "rules": "rules",
}


class GuardianGroup(click.Group):
    """Finds each command in its module; turns GuardianError and database errors into a one-line
    message and exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        commands: tuple[click.Command, ...] = importlib.import_module(f"pg_guardian.cli.{module}").COMMANDS
        return next(c for c in commands if c.name == cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GuardianError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except psycopg.Error as exc:
            diag = exc.diag
            message = diag.message_primary or str(exc).strip().splitlines()[0]
            hint = f" (hint: {diag.message_hint})" if diag.message_hint else ""
            click.echo(f"error: {message}{hint}", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=GuardianGroup)
@click.version_option(__version__, prog_name="pg-guardian")
def main() -> None:
    """pg_guardian: keep test data and unsafe changes out of production Postgres."""
