"""Prometheus metrics of guarded databases, for alerting from outside the database.

The guardian's watchdog is itself a job: if nothing runs the jobs, nothing inside the
database notices. ``pg-guardian metrics serve`` (or ``jobs serve --metrics-port``) exposes
each job's last success and whether the database is guarded, so that a dead man's switch
(``time() - pg_guardian_job_last_success_timestamp_seconds > ...``) fires from outside.
Each scrape reads the databases afresh; one that cannot be reached is ``pg_guardian_up 0``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from pg_guardian import db
from pg_guardian.core import alerts
from pg_guardian.errors import GuardianError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HELP = {
    "pg_guardian_up": ("gauge", "1 if the database answered and has pg_guardian installed"),
    "pg_guardian_guarded": ("gauge", "1 if something runs the guardian's jobs and none is overdue"),
    "pg_guardian_job_last_success_timestamp_seconds": ("gauge", "When the job last finished without error"),
    "pg_guardian_job_last_run_timestamp_seconds": ("gauge", "When the job last finished, in any state"),
    "pg_guardian_job_overdue": ("gauge", "1 if the job has not run within its max_lag"),
    "pg_guardian_job_runs_total": ("counter", "Runs of the job"),
    "pg_guardian_job_failures_total": ("counter", "Failed runs of the job"),
    "pg_guardian_open_alerts": ("gauge", "Open alerts by severity"),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _epoch(value: Any) -> str | None:
    return None if value is None else f"{value.timestamp():.3f}"


def sample(conn: psycopg.Connection, database: str) -> list[tuple[str, str, str]]:
    """The samples of one guarded database: (metric, labels, value)."""
    out: list[tuple[str, str, str]] = []
    guard = conn.execute("SELECT guarded FROM guardian.guard_status()").fetchone()
    out.append(("pg_guardian_guarded", _labels(database=database), "1" if guard and guard[0] else "0"))
    jobs = conn.execute(
        "SELECT name, last_ok_at, last_finished_at, overdue, runs, failures FROM guardian.job_status ORDER BY name"
    ).fetchall()
    for name, last_ok, last_run, overdue, runs, failures in jobs:
        labels = _labels(database=database, job=name)
        for metric, value in (
            ("pg_guardian_job_last_success_timestamp_seconds", _epoch(last_ok)),
            ("pg_guardian_job_last_run_timestamp_seconds", _epoch(last_run)),
        ):
            if value is not None:
                out.append((metric, labels, value))
        out.append(("pg_guardian_job_overdue", labels, "1" if overdue else "0"))
        out.append(("pg_guardian_job_runs_total", labels, str(runs)))
        out.append(("pg_guardian_job_failures_total", labels, str(failures)))
    for severity, count in alerts.open_counts(conn).items():
        out.append(("pg_guardian_open_alerts", _labels(database=database, severity=severity), str(count)))
    return out


def render(dsns: Iterable[str]) -> str:
    """The exposition text for every database (one that fails is ``pg_guardian_up 0``)."""
    samples: list[tuple[str, str, str]] = []
    for dsn in dsns:
        name = db.describe(dsn).split(" on ")[0].removeprefix("database ")
        try:
            with db.connect(dsn, "metrics", autocommit=True, statement_timeout_ms=10_000) as conn:
                name = conn.info.dbname
                taken = sample(conn, name)
        except (GuardianError, psycopg.Error):
            samples.append(("pg_guardian_up", _labels(database=name), "0"))
            continue
        samples.append(("pg_guardian_up", _labels(database=name), "1"))
        samples.extend(taken)
    lines: list[str] = []
    for metric, (kind, text) in _HELP.items():
        rows = [s for s in samples if s[0] == metric]
        if not rows:
            continue
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f"{m}{labels} {value}" for m, labels, value in rows]
    return "\n".join(lines) + "\n"


def make_server(host: str, port: int, dsns: list[str]) -> ThreadingHTTPServer:
    """An HTTP server answering ``GET /metrics`` (and ``/healthz``); the caller runs it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                body, status, ctype = render(dsns).encode(), 200, CONTENT_TYPE
            elif self.path == "/healthz":
                body, status, ctype = b"ok\n", 200, "text/plain"
            else:
                body, status, ctype = b"not found: try /metrics\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_background(host: str, port: int, dsns: list[str]) -> Callable[[], None]:
    """Start the metrics server on a thread; returns the function that stops it."""
    server = make_server(host, port, dsns)
    thread = threading.Thread(target=server.serve_forever, name="pg-guardian metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
