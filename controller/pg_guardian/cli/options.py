"""What commands share: the common options, and the one way a command connects.

:func:`connection` is the only place the CLI opens a database connection (autocommit, named
``pg-guardian <command>``). :func:`connected` wraps it for the usual command: it adds ``--dsn``
and hands the command ``conn`` in its place. Commands that must check their input before
connecting (``--force``, a file, a duration) call :func:`connection` themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from pg_guardian import db

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
    """``--format text|json``, passed as ``fmt``."""
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)(func)


def config_option(func: F) -> F:
    """``--config``, falling back to ``GUARDIAN_CONFIG``."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Controller configuration (TOML); default: $GUARDIAN_CONFIG, else defaults and environment.",
    )(func)


def connection(dsn: str | None, command: str) -> psycopg.Connection:
    """An autocommit connection named ``pg-guardian <command>``; use it in a ``with``."""
    return db.connect(dsn, command, autocommit=True)


def connected(command: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add ``--dsn`` (where this decorator stands among the options) and call the command with
    ``conn``, a :func:`connection` named ``pg-guardian <command>``, in its place."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(func)
        def run(*args: Any, dsn: str | None, **kwargs: Any) -> None:
            with connection(dsn, command) as conn:
                func(conn, *args, **kwargs)

        return dsn_option(run)

    return decorate
