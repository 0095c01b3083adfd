"""The controller's shared words (pg_guardian.vocabulary) are the extension's: read back from the
constraints and tables of an installed database, so the two cannot drift apart."""

from __future__ import annotations

import re

import psycopg
import pytest
from pg_guardian import vocabulary
from support.queries import scalar


def listed(conn: psycopg.Connection, table: str, constraint: str) -> tuple[str, ...]:
    """The values a ``CHECK (column IN (...))`` constraint allows, in its order."""
    definition = scalar(
        conn,
        "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
        "WHERE conrelid = %s::regclass AND conname = %s",
        (table, constraint),
    )
    return tuple(re.findall(r"'([^']*)'::text", definition))


@pytest.mark.parametrize(
    ("table", "constraint"),
    [
        ("guardian.monitoring_alerts", "monitoring_alerts_severity_chk"),
        ("guardian.rules", "rules_severity_chk"),
        ("guardian.activity_rules", "activity_rules_severity_chk"),
    ],
)
def test_severities_are_the_ones_alerts_and_rules_allow_most_severe_first(
    module_db: psycopg.Connection, table: str, constraint: str
) -> None:
    assert listed(module_db, table, constraint) == vocabulary.SEVERITIES


@pytest.mark.parametrize(
    ("table", "constraint"),
    [("guardian.environment", "environment_mode_chk"), ("guardian.table_modes", "table_modes_mode_chk")],
)
def test_guard_modes_are_the_ones_environments_and_tables_allow(
    module_db: psycopg.Connection, table: str, constraint: str
) -> None:
    assert listed(module_db, table, constraint) == vocabulary.MODES


def test_outcomes_are_the_ones_alerts_allow(module_db: psycopg.Connection) -> None:
    assert listed(module_db, "guardian.monitoring_alerts", "monitoring_alerts_outcome_chk") == vocabulary.OUTCOMES


def test_column_kinds_are_the_rows_of_guardian_kinds(module_db: psycopg.Connection) -> None:
    rows = module_db.execute("SELECT kind FROM guardian.kinds ORDER BY kind").fetchall()
    assert sorted(vocabulary.KINDS) == [r[0] for r in rows]


def test_check_categories_are_those_of_the_registered_checks(module_db: psycopg.Connection) -> None:
    rows = module_db.execute("SELECT DISTINCT category FROM guardian.checks ORDER BY category").fetchall()
    assert sorted(vocabulary.CHECK_CATEGORIES) == [r[0] for r in rows]


def test_severity_rank_orders_the_severities() -> None:
    assert sorted(vocabulary.SEVERITY_RANK, key=vocabulary.SEVERITY_RANK.__getitem__) == list(vocabulary.SEVERITIES)
