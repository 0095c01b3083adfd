"""/metrics in Prometheus' format (parsed with prometheus_client's own parser), its bearer
token, and the Grafana dashboard built on it."""

from __future__ import annotations

import json
import re
from importlib import resources

import psycopg
import pytest
from dashboard_support import ADMIN, ADMIN_PASSWORD, UNREACHABLE_DSN, login
from pg_guardian.dashboard import create_app
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def grafana() -> dict:
    path = resources.files("pg_guardian.dashboard").joinpath("grafana", "pg-guardian.json")
    return json.loads(path.read_text())


def test_metrics_parse_and_describe_every_environment(app, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', 'counted', 'public.t')")
    db.execute("SELECT guardian.raise_alert('OTHER_ALERT', 'LOW', 'counted too', 'public.t')")
    with TestClient(app) as client:
        client.get("/healthz")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    up = {s[1]["environment"]: s[2] for s in found["pg_guardian_environment_up"]}
    assert up == {"production": 1.0, "staging": 0.0}
    open_alerts = {
        (s[1]["environment"], s[1]["severity"], s[1]["type"]): s[2] for s in found["pg_guardian_alerts_open"]
    }
    assert open_alerts[("production", "HIGH", "TEST_ALERT")] == 1.0
    assert open_alerts[("production", "LOW", "OTHER_ALERT")] == 1.0
    raised = [s for s in found["pg_guardian_alerts_raised"] if s[0] == "pg_guardian_alerts_raised_total"]
    assert any(s[1]["type"] == "TEST_ALERT" and s[2] >= 1 for s in raised)
    jobs = {s[1]["job"] for s in found["pg_guardian_job_lag_seconds"]}
    assert {"watchdog", "drift_check", "activity_rollup"} <= jobs
    assert found["pg_guardian_lockdown_active"] == [("pg_guardian_lockdown_active", {"environment": "production"}, 0.0)]
    assert found["pg_guardian_watched_tables"][0][2] == 0.0
    assert "pg_guardian_relay_intake_backlog" in found
    latency = found["pg_guardian_dashboard_request_duration_seconds"]
    assert any(s[0].endswith("_count") and s[1]["route"] == "/healthz" and s[2] == 1.0 for s in latency)


def test_metrics_need_the_bearer_token_when_one_is_configured(write_config, production_dsn: str) -> None:
    app = create_app(config_path=write_config({"production": production_dsn}, metrics_token="s3cret-token"), live=False)
    with TestClient(app) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert "pg_guardian_environment_up" in families(right.text)


def test_metrics_do_not_need_a_login_but_pages_do(app) -> None:
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/", follow_redirects=False).status_code == 303
        login(client, ADMIN, ADMIN_PASSWORD)
        assert client.get("/").status_code == 200


def test_grafana_dashboard_is_importable_json() -> None:
    doc = grafana()
    assert doc["title"] == "pg_guardian" and doc["uid"] == "pg-guardian"
    assert doc["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert p["type"] in ("row", "stat", "timeseries", "table")
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for target in p.get("targets", []):
            assert target["expr"] and target["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_grafana_queries_only_use_metrics_the_dashboard_exports(app, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', 'counted', 'public.t')")
    with TestClient(app) as client:
        client.get("/healthz")
        found = families(client.get("/metrics").text)
    samples = {s[0] for entries in found.values() for s in entries} | set(found)
    used = {
        name
        for p in grafana()["panels"]
        for t in p.get("targets", [])
        for name in re.findall(r"pg_guardian_[a-z_]+", t["expr"])
    }
    used |= set(re.findall(r"pg_guardian_[a-z_]+", grafana()["templating"]["list"][0]["definition"]))
    assert used and used <= samples, sorted(used - samples)


@pytest.mark.parametrize("dsn", [UNREACHABLE_DSN])
def test_metrics_of_a_down_environment_are_only_its_up_gauge(write_config, dsn: str) -> None:
    app = create_app(config_path=write_config({"staging": dsn}), live=False)
    with TestClient(app) as client:
        found = families(client.get("/metrics").text)
    assert found["pg_guardian_environment_up"] == [("pg_guardian_environment_up", {"environment": "staging"}, 0.0)]
    assert not [s for s in found.get("pg_guardian_alerts_open", [])]
