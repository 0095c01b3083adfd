"""Admin actions beyond triage: scans with progress, rules, allowlist, scripts, baselines, the
drift matrix; and every action refused to a viewer."""

from __future__ import annotations

import time

import psycopg
import pytest
from dashboard_support import ADMIN, csrf_of
from pg_guardian.cluster import LocalCluster
from pg_guardian.dashboard import create_app
from starlette.testclient import TestClient
from support.response import contamination_alert

JSON_ACCEPT = {"Accept": "application/json"}


def post(client: TestClient, path: str, **fields: str) -> tuple[int, dict]:
    response = client.post(path, data={**fields, "csrf_token": csrf_of(client)}, headers=JSON_ACCEPT)
    return response.status_code, response.json()


def test_scan_runs_in_the_background_and_reports_progress(admin: TestClient, dental: psycopg.Connection) -> None:
    status, started = post(admin, "/actions/scan", env="production", table="dental.clinics")
    assert status == 200, started
    deadline = time.monotonic() + 20
    while True:
        scan = admin.get(f"/api/scans/{started['scan']}").json()
        if scan["state"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert scan["state"] == "done", scan
    assert scan["percent"] == 100.0
    assert scan["finding_count"] >= 1 and scan["user"] == ADMIN
    assert {f["table"] for f in scan["findings"]} == {"dental.clinics"}
    page = admin.get("/contamination")
    assert f'data-scan="{started["scan"]}"' in page.text


def test_scan_of_a_table_that_is_not_watched_is_a_400(admin: TestClient, dental: psycopg.Connection) -> None:
    status, body = post(admin, "/actions/scan", env="production", table="dental.invoices")
    assert status == 400
    assert body["error"] == "'dental.invoices' is not a watched table of production"


def test_admin_disables_and_enables_a_rule(admin: TestClient, db: psycopg.Connection) -> None:
    rule = db.execute("SELECT name FROM guardian.rules WHERE enabled ORDER BY name LIMIT 1").fetchone()
    assert rule is not None
    status, body = post(admin, "/actions/rules", env="production", rule=rule[0], enabled="0")
    assert (status, body["message"]) == (200, f"rule {rule[0]} disabled in production")
    assert db.execute("SELECT enabled FROM guardian.rules WHERE name = %s", rule).fetchone() == (False,)
    post(admin, "/actions/rules", env="production", rule=rule[0], enabled="1")
    assert db.execute("SELECT enabled FROM guardian.rules WHERE name = %s", rule).fetchone() == (True,)
    status, body = post(admin, "/actions/rules", env="production", rule="no_such_rule", enabled="1")
    assert (status, body["error"]) == (404, "no rule 'no_such_rule' in production")


def test_allowlist_from_the_alert_page_records_the_user_and_can_be_removed(
    admin: TestClient, dental: psycopg.Connection
) -> None:
    alert = contamination_alert(dental)
    status, body = post(
        admin,
        f"/admin/cleanup/{alert}/allow",
        env="production",
        table="dental.clinics",
        column="name",
        value="Test Clinic",
        reason="a real clinic of that name",
    )
    assert status == 200, body
    row = dental.execute("SELECT reason, relid::text, column_name FROM guardian.allowlist WHERE id = %s", (body["id"],))
    assert row.fetchone() == (
        f"a real clinic of that name (by {ADMIN} via pg-guardian dashboard)",
        "dental.clinics",
        "name",
    )
    status, body = post(admin, "/actions/allowlist/delete", env="production", id=str(body["id"]))
    assert status == 200
    assert dental.execute("SELECT count(*) FROM guardian.allowlist").fetchone() == (0,)


def test_allowlist_needs_a_reason(admin: TestClient, db: psycopg.Connection) -> None:
    status, body = post(admin, "/actions/allowlist", env="production", value="x@example.com")
    assert (status, body["error"]) == (400, "reason is required")


def test_generated_script_is_stored_and_downloadable(admin: TestClient, dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    status, _ = post(admin, f"/admin/cleanup/{alert}/script", env="production")
    assert status == 200
    download = admin.get(f"/admin/cleanup/{alert}/script.sql")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == f'attachment; filename="cleanup-production-{alert}.sql"'
    assert "guardian.cleanup_begin(" in download.text
    page = admin.get(f"/admin/cleanup/{alert}")
    assert '<span class="k">' in page.text  # highlighted


def test_cleanup_and_restore_through_the_json_api(admin: TestClient, dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    plan = admin.get(f"/api/cleanup/{alert}").json()
    status, ran = post(admin, f"/admin/cleanup/{alert}/run", env="production", confirm_rows=str(plan["plan_rows"]))
    assert status == 200, ran
    batches = admin.get(f"/api/cleanup/{alert}").json()["batches"]
    assert [b["status"] for b in batches] == ["applied"]
    status, restored = post(
        admin, f"/admin/cleanup/{alert}/restore", env="production", batch=str(batches[0]["batch_id"])
    )
    assert status == 200, restored
    again = post(admin, f"/admin/cleanup/{alert}/restore", env="production", batch=str(batches[0]["batch_id"]))
    assert again[0] == 409 and "production:" in again[1]["error"]


def test_restore_of_a_batch_of_another_alert_is_a_404(admin: TestClient, dental: psycopg.Connection) -> None:
    alert = contamination_alert(dental)
    status, body = post(
        admin, f"/admin/cleanup/{alert}/restore", env="production", batch="00000000-0000-4000-8000-000000000000"
    )
    assert status == 404
    assert body["error"].startswith("no quarantine batch 00000000-0000-4000-8000-000000000000 of alert")


def test_admin_approves_a_baseline(admin: TestClient, db: psycopg.Connection) -> None:
    status, body = post(admin, "/actions/baseline", env="production")
    assert status == 200 and body["message"].startswith("baseline ")
    by = f"{ADMIN}@dashboard via postgres"
    assert db.execute("SELECT approved_by FROM guardian.schema_snapshots WHERE baseline").fetchone() == (by,)
    overview = admin.get("/api/overview").json()
    production = next(e for e in overview["environments"] if e["name"] == "production")
    assert production["data"]["drift"]["baseline"]["approved_by"] == by


def test_drift_matrix_compares_environments_and_one_without_the_guardian(
    write_config, cluster: LocalCluster, dental: psycopg.Connection, production_dsn: str, blank_dbname: str
) -> None:
    from dashboard_support import ADMIN_PASSWORD, login

    config = write_config({"production": production_dsn, "bare": cluster.dsn(blank_dbname)})
    with TestClient(create_app(config_path=config, live=False)) as client:
        login(client, ADMIN, ADMIN_PASSWORD)
        drift = client.get("/api/drift").json()
        overview = client.get("/api/overview").json()
        page = client.get("/drift")
    matrix = drift["matrix"]
    assert matrix["reference"] == "production" and matrix["compared"] == ["production", "bare"]
    clinics = next(d for d in matrix["differences"] if d["identity"] == "dental.clinics")
    assert clinics["environments"] == {"production": "reference", "bare": "missing"}
    # Its columns, constraints and indexes are folded into the table's row.
    assert clinics["hidden_children"] >= 4
    assert not [d for d in matrix["differences"] if d["parent"] == "dental.clinics"]
    bare = next(e for e in overview["environments"] if e["name"] == "bare")
    assert bare["up"] is False
    assert "pg_guardian is not installed" in bare["error"]
    assert page.status_code == 200 and "dental.clinics" in page.text


def test_unknown_environment_in_an_action_is_a_400(admin: TestClient) -> None:
    status, body = post(admin, "/actions/baseline", env="nowhere")
    assert (status, body["error"]) == (400, "unknown environment 'nowhere'")


def test_action_on_a_down_environment_is_a_503(admin: TestClient) -> None:
    status, body = post(admin, "/actions/baseline", env="staging")
    assert status == 503
    assert body["error"].startswith("environment staging is down: cannot connect")


@pytest.mark.parametrize(
    "path",
    [
        "/actions/alerts",
        "/actions/silences",
        "/actions/silences/expire",
        "/admin/cleanup/00000000-0000-4000-8000-000000000000/script",
        "/admin/cleanup/00000000-0000-4000-8000-000000000000/run",
        "/admin/cleanup/00000000-0000-4000-8000-000000000000/restore",
        "/admin/cleanup/00000000-0000-4000-8000-000000000000/allow",
        "/actions/allowlist",
        "/actions/allowlist/delete",
        "/actions/rules",
        "/actions/scan",
        "/actions/baseline",
    ],
)
def test_every_action_is_refused_to_a_viewer(viewer: TestClient, path: str) -> None:
    status, body = post(viewer, path, env="production")
    assert status == 403
    assert "is a viewer" in body["error"]
