"""Contamination detection overhead: a watched 6-column table against an identical unwatched
one, in the same cluster and run (default durability: fsync and synchronous_commit on).

(a) single-row INSERTs with pgbench (one client, each transaction into either table at random, so
both see the same disk), (b) a 1,000,000-row INSERT ... SELECT, (c) the same rows
through COPY, (d) guardian.scan() against a plain count(*) scan. Targets: (a) <= 5 % overhead,
(b) and (c) <= 1.5x, (d) <= 5x. Rows: BENCH_ROWS (default 1,000,000).
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from pg_guardian.cluster import bindir

from bench.common import bench_cluster, guarded_db

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PGBENCH_SECONDS = int(os.environ.get("BENCH_PGBENCH_SECONDS", "30"))
TABLE_DDL = (
    "CREATE TABLE {name} (id uuid PRIMARY KEY, first_name text, last_name text, email text, clinic text, phone text)"
)
PGBENCH_SCRIPT = """\\set n random(1, 1000000000)
INSERT INTO {table} VALUES (gen_random_uuid(), 'Olivia', 'Testa', 'olivia.testa' || :n || '@gmail.com',
    'Greatest Smiles Dental', '+1 415 872 ' || (:n % 10000));
"""


def timed(conn: psycopg.Connection, statement: str) -> float:
    start = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - start


def fresh(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"TRUNCATE {table}")
    conn.execute("CHECKPOINT")


def copy_in(conn: psycopg.Connection, table: str, data: bytes) -> float:
    start = time.perf_counter()
    with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
        copy.write(data)
    return time.perf_counter() - start


def pgbench_latencies(dsn_parts: dict[str, str], workdir: Path) -> dict[str, list[int]]:
    """One pgbench client that picks the plain or the watched INSERT at random for each
    transaction: both meet the same commit latency (an fsync on a shared disk drifts by tens of
    percent within seconds). Returns each table's transaction latencies in microseconds."""
    args = [str(bindir() / "pgbench"), "-n", "-c", "1", "-T", str(PGBENCH_SECONDS), "-l", "--log-prefix"]
    args.append(str(workdir / "pgbench_log"))
    tables = ("plain", "watched")
    for table in tables:
        script = workdir / f"{table}.sql"
        script.write_text(PGBENCH_SCRIPT.format(table=table))
        args += ["-f", f"{script}@1"]
    args += ["-h", dsn_parts["host"], "-p", dsn_parts["port"], "-U", "postgres", dsn_parts["dbname"]]
    subprocess.run(args, capture_output=True, text=True, check=True)
    latencies: dict[str, list[int]] = {t: [] for t in tables}
    for log in workdir.glob("pgbench_log*"):
        for line in log.read_text().splitlines():
            # client_id transaction_no latency_us script_no epoch epoch_us
            fields = line.split()
            latencies[tables[int(fields[3])]].append(int(fields[2]))
    return latencies


def ratio_line(name: str, base: float, watched: float, target: float, unit: str = "s") -> str:
    ratio = watched / base
    verdict = "ok" if ratio <= target else "OVER TARGET"
    return (
        f"  {name:<34} unwatched {base:8.3f} {unit}  watched {watched:8.3f} {unit}  "
        f"ratio {ratio:5.2f}x  (target <= {target}x: {verdict})"
    )


def main() -> None:
    with bench_cluster() as pg, tempfile.TemporaryDirectory() as tmp:
        dsn = guarded_db(pg)
        parts = dict(p.split("=", 1) for p in dsn.split())
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET max_parallel_workers_per_gather = 0")
            for name in ("plain", "watched"):
                conn.execute(TABLE_DDL.format(name=name))
            columns = conn.execute("SELECT count(*) FROM guardian.watch('watched')").fetchone()
            data_sql = (Path(__file__).parent / "data.sql").read_text().replace(":rows", str(ROWS))
            conn.execute(data_sql)
            buf = io.BytesIO()
            with conn.cursor().copy("COPY bench_src TO STDOUT") as copy:
                for block in copy:
                    buf.write(block)
            data = buf.getvalue()
            print(
                f"rows {ROWS:,}, watched columns {columns[0] if columns else '?'}, rounds {ROUNDS} (median), "
                "fsync on, synchronous_commit on"
            )

            results: dict[str, dict[str, list[float]]] = {"insert": {}, "copy": {}, "scan": {}}
            for _ in range(ROUNDS):
                for table in ("plain", "watched"):
                    fresh(conn, table)
                    results["insert"].setdefault(table, []).append(
                        timed(conn, f"INSERT INTO {table} SELECT * FROM bench_src")
                    )
                for table in ("plain", "watched"):
                    fresh(conn, table)
                    results["copy"].setdefault(table, []).append(copy_in(conn, table, data))
            conn.execute("VACUUM ANALYZE watched")
            # The baseline is a sequential scan: without this, count(*) reads the primary key.
            conn.execute("SET enable_indexonlyscan = off")
            conn.execute("SET enable_bitmapscan = off")
            for _ in range(ROUNDS):
                results["scan"].setdefault("plain", []).append(timed(conn, "SELECT count(*) FROM watched"))
                results["scan"].setdefault("watched", []).append(
                    timed(conn, "SELECT count(*) FROM guardian.scan('watched')")
                )
            found = conn.execute("SELECT count(*) FROM guardian.scan('watched')").fetchone()
            candidates = conn.execute("SELECT count(*) FROM guardian.findings").fetchone()

            latencies = pgbench_latencies(parts, Path(tmp))

        med = {k: {t: statistics.median(v) for t, v in d.items()} for k, d in results.items()}
        lat = {t: (statistics.median(v), statistics.mean(v), len(v)) for t, v in latencies.items()}
        overhead = (lat["watched"][0] / lat["plain"][0] - 1) * 100
        print(
            f"  {'(a) single-row INSERT, pgbench':<34} unwatched {lat['plain'][0]:6.0f} us  watched "
            f"{lat['watched'][0]:6.0f} us  overhead {overhead:5.1f} %  (target <= 5 %: "
            f"{'ok' if overhead <= 5 else 'OVER TARGET'})"
        )
        print(
            f"  {'':<34} median commit-to-commit latency of {lat['plain'][2]:,} and {lat['watched'][2]:,} "
            f"interleaved transactions; means {lat['plain'][1]:.0f} and {lat['watched'][1]:.0f} us "
            f"({(lat['watched'][1] / lat['plain'][1] - 1) * 100:.1f} %)"
        )
        print(ratio_line("(b) INSERT ... SELECT", med["insert"]["plain"], med["insert"]["watched"], 1.5))
        print(ratio_line("(c) COPY", med["copy"]["plain"], med["copy"]["watched"], 1.5))
        print(ratio_line("(d) guardian.scan vs count(*)", med["scan"]["plain"], med["scan"]["watched"], 5.0))
        print(
            f"  findings recorded by the triggers: {candidates[0] if candidates else 0}; by the scan: "
            f"{found[0] if found else 0} (the data is clean but for names like Testa and Tester)"
        )


if __name__ == "__main__":
    main()
