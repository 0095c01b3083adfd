"""The one printer (JSON, a table, or a command's own text) and the one way to exit with a code.

Exit codes are :mod:`pg_guardian.vocabulary`'s: 0 ok, 1 a finding, 2 an error (raised as a
``GuardianError`` and turned into a message by the main group).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from pg_guardian.vocabulary import EXIT_FINDING


def emit(
    data: Any,
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    text: Callable[[Any], None] | None = None,
) -> None:
    """Print ``data``: as JSON with ``--format json``, else as a table of ``columns``, else with ``text``."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    elif columns is not None:
        table(data, columns)
    elif text is not None:
        text(data)


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as an aligned table with a header (``None`` shows as nothing)."""
    cells = [tuple(columns)] + [tuple("" if r.get(c) is None else str(r.get(c)) for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def exit_finding(found: object) -> None:
    """Exit with 1 (a finding) when ``found`` is true; carry on otherwise."""
    if found:
        click.get_current_context().exit(EXIT_FINDING)
