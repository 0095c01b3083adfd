"""The dashboard in a real headless Chromium (Debian's, through chromedriver; nothing is
downloaded): login, the live feed, roles, CSRF, a cleanup and its restore, a down environment."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dashboard_support import ADMIN, ADMIN_PASSWORD, UNREACHABLE_DSN, VIEWER, VIEWER_PASSWORD, Served
from pg_guardian.cluster import LocalCluster
from pg_guardian.dashboard import create_app
from psycopg import sql
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from support.response import SNAPSHOT, contamination_alert

WAIT = 10


def wait(browser: Any, seconds: float = WAIT) -> WebDriverWait:
    return WebDriverWait(browser, seconds, poll_frequency=0.05)


@pytest.fixture
def served(write_config: Callable[..., Path], production_dsn: str) -> Any:
    app = create_app(config_path=write_config({"production": production_dsn, "staging": UNREACHABLE_DSN}))
    with Served(app) as server:
        yield server


def log_in(browser: Any, served: Served, user: str, password: str, then: str = "/") -> None:
    browser.delete_all_cookies()
    browser.get(f"{served.url}/login?next={then}")
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "whoami")))


def post_from_page(browser: Any, path: str, fields: dict[str, str]) -> int:
    """A POST made by script in the logged-in page (what a forged request from it would do)."""
    return int(
        browser.execute_async_script(
            """const [path, fields, done] = arguments;
               fetch(path, {method: "POST", body: new URLSearchParams(fields), headers: {Accept: "application/json"}})
                 .then(r => done(r.status), () => done(0));""",
            path,
            fields,
        )
    )


def test_login_shows_the_overview_with_the_user_and_role(browser: Any, served: Served) -> None:
    browser.delete_all_cookies()
    browser.get(served.url + "/")
    assert "/login" in browser.current_url
    log_in(browser, served, ADMIN, ADMIN_PASSWORD)
    assert browser.current_url == served.url + "/"
    assert browser.find_element(By.ID, "whoami").text == f"{ADMIN} admin"
    assert browser.find_element(By.ID, "env-production")


def test_wrong_password_stays_on_the_login_page(browser: Any, served: Served) -> None:
    browser.delete_all_cookies()
    browser.get(served.url + "/login")
    browser.find_element(By.ID, "username").send_keys(ADMIN)
    browser.find_element(By.ID, "password").send_keys("wrong")
    browser.find_element(By.ID, "login").click()
    assert wait(browser).until(ec.presence_of_element_located((By.ID, "login-error"))).text == (
        "wrong user name or password"
    )


def test_alert_committed_in_the_database_appears_on_the_open_overview(
    browser: Any, served: Served, db: psycopg.Connection
) -> None:
    log_in(browser, served, VIEWER, VIEWER_PASSWORD)
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#env-production[data-live='up']")))
    browser.execute_script("window.notReloaded = true;")
    db.execute("SELECT guardian.raise_alert('LIVE_TEST', 'CRITICAL', 'appears without reload', 'public.t')")
    committed = time.monotonic()
    item = wait(browser).until(
        ec.presence_of_element_located((By.XPATH, "//ol[@id='feed']/li[contains(., 'appears without reload')]"))
    )
    seen = time.monotonic() - committed
    assert "LIVE_TEST" in item.text and "production" in item.text
    assert browser.execute_script("return window.notReloaded === true;")
    assert seen < 2.0, f"the alert took {seen:.2f} s to reach the page"
    # The counts follow (refreshed from /api/overview after the feed).
    wait(browser).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".count[data-env='production'][data-sev='CRITICAL'] b"), "1")
    )


def test_a_busy_window_does_not_hide_the_newest_alert(browser: Any, served: Served, db: psycopg.Connection) -> None:
    # More alerts in the feed's catch-up window than one read takes: the newest must still come.
    db.execute("SELECT guardian.raise_alert('BUSY_TEST', 'LOW', 'busy ' || i) FROM generate_series(1, 250) AS i")
    log_in(browser, served, VIEWER, VIEWER_PASSWORD)
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#env-production[data-live='up']")))
    db.execute("SELECT guardian.raise_alert('LIVE_TEST', 'HIGH', 'newest of a busy window', 'public.t')")
    wait(browser).until(
        ec.presence_of_element_located((By.XPATH, "//ol[@id='feed']/li[contains(., 'newest of a busy window')]"))
    )


def test_viewer_has_no_acknowledge_button_and_a_forged_post_is_refused(
    browser: Any, served: Served, db: psycopg.Connection
) -> None:
    row = db.execute("SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', 'viewer cannot', 'public.t')").fetchone()
    assert row is not None
    alert = str(row[0])
    log_in(browser, served, VIEWER, VIEWER_PASSWORD, then=f"/admin/cleanup/{alert}")
    assert browser.find_element(By.ID, "alert-message").text == "viewer cannot"
    assert not browser.find_elements(By.ID, "acknowledge")
    assert not browser.find_elements(By.ID, "resolve")
    csrf = browser.find_element(By.TAG_NAME, "body").get_attribute("data-csrf")
    status = post_from_page(
        browser, "/actions/alerts", {"action": "acknowledge", "alert": f"production:{alert}", "csrf_token": csrf}
    )
    assert status == 403
    acknowledged = db.execute("SELECT acknowledged_at FROM guardian.monitoring_alerts WHERE id = %s", (alert,))
    assert acknowledged.fetchone() == (None,)


def test_post_without_csrf_token_is_refused(browser: Any, served: Served, db: psycopg.Connection) -> None:
    row = db.execute("SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', 'no token', 'public.t')").fetchone()
    assert row is not None
    log_in(browser, served, ADMIN, ADMIN_PASSWORD)
    status = post_from_page(browser, "/actions/alerts", {"action": "acknowledge", "alert": f"production:{row[0]}"})
    assert status == 403
    acknowledged = db.execute("SELECT acknowledged_at FROM guardian.monitoring_alerts WHERE id = %s", (row[0],))
    assert acknowledged.fetchone() == (None,)


def test_admin_acknowledges_an_alert_from_its_page(browser: Any, served: Served, db: psycopg.Connection) -> None:
    row = db.execute("SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', 'ack me', 'public.t')").fetchone()
    assert row is not None
    log_in(browser, served, ADMIN, ADMIN_PASSWORD, then=f"/admin/cleanup/{row[0]}")
    browser.find_element(By.ID, "acknowledge").click()
    state = wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#alert-state .acked")))
    assert state.text == f"acknowledged by {ADMIN}@dashboard via postgres"
    flash = browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert flash == "acknowledged 1 alert(s)"


def test_admin_runs_a_cleanup_sees_the_batch_restores_it_and_the_rows_are_back(
    browser: Any, served: Served, dental: psycopg.Connection
) -> None:
    before = dental.execute(SNAPSHOT).fetchone()
    alert = contamination_alert(dental)
    log_in(browser, served, ADMIN, ADMIN_PASSWORD, then=f"/admin/cleanup/{alert}")
    rows = browser.find_element(By.ID, "plan-rows").text
    assert int(rows) > 0
    assert browser.find_element(By.ID, "run-cleanup").text == f"Run cleanup of {rows} row(s)"
    browser.find_element(By.ID, "confirm-rows").send_keys(rows)
    browser.find_element(By.ID, "run-cleanup").click()
    batch = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#batches tr.batch[data-status='applied']"))
    )
    assert "quarantined" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert dental.execute(SNAPSHOT).fetchone() != before
    batch_id = batch.get_attribute("data-batch")
    # Who: the role whose rights ran it, and the person the dashboard acted for.
    created_by = dental.execute(
        "SELECT created_by, requested_by FROM guardian.quarantine_batches WHERE id = %s", (batch_id,)
    )
    assert created_by.fetchone() == ("postgres", f"{ADMIN}@dashboard via postgres")
    batch.find_element(By.CSS_SELECTOR, "button.restore").click()
    wait(browser).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"#batches tr.batch[data-batch='{batch_id}'][data-status='restored']")
        )
    )
    assert dental.execute(SNAPSHOT).fetchone() == before
    # Who did it: the dashboard user with the database role in the guardian's own columns, and
    # in the context of the alerts the cleanup and the restore raised.
    actors = dental.execute(
        """SELECT type, context ->> 'session_user', context ->> 'application_name' FROM guardian.monitoring_alerts
            WHERE type IN ('TEST_DATA_QUARANTINED', 'QUARANTINE_RESTORED') ORDER BY type"""
    ).fetchall()
    assert actors == [
        ("QUARANTINE_RESTORED", "postgres", f"pg-guardian dashboard: {ADMIN}"),
        ("TEST_DATA_QUARANTINED", "postgres", f"pg-guardian dashboard: {ADMIN}"),
    ]
    restored_by = dental.execute("SELECT restored_by FROM guardian.quarantine_batches WHERE id = %s", (batch_id,))
    assert restored_by.fetchone() == (f"{ADMIN}@dashboard via postgres",)


def test_admin_starts_a_scan_and_watches_its_progress(browser: Any, served: Served, dental: psycopg.Connection) -> None:
    log_in(browser, served, ADMIN, ADMIN_PASSWORD, then="/contamination")
    form = browser.find_element(By.CSS_SELECTOR, "#contamination-production form.scan-form")
    form.find_element(By.CSS_SELECTOR, "select[name='table']").send_keys("dental.clinics")
    form.find_element(By.CSS_SELECTOR, "button").click()
    row = wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr.scan[data-state='done']")))
    assert row.find_element(By.CSS_SELECTOR, "progress").get_attribute("value") == "100"
    assert int(row.find_element(By.CSS_SELECTOR, ".found").text) >= 1
    assert "scanning dental.clinics in production" in browser.find_element(By.CSS_SELECTOR, ".flash").text


def test_unreachable_environment_shows_as_down_while_the_others_render(
    browser: Any, served: Served, db: psycopg.Connection
) -> None:
    db.execute("SELECT guardian.raise_alert('TEST_ALERT', 'HIGH', 'still shown', 'public.t')")
    log_in(browser, served, VIEWER, VIEWER_PASSWORD)
    staging = browser.find_element(By.ID, "env-staging")
    assert "down" in staging.get_attribute("class").split()
    assert "cannot connect" in staging.find_element(By.CSS_SELECTOR, ".error").text
    production = browser.find_element(By.ID, "env-production")
    assert "up" in production.get_attribute("class").split()
    assert production.find_element(By.CSS_SELECTOR, ".count[data-sev='HIGH'] b").text == "1"
    browser.get(served.url + "/alerts")
    assert "staging is down" in browser.find_element(By.CSS_SELECTOR, ".flash-error").text
    assert "still shown" in browser.find_element(By.CSS_SELECTOR, "table.alerts").text


def _busy_day(conn: psycopg.Connection) -> None:
    """Six hours of writes to the dental tables (as the per-minute roll-up records them), a
    bulk load in the middle, and the jobs run once, for a picture that looks like a real day."""
    conn.execute(
        """INSERT INTO guardian.activity_windows (relid, minute, inserts, updates, deletes, statements)
           SELECT t.relid, date_trunc('minute', now()) - make_interval(mins => m),
                  (t.base * (1.2 + sin(m / 40.0)) + (m * 7 % 5))::bigint,
                  (t.base * 0.6 * (1.1 + cos(m / 55.0)))::bigint,
                  CASE WHEN m % 37 = 0 THEN 3 ELSE 0 END, 10
             FROM (VALUES ('dental.patients'::regclass, 6), ('dental.appointments'::regclass, 14),
                          ('dental.invoices'::regclass, 9)) AS t(relid, base),
                  generate_series(1, 359) AS m
           ON CONFLICT DO NOTHING"""
    )
    conn.execute(
        "UPDATE guardian.activity_windows SET inserts = inserts + 240 WHERE relid = 'dental.patients'::regclass "
        "AND minute = date_trunc('minute', now()) - interval '130 minutes'"
    )
    conn.execute("SELECT guardian.note_job_scheduler('jobs serve')")
    for (job,) in conn.execute("SELECT name FROM guardian.jobs WHERE enabled ORDER BY name").fetchall():
        conn.execute("SELECT guardian.run_job(%s)", (job,))
    conn.execute("SELECT guardian.approve_baseline()")


def test_overview_screenshot(
    browser: Any,
    cluster: LocalCluster,
    write_config: Callable[..., Path],
    production_dsn: str,
    dental: psycopg.Connection,
    screenshot_path: Path | None,
    tmp_path: Path,
) -> None:
    """The README's picture (written to $GUARDIAN_SCREENSHOT when set): production with test
    data caught, staging in strict mode, and an unreachable QA database."""
    staging = f"dash_staging_{os.getpid()}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin_conn:
        admin_conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE guardian_template").format(sql.Identifier(staging)))
    try:
        with psycopg.connect(cluster.dsn(staging), autocommit=True) as conn:
            conn.execute("SELECT guardian.set_environment('staging')")
            conn.execute("SELECT guardian.set_mode('strict')")
            conn.execute("SELECT guardian.approve_baseline()")
            conn.execute("SELECT guardian.note_job_scheduler('jobs serve')")
            for (job,) in conn.execute("SELECT name FROM guardian.jobs WHERE enabled ORDER BY name").fetchall():
                conn.execute("SELECT guardian.run_job(%s)", (job,))
        dental.execute("SELECT guardian.set_environment('production')")
        dental.execute("SELECT guardian.set_mode('warn')")
        _busy_day(dental)
        config = write_config({"production": production_dsn, "staging": cluster.dsn(staging), "qa": UNREACHABLE_DSN})
        with Served(create_app(config_path=config)) as served:
            log_in(browser, served, ADMIN, ADMIN_PASSWORD)
            wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#env-production[data-live='up']")))
            dental.execute(
                "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) "
                "SELECT id, 'Test', 'Patient', 'qa+1@example.com' FROM dental.clinics "
                "WHERE name <> 'Test Clinic' LIMIT 1"
            )
            wait(browser).until(
                ec.presence_of_element_located((By.XPATH, "//ol[@id='feed']/li[contains(., 'dental.patients')]"))
            )
            path = screenshot_path or tmp_path / "overview.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            browser.set_window_size(1440, 1100)
            assert browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin_conn:
            admin_conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
