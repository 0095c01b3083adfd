"""Alert relay: commit-to-receiver latency at idle, and a 1,000-alert burst, to a local webhook.

Targets (issue 4): p99 <= 1 s from an alert's commit to the webhook receiving it at idle; a
1,000-alert burst fully delivered in <= 5 s. The relay runs as a real process (the console
entry point) against a cluster with default durability; the receiver is a threaded HTTP server
on 127.0.0.1. The burst is measured twice: one POST per alert (group_by = ["id"], the
worst case) and grouped (the default: one message per group with a count).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from pg_guardian import install as install_mod

from bench.common import bench_cluster

LATENCY_SAMPLES = 60
BURST = 1000
P99_TARGET = 1.0
BURST_TARGET = 5.0


class Sink:
    """Records, per alert id, when the receiver got it (every alert of a grouped message counts)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.posts = 0
        self.cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                with sink.cond:
                    sink.posts += 1
                    for alert in body["alerts"]:
                        sink.seen.setdefault(alert["id"], now)
                    # a grouped message shows a sample: count the rest by the message's total
                    sink.seen.update({f"{body['message_id']}#{i}": now for i in range(body["alerts_omitted"])})
                    sink.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.seen) < count:
                if not self.cond.wait(max(deadline - time.monotonic(), 0)) and time.monotonic() >= deadline:
                    return False
            return True

    def reset(self) -> None:
        with self.cond:
            self.seen.clear()
            self.posts = 0


def start_relay(dsn: str, config: Path) -> subprocess.Popen[bytes]:
    controller = str(Path(__file__).resolve().parents[1] / "controller")
    env = {**os.environ, "PYTHONPATH": controller, "GUARDIAN_CONFIG": str(config)}
    return subprocess.Popen(
        [sys.executable, "-m", "pg_guardian.cli", "relay", "--dsn", dsn],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def write_config(path: Path, url: str, *, grouped: bool) -> None:
    group = "" if grouped else 'group_by = ["id"]\n'
    path.write_text(
        f'[relay]\npoll_interval = "5s"\n[channels.webhook]\ntype = "webhook"\nurl = "{url}"\n{group}concurrency = 4\n'
    )


def latency(conn: psycopg.Connection, sink: Sink) -> list[float]:
    samples = []
    for i in range(LATENCY_SAMPLES):
        aid = str(
            conn.execute(
                "SELECT guardian.raise_alert('BENCH_LATENCY', 'CRITICAL', %s)",
                (f"latency probe {i}",),
            ).fetchone()[0]
        )  # type: ignore[index]
        committed = time.time()
        sink.wait(i + 1, 10)
        samples.append(sink.seen[aid] - committed)
        time.sleep(0.05)  # idle between alerts
    return samples


def burst(conn: psycopg.Connection, sink: Sink, tag: str) -> tuple[float, int]:
    sink.reset()
    conn.execute(
        """INSERT INTO guardian.monitoring_alerts (severity, type, message, table_name)
                    SELECT 'CRITICAL', 'BENCH_BURST', %s || ' ' || g, 'public.users'
                      FROM generate_series(1, %s) AS g""",
        (tag, BURST),
    )
    committed = time.time()
    ok = sink.wait(BURST, 60)
    return (max(sink.seen.values()) - committed) if ok else float("inf"), sink.posts


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(q * (len(ordered) - 1)), len(ordered) - 1)]


def run_relay(dsn: str, sink: Sink, *, grouped: bool, work: Path) -> subprocess.Popen[bytes]:
    config = work / f"relay-{'grouped' if grouped else 'single'}.toml"
    write_config(config, sink.url, grouped=grouped)
    proc = start_relay(dsn, config)
    time.sleep(1.5)  # started, connected, idle
    return proc


def main() -> None:
    sink = Sink()
    work = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    with bench_cluster() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_relay")
        dsn = pg.dsn("bench_relay")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # GUARDIAN_TEST_INSTALL=sql: this checkout's SQL, as the tests do (no `make install`)
            install_mod.install(conn, method=os.environ.get("GUARDIAN_TEST_INSTALL", "auto"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            proc = run_relay(dsn, sink, grouped=False, work=work)
            try:
                samples = latency(conn, sink)
                single, single_posts = burst(conn, sink, "single")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            conn.execute("SELECT guardian.resolve_alert(id) FROM guardian.monitoring_alerts")
            proc = run_relay(dsn, sink, grouped=True, work=work)
            try:
                grouped, grouped_posts = burst(conn, sink, "grouped")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    p50, p99 = statistics.median(samples), pct(samples, 0.99)
    print(
        f"commit -> webhook latency at idle ({LATENCY_SAMPLES} alerts): p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms   "
        f"target p99 <= {P99_TARGET * 1000:.0f} ms: {p99 / P99_TARGET:.2f}x of budget "
        f"{'OK' if p99 <= P99_TARGET else 'MISSED'}"
    )
    print(
        f"{BURST}-alert burst, one POST per alert: {single:.2f} s ({single_posts} posts, "
        f"{BURST / single:.0f} alerts/s)   target <= {BURST_TARGET:.0f} s: "
        f"{single / BURST_TARGET:.2f}x of budget "
        f"{'OK' if single <= BURST_TARGET else 'MISSED'}"
    )
    print(
        f"{BURST}-alert burst, grouped (default): {grouped:.2f} s in {grouped_posts} post(s)   "
        f"{single / grouped if grouped else 0:.1f}x faster than one POST per alert"
    )


if __name__ == "__main__":
    main()
