"""Detection that learns: labels on records, rules induced from them, and curated lists.

Everything happens in the database (``guardian.label_records``, ``guardian.suggest_rules``,
``guardian.accept_rule_suggestion``, ``guardian.update_rule_list``); this module calls it and
shapes the results. ``update_lists`` reads the installed list packages.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import psycopg

from pg_guardian import scripts
from pg_guardian.errors import GuardianError

LABELS = ("test", "real")
# How many rows of the table a suggestion's sample matches show (beyond its labelled examples).
SAMPLE_MATCHES = 3


def label(conn: psycopg.Connection, table: str, record_ids: list[str], what: str) -> int:
    """Label records of ``table`` (primary keys as text) ``test`` or ``real``; returns how many."""
    if what not in LABELS:
        raise GuardianError(f"unknown label {what!r}; label records test or real")
    row = conn.execute("SELECT guardian.label_records(%s::regclass, %s, %s)", (table, record_ids, what)).fetchone()
    return int(row[0]) if row else 0


def suggest(conn: psycopg.Connection, table: str | None = None) -> list[dict[str, Any]]:
    """The rule suggestions learned from labels (of ``table``, or of every labelled table), each
    with a few rows of the table it would flag now that nobody labelled (``sample_matches``)."""
    # Two statements: the second must see the suggestions the first one made.
    ids = [r[0] for r in conn.execute("SELECT suggestion_id FROM guardian.suggest_rules(%s::regclass)", (table,))]
    rows = conn.execute(
        """SELECT r.id, r.relid::text, r.column_name, r.kind, r.match_type, r.matcher, r.examples, r.matches_now,
                  r.est_precision::float, r.test_hits, r.real_hits, r.pattern, r.terms
             FROM guardian.rule_suggestions AS r
             JOIN unnest(%s::bigint[]) WITH ORDINALITY AS o(id, n) ON o.id = r.id
            ORDER BY o.n""",
        (ids,),
    ).fetchall()
    names = ["suggestion_id", "table", "column_name", "kind", "match_type", "matcher", "examples", "matches_now",
             "est_precision", "test_hits", "real_hits", "pattern", "terms"]  # fmt: skip
    found = [dict(zip(names, r, strict=True)) for r in rows]
    for s in found:
        s["sample_matches"] = _sample_matches(conn, s)
    return found


def _sample_matches(conn: psycopg.Connection, suggestion: dict[str, Any]) -> list[str]:
    """A few values of the suggestion's column that it matches and that no one labelled."""
    rows = conn.execute(
        psycopg.sql.SQL(
            """SELECT DISTINCT v.v
                 FROM {table} AS t, LATERAL (SELECT guardian._normalize(pg_catalog.format('%%s', t.{column}))) AS v(v)
                WHERE guardian._rule_matches(%(match_type)s, %(matcher)s, %(terms)s, v.v)
                  AND NOT EXISTS (SELECT FROM guardian.labels AS l
                                   WHERE l.relid = %(table)s::regclass AND l.column_name = %(column)s
                                     AND l.value = v.v)
                ORDER BY 1 LIMIT %(limit)s"""
        ).format(
            column=psycopg.sql.Identifier(suggestion["column_name"]),
            table=psycopg.sql.SQL(suggestion["table"]),
        ),
        {
            "match_type": suggestion["match_type"],
            "matcher": suggestion["matcher"],
            "terms": suggestion["terms"],
            "table": suggestion["table"],
            "column": suggestion["column_name"],
            "limit": SAMPLE_MATCHES,
        },
    ).fetchall()
    return [r[0] for r in rows]


def accept(conn: psycopg.Connection, suggestion_id: int) -> str:
    """Turn a suggestion into a rule; returns the rule's name."""
    row = conn.execute("SELECT guardian.accept_rule_suggestion(%s)", (suggestion_id,)).fetchone()
    return str(row[0]) if row else ""


def dismiss(conn: psycopg.Connection, suggestion_id: int) -> None:
    """Dismiss a suggestion: it is not suggested again."""
    conn.execute("SELECT guardian.dismiss_rule_suggestion(%s)", (suggestion_id,))


def disposable_domains() -> tuple[str, list[str]]:
    """The installed disposable-email-domains package's version and domains, with pg_guardian's
    own additions (extension/lists/disposable_extra.txt), less the mailbox providers real people
    use (extension/lists/real_mail_providers.txt)."""
    try:
        from disposable_email_domains import blocklist
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise GuardianError(
            "the disposable-email-domains package is not installed; pip install disposable-email-domains"
        ) from exc
    real = set(scripts.list_entries("real_mail_providers.txt"))
    extra = set(scripts.list_entries("disposable_extra.txt"))
    return importlib.metadata.version("disposable-email-domains"), sorted(
        ({d.strip().lower() for d in blocklist if d.strip()} | extra) - real
    )


def update_lists(conn: psycopg.Connection, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Refresh the curated list rules from the installed packages (in one transaction). Returns,
    per rule, the source, version, entries and how many were added and removed."""
    version, domains = disposable_domains()
    results = []
    with conn.transaction(force_rollback=dry_run):
        row = conn.execute(
            "SELECT added, removed, entries FROM guardian.update_rule_list(%s, %s, %s, %s)",
            ("disposable_mail_domain", domains, "disposable-email-domains (PyPI)", version),
        ).fetchone()
        assert row is not None
        results.append(
            {
                "rule": "disposable_mail_domain",
                "source": "disposable-email-domains",
                "version": version,
                "added": row[0],
                "removed": row[1],
                "entries": row[2],
                "applied": not dry_run,
            }
        )
    return results
