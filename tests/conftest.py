"""Test harness: one real PostgreSQL 15 cluster per session (pg_cron preloaded, plpython3u
available), pg_guardian installed once into a template, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from pg_guardian import install as install_mod
from pg_guardian.cluster import LocalCluster
from psycopg import sql
from pytest_postgresql.janitor import DatabaseJanitor

TEMPLATE = "guardian_template"
CRON_DB = "guardian_cron"
_counter = itertools.count()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A throwaway cluster under .pgdata/ (run as the postgres user when we are root)."""
    workdir = Path(tempfile.mkdtemp(prefix="pg-guardian-tests-"))
    workdir.chmod(0o755)  # the postgres user must reach the data folder inside
    pg = LocalCluster(
        datadir=workdir / "data",
        cron_database=CRON_DB,
        settings={
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "cron.use_background_workers": "on",
            "max_worker_processes": "20",
        },
    )
    pg.init()
    pg.start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            found = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_guardian'").fetchone()
            assert found and found[0] == 1, "pg_guardian extension files missing: run `make install`"
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def _janitor(
    pg: LocalCluster, dbname: str, *, template: str | None = None, as_template: bool = False
) -> DatabaseJanitor:
    return DatabaseJanitor(
        user="postgres",
        host=str(pg.socket_dir),
        port=pg.port,
        dbname=dbname,
        template_dbname=template,
        as_template=as_template,
    )


@pytest.fixture(scope="session")
def template_db(cluster: LocalCluster) -> Iterator[str]:
    """A template database with plpython3u and pg_guardian installed.

    By default with CREATE EXTENSION (the files `make install` put on the server);
    GUARDIAN_TEST_INSTALL=sql installs this checkout's scripts as plain SQL instead, so that
    work in a second checkout can be tested without touching the server's extension files.
    """
    janitor = _janitor(cluster, TEMPLATE, as_template=True)
    janitor.init()
    with psycopg.connect(cluster.dsn(TEMPLATE), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION plpython3u")
        method = os.environ.get("GUARDIAN_TEST_INSTALL", "extension")
        install_mod.install(conn, method=method)
        # Every test database is a whole guarded cluster of its own: it runs the cluster-wide
        # checks too (tests/test_deployments.py covers the choice of one database).
        conn.execute("INSERT INTO guardian.settings (key, value) VALUES ('cluster.checks_database', '\"*\"')")
    yield TEMPLATE
    janitor.drop()


def _fresh(cluster: LocalCluster, template: str | None) -> Iterator[str]:
    name = f"t{os.getpid()}_{next(_counter)}"
    janitor = _janitor(cluster, name, template=template)
    janitor.init()
    try:
        yield name
    finally:
        janitor.drop()


@pytest.fixture
def dbname(cluster: LocalCluster, template_db: str) -> Iterator[str]:
    """A fresh database with pg_guardian installed."""
    yield from _fresh(cluster, template_db)


@pytest.fixture(scope="module")
def module_db(cluster: LocalCluster, template_db: str) -> Iterator[psycopg.Connection]:
    """One guarded database shared by a module's tests (for many small, independent probes)."""
    for name in _fresh(cluster, template_db):
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            yield conn


@pytest.fixture
def blank_dbname(cluster: LocalCluster) -> Iterator[str]:
    """A fresh database without pg_guardian."""
    yield from _fresh(cluster, None)


@pytest.fixture
def dsn(cluster: LocalCluster, dbname: str) -> str:
    return cluster.dsn(dbname)


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit superuser connection to a fresh guarded database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def connect(cluster: LocalCluster) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open more connections (as other roles, to other databases); closed after the test."""
    opened: list[psycopg.Connection] = []

    def _connect(dbname: str, user: str = "postgres", **kwargs: object) -> psycopg.Connection:
        conn = psycopg.connect(cluster.dsn(dbname, user=user), autocommit=True, **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def make_role(cluster: LocalCluster) -> Iterator[Callable[..., str]]:
    """Create login roles for a test (cluster-wide, so dropped afterwards)."""
    made: list[str] = []

    def _make(name: str, *grants: str, password: str | None = None) -> str:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
            )
            for grant in grants:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(grant), sql.Identifier(name)))
        made.append(name)
        return name

    yield _make
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        dbs = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()]
    for name in made:
        for dbn in dbs:
            try:
                with psycopg.connect(cluster.dsn(dbn), autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            except psycopg.Error:
                pass
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
