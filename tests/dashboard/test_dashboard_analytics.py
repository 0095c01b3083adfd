"""The analytics page and /api/analytics (guardian.report() of every environment side by side),
and the outcome an admin gives when resolving an alert."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dashboard_support import ADMIN, ADMIN_PASSWORD, UNREACHABLE_DSN, VIEWER, VIEWER_PASSWORD, Served, csrf_of
from pg_guardian.dashboard import create_app
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from starlette.testclient import TestClient
from support.history import FROM, TO, fill_history
from support.queries import scalar
from support.response import contamination_alert

JSON_ACCEPT = {"Accept": "application/json"}
CUSTOM = "from=2026-03-02&to=2026-03-05"


def guardian_report(db: psycopg.Connection, time_zone: str = "UTC") -> dict[str, Any]:
    value = scalar(db, "SELECT guardian.report(%s, %s, NULL, %s)", (FROM, TO, time_zone))
    assert isinstance(value, dict)
    return value


def without_generated_at(report: dict[str, Any]) -> dict[str, Any]:
    return report | {"period": {k: v for k, v in report["period"].items() if k != "generated_at"}}


def environment(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = [e for e in body["environments"] if e["environment"] == name]
    assert len(found) == 1, body["environments"]
    return found[0]


def test_api_analytics_of_a_custom_range_equals_guardian_report(viewer: TestClient, db: psycopg.Connection) -> None:
    fill_history(db)
    response = viewer.get(f"/api/analytics?{CUSTOM}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == {
        "from": "2026-03-02T00:00:00+00:00",
        "to": "2026-03-05T00:00:00+00:00",
        "time_zone": "UTC",
        "range": "custom",
    }
    production = environment(body, "production")
    assert production["up"] is True
    assert without_generated_at(production["data"]) == without_generated_at(guardian_report(db))
    assert production["data"]["totals"]["alerts"] == 5
    assert body["met"] is False
    assert body["missed"] == [
        f"production: {m['label']}" for m in guardian_report(db)["success_metrics"] if m["status"] == "missed"
    ]


def test_custom_dates_are_midnights_in_the_time_zone(viewer: TestClient, db: psycopg.Connection) -> None:
    fill_history(db)
    body = viewer.get(f"/api/analytics?{CUSTOM}&tz=Europe/Berlin").json()
    assert body["period"]["from"] == "2026-03-01T23:00:00+00:00"
    assert body["period"]["to"] == "2026-03-04T23:00:00+00:00"
    assert environment(body, "production")["data"]["period"]["time_zone"] == "Europe/Berlin"


def test_presets_reach_back_from_now(viewer: TestClient, db: psycopg.Connection) -> None:
    body = viewer.get("/api/analytics?range=24h").json()
    assert body["period"]["range"] == "24h"
    report = environment(body, "production")["data"]
    assert report["period"]["bucket"] == "hour" and len(report["trends"]["labels"]) in (24, 25)
    assert viewer.get("/api/analytics").json()["period"]["range"] == "30d"


def test_a_down_environment_shows_as_down_while_production_renders(viewer: TestClient, db: psycopg.Connection) -> None:
    fill_history(db)
    staging = environment(viewer.get(f"/api/analytics?{CUSTOM}").json(), "staging")
    assert staging["up"] is False and "cannot connect" in staging["error"]
    page = viewer.get(f"/analytics?{CUSTOM}")
    assert page.status_code == 200
    assert '<section class="card env down" id="env-staging" data-env="staging">' in page.text
    assert 'id="env-production"' in page.text
    assert '<td data-env="staging" data-status="down">' in page.text
    assert 'data-chart="production: alerts per day by severity"' in page.text


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (
            "from=2026-03-05&to=2026-03-02",
            "from 2026-03-05T00:00:00+00:00 is not before to 2026-03-02T00:00:00+00:00: the start must come first",
        ),
        (
            "from=2026-13-01&to=2026-03-02",
            "from '2026-13-01' is not a date or time: use e.g. 2026-03-01 or 2026-03-01T09:00+01:00",
        ),
        (
            f"{CUSTOM}&tz=Mars/Olympus",
            "unknown time zone 'Mars/Olympus': use a name such as UTC, Europe/Berlin or America/New_York",
        ),
        ("range=3d", "unknown range '3d': one of 24h, 7d, 30d, 90d, or from and to dates"),
        ("to=2026-03-05", "to needs a from date as well (or choose a range: 24h, 7d, 30d, 90d)"),
        ("from=2020-01-01&to=2026-01-01", "the period is 2192 days long: the page shows at most 366"),
    ],
)
def test_bad_range_is_a_400_with_a_one_line_error(viewer: TestClient, query: str, error: str) -> None:
    response = viewer.get(f"/api/analytics?{query}")
    assert response.status_code == 400
    assert response.json() == {"error": error, "status": 400}
    page = viewer.get(f"/analytics?{query}")
    assert page.status_code == 400
    assert 'id="analytics-error"' in page.text and 'id="range"' in page.text
    assert "Traceback" not in page.text


def test_time_zone_names_are_taken_in_any_case(viewer: TestClient, db: psycopg.Connection) -> None:
    body = viewer.get(f"/api/analytics?{CUSTOM}&tz=europe/berlin").json()
    assert body["period"]["time_zone"] == "Europe/Berlin"


# -- outcomes -----------------------------------------------------------------------------------


def post(client: TestClient, path: str, **fields: str) -> tuple[int, dict[str, Any]]:
    response = client.post(path, data={**fields, "csrf_token": csrf_of(client)}, headers=JSON_ACCEPT)
    return response.status_code, response.json()


def raise_alert(db: psycopg.Connection, message: str) -> str:
    return str(scalar(db, "SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', %s, 'public.t')", (message,)))


def outcome_of(db: psycopg.Connection, alert: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT resolved_at IS NOT NULL, outcome, resolved_by FROM guardian.monitoring_alerts WHERE id = %s", (alert,)
    ).fetchone()


def test_bulk_resolve_stores_the_outcome(admin: TestClient, db: psycopg.Connection) -> None:
    one, two = raise_alert(db, "one"), raise_alert(db, "two")
    status, body = post(
        admin, "/actions/alerts", action="resolve", alert=f"production:{one}", outcome="expected", note="planned load"
    )
    assert (status, body["message"]) == (200, "resolved 1 alert(s) as expected")
    assert outcome_of(db, one) == (True, "expected", f"{ADMIN}@dashboard via postgres")
    status, body = post(admin, "/actions/alerts", action="resolve", alert=f"production:{two}", outcome="")
    assert (status, body["message"]) == (200, "resolved 1 alert(s)")
    assert outcome_of(db, two) == (True, None, f"{ADMIN}@dashboard via postgres")


def test_an_unknown_outcome_is_a_400_and_resolves_nothing(admin: TestClient, db: psycopg.Connection) -> None:
    alert = raise_alert(db, "stays open")
    status, body = post(admin, "/actions/alerts", action="resolve", alert=f"production:{alert}", outcome="fixed")
    assert (status, body["error"]) == (
        400,
        "unknown outcome 'fixed' (one of cleaned, confirmed, false_positive, expected, or none)",
    )
    assert outcome_of(db, alert) == (False, None, None)


def test_alerts_list_filters_resolved_alerts_by_outcome(viewer: TestClient, db: psycopg.Connection) -> None:
    fill_history(db)
    body = viewer.get("/api/alerts?outcome=false_positive").json()
    assert body["filter"]["state"] == "resolved" and body["filter"]["outcome"] == ["false_positive"]
    assert [(a["type"], a["outcome"]) for a in body["alerts"]] == [("TEST_DATA_CONTAMINATION", "false_positive")]
    cleaned = viewer.get("/api/alerts?state=resolved&outcome=cleaned").json()["alerts"]
    assert len(cleaned) == 2 and {a["outcome"] for a in cleaned} == {"cleaned"}
    unsaid = viewer.get("/api/alerts?outcome=none").json()["alerts"]
    assert unsaid and all(a["resolved_at"] and a["outcome"] is None for a in unsaid)
    bad = viewer.get("/api/alerts?outcome=wrong")
    assert bad.status_code == 400
    assert bad.json()["error"] == "unknown outcome 'wrong' (one of cleaned, confirmed, expected, false_positive, none)"
    page = viewer.get("/alerts?outcome=false_positive")
    assert (
        '<span class="outcome outcome-false_positive" data-outcome="false_positive">false positive</span>' in page.text
    )


def test_allowlist_from_an_alert_resolves_it_as_a_false_positive(admin: TestClient, dental: psycopg.Connection) -> None:
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
    assert body["message"] == f"allowlisted (entry {body['id']}); the alert is resolved as a false positive"
    assert outcome_of(dental, alert) == (True, "false_positive", f"{ADMIN}@dashboard via postgres")
    note = scalar(dental, "SELECT resolution_note FROM guardian.monitoring_alerts WHERE id = %s", (alert,))
    assert (
        note == f"allowlisted (entry {body['id']}): a real clinic of that name (by {ADMIN} via pg-guardian dashboard)"
    )


def test_allowlist_from_an_unknown_alert_is_a_404_and_allowlists_nothing(
    admin: TestClient, db: psycopg.Connection
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    status, body = post(admin, f"/admin/cleanup/{missing}/allow", env="production", value="x", reason="real")
    assert (status, body["error"]) == (404, f"no alert {missing} in production")
    assert scalar(db, "SELECT count(*) FROM guardian.allowlist") == 0


# -- in the browser -----------------------------------------------------------------------------

WAIT = 10


def wait(browser: Any) -> WebDriverWait:
    return WebDriverWait(browser, WAIT, poll_frequency=0.05)


@pytest.fixture
def served(write_config: Callable[..., Path], production_dsn: str) -> Iterator[Served]:
    app = create_app(config_path=write_config({"production": production_dsn, "staging": UNREACHABLE_DSN}), live=False)
    with Served(app) as server:
        yield server


def log_in(browser: Any, served: Served, user: str, password: str, then: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{served.url}/login?next={then}")
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "whoami")))


def test_analytics_page_draws_the_scorecard_and_the_report_series(
    browser: Any, served: Served, db: psycopg.Connection
) -> None:
    fill_history(db)
    report = guardian_report(db)
    log_in(browser, served, VIEWER, VIEWER_PASSWORD, then="/analytics")
    assert browser.find_element(By.CSS_SELECTOR, "nav a.on").text == "Analytics"
    # The custom range through the picker (a date input's typing order follows the locale).
    for field, value in (("range-from", "2026-03-02"), ("range-to", "2026-03-05")):
        browser.execute_script("arguments[0].value = arguments[1];", browser.find_element(By.ID, field), value)
    browser.find_element(By.ID, "range-show").click()
    wait(browser).until(ec.url_contains("from=2026-03-02"))
    assert "to=2026-03-05" in browser.current_url
    assert browser.find_element(By.ID, "period").text.startswith("2026-03-02 00:00 to 2026-03-05 00:00 UTC")
    assert browser.find_element(By.ID, "verdict").text.startswith("Missed: production: Contamination events")

    statuses = {
        row.get_attribute("data-metric"): {
            cell.get_attribute("data-env"): cell.get_attribute("data-status")
            for cell in row.find_elements(By.CSS_SELECTOR, "td[data-env]")
        }
        for row in browser.find_elements(By.CSS_SELECTOR, "#scorecard tr[data-metric]")
    }
    assert statuses == {m["name"]: {"production": m["status"], "staging": "down"} for m in report["success_metrics"]}
    assert browser.find_element(By.CSS_SELECTOR, "#env-staging .badge-down").text == "down"

    severity = browser.find_element(By.CSS_SELECTOR, "svg[data-chart='production: alerts per day by severity']")
    assert severity.get_attribute("data-labels") == ",".join(report["trends"]["labels"])
    drawn = {
        g.get_attribute("data-series"): [int(v) for v in g.get_attribute("data-values").split(",")]
        for g in severity.find_elements(By.CSS_SELECTOR, "g.series")
    }
    assert drawn == report["trends"]["by_severity"]
    assert severity.is_displayed() and severity.size["width"] > 200
    records = browser.find_element(By.CSS_SELECTOR, "svg[data-chart='production: contaminated records per day']")
    values = records.find_element(By.CSS_SELECTOR, "g.series").get_attribute("data-values")
    assert values == ",".join(str(v) for v in report["trends"]["contamination_records"])
    # A preset keeps the time zone.
    browser.find_element(By.CSS_SELECTOR, ".presets a[data-range='7d']").click()
    wait(browser).until(ec.url_contains("range=7d"))
    assert browser.find_element(By.CSS_SELECTOR, ".presets a.on").text == "7 d"


def test_admin_resolves_with_an_outcome_from_the_alert_page(
    browser: Any, served: Served, db: psycopg.Connection
) -> None:
    alert = raise_alert(db, "resolve me as confirmed")
    log_in(browser, served, ADMIN, ADMIN_PASSWORD, then=f"/admin/cleanup/{alert}")
    Select(browser.find_element(By.ID, "outcome")).select_by_value("confirmed")
    browser.find_element(By.CSS_SELECTOR, "#triage input[name='note']").send_keys("real data")
    browser.find_element(By.ID, "resolve").click()
    shown = wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#alert-outcome .outcome")))
    assert (shown.text, shown.get_attribute("data-outcome")) == ("confirmed", "confirmed")
    assert browser.find_element(By.CSS_SELECTOR, ".flash").text == "resolved 1 alert(s) as confirmed"
    assert outcome_of(db, alert) == (True, "confirmed", f"{ADMIN}@dashboard via postgres")


def test_viewer_cannot_resolve_with_an_outcome(browser: Any, served: Served, db: psycopg.Connection) -> None:
    alert = raise_alert(db, "viewer cannot say")
    log_in(browser, served, VIEWER, VIEWER_PASSWORD, then=f"/admin/cleanup/{alert}")
    assert browser.find_element(By.ID, "alert-message").text == "viewer cannot say"
    assert not browser.find_elements(By.ID, "outcome")
    csrf = browser.find_element(By.TAG_NAME, "body").get_attribute("data-csrf")
    status = browser.execute_async_script(
        """const [fields, done] = arguments;
           fetch("/actions/alerts", {method: "POST", body: new URLSearchParams(fields),
                                      headers: {Accept: "application/json"}})
             .then(r => done(r.status), () => done(0));""",
        {"action": "resolve", "alert": f"production:{alert}", "outcome": "false_positive", "csrf_token": csrf},
    )
    assert status == 403
    assert outcome_of(db, alert) == (False, None, None)
