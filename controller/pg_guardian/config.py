"""The controller's configuration file: one TOML file, read by each capability for its own tables.

The file is named by ``--config`` or ``GUARDIAN_CONFIG``; without one, defaults and environment
variables are enough. The relay reads its settings there (:mod:`pg_guardian.relay.config`:
``[relay]``, ``[channels.*]``, ``[[routes]]`` and the settings they share) and the dashboard
its own (:mod:`pg_guardian.dashboard.settings`: ``[dashboard]``). This module reads the file and
holds the checks any capability's settings use: durations, booleans, whole numbers, and a
checker that collects every problem instead of stopping at the first.

It also reads the databases the file names, which the dashboard, ``pg-guardian drift --env``
and the relay share (:func:`databases`)::

    [databases.production]
    dsn = "postgresql://guardian_dashboard@db1.internal/app"   # reads (a guardian_reader role)
    admin_dsn = "postgresql://guardian_ops@db1.internal/app"   # optional: dashboard actions
    relay_dsn = "postgresql://relay_bot@db1.internal/app"      # optional: the relay (guardian_relay)
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from pg_guardian.errors import ConfigError

ENV_VAR = "GUARDIAN_CONFIG"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # a database's name: [databases.NAME]
DATABASE_KEYS = ("admin_dsn", "dsn", "relay_dsn")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class ConfigFile:
    """The file as read: its tables (none without a file), where they came from, what went wrong."""

    tables: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def read_file(path: Path | str | None, env: Mapping[str, str]) -> ConfigFile:
    """Read the file named by ``path``, else by ``GUARDIAN_CONFIG``; a missing or broken file is
    a problem to report, not an exception."""
    path = path or env.get(ENV_VAR) or None
    if not path:
        return ConfigFile()
    try:
        with open(path, "rb") as fh:
            tables = tomllib.load(fh)
    except FileNotFoundError:
        return ConfigFile(problems=(f"config file {path} does not exist",))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return ConfigFile(problems=(f"config file {path}: {exc}",))
    return ConfigFile(tables, (f"file {path}",))


@dataclass(frozen=True)
class Database:
    """One configured database (``[databases.NAME]``): its name and where each user connects."""

    name: str
    dsn: str
    admin_dsn: str | None = None
    relay_dsn: str | None = None

    @property
    def action_dsn(self) -> str:
        """Where the dashboard's actions connect: ``admin_dsn``, else ``dsn``."""
        return self.admin_dsn or self.dsn

    @property
    def delivery_dsn(self) -> str:
        """Where the relay connects: ``relay_dsn``, else ``dsn``."""
        return self.relay_dsn or self.dsn


def check_dsn(value: Any) -> str:
    """A connection string libpq accepts (``postgresql://...`` or ``key=value ...``)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a DSN such as postgresql://user@host:5432/db")
    try:
        conninfo.conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"invalid DSN: {exc}; expected e.g. postgresql://user@host:5432/db") from None
    return value


def add_database(found: list[Database], name: str, entry: Mapping[str, Any], problems: list[str], where: str) -> None:
    """Check one database (its name, ``dsn``, ``admin_dsn``, ``relay_dsn``) and append it to
    ``found``, or append what is wrong with it to ``problems``; ``where`` names it there."""
    before = len(problems)
    if not NAME.match(name):
        problems.append(f"{where}: the name {name!r} must be letters, digits, '_', '.', '-' (at most 63)")
    if any(d.name == name for d in found):
        problems.append(f"{where}: {name!r} is given twice")
    dsns: dict[str, str | None] = {}
    for key in ("dsn", "admin_dsn", "relay_dsn"):
        dsns[key] = None
        if key == "dsn" or entry.get(key) is not None:
            try:
                dsns[key] = check_dsn(entry.get(key))
            except ValueError as exc:
                problems.append(f"{where}.{key}: {exc}")
    dsn = dsns["dsn"]
    if len(problems) == before and dsn:
        found.append(Database(name, dsn, dsns["admin_dsn"], dsns["relay_dsn"]))


def databases(tables: Mapping[str, Any]) -> tuple[list[Database], list[str]]:
    """The file's ``[databases.*]`` in file order, and every problem with them (none: ``[]``)."""
    found: list[Database] = []
    problems: list[str] = []
    table = tables.get("databases", {})
    if not isinstance(table, Mapping):
        problems.append("databases: must be tables such as [databases.production] with dsn = ...")
        return found, problems
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            problems.append(f"databases.{name}: must be a table with dsn = ...")
            continue
        for key in sorted(set(entry) - set(DATABASE_KEYS)):
            problems.append(f"databases.{name}.{key}: unknown setting (known: {', '.join(DATABASE_KEYS)})")
        add_database(found, name, entry, problems, where=f"databases.{name}")
    return found, problems


def load_databases(path: Path | str | None, env: Mapping[str, str]) -> tuple[list[Database], str | None]:
    """The databases of the file named by ``path`` (else ``GUARDIAN_CONFIG``) and that file's
    name (None without a file: no databases). Raises ConfigError listing every problem."""
    file = read_file(path, env)
    found, problems = databases(file.tables)
    problems = [*file.problems, *problems]
    if problems:
        raise ConfigError(
            f"invalid databases in the configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
            + "\n".join(f"  - {p}" for p in problems),
            problems=problems,
        )
    where = str(path or env.get(ENV_VAR) or "") or None
    return found, where


def pick(
    found: Sequence[Database], names: Sequence[str], where: str | None, flag: str, otherwise: str
) -> list[Database]:
    """The databases called ``names``, in that order. A name given twice, or one that ``where``
    (the file; None: no file) does not have, is a one-line ConfigError that names the databases
    the file has and how to fix it: add the table, or ``otherwise`` (``{name}`` is the name)."""
    known = {d.name: d for d in found}
    for n, name in enumerate(names):
        if name in names[:n]:
            raise ConfigError(f"{flag} {name} is given twice")
        if name in known:
            continue
        if where is None:
            raise ConfigError(
                f"{flag} {name}: no configuration file names databases; pass --config FILE "
                f"(or set {ENV_VAR}) with [databases.{name}], {otherwise.format(name=name)}"
            )
        raise ConfigError(
            f"{flag} {name}: no [databases.{name}] in {where} (known: {', '.join(known) or 'none'}); "
            f"add [databases.{name}] with dsn = 'postgresql://...' there, {otherwise.format(name=name)}"
        )
    return [known[name] for name in names]


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into ``base``, table by table (values are copied)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 4h or 1d")


def parse_bool(value: Any) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def positive_int(value: Any) -> int:
    """A whole number of at least 1 (``3`` or ``"3"``, not ``3.5`` nor ``true``)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 1 or str(value).strip() not in (str(number), f"{number}.0"):
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return number


class Checker:
    """Collects problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, where: str, value: Any, convert: Callable[[Any], Any], default: Any = None) -> Any:
        """``convert(value)``, or ``default`` and a problem naming ``where``."""
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{where}: {exc}")
            return default

    def unknown(self, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        """A problem for each key of ``table`` that is not ``allowed``."""
        for key in sorted(set(table) - allowed):
            hint = f"{where}.{key}" if where else key
            self.problems.append(f"{hint}: unknown setting (known: {', '.join(sorted(allowed))})")
