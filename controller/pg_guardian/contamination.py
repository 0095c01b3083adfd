"""Contamination detection from the controller: scans, watched tables, and the application-side
check (the design's ``scanOperation``). All matching happens in the database, against the one
rule catalogue; this module only batches, collects and shapes results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pg_guardian.errors import GuardianError
from pg_guardian.vocabulary import SEVERITIES

BATCH_PAGES = 4096  # 32 MiB of heap per batch: short transactions, steady progress


@dataclass(frozen=True)
class Finding:
    """One contaminated value: where it is, which rule it matched, a redacted sample."""

    table: str
    record_id: str | None
    column_name: str
    rule: str
    severity: str
    sample: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def watched_tables(conn: psycopg.Connection) -> list[str]:
    """Watched tables, schema-qualified."""
    rows = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM guardian.watched_tables AS w "
        "JOIN pg_catalog.pg_class AS c ON c.oid = w.relid "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _resolve(conn: psycopg.Connection, table: str) -> tuple[int, str]:
    row = conn.execute(
        "SELECT c.oid, format('%%I.%%I', n.nspname, c.relname) FROM pg_catalog.pg_class AS c "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    if row is None:
        raise GuardianError(f"table {table!r} does not exist; give a schema-qualified name such as public.patients")
    return int(row[0]), str(row[1])


def scan_batches(
    conn: psycopg.Connection, table: str, batch_pages: int = BATCH_PAGES
) -> list[tuple[str, int | None, int | None, int]]:
    """The (relation, from_page, to_page, pages) batches that cover a table and its partitions."""
    _, name = _resolve(conn, table)
    leaves = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname), "
        "       (pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int)::int "
        "  FROM (SELECT %s::regclass AS relid UNION ALL "
        "        SELECT p.relid FROM pg_catalog.pg_partition_tree(%s::regclass) AS p "
        "         WHERE p.isleaf AND p.relid <> %s::regclass) AS t "
        "  JOIN pg_catalog.pg_class AS c ON c.oid = t.relid "
        "  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        " WHERE c.relkind IN ('r', 'm', 'f') ORDER BY 1",
        (name, name, name),
    ).fetchall()
    batches: list[tuple[str, int | None, int | None, int]] = []
    for leaf, pages in leaves:
        if pages <= batch_pages:
            # The last batch is open-ended, so rows added while scanning are seen too.
            batches.append((leaf, None, None, max(pages, 1)))
            continue
        for start in range(0, pages, batch_pages):
            end = start + batch_pages
            batches.append((leaf, start, None if end >= pages else end, min(batch_pages, pages - start)))
    return batches


def scan(
    conn: psycopg.Connection,
    table: str,
    *,
    record: bool = False,
    batch_pages: int = BATCH_PAGES,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Finding]:
    """Findings in a table, batch by batch (each its own short transaction: writers never wait).

    ``record`` also records the findings as alerts. ``progress`` is called with pages done.
    """
    _, name = _resolve(conn, table)
    for relation, start, end, pages in scan_batches(conn, name, batch_pages):
        with conn.transaction():
            rows = conn.execute(
                "SELECT record_id, column_name, rule, severity, sample FROM guardian.scan(%s, %s, %s, %s)",
                (relation, record, start, end),
            ).fetchall()
        for row in rows:
            yield Finding(name, row[0], row[1], row[2], row[3], row[4])
        if progress:
            progress(pages)


def check_payload(
    conn: psycopg.Connection, data: Any, *, operation: str = "INSERT", table: str | None = None
) -> list[dict[str, Any]]:
    """The application-side check (the design's ``scanOperation(operation, data)``).

    Returns alerts shaped as the design's monitor returns them: one TEST_DATA_PATTERN alert
    listing every finding (severity of the worst), and a BULK_OPERATION alert when a list of
    records is longer than the bulk threshold. Nothing is written to the database.
    """
    findings = [
        {"path": r[0], "key": r[1], "kind": r[2], "rule": r[3], "severity": r[4], "sample": r[5]}
        for r in conn.execute(
            "SELECT path, key, kind, rule, severity, sample FROM guardian.check_payload(%s, %s)",
            (Jsonb(data), table),
        ).fetchall()
    ]
    alerts: list[dict[str, Any]] = []
    if findings:
        alerts.append(
            {
                "type": "TEST_DATA_PATTERN",
                "severity": min((f["severity"] for f in findings), key=SEVERITIES.index),
                "operation": operation,
                "findings": findings,
            }
        )
    if isinstance(data, list):
        row = conn.execute(
            "SELECT threshold FROM guardian.activity_rules WHERE name = 'bulk_statement' AND enabled"
        ).fetchone()
        if row is not None and len(data) > row[0]:
            alerts.append(
                {
                    "type": "BULK_OPERATION",
                    "severity": "HIGH",
                    "operation": operation,
                    "record_count": len(data),
                    "threshold": int(row[0]),
                }
            )
    return alerts


def watch(
    conn: psycopg.Connection, table: str, overrides: dict[str, str | None] | None = None, mode: str | None = None
) -> list[tuple[str, str, str]]:
    """Watch a table; returns (column, kind, source) for each watched column."""
    _resolve(conn, table)
    rows = conn.execute(
        "SELECT column_name, kind, source FROM guardian.watch(%s, %s, %s)",
        (table, Jsonb(overrides) if overrides else None, mode),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def unwatch(conn: psycopg.Connection, table: str) -> bool:
    """Stop watching a table (its findings and alerts stay); False if it was not watched."""
    row = conn.execute("SELECT guardian.unwatch(%s)", (table,)).fetchone()
    return bool(row and row[0])
