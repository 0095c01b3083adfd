"""The CLI stays a thin shell: no SQL, one way to connect, one way to exit, short modules."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from pg_guardian.cli import COMMAND_MODULES

CLI = Path(__file__).resolve().parents[1] / "controller" / "pg_guardian" / "cli"
MODULES = sorted(CLI.glob("*.py"))
MAX_LINES = 300
SQL = re.compile(r"SELECT |INSERT |UPDATE |DELETE |(?<![\w-])guardian\.[a-z_]")


def prose(tree: ast.AST) -> set[int]:
    """The ids of the string nodes that are prose shown to users: docstrings and ``help=`` texts
    (they may name SQL objects, as in "ON DELETE RESTRICT" or "guardian.import_fingerprint()")."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
        if isinstance(node, ast.keyword) and node.arg == "help":
            ids.update(id(n) for n in ast.walk(node.value))
    return ids


def strings(path: Path) -> list[str]:
    """Every string literal of a module (f-strings' literal parts too), prose left out."""
    tree = ast.parse(path.read_text())
    skip = prose(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_the_cli_package_has_its_modules() -> None:
    assert {p.stem for p in MODULES} >= {"__init__", "options", "output", "install", "contamination", "relay"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_cli_modules_run_no_sql(path: Path) -> None:
    assert "execute(" not in path.read_text()
    assert [s for s in strings(path) if SQL.search(s)] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_cli_modules_are_short(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_only_the_options_module_opens_connections() -> None:
    assert [p.name for p in MODULES if "db.connect(" in p.read_text()] == ["options.py"]


def test_exit_codes_are_named_not_spelled() -> None:
    assert [p.name for p in MODULES if re.search(r"sys\.exit\(|exit\(\d", p.read_text())] == []


def test_the_layout_check_sees_sql_in_a_literal(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        '"""Docstrings may say guardian.watch()."""\n'
        'import click\n@click.option("--x", help="ON DELETE RESTRICT")\n'
        'def f(conn):\n    """Help may say guardian.unwatch()."""\n'
        '    return conn.fetch(f"SELECT guardian.unwatch({1})")\n'
    )
    assert strings(module) == ["--x", "SELECT guardian.unwatch(", ")"]


def test_every_command_is_looked_up_in_the_module_that_defines_it() -> None:
    defined: dict[str, str] = {}
    for path in MODULES:
        if path.stem == "__main__":  # runs the command line when imported
            continue
        module = importlib.import_module(f"pg_guardian.cli.{path.stem}")
        defined.update((command.name, path.stem) for command in getattr(module, "COMMANDS", ()))
    assert defined == COMMAND_MODULES
