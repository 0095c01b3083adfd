"""Shared set-up for benchmarks: a throwaway cluster with production-like durability."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pg_guardian import install as install_mod
from pg_guardian.cluster import LocalCluster


@contextmanager
def bench_cluster(settings: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """A fresh cluster (default durability unless ``settings`` say otherwise), removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="pg-guardian-bench-"))
    workdir.chmod(0o755)
    pg = LocalCluster(
        datadir=workdir / "data", settings={"shared_buffers": "'512MB'", "max_wal_size": "'4GB'", **(settings or {})}
    )
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def guarded_db(pg: LocalCluster, name: str = "bench") -> str:
    """Create a database with pg_guardian installed; returns its DSN."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        install_mod.install(conn)
    return pg.dsn(name)


def best_of(runs: int, func: Callable[[], None]) -> float:
    """Median wall time of ``runs`` calls, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
