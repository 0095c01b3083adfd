"""The dashboard without a browser: login, sessions, CSRF, roles, the JSON API, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
from dashboard_support import ADMIN, ADMIN_PASSWORD, UNREACHABLE_DSN, VIEWER, csrf_of, login
from pg_guardian.dashboard import create_app
from pg_guardian.dashboard.settings import load
from pg_guardian.errors import ConfigError
from starlette.applications import Starlette
from starlette.testclient import TestClient
from support.response import TEST_CLINIC, contamination_alert


def raise_alert(conn: psycopg.Connection, message: str = "test alert", severity: str = "HIGH") -> str:
    row = conn.execute("SELECT guardian.raise_alert('TEST_ALERT', %s, %s, 'public.t')", (severity, message)).fetchone()
    assert row is not None
    return str(row[0])


def test_healthz_is_open(app: Starlette) -> None:
    with TestClient(app) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok\n"


def test_pages_redirect_to_login_and_api_answers_401(app: Starlette) -> None:
    with TestClient(app) as client:
        page = client.get("/alerts", follow_redirects=False)
        api = client.get("/api/overview")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/alerts"
    assert api.status_code == 401
    assert "log in first" in api.json()["error"]


def test_session_cookie_is_httponly_samesite_lax(app: Starlette) -> None:
    with TestClient(app) as client:
        client.get("/login")
        page = client.get("/login")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        response = client.post(
            "/login", data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrf_token": token}, follow_redirects=False
        )
    cookie = response.headers["set-cookie"].lower()
    assert "pg_guardian_session=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie


def test_secure_cookies_setting_marks_the_cookie_secure(write_config, production_dsn: str) -> None:
    app = create_app(config_path=write_config({"production": production_dsn}, secure_cookies=True), live=False)
    with TestClient(app, base_url="https://testserver") as client:
        response = client.get("/login")
    assert "; secure" in response.headers["set-cookie"].lower()


def test_wrong_password_is_refused_and_then_rate_limited(app: Starlette) -> None:
    with TestClient(app) as client:
        page = client.get("/login")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        codes = [
            client.post("/login", data={"username": ADMIN, "password": "nope", "csrf_token": token}).status_code
            for _ in range(6)
        ]
        # Even the right password waits until the window has passed.
        right = client.post("/login", data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrf_token": token})
    assert codes == [401] * 5 + [429]
    assert right.status_code == 429
    assert "too many failed logins" in right.text


def test_login_without_csrf_token_is_refused(app: Starlette) -> None:
    with TestClient(app) as client:
        client.get("/login")
        response = client.post("/login", data={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_session_expires_after_session_max_age(write_config, production_dsn: str, monkeypatch) -> None:
    import time as time_mod

    app = create_app(config_path=write_config({"production": production_dsn}, session_max_age="1h"), live=False)
    with TestClient(app) as client:
        login(client, ADMIN, ADMIN_PASSWORD)
        assert client.get("/api/overview").status_code == 200
        later = time_mod.time() + 3601
        monkeypatch.setattr("pg_guardian.dashboard.auth.time.time", lambda: later)
        assert client.get("/api/overview").status_code == 401


def test_overview_api_shows_each_environment_and_the_down_one(admin: TestClient, db: psycopg.Connection) -> None:
    raise_alert(db, severity="CRITICAL")
    data = admin.get("/api/overview").json()
    envs = {e["name"]: e for e in data["environments"]}
    assert envs["staging"]["up"] is False
    assert "cannot connect" in envs["staging"]["error"]
    production = envs["production"]
    assert production["up"] is True
    assert production["data"]["open_alerts"]["CRITICAL"] == 1
    assert production["data"]["mode"] in ("off", "warn", "strict")
    assert {"guard", "jobs", "drift", "lockdown", "activity", "last_scan"} <= set(production["data"])
    assert data["feed"][0]["type"] == "TEST_ALERT"


def test_overview_page_renders_with_an_environment_down(admin: TestClient) -> None:
    page = admin.get("/")
    assert page.status_code == 200
    assert 'id="env-production"' in page.text
    assert re.search(r'id="env-staging"[^>]*>\s*<h2>staging <span class="badge badge-down">down', page.text)


def test_alerts_api_filters_by_severity_and_state(admin: TestClient, db: psycopg.Connection) -> None:
    raise_alert(db, "high one", "HIGH")
    low = raise_alert(db, "low one", "LOW")
    db.execute("SELECT guardian.resolve_alert(%s)", (low,))
    high = admin.get("/api/alerts?severity=HIGH").json()
    resolved = admin.get("/api/alerts?state=resolved&type=TEST_ALERT").json()
    assert [a["message"] for a in high["alerts"]] == ["high one"]
    assert [a["message"] for a in resolved["alerts"]] == ["low one"]
    assert high["down"] == {"staging": high["down"]["staging"]}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("severity=URGENT", "unknown severity 'URGENT'"),
        ("state=closed", "unknown state 'closed'"),
        ("env=nowhere", "unknown env 'nowhere'"),
        ("limit=100000", "limit '100000'"),
        ("type=bad-type", "unknown type 'BAD-TYPE'"),
    ],
)
def test_malformed_filters_get_a_400_naming_the_value(admin: TestClient, query: str, message: str) -> None:
    api = admin.get(f"/api/alerts?{query}")
    page = admin.get(f"/alerts?{query}")
    assert api.status_code == 400
    assert message in api.json()["error"]
    assert page.status_code == 400
    assert message.replace("'", "&#39;") in page.text
    assert "Traceback" not in page.text


def test_alerts_grouped_by_fingerprint_mark_a_regression(admin: TestClient, db: psycopg.Connection) -> None:
    first = raise_alert(db, "comes back")
    db.execute("SELECT guardian.resolve_alert(%s)", (first,))
    raise_alert(db, "comes back")
    groups = admin.get("/api/alerts?group=fingerprint&state=all&type=TEST_ALERT").json()["alerts"]
    assert len(groups) == 1
    assert groups[0]["alerts"] == 2 and groups[0]["open"] == 1 and groups[0]["regression"] is True


def test_unknown_alert_id_gets_a_clear_404(admin: TestClient) -> None:
    page = admin.get("/admin/cleanup/not-a-uuid")
    api = admin.get("/api/cleanup/00000000-0000-4000-8000-000000000000")
    assert page.status_code == 404
    assert "is not an alert id" in page.text
    assert api.status_code == 404
    assert "no alert 00000000-0000-4000-8000-000000000000 in production, staging" in api.json()["error"]
    assert "not searched: staging" in api.json()["error"]


def test_admin_bulk_acknowledges_and_resolves_with_a_note(admin: TestClient, db: psycopg.Connection) -> None:
    one, two = raise_alert(db, "one"), raise_alert(db, "two")
    token = csrf_of(admin)
    ack = admin.post(
        "/actions/alerts",
        data={"action": "acknowledge", "alert": [f"production:{one}", f"production:{two}"], "csrf_token": token},
        headers={"Accept": "application/json"},
    )
    resolve = admin.post(
        "/actions/alerts",
        data={"action": "resolve", "alert": f"production:{one}", "note": "was a test", "csrf_token": token},
        headers={"Accept": "application/json"},
    )
    assert ack.json() == {"ok": True, "message": "acknowledged 2 alert(s)", "count": 2}
    assert resolve.status_code == 200
    rows = db.execute(
        "SELECT acknowledged_by, resolved_by, resolution_note FROM guardian.monitoring_alerts WHERE id = %s", (one,)
    ).fetchone()
    by = f"{ADMIN}@dashboard via postgres"
    assert rows == (by, by, f"was a test (by {ADMIN} via pg-guardian dashboard)")


def test_viewer_sees_no_acknowledge_button_and_a_forged_post_is_refused(
    viewer: TestClient, db: psycopg.Connection
) -> None:
    alert = raise_alert(db)
    page = viewer.get(f"/admin/cleanup/{alert}")
    alerts = viewer.get("/alerts")
    forged = viewer.post(
        "/actions/alerts",
        data={"action": "acknowledge", "alert": f"production:{alert}", "csrf_token": csrf_of(viewer)},
        headers={"Accept": "application/json"},
    )
    assert 'id="acknowledge"' not in page.text and "bulk-acknowledge" not in alerts.text
    assert forged.status_code == 403
    assert forged.json()["error"] == f"user {VIEWER} is a viewer: this needs the admin role"
    assert db.execute("SELECT acknowledged_at FROM guardian.monitoring_alerts WHERE id = %s", (alert,)).fetchone() == (
        None,
    )


def test_post_without_csrf_token_is_refused(admin: TestClient, db: psycopg.Connection) -> None:
    alert = raise_alert(db)
    missing = admin.post("/actions/alerts", data={"action": "acknowledge", "alert": f"production:{alert}"})
    wrong = admin.post(
        "/actions/alerts", data={"action": "acknowledge", "alert": f"production:{alert}", "csrf_token": "x" * 43}
    )
    assert missing.status_code == 403 and wrong.status_code == 403
    assert "CSRF token" in missing.text
    assert db.execute("SELECT acknowledged_at FROM guardian.monitoring_alerts WHERE id = %s", (alert,)).fetchone() == (
        None,
    )


def test_silence_is_created_and_expired_with_the_user_in_its_comment(admin: TestClient, db: psycopg.Connection) -> None:
    token = csrf_of(admin)
    made = admin.post(
        "/actions/silences",
        data={
            "env": "production",
            "matchers": "type=TEST_ALERT\nseverity=HIGH",
            "duration": "2h",
            "comment": "maintenance",
            "csrf_token": token,
        },
        headers={"Accept": "application/json"},
    )
    assert made.status_code == 200, made.text
    silence = made.json()["silences"][0]
    listed = admin.get("/api/silences").json()
    production = next(e for e in listed if e["environment"] == "production")
    assert production["data"][0]["comment"] == f"maintenance (by {ADMIN} via pg-guardian dashboard)"
    expired = admin.post(
        "/actions/silences/expire",
        data={"env": "production", "id": silence, "csrf_token": token},
        headers={"Accept": "application/json"},
    )
    assert expired.json()["ok"] is True
    assert db.execute("SELECT count(*) FROM guardian.active_silences").fetchone() == (0,)


def test_bad_silence_matcher_is_a_400(admin: TestClient) -> None:
    response = admin.post(
        "/actions/silences",
        data={
            "env": "production",
            "matchers": "nonsense",
            "duration": "2h",
            "comment": "x",
            "csrf_token": csrf_of(admin),
        },
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert "invalid matcher 'nonsense'" in response.json()["error"]


def test_cleanup_api_shows_plan_records_and_script(admin: TestClient, dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    data = admin.get(f"/api/cleanup/{alert}").json()
    assert data["env"] == "production"
    assert data["plan_error"] is None
    assert data["plan_rows"] > 0
    assert {f["record_id"] for f in data["findings"]} == {TEST_CLINIC}
    assert all("@" not in (f["sample"] or "") or "*" in f["sample"] for f in data["findings"])


def test_cleanup_run_refuses_a_wrong_confirmation(admin: TestClient, dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    response = admin.post(
        f"/admin/cleanup/{alert}/run",
        data={"env": "production", "confirm_rows": "1", "csrf_token": csrf_of(admin)},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 409
    assert "but '1' was confirmed" in response.json()["error"]


def test_actions_are_written_to_the_audit_log(
    write_config, production_dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    app = create_app(config_path=write_config({"production": production_dsn}, audit_log=str(audit)), live=False)
    alert = raise_alert(db)
    with TestClient(app) as client:
        login(client, ADMIN, ADMIN_PASSWORD)
        client.post(
            "/actions/alerts",
            data={"action": "acknowledge", "alert": f"production:{alert}", "csrf_token": csrf_of(client)},
        )
        client.post("/logout", data={"csrf_token": csrf_of(client)})
        page = client.get("/login")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post("/login", data={"username": "mallory", "password": "guess", "csrf_token": token})
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["user"], e["role"], e["action"], e["outcome"]) for e in entries] == [
        (ADMIN, "admin", "login", "ok"),
        (ADMIN, "admin", "acknowledge", "ok"),
        (ADMIN, "admin", "logout", "ok"),
        ("mallory", None, "login", "refused"),
    ]
    assert entries[1]["target"] == alert and entries[1]["environment"] == "production"
    assert entries[1]["detail"] == "1 alert(s)"


def test_logout_ends_the_session(admin: TestClient) -> None:
    assert admin.get("/api/overview").status_code == 200
    response = admin.post("/logout", data={"csrf_token": csrf_of(admin)}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert admin.get("/api/overview").status_code == 401


def test_server_error_is_a_clean_page_without_a_trace(admin: TestClient, monkeypatch) -> None:
    def boom(conn: psycopg.Connection) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("pg_guardian.dashboard.queries.contamination", boom)
    page = admin.get("/contamination")
    api = admin.get("/api/contamination")
    assert page.status_code == 500 and api.status_code == 500
    assert "internal error: the dashboard&#39;s log has the details" in page.text
    assert "secret internals" not in page.text and "Traceback" not in page.text
    assert api.json() == {"error": "internal error: the dashboard's log has the details", "status": 500}


def test_configuration_problems_are_listed_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[databases.production]\ndsn = 'not a dsn ='\n[dashboard]\nsession_max_age = 'soon'\n"
        "[dashboard.users.bob]\nrole = 'root'\npassword_hash = 'plain'\n"
    )
    with pytest.raises(ConfigError) as raised:
        load(path, env={})
    problems = raised.value.problems
    assert any(p.startswith("databases.production.dsn: invalid DSN") for p in problems)
    assert any(p.startswith("dashboard.session_max_age:") for p in problems)
    assert any(p.startswith("dashboard.users.bob.role: must be 'viewer' or 'admin'") for p in problems)


def test_database_url_alone_is_one_environment(tmp_path: Path, password_hashes: dict[str, str]) -> None:
    path = tmp_path / "users.toml"
    path.write_text(f"[dashboard.users.alice]\nrole = 'admin'\npassword_hash = '{password_hashes[ADMIN]}'\n")
    settings = load(path, env={"DATABASE_URL": "postgresql://u@h/app"})
    assert [(d.name, d.dsn) for d in settings.databases] == [("app", "postgresql://u@h/app")]
    assert settings.warnings == ("dashboard.secret_key is not set: sessions end when the dashboard restarts",)


def test_dsn_argument_replaces_the_files_databases(write_config) -> None:
    path = write_config({"production": "postgresql://u@h/a", "staging": UNREACHABLE_DSN})
    settings = load(path, [("only", "postgresql://u@h/b")], env={})
    assert [d.name for d in settings.databases] == ["only"]


def test_hash_password_helper_prints_a_verifiable_hash(monkeypatch, capsys) -> None:
    import io

    from pg_guardian.dashboard.__main__ import main
    from pg_guardian.dashboard.auth import verify_password
    from pg_guardian.dashboard.settings import User

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert main(["hash-password"]) == 0
    line = capsys.readouterr().out.strip()
    digest = line.split('"')[1]
    assert line.startswith('password_hash = "$argon2id$')
    assert verify_password(User("x", digest, "admin"), "correct horse battery")
    assert not verify_password(User("x", digest, "admin"), "wrong")


@pytest.mark.parametrize("who", ["admin", "viewer"])
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/alerts",
        "/alerts?group=fingerprint&state=all",
        "/contamination",
        "/drift",
        "/health",
        "/drift?baseline=production",
    ],
)
def test_every_page_renders(request: pytest.FixtureRequest, dental: psycopg.Connection, who: str, path: str) -> None:
    client: TestClient = request.getfixturevalue(who)
    page = client.get(path)
    assert page.status_code == 200, page.text
    assert "staging" in page.text


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_alert_page_renders_for_a_contamination_alert(
    request: pytest.FixtureRequest, dental: psycopg.Connection, who: str
) -> None:
    client: TestClient = request.getfixturevalue(who)
    alert = contamination_alert(dental)
    page = client.get(f"/admin/cleanup/{alert}")
    assert page.status_code == 200, page.text
    assert ('id="run-cleanup"' in page.text) == (who == "admin")
    assert 'id="plan-steps"' in page.text


@pytest.mark.parametrize("path", ["/api/overview", "/api/alerts", "/api/contamination", "/api/drift", "/api/health"])
def test_every_api_answers_json(admin: TestClient, dental: psycopg.Connection, path: str) -> None:
    response = admin.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()


def test_init_config_writes_a_file_the_dashboard_loads(tmp_path: Path, monkeypatch, capsys) -> None:
    import io

    from pg_guardian.dashboard.__main__ import main

    path = tmp_path / "dashboard.toml"
    monkeypatch.setattr("sys.stdin", io.StringIO("a good password\n"))
    code = main(["init-config", str(path), "--user", "ops", "--database", "production=postgresql://u@h/app"])
    assert code == 0, capsys.readouterr().err
    settings = load(path, env={})
    assert [d.name for d in settings.databases] == ["production"]
    assert settings.users["ops"].role == "admin" and len(settings.secret_key) == 64
    assert path.stat().st_mode & 0o077 == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a good password\n"))
    assert main(["init-config", str(path), "--user", "ops"]) == 2
    assert "not overwritten" in capsys.readouterr().err


def test_relay_cleanup_link_opens_the_alert_admin_page(admin: TestClient, dental: psycopg.Connection) -> None:
    from types import SimpleNamespace

    from pg_guardian.relay.render import cleanup_url

    alert = contamination_alert(dental)
    url = cleanup_url("http://testserver", SimpleNamespace(id=alert))  # type: ignore[arg-type]
    assert url == f"http://testserver/admin/cleanup/{alert}"
    page = admin.get(url)
    assert page.status_code == 200
    assert 'id="plan-steps"' in page.text and 'id="run-cleanup"' in page.text


def test_a_pooled_connection_killed_by_the_server_is_replaced(admin: TestClient, db: psycopg.Connection) -> None:
    assert admin.get("/api/overview").status_code == 200
    killed = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'pg-guardian dashboard' AND datname = current_database()"
    ).fetchone()
    assert killed is not None and killed[0] >= 1
    data = admin.get("/api/overview").json()
    production = next(e for e in data["environments"] if e["name"] == "production")
    assert production["up"] is True, production


def test_a_silence_everywhere_skips_an_environment_that_is_down(admin: TestClient, db: psycopg.Connection) -> None:
    response = admin.post(
        "/actions/silences",
        data={
            "env": "*",
            "matchers": "type=TEST_ALERT",
            "duration": "1h",
            "comment": "deploy",
            "csrf_token": csrf_of(admin),
        },
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["skipped"] == ["staging"]
    assert body["message"].startswith("silence created in production; not in staging (down)")
    assert db.execute("SELECT count(*) FROM guardian.active_silences").fetchone() == (1,)


def test_overview_chart_draws_the_expected_band_and_marks_anomalies(admin: TestClient, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.visits (id serial PRIMARY KEY)")
    db.execute("SELECT guardian.watch('public.visits')")
    db.execute("INSERT INTO public.visits DEFAULT VALUES")
    db.execute("SELECT guardian.rollup_activity()")
    # Nine days of ten-minute samples ending now (upward anomalies of counts need a week of history),
    # the last one far above the usual 5-ish.
    db.execute(
        """INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
           SELECT 'writes.insert', 'public.visits', t,
                  CASE WHEN t = b THEN 400 ELSE 4 + (extract(minute FROM t)::int / 10) % 3 END
             FROM (SELECT date_bin('10 minutes', now(), 'epoch') - interval '10 minutes' AS b) AS n,
                  generate_series(b - interval '9 days', b, interval '10 minutes') AS t"""
    )
    assert db.execute("SELECT count(*) FROM guardian.anomalies(now() - interval '1 hour')").fetchone()[0] == 1
    page = admin.get("/").text
    chart = re.search(r'<svg class="activity"[^>]*to public\.visits".*?</svg>', page, re.S)
    assert chart is not None
    assert chart.group(0).count('class="band"') >= 6  # the last hour at least, per 10 minutes
    assert re.search(r'class="anomaly"[^>]*><title>anomaly \d\d:\d\d: 400 insert \(usually \d+-\d+\)', chart.group(0))


def test_contamination_lists_open_rule_suggestions_without_their_examples(
    admin: TestClient, db: psycopg.Connection
) -> None:
    db.execute("CREATE TABLE public.people (id int PRIMARY KEY, email text)")
    db.execute(
        "INSERT INTO public.people SELECT i, CASE WHEN i <= 6 THEN 'synth' || i || '@acme-fixtures.io' "
        "ELSE 'person' || chr(97 + i % 26) || '.x@gmail.com' END FROM generate_series(1, 40) AS i"
    )
    db.execute("SELECT guardian.watch('public.people')")
    db.execute("SELECT guardian.label_records('public.people', ARRAY['1', '2', '3', '4', '5', '6'], 'test')")
    db.execute("SELECT guardian.label_records('public.people', ARRAY['10', '11', '12', '13'], 'real')")
    assert db.execute("SELECT count(*) FROM guardian.suggest_rules('public.people')").fetchone()[0] > 0  # type: ignore[index]

    data = admin.get("/api/contamination").json()
    page = admin.get("/contamination").text

    production = next(r for r in data["environments"] if r["environment"] == "production")
    shown = {(s["column_name"], s["match_type"], s["match"]) for s in production["data"]["suggestions"]}
    assert ("email", "domains", "acme-fixtures.io") in shown
    assert "acme-fixtures.io" in page and "pg-guardian rules accept ID" in page
    assert "synth1@" not in str(data)  # examples (values) stay out of the dashboard
