"""Safe auto-cleanup at commit, and cleanup scripts stored with their alerts."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from pg_guardian import response
from pg_guardian.response.policy import statements
from support.queries import scalar
from support.response import SNAPSHOT, contamination_alert, count, grant_app, load_dental

SAFE_CLINIC = (
    "INSERT INTO dental.clinics (id, name, email) "
    "VALUES ('33333333-aaaa-4aaa-8aaa-000000000001', 'Bright Dental', 'front@example.com')"
)
SAFE_PATIENT = (
    "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) "
    "VALUES ('33333333-aaaa-4aaa-8aaa-000000000001', 'Ann', 'Lee', 'ann.lee@gmail.com')"
)
UNSAFE_CLINIC = "INSERT INTO dental.clinics (name, email) VALUES ('Test Clinic', 'office@realclinic.com')"


@pytest.fixture
def app(
    db: psycopg.Connection,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> psycopg.Connection:
    """A connection as an application role (no guardian rights) to the dental sample."""
    load_dental(db)
    make_role("dental_app")
    grant_app(db, "dental_app")
    return connect(dbname, user="dental_app")


def test_auto_cleanup_is_off_by_default_and_the_alert_gets_a_script(
    app: psycopg.Connection, db: psycopg.Connection
) -> None:
    app.execute(SAFE_CLINIC)
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE name = 'Bright Dental'") == 1
    alert = contamination_alert(db, rule="reserved_example_domain")
    metadata = scalar(db, "SELECT metadata FROM guardian.monitoring_alerts WHERE id = %s", (alert,))
    # Generated at commit with the application's rights, so the relay's email can carry it.
    assert metadata["cleanup_script"].startswith("-- pg_guardian cleanup script")
    assert len(statements(metadata["cleanup_script"])) == 5
    assert count(db, "SELECT count(*) FROM guardian.quarantine_batches") == 0


def test_auto_cleanup_quarantines_safe_findings_with_their_dependents_at_commit(
    app: psycopg.Connection, db: psycopg.Connection
) -> None:
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    before = scalar(db, SNAPSHOT)
    with app.transaction():
        app.execute(SAFE_CLINIC)
        app.execute(SAFE_PATIENT)  # depends on the clinic: goes with it
    assert scalar(db, SNAPSHOT) == before
    alert = db.execute(
        "SELECT severity, message, metadata FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_QUARANTINED'"
    ).fetchone()
    assert alert is not None
    severity, message, metadata = alert
    assert severity == "HIGH" and message.startswith(
        "auto-cleanup quarantined 2 row(s) (1 dental.clinics, 1 dental.patients)"
    )
    assert metadata["restore_command"] in message and metadata["automatic"] is True
    assert count(db, "SELECT count(*) FROM guardian.open_alerts WHERE type = 'TEST_DATA_CONTAMINATION'") == 0
    # Undone, and not flagged (or cleaned) again.
    response.restore(db, str(metadata["batch"]))
    assert count(db, "SELECT count(*) FROM dental.patients WHERE first_name = 'Ann'") == 1
    assert count(db, "SELECT count(*) FROM guardian.quarantine_batches WHERE status = 'applied'") == 0


def test_auto_cleanup_never_touches_findings_of_rules_not_marked_safe(
    app: psycopg.Connection, db: psycopg.Connection
) -> None:
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    assert scalar(db, "SELECT safe_for_automation FROM guardian.rules WHERE name = 'test_organization'") is False
    app.execute(UNSAFE_CLINIC)
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE name = 'Test Clinic'") == 1
    assert count(db, "SELECT count(*) FROM guardian.quarantine_batches") == 0
    assert "cleanup_script" in scalar(
        db,
        "SELECT metadata FROM guardian.monitoring_alerts WHERE id = %s",
        (contamination_alert(db),),
    )


def test_auto_cleanup_is_per_environment(app: psycopg.Connection, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_auto_cleanup(true, 'staging')")
    app.execute(SAFE_CLINIC)  # this database is local
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE name = 'Bright Dental'") == 1
    assert scalar(db, "SELECT auto_cleanup FROM guardian.response_settings") is False


def test_auto_cleanup_leaves_larger_cleanups_to_a_person(app: psycopg.Connection, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    db.execute("SELECT guardian.set_param('auto_cleanup.max_rows', 1)")
    with app.transaction():
        app.execute(SAFE_CLINIC)
        app.execute(SAFE_PATIENT)
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE name = 'Bright Dental'") == 1
    message = scalar(db, "SELECT message FROM guardian.monitoring_alerts WHERE type = 'AUTO_CLEANUP_SKIPPED'")
    assert "would quarantine 2 rows, more than auto_cleanup.max_rows (1)" in message
    assert "guardian.cleanup_plan(" in message


def test_a_failed_auto_cleanup_never_fails_the_commit(
    db: psycopg.Connection,
    make_role: Callable[..., str],
    connect: Callable[..., psycopg.Connection],
    dbname: str,
) -> None:
    load_dental(db)
    make_role("insert_only")
    grant_app(db, "insert_only", delete=False)
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    app = connect(dbname, user="insert_only")
    app.execute(SAFE_CLINIC)  # commits
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE name = 'Bright Dental'") == 1
    message = scalar(db, "SELECT message FROM guardian.monitoring_alerts WHERE type = 'AUTO_CLEANUP_FAILED'")
    assert "permission denied for table" in message and "nothing was removed" in message
    assert count(db, "SELECT count(*) FROM guardian.quarantine_batches") == 0


def test_a_rolled_back_write_leaves_no_trace(app: psycopg.Connection, db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    with pytest.raises(psycopg.errors.UniqueViolation), app.transaction():
        app.execute(SAFE_CLINIC)
        app.execute(SAFE_CLINIC)
    assert count(db, "SELECT count(*) FROM guardian.quarantine_batches") == 0
    assert count(db, "SELECT count(*) FROM guardian.response_runs") == 0


def test_the_application_cannot_drive_the_cleanup_helpers_itself(app: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not run guardian cleanups"):
        app.execute("SELECT guardian._quarantine_put(gen_random_uuid(), '{}')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT guardian.restore(gen_random_uuid())")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT guardian.set_auto_cleanup(true)")


def test_a_restore_never_writes_more_than_the_capturing_role_could(
    app: psycopg.Connection, db: psycopg.Connection
) -> None:
    db.execute("SELECT guardian.set_auto_cleanup(true)")
    with app.transaction():
        app.execute(SAFE_CLINIC)
        app.execute(SAFE_PATIENT)
    batch = str(scalar(db, "SELECT id FROM guardian.quarantine_batches"))
    db.execute("REVOKE INSERT ON dental.patients FROM dental_app")
    with pytest.raises(
        response.ResponseError,
        match=r"it was captured by role dental_app, which may not INSERT into dental\.patients",
    ):
        response.restore(db, batch)
    assert count(db, "SELECT count(*) FROM dental.clinics WHERE name = 'Bright Dental'") == 0
