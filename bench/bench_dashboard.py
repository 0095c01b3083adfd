"""Dashboard: the overview over 3 environments of 100,000 alerts each, and commit-to-page latency.

Targets: the overview answers in <= 200 ms with 100,000 alerts of history in each of
3 environments; an alert committed in a database reaches an open page within 1 s (p99).

Three databases in one cluster (default durability), each with pg_guardian and 100,000 alerts
spread over 90 days (severities, types and tables varied; ~5 % open, half of those
acknowledged, the rest acknowledged and resolved) and a week of per-minute write activity on ten
tables. The dashboard runs as its own process under uvicorn on 127.0.0.1 (as ``serve`` runs it),
with one extra route for the baseline; the client logs in as a viewer and keeps its connection.

* Overview: ``GET /api/overview`` and ``GET /`` (HTML), interleaved with the baseline: an
  endpoint behind the same login check and thread pool that makes, in every environment at
  once, as many ``SELECT 1`` round trips as the overview makes queries. The ratio is what the
  overview's SQL, assembly and rendering cost over the bare round trips. ``GET /healthz`` shows
  the HTTP stack alone.
* Live feed: the page's event stream (``GET /events``) stays open while alerts are committed
  one per transaction (``guardian.raise_alert``), 20-50 ms apart and in bursts of five; each is
  timed from its commit returning to the event carrying its id. Baseline, on the same commits:
  a plain psycopg connection that LISTENs on the channel the guardian notifies.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pg_guardian import install as install_mod

from bench.common import bench_cluster

ENVIRONMENTS = ("production", "staging", "development")
ALERTS = 100_000
WARMUP, REQUESTS = 5, 100
LIVE_WARMUP, LIVE_ALERTS, BURST_EVERY, BURST = 10, 250, 25, 5
OVERVIEW_TARGET, LIVE_P99_TARGET = 0.200, 1.0
VIEWER, VIEWER_PASSWORD = "victor", "victor-bench-1"
ROOT = Path(__file__).resolve().parents[1]

TABLES_DDL = """
CREATE SCHEMA billing;
CREATE TABLE public.patients (id bigint PRIMARY KEY, name text);
CREATE TABLE public.appointments (id bigint PRIMARY KEY, patient_id bigint);
CREATE TABLE public.users (id bigint PRIMARY KEY, email text);
CREATE TABLE public.orders (id bigint PRIMARY KEY, total numeric);
CREATE TABLE public.messages (id bigint PRIMARY KEY, body text);
CREATE TABLE public.sessions (id bigint PRIMARY KEY, started_at timestamptz);
CREATE TABLE public.prescriptions (id bigint PRIMARY KEY, drug text);
CREATE TABLE public.audit_log (id bigint PRIMARY KEY, entry text);
CREATE TABLE billing.invoices (id bigint PRIMARY KEY, amount numeric);
CREATE TABLE billing.payments (id bigint PRIMARY KEY, amount numeric);
"""

# type, share of all alerts, has a table, severities it comes with
ALERT_KINDS = [
    ("TEST_DATA_CONTAMINATION", 0.34, True, ["CRITICAL", "HIGH", "HIGH", "MEDIUM"]),
    ("STRICT_MODE_REJECTION", 0.04, True, ["HIGH", "MEDIUM"]),
    ("BULK_OPERATION", 0.10, True, ["HIGH", "MEDIUM", "MEDIUM", "LOW"]),
    ("OFF_HOURS_ACTIVITY", 0.06, True, ["MEDIUM", "LOW"]),
    ("RAPID_CREATION", 0.05, True, ["MEDIUM", "LOW"]),
    ("UNFILTERED_WRITE", 0.04, True, ["HIGH", "MEDIUM"]),
    ("TABLE_TRUNCATED", 0.01, True, ["HIGH", "CRITICAL"]),
    ("SCHEMA_CHANGE", 0.08, True, ["INFO", "LOW", "MEDIUM"]),
    ("ENVIRONMENT_DRIFT", 0.02, False, ["MEDIUM", "HIGH"]),
    ("ROLE_CREATED", 0.03, False, ["INFO", "LOW"]),
    ("ROLE_ESCALATION", 0.01, False, ["CRITICAL", "HIGH"]),
    ("PRIVILEGE_GRANTED", 0.02, True, ["MEDIUM", "LOW"]),
    ("BRUTE_FORCE", 0.02, False, ["HIGH", "CRITICAL"]),
    ("CHECK_DEGRADED", 0.08, False, ["LOW", "MEDIUM", "INFO"]),
    ("REPLICATION_LAG", 0.04, False, ["MEDIUM", "HIGH"]),
    ("SEQUENCE_EXHAUSTION", 0.02, True, ["MEDIUM", "HIGH"]),
    ("RELAY_DEAD_LETTER", 0.04, False, ["LOW", "MEDIUM"]),
]
ALERT_TABLES = [
    "public.patients", "public.appointments", "public.users", "public.orders", "public.messages",
    "public.sessions", "public.prescriptions", "public.audit_log", "billing.invoices", "billing.payments",
    "public.addresses", "public.clinics", "public.staff", "public.referrals", "public.lab_results",
    "public.insurance_claims", "public.notes", "public.devices", "billing.refunds", "billing.plans",
]  # fmt: skip
# watched table, share of minutes with writes, rows a minute at most
ACTIVITY_TABLES = [
    ("public.patients", 0.9, 40), ("public.appointments", 0.95, 80), ("public.users", 0.7, 20),
    ("public.orders", 0.9, 120), ("public.messages", 0.98, 300), ("public.sessions", 1.0, 500),
    ("public.prescriptions", 0.4, 10), ("public.audit_log", 1.0, 600), ("billing.invoices", 0.3, 15),
    ("billing.payments", 0.3, 15),
]  # fmt: skip


def fill_sql() -> tuple[str, str]:
    """Alerts (parameters env, alerts) and write activity for one environment."""
    kinds, low = [], 0.0
    for name, share, has_table, severities in ALERT_KINDS:
        sev = "ARRAY[" + ",".join(f"'{s}'" for s in severities) + "]"
        kinds.append(f"('{name}', {low:.4f}, {low + share:.4f}, {str(has_table).lower()}, {sev})")
        low += share
    tables = "(ARRAY[" + ",".join(f"'{t}'" for t in ALERT_TABLES) + "])"
    windows = ",".join(f"('{t}'::regclass, {p}, {m})" for t, p, m in ACTIVITY_TABLES)
    alerts = f"""
INSERT INTO guardian.monitoring_alerts
    (severity, type, message, table_name, record_id, environment, metadata, fingerprint, occurrences,
     created_at, last_seen_at, context, acknowledged_at, acknowledged_by, resolved_at, resolved_by, outcome)
SELECT x.severity, x.type, x.message, x.table_name, x.record_id, %(env)s::text, x.metadata,
       md5(concat_ws('|', x.type, %(env)s::text, x.table_name, x.record_id, x.message)), x.occurrences,
       x.created_at, x.last_seen_at,
       jsonb_build_object('session_user', 'app', 'current_user', 'app', 'application_name', 'api-server',
                          'client_addr', '10.0.3.' || (x.g %% 200), 'backend_pid', 20000 + x.g %% 9000),
       -- open: state < 0.05, half of them acknowledged; most of the resolved were acknowledged first
       CASE WHEN x.state >= 0.025 AND x.state < 0.85
            THEN least(x.created_at + x.r2 * interval '2 hours', now()) END,
       CASE WHEN x.state >= 0.025 AND x.state < 0.85
            THEN (ARRAY['alice', 'bob', 'carol'])[1 + x.g %% 3] || '@dashboard' END,
       CASE WHEN x.state >= 0.05 THEN least(x.created_at + x.r2 * interval '2 days', now()) END,
       CASE WHEN x.state >= 0.05 THEN (ARRAY['alice', 'bob', 'carol', 'guardian'])[1 + x.g %% 4] END,
       CASE WHEN x.state >= 0.05
            THEN (ARRAY['cleaned', 'confirmed', 'false_positive', 'expected'])[1 + x.g %% 4] END
  FROM (SELECT b.g, b.state, b.r2, b.created_at, k.type,
               k.severities[1 + floor(b.r_sev * cardinality(k.severities))::int] AS severity,
               CASE WHEN k.has_table THEN {tables}[1 + floor(b.r_tbl * {len(ALERT_TABLES)})::int] END AS table_name,
               CASE WHEN k.has_table AND b.r_tbl < 0.6 THEN (b.g * 7919 %% 500000)::text END AS record_id,
               lower(replace(k.type, '_', ' ')) || ' #' || b.g
                   || CASE WHEN k.has_table THEN ' on a watched table' ELSE '' END AS message,
               CASE WHEN k.type = 'ENVIRONMENT_DRIFT' THEN jsonb_build_object('count', 1 + b.g %% 40)
                    ELSE jsonb_build_object('rule', 'rule_' || b.g %% 30) END AS metadata,
               CASE WHEN b.r2 < 0.8 THEN 1 ELSE 1 + floor(b.r2 * 20)::int END AS occurrences,
               b.created_at + b.r2 * least(now() - b.created_at, interval '6 hours') AS last_seen_at
          FROM (SELECT g, random() AS r_kind, random() AS r_sev, random() AS r_tbl, random() AS state,
                       random() AS r2, now() - power(random(), 1.3) * interval '90 days' AS created_at
                  FROM generate_series(1, %(alerts)s::int) AS g) AS b
          JOIN (VALUES {",".join(kinds)}) AS k(type, lo, hi, has_table, severities)
            ON b.r_kind >= k.lo AND b.r_kind < k.hi) AS x
"""
    activity = f"""
INSERT INTO guardian.activity_windows
    (relid, minute, inserts, updates, deletes, statements, peak_inserts_per_second, roles, applications)
SELECT t.relid, m.minute, i.inserts, i.inserts / 3, i.inserts / 20, 1 + i.inserts / 5, 1 + i.inserts / 30,
       jsonb_build_object('app', i.inserts), jsonb_build_object('api-server', i.inserts)
  FROM (VALUES {windows}) AS t(relid, busy, most)
 CROSS JOIN generate_series(date_trunc('minute', now()) - interval '7 days', date_trunc('minute', now()),
                            interval '1 minute') AS m(minute)
 CROSS JOIN LATERAL (SELECT (floor(random() * t.most) * CASE WHEN random() < 0.002 THEN 400 ELSE 1 END)::bigint
                            AS inserts) AS i
 WHERE random() < t.busy
"""
    return alerts, activity


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(q * (len(ordered) - 1)), len(ordered) - 1)]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms" if abs(value) < 0.1 else f"{value * 1000:.0f} ms"


def spread(values: list[float]) -> str:
    return f"p50 {ms(statistics.median(values))}, p95 {ms(pct(values, 0.95))}, p99 {ms(pct(values, 0.99))}"


# -- the server (a child process) ---------------------------------------------------------------


def serve_for_bench(config: str, port: int) -> None:
    """The dashboard as ``serve`` runs it, plus ``/bench/baseline`` (the overview's round trips, bare)."""
    import uvicorn
    from pg_guardian.dashboard import pages
    from pg_guardian.dashboard.app import JSON, create_app, dashboard, dashboard_of, page
    from pg_guardian.dashboard.settings import User
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    app = create_app(None, Path(config))
    dash = dashboard_of(app)
    # Count the statements one overview makes (every query goes through Cursor.execute).
    counted = [0]
    lock = threading.Lock()
    execute = psycopg.Cursor.execute

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            counted[0] += 1
        return execute(self, *args, **kwargs)

    psycopg.Cursor.execute = counting  # type: ignore[method-assign]
    try:
        pages._overview(dash)
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    round_trips = counted[0] // len(dash.environments)

    def bare(conn: psycopg.Connection) -> int:
        for _ in range(round_trips):
            conn.execute("SELECT 1").fetchone()
        return round_trips

    @page()
    async def baseline(request: Request, user: User) -> Response:
        results = await run_in_threadpool(dashboard(request).environments.gather, bare)
        return JSON({"round_trips": round_trips, "environments": [r.as_dict() for r in results]})

    app.router.routes.insert(0, Route("/bench/baseline", baseline))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2, server_header=False)


def start_dashboard(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "controller"), str(ROOT)])}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_dashboard", "serve", str(config), str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the dashboard did not start within 30 s: {log.read_text()[-2000:]}")


def login(client: httpx.Client) -> None:
    """Log in through the form, as a browser does."""
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, "no CSRF token on the login page"
    answer = client.post("/login", data={"username": VIEWER, "password": VIEWER_PASSWORD, "csrf_token": token.group(1)})
    assert answer.status_code == 303, f"login failed: {answer.status_code} {answer.text[:200]}"


# -- 1. the overview ----------------------------------------------------------------------------


def overview(client: httpx.Client) -> dict[str, list[float]]:
    probes = {
        "api": ("/api/overview", {"Accept": "application/json"}),
        "html": ("/", {"Accept": "text/html"}),
        "baseline": ("/bench/baseline", {"Accept": "application/json"}),
        "healthz": ("/healthz", {}),
    }
    times: dict[str, list[float]] = {name: [] for name in probes}
    for i in range(WARMUP + REQUESTS):
        for name, (path, headers) in probes.items():  # interleaved: every probe meets the same noise
            start = time.perf_counter()
            answer = client.get(path, headers=headers)
            elapsed = time.perf_counter() - start
            assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text[:300]}"
            if i >= WARMUP:
                times[name].append(elapsed)
    data = client.get("/api/overview").json()
    down = [e["name"] for e in data["environments"] if not e["up"]]
    assert not down, f"environments down: {down}"
    times["_points"] = [
        float(sum(len(t["points"]) for t in e["data"]["activity"]["tables"])) for e in data["environments"]
    ]
    times["_open"] = [float(e["data"]["open_total"]) for e in data["environments"]]
    times["_hours"] = [float(data["hours"])]
    return times


# -- 2. commit -> open page ---------------------------------------------------------------------


class Page:
    """The event stream a browser keeps open: when each alert id first arrived."""

    def __init__(self, url: str, cookies: httpx.Cookies) -> None:
        self.client = httpx.Client(base_url=url, cookies=cookies, timeout=httpx.Timeout(None, connect=5))
        self.seen: dict[str, float] = {}
        self.status: dict[str, Any] = {}
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        threading.Thread(target=self._read, name="sse", daemon=True).start()

    def _read(self) -> None:
        try:
            with self.client.stream("GET", "/events", headers={"Accept": "text/event-stream"}) as answer:
                assert answer.status_code == 200, f"GET /events: {answer.status_code}"
                event = None
                for line in answer.iter_lines():
                    now = time.perf_counter()
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event in ("alert", "status"):
                        data = json.loads(line[6:])
                        with self.cond:
                            if event == "alert":
                                self.seen.setdefault(data["alert"]["id"], now)
                            else:
                                self.status[data["environment"]] = data["up"]
                            self.cond.notify_all()
                    elif not line:
                        event = None
        except BaseException as exc:  # reported by wait()
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait(self, done: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done():
                if self.error is not None:
                    raise RuntimeError(f"the event stream failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


class Listener:
    """The baseline: a plain psycopg connection that LISTENs on guardian_alerts."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN guardian_alerts")
        self.arrivals: list[float] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._read, name="listen", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping:
            for _ in self.conn.notifies(timeout=0.5):
                self.arrivals.append(time.perf_counter())

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.conn.close()


def live(url: str, cookies: httpx.Cookies, dsn: str) -> tuple[list[float], list[float], int]:
    page = Page(url, cookies)
    if not page.wait(lambda: len(page.status) == len(ENVIRONMENTS) and all(page.status.values()), 15):
        raise RuntimeError(f"the live feed did not come up: {page.status}")
    listener = Listener(dsn)
    rng = random.Random(6)
    kinds = ["BULK_OPERATION", "UNFILTERED_WRITE", "ROLE_ESCALATION", "SCHEMA_CHANGE", "REPLICATION_LAG"]
    committed: list[tuple[str, float]] = []
    with psycopg.connect(dsn) as conn:
        for i in range(LIVE_WARMUP + LIVE_ALERTS):
            row = conn.execute(
                "SELECT guardian.raise_alert(%s, %s, %s, %s)",
                (
                    rng.choice(kinds),
                    rng.choice(["CRITICAL", "HIGH", "MEDIUM"]),
                    f"live probe {i}",
                    rng.choice(ALERT_TABLES),
                ),
            ).fetchone()
            conn.commit()
            committed.append((str(row[0]), time.perf_counter()))  # type: ignore[index]
            if i % BURST_EVERY >= BURST:  # the first BURST of every BURST_EVERY go back to back
                time.sleep(rng.uniform(0.020, 0.050))
    ids = {aid for aid, _ in committed}
    page.wait(lambda: ids <= page.seen.keys(), 10)
    deadline = time.monotonic() + 5
    while len(listener.arrivals) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.close()
    measured = committed[LIVE_WARMUP:]
    on_page = [page.seen[aid] - at for aid, at in measured if aid in page.seen]
    missing = sum(1 for aid, _ in measured if aid not in page.seen)
    # One notification per committing transaction, in commit order.
    assert len(listener.arrivals) == len(committed), f"{len(listener.arrivals)} notifications for {len(committed)}"
    plain = [arrived - at for arrived, (_, at) in list(zip(listener.arrivals, committed, strict=True))[LIVE_WARMUP:]]
    return on_page, plain, missing


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    from pg_guardian.dashboard.auth import hash_password
    from pg_guardian.dashboard.settings import toml_string

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    with bench_cluster() as pg, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        started = time.perf_counter()
        dsns = {}
        for env in ENVIRONMENTS:
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {env}")
            dsns[env] = pg.dsn(env)
            with psycopg.connect(dsns[env], autocommit=True) as conn:
                # GUARDIAN_TEST_INSTALL=sql: this checkout's SQL, as the tests do (no `make install`)
                install_mod.install(conn, method=os.environ.get("GUARDIAN_TEST_INSTALL", "auto"))
                conn.execute(TABLES_DDL)
                # History, not news: no relay intake, notifications or auto-response while loading.
                conn.execute("SET session_replication_role = replica")
                alerts, activity = fill_sql()
                conn.execute(alerts, {"env": env, "alerts": ALERTS})
                conn.execute(activity)
                conn.execute("RESET session_replication_role")
                conn.execute("VACUUM ANALYZE guardian.monitoring_alerts, guardian.activity_windows")
        filled = time.perf_counter() - started
        config = work / "dashboard.toml"
        config.write_text(
            "".join(f"[databases.{env}]\ndsn = {toml_string(dsn)}\n\n" for env, dsn in dsns.items())
            + f"[dashboard]\nsecret_key = {toml_string(secrets.token_hex(32))}\n\n"
            + f"[dashboard.users.{VIEWER}]\npassword_hash = {toml_string(hash_password(VIEWER_PASSWORD))}\n"
            + 'role = "viewer"\n'
        )
        port = free_port()
        proc = start_dashboard(config, port, work / "dashboard.log")
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=30) as client:
                login(client)
                round_trips = client.get("/bench/baseline").json()["round_trips"]
                times = overview(client)
                on_page, plain, missing = live(url, client.cookies, dsns[ENVIRONMENTS[0]])
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    base = statistics.median(times["baseline"])
    print(
        f"{len(ENVIRONMENTS)} environments x {ALERTS:,} alerts ({int(min(times['_open'])):,}-"
        f"{int(max(times['_open'])):,} open each, {int(sum(times['_points'])):,} activity points in the "
        f"{times['_hours'][0]:.0f} h chart), filled in {filled:.0f} s; {REQUESTS} requests each, interleaved, "
        f"after {WARMUP} warm-up"
    )
    for name, label in (("api", "GET /api/overview"), ("html", "GET / (HTML)")):
        p99 = pct(times[name], 0.99)
        print(
            f"{label}: {spread(times[name])}   target <= {OVERVIEW_TARGET * 1000:.0f} ms: "
            f"p99 {p99 / OVERVIEW_TARGET:.2f}x of budget {'OK' if p99 <= OVERVIEW_TARGET else 'MISSED'}   "
            f"{statistics.median(times[name]) / base:.1f}x the baseline at p50"
        )
    print(
        f"baseline, the overview's {round_trips} round trips per environment as SELECT 1 through the same "
        f"stack: {spread(times['baseline'])}; GET /healthz: {spread(times['healthz'])}"
    )
    if on_page:
        p99 = pct(on_page, 0.99)
        verdict = "OK" if p99 <= LIVE_P99_TARGET and not missing else "MISSED"
        print(
            f"commit -> event on the open page ({LIVE_ALERTS} alerts, one per transaction, 20-50 ms apart, "
            f"bursts of {BURST}): {spread(on_page)}, max {ms(max(on_page))}"
            f"{f', {missing} never arrived' if missing else ''}   target p99 <= {LIVE_P99_TARGET * 1000:.0f} ms: "
            f"{p99 / LIVE_P99_TARGET:.2f}x of budget {verdict}"
        )
    else:
        print(f"commit -> event on the open page: none of {LIVE_ALERTS} alerts arrived   MISSED")
    print(
        f"baseline, plain LISTEN on the same commits: {spread(plain)}, max {ms(max(plain))}   "
        + (
            f"the dashboard adds {ms(statistics.median(on_page) - statistics.median(plain))} at p50, "
            f"{ms(pct(on_page, 0.99) - pct(plain, 0.99))} at p99"
            if on_page
            else ""
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve_for_bench(sys.argv[2], int(sys.argv[3]))
    else:
        main()
