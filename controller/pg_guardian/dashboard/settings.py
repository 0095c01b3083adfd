"""The dashboard's configuration: the databases it shows and who may log in.

It reads the controller's TOML file (``--config`` or ``GUARDIAN_CONFIG``), the same file the
relay reads, and only its ``[databases.*]`` and ``[dashboard]`` tables::

    [databases.production]
    dsn = "postgresql://guardian_dashboard@db1.internal/app"
    # optional: actions (acknowledge, cleanup, restore...) connect with this one instead
    admin_dsn = "postgresql://guardian_ops@db1.internal/app"
    # optional: the relay connects with this one (a guardian_relay role); the dashboard ignores it
    relay_dsn = "postgresql://relay_bot@db1.internal/app"

    [databases.staging]
    dsn = "postgresql://guardian_dashboard@db2.internal/app"

    [dashboard]
    secret_key = "..."          # signs session cookies; or GUARDIAN_DASHBOARD_SECRET_KEY
    session_max_age = "12h"     # a login lasts this long
    secure_cookies = true       # the session cookie only travels over HTTPS
    login_attempts = 5          # failed logins allowed per user and per client ...
    login_window = "5m"         # ... within this window, then 429 until it passes
    metrics_token = "..."       # /metrics wants "Authorization: Bearer <token>"; or
                                # GUARDIAN_DASHBOARD_METRICS_TOKEN; unset: /metrics is open
    audit_log = "/var/log/pg-guardian/dashboard-audit.jsonl"   # optional, JSON lines
    activity_hours = 6          # the overview's write-activity window

    [dashboard.users.alice]
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."   # python -m pg_guardian.dashboard hash-password
    role = "admin"              # admin: every action; viewer: read only

``[databases.*]`` is read and checked by :func:`pg_guardian.config.databases`, which
``pg-guardian drift --env`` and the relay share. Without it, ``DATABASE_URL`` is the one
database. :func:`load` reports every problem at once in one
:class:`~pg_guardian.errors.ConfigError`.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from pg_guardian.config import NAME as NAME  # re-exported: the dashboard's modules import them here
from pg_guardian.config import Database as Database
from pg_guardian.config import add_database
from pg_guardian.config import databases as configured_databases
from pg_guardian.errors import ConfigError

ROLES = ("viewer", "admin")
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DASHBOARD_KEYS = {
    "secret_key",
    "session_max_age",
    "secure_cookies",
    "login_attempts",
    "login_window",
    "metrics_token",
    "audit_log",
    "activity_hours",
    "users",
}
_USER_KEYS = {"password_hash", "role"}


@dataclass(frozen=True)
class User:
    """A dashboard login: its argon2 password hash and role (viewer or admin)."""

    name: str
    password_hash: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Settings:
    """Everything the dashboard app needs; :func:`load` builds and checks it."""

    databases: tuple[Database, ...]
    users: Mapping[str, User]
    secret_key: str
    session_max_age: float = 12 * 3600.0
    secure_cookies: bool = False
    login_attempts: int = 5
    login_window: float = 300.0
    metrics_token: str | None = None
    audit_log: Path | None = None
    activity_hours: int = 6
    warnings: tuple[str, ...] = field(default=())

    def database(self, name: str) -> Database | None:
        return next((d for d in self.databases if d.name == name), None)


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"30s"``, ``"5m"``, ``"12h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a positive duration such as 30s, 5m, 12h or 1d")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} is not a whole number from {low} to {high}")
    return value


def default_name(dsn: str) -> str:
    """The name a lone DSN is shown under: its database name."""
    try:
        name = str(conninfo.conninfo_to_dict(dsn).get("dbname") or "default")
    except psycopg.ProgrammingError:
        return "default"
    return name if NAME.match(name) else "default"


def load(
    config_path: Path | str | None = None,
    databases: Sequence[tuple[str, str]] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read and check the configuration; raises ConfigError listing every problem.

    ``databases`` (from ``--dsn``) replaces the file's ``[databases.*]``; with neither,
    ``DATABASE_URL`` is the one database.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    warnings: list[str] = []
    raw: dict[str, Any] = {}
    path = config_path or env.get("GUARDIAN_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            problems.append(f"config file {path} does not exist")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"config file {path}: {exc}")

    dbs: list[Database] = []
    if databases is not None:
        for name, dsn in databases:
            add_database(dbs, name, {"dsn": dsn}, problems, where="--dsn")
    else:
        dbs, more = configured_databases(raw)
        problems.extend(more)
        table = raw.get("databases")
        if not (isinstance(table, Mapping) and table) and env.get("DATABASE_URL"):
            url = env["DATABASE_URL"]
            add_database(dbs, default_name(url), {"dsn": url}, problems, where="DATABASE_URL")
    if not dbs and not any(p.startswith(("databases", "--dsn", "DATABASE_URL")) for p in problems):
        problems.append(
            "no databases: add [databases.NAME] with dsn = 'postgresql://...' to the config file, "
            "pass --dsn, or set DATABASE_URL"
        )

    dash = raw.get("dashboard", {})
    if not isinstance(dash, Mapping):
        problems.append("dashboard: must be a table ([dashboard])")
        dash = {}
    for key in sorted(set(dash) - _DASHBOARD_KEYS):
        problems.append(f"dashboard.{key}: unknown setting (known: {', '.join(sorted(_DASHBOARD_KEYS))})")

    def get(key: str, convert: Any, default: Any) -> Any:
        if key not in dash:
            return default
        try:
            return convert(dash[key])
        except (ValueError, TypeError) as exc:
            problems.append(f"dashboard.{key}: {exc}")
            return default

    users = _users(dash.get("users", {}), problems)
    if not users and not any(p.startswith("dashboard.users") for p in problems):
        problems.append(
            "no dashboard users: add [dashboard.users.NAME] with role = 'admin' or 'viewer' and "
            "password_hash from `python -m pg_guardian.dashboard hash-password`"
        )
    secret = env.get("GUARDIAN_DASHBOARD_SECRET_KEY") or get("secret_key", str, None)
    if secret is not None and len(secret) < 16:
        problems.append("dashboard.secret_key: must be at least 16 characters (e.g. from `openssl rand -hex 32`)")
    if not secret:
        secret = secrets.token_hex(32)
        warnings.append("dashboard.secret_key is not set: sessions end when the dashboard restarts")
    token = env.get("GUARDIAN_DASHBOARD_METRICS_TOKEN") or get("metrics_token", str, None)
    audit = get("audit_log", str, None)
    values = {
        "session_max_age": get("session_max_age", parse_duration, 12 * 3600.0),
        "secure_cookies": get("secure_cookies", _bool, False),
        "login_attempts": get("login_attempts", lambda v: _int(v, 1, 1000), 5),
        "login_window": get("login_window", parse_duration, 300.0),
        "activity_hours": get("activity_hours", lambda v: _int(v, 1, 24 * 30), 6),
    }
    if problems:
        raise ConfigError(
            f"invalid dashboard configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
            + "\n".join(f"  - {p}" for p in problems),
            problems=problems,
        )
    return Settings(
        databases=tuple(dbs),
        users=users,
        secret_key=secret,
        metrics_token=token or None,
        audit_log=Path(audit) if audit else None,
        warnings=tuple(warnings),
        **values,
    )


def _users(table: Any, problems: list[str]) -> dict[str, User]:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError

    users: dict[str, User] = {}
    if not isinstance(table, Mapping):
        problems.append("dashboard.users: must be tables such as [dashboard.users.alice]")
        return users
    hasher = PasswordHasher()
    for name, entry in table.items():
        where = f"dashboard.users.{name}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be a table with password_hash and role")
            continue
        for key in sorted(set(entry) - _USER_KEYS):
            problems.append(f"{where}.{key}: unknown setting (known: password_hash, role)")
        if not USER_NAME.match(name):
            problems.append(f"{where}: user names are letters, digits and _ . @ - (at most 63)")
            continue
        role = entry.get("role")
        if role not in ROLES:
            problems.append(f"{where}.role: must be 'viewer' or 'admin', not {role!r}")
            continue
        digest = entry.get("password_hash")
        if not isinstance(digest, str) or not digest.startswith("$argon2"):
            problems.append(
                f"{where}.password_hash: must be an argon2 hash ($argon2id$...) from "
                "`python -m pg_guardian.dashboard hash-password`"
            )
            continue
        try:
            hasher.check_needs_rehash(digest)
        except (InvalidHashError, ValueError):
            problems.append(f"{where}.password_hash: not a valid argon2 hash")
            continue
        users[name] = User(name, digest, role)
    return users


def toml_string(value: str) -> str:
    """A TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def new_config(databases: list[tuple[str, str]], user: str, role: str, password_hash: str) -> str:
    """A new configuration file's text: the databases, a random secret key and one user."""
    lines = []
    for name, dsn in databases:
        lines += [f"[databases.{name}]", f"dsn = {toml_string(dsn)}", ""]
    lines += [
        "[dashboard]",
        f"secret_key = {toml_string(secrets.token_hex(32))}",
        'session_max_age = "12h"',
        "secure_cookies = false  # true once it is served over HTTPS",
        "",
        f"[dashboard.users.{toml_string(user)}]",
        f"password_hash = {toml_string(password_hash)}",
        f"role = {toml_string(role)}",
    ]
    return "\n".join(lines) + "\n"
