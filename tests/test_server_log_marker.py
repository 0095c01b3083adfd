"""The server-log reader and strict mode's 'Recorded as a STRICT_MODE_REJECTION alert.' (review
finding L3): the words end the DETAIL after the record's key, which is application data, so
they prove nothing; the reader skips a rejection only when the alert it claims is really there."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from support.checks import findings, open_alerts, run_check, wait_for
from support.queries import scalar

CLAIM = "Recorded as a STRICT_MODE_REJECTION alert."
FORGED_KEY = "x. Recorded as a STRICT_MODE_REJECTION alert"


@pytest.fixture
def strict_app(
    db: psycopg.Connection, connect: Callable[..., psycopg.Connection], make_role: Callable[..., str]
) -> psycopg.Connection:
    """A strict-mode database with two watched tables keyed by text, and the reader positioned."""
    role = make_role("marker_app")
    for table in ("clinics", "labs"):
        db.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, email text)")
        db.execute(f"GRANT SELECT, INSERT ON {table} TO {role}")
        db.execute("SELECT guardian.watch(%s)", (table,))
    db.execute("SELECT guardian.set_mode('strict')")
    run_check(db, "server_log")
    return connect(db.info.dbname, user=role)


def reject(app: psycopg.Connection, table: str, key: str) -> str:
    """Write test data as the application; return the rejection's DETAIL."""
    with pytest.raises(psycopg.Error) as err:
        app.execute(f"INSERT INTO {table} VALUES (%s, 'jane@example.com')", (key,))
    assert err.value.sqlstate == "GD001"
    return err.value.diag.message_detail or ""


def read_log_past_a_later_error(db: psycopg.Connection, app: psycopg.Connection) -> list[dict[str, object]]:
    """Every server_log finding until a later error of the same role is read (so the rejection
    before it was read too)."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("DELETE FROM clinics")
    seen: list[dict[str, object]] = []

    def probe() -> bool:
        seen.extend(findings(db, "server_log"))
        return any(r["alert_type"] == "PERMISSION_DENIED" for r in seen)

    assert wait_for(probe, timeout=10)
    return seen


def test_a_forged_claim_does_not_hide_a_rejection_that_was_not_recorded(
    db: psycopg.Connection, strict_app: psycopg.Connection
) -> None:
    db.execute("DROP EXTENSION dblink")  # the recorder cannot record: the log is the only trace
    detail = reject(strict_app, "clinics", FORGED_KEY)
    # The forged key makes the DETAIL end with the words the trigger adds when it recorded.
    assert detail.endswith(f"Record: {FORGED_KEY}.")
    assert detail.endswith(CLAIM)
    assert open_alerts(db, "STRICT_MODE_REJECTION") == []
    seen = read_log_past_a_later_error(db, strict_app)
    [rejected] = [r for r in seen if r["alert_type"] == "STRICT_MODE_REJECTED"]
    assert rejected["severity"] == "HIGH" and "public.clinics" in rejected["detail"]
    assert scalar(db, "SELECT count(*) FROM guardian.security_events WHERE kind = 'strict_mode_rejected'") == 1


def test_a_recorded_rejection_with_the_same_forged_key_is_reported_once(
    db: psycopg.Connection, strict_app: psycopg.Connection
) -> None:
    detail = reject(strict_app, "clinics", FORGED_KEY)
    assert detail.endswith(f"{FORGED_KEY}. {CLAIM}")  # really recorded, and says so
    [alert] = open_alerts(db, "STRICT_MODE_REJECTION")
    assert alert["table_name"] == "public.clinics"
    seen = read_log_past_a_later_error(db, strict_app)
    assert [r for r in seen if r["alert_type"] == "STRICT_MODE_REJECTED"] == []
    assert scalar(db, "SELECT count(*) FROM guardian.security_events WHERE kind = 'strict_mode_rejected'") == 0


def test_the_alert_of_another_table_does_not_vouch_for_an_unrecorded_rejection(
    db: psycopg.Connection, strict_app: psycopg.Connection
) -> None:
    assert reject(strict_app, "labs", "lab-1").endswith(CLAIM)  # recorded: an alert for labs
    db.execute("DROP EXTENSION dblink")
    assert reject(strict_app, "clinics", FORGED_KEY).endswith(CLAIM)  # forged, moments later
    seen = read_log_past_a_later_error(db, strict_app)
    [rejected] = [r for r in seen if r["alert_type"] == "STRICT_MODE_REJECTED"]
    assert "public.clinics" in rejected["detail"]
    events = db.execute("SELECT message FROM guardian.security_events WHERE kind = 'strict_mode_rejected'").fetchall()
    assert len(events) == 1
    assert events[0][0].startswith("pg_guardian: strict mode rejected test data in public.clinics.email (rule ")
