"""Drift fixture cases: tests/fixtures/drift/<case>/{a.sql, b.sql, expected.json}.

a.sql builds the reference (source) database, b.sql the target; expected.json lists every
difference the target shows (kind, identity, change, the attributes that differ, and whether it
is cosmetic). Each case is checked three ways: the controller's diff, the SQL
guardian.compare_fingerprints() on the same two fingerprints, and (where the case says
sql_roundtrip) that the generated SQL really brings the target in line.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_guardian import drift
from pg_guardian.cluster import LocalCluster
from pg_guardian.drift import catalog, migration
from pg_guardian.drift.catalog import Fingerprint
from psycopg import sql
from psycopg.types.json import Jsonb

FIXTURES = Path(__file__).parent / "fixtures" / "drift"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.json").exists())
ROUNDTRIP = [c for c in CASES if json.loads((FIXTURES / c / "expected.json").read_text()).get("sql_roundtrip")]
_names = itertools.count()


def _expected(case: str) -> dict[str, Any]:
    return json.loads((FIXTURES / case / "expected.json").read_text())


@dataclass
class CaseDatabases:
    name: str
    expected: dict[str, Any]
    source_db: str
    target_db: str
    source: Fingerprint
    target: Fingerprint


def create_database(cluster: LocalCluster, name: str, template: str = "template1") -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))


def drop_database(cluster: LocalCluster, name: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def read(cluster: LocalCluster, dbname: str) -> Fingerprint:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        return catalog.read_fingerprint(conn)


@pytest.fixture(scope="module")
def fixture_roles(cluster: LocalCluster) -> Iterator[None]:
    """The roles the fixture cases grant to (roles are cluster-wide, so made once)."""
    roles = sorted({r for c in CASES for r in _expected(c).get("roles", [])})
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for role in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    yield
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for role in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest, cluster: LocalCluster, fixture_roles: None) -> Iterator[CaseDatabases]:
    """The case's two databases, built once for all the checks of that case."""
    name = request.param
    prefix = f"drift{os.getpid()}_{next(_names)}"
    source_db, target_db = f"{prefix}_a", f"{prefix}_b"
    try:
        for dbname, script in ((source_db, "a.sql"), (target_db, "b.sql")):
            create_database(cluster, dbname)
            with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
                conn.execute((FIXTURES / name / script).read_text())
        yield CaseDatabases(
            name,
            _expected(name),
            source_db,
            target_db,
            read(cluster, source_db),
            read(cluster, target_db),
        )
    finally:
        drop_database(cluster, source_db)
        drop_database(cluster, target_db)


@pytest.fixture(scope="module")
def sql_db(cluster: LocalCluster, template_db: str) -> Iterator[psycopg.Connection]:
    """A guarded database to run guardian.compare_fingerprints() in."""
    name = f"drift{os.getpid()}_sql"
    create_database(cluster, name, template=template_db)
    try:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            yield conn
    finally:
        drop_database(cluster, name)


def _summary(entries: list[dict[str, Any]], cosmetic_key: str = "cosmetic") -> set[tuple[Any, ...]]:
    return {
        (
            e["kind"],
            e["identity"],
            e["change"],
            tuple(sorted(e["attributes"])),
            e.get(cosmetic_key, e.get("cosmetic", False)),
        )
        for e in entries
    }


def test_diff_reports_exactly_the_expected_differences(case: CaseDatabases) -> None:
    differences = drift.diff(case.source, case.target)
    got = {(d.kind, d.identity, d.change, tuple(sorted(d.detail)), d.cosmetic) for d in differences}
    assert got == _summary(case.expected["differences"])
    assert bool(drift.counted(differences)) is case.expected["drift"]


def test_sql_comparison_finds_the_same_differences(case: CaseDatabases, sql_db: psycopg.Connection) -> None:
    rows = sql_db.execute(
        "SELECT kind, identity, change, detail, cosmetic FROM guardian.compare_fingerprints(%s, %s, true)",
        (Jsonb(case.source.to_document()), Jsonb(case.target.to_document())),
    ).fetchall()
    got = {(k, i, c, tuple(sorted(d)), cos) for k, i, c, d, cos in rows}
    assert got == _summary(case.expected["differences"], cosmetic_key="sql_cosmetic")


def test_each_object_checksum_is_the_md5_of_its_definition(case: CaseDatabases) -> None:
    for fp in (case.source, case.target):
        reloaded = catalog.fingerprint_from_document(json.loads(json.dumps(fp.to_document())), "copy")
        assert reloaded.checksum == fp.checksum


@pytest.mark.parametrize("case", ROUNDTRIP, indirect=True)
def test_generated_sql_brings_the_target_in_line(case: CaseDatabases, cluster: LocalCluster) -> None:
    differences = drift.counted(drift.diff(case.source, case.target))
    script = migration.render(
        migration.plan(differences, case.source, case.target),
        unsafe=True,
        header=f"case {case.name}",
    )
    copy = f"{case.target_db}_fixed"
    create_database(cluster, copy, template=case.target_db)
    try:
        with psycopg.connect(cluster.dsn(copy), autocommit=True) as conn:
            conn.execute(script)
        after = drift.counted(drift.diff(case.source, read(cluster, copy)))
        assert after == [], f"still differs after applying:\n{script}"
    finally:
        drop_database(cluster, copy)
