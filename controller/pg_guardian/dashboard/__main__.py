"""Helpers for the dashboard's configuration.

``python -m pg_guardian.dashboard hash-password``
    reads a password (twice without echo, or once from standard input when it is not a
    terminal) and prints the ``password_hash = "..."`` line for ``[dashboard.users.NAME]``.

``python -m pg_guardian.dashboard init-config PATH --user NAME [--role admin] [--database NAME=DSN ...]``
    writes a new configuration file with a random ``secret_key``, the databases and one user
    (password read as above); refuses to overwrite a file.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pg_guardian.dashboard.settings import NAME, ROLES, USER_NAME, new_config, toml_string


def _password() -> str | None:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("the two passwords differ", file=sys.stderr)
            return None
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print("use a password of at least 8 characters", file=sys.stderr)
        return None
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pg_guardian.dashboard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("hash-password", help="print an argon2 hash for [dashboard.users.NAME] password_hash")
    init = commands.add_parser("init-config", help="write a new configuration file with one user")
    init.add_argument("path", type=Path)
    init.add_argument("--user", required=True)
    init.add_argument("--role", choices=ROLES, default="admin")
    init.add_argument("--database", action="append", default=[], metavar="NAME=DSN")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    from pg_guardian.dashboard.auth import hash_password

    if args.command == "hash-password":
        password = _password()
        if password is None:
            return 2
        print(f"password_hash = {toml_string(hash_password(password))}")
        return 0
    if not USER_NAME.match(args.user):
        print(f"user name {args.user!r}: letters, digits and _ . @ - only", file=sys.stderr)
        return 2
    databases = []
    for item in args.database:
        name, sep, dsn = item.partition("=")
        if not sep or not NAME.match(name) or not dsn:
            print(f"--database {item!r} is not NAME=DSN (e.g. production=postgresql://host/db)", file=sys.stderr)
            return 2
        databases.append((name, dsn))
    if args.path.exists():
        print(f"{args.path} exists: not overwritten (add users with hash-password)", file=sys.stderr)
        return 2
    password = _password()
    if password is None:
        return 2
    args.path.write_text(new_config(databases, args.user, args.role, hash_password(password)))
    args.path.chmod(0o600)
    print(f"wrote {args.path}: run pg-guardian dashboard --config {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
