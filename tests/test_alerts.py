"""The alert table: design-shaped inserts, raise_alert dedup, triage, one NOTIFY per transaction."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from support.queries import scalar


def test_design_style_insert_is_a_complete_alert(db: psycopg.Connection) -> None:
    # Exactly the INSERT the design's own trigger runs.
    db.execute("SELECT guardian.set_environment('production')")
    db.execute(
        """INSERT INTO guardian.monitoring_alerts (severity, type, message, table_name, record_id, created_at)
           VALUES ('CRITICAL', 'TEST_DATA_CONTAMINATION',
                   'Test email pattern detected in production: user@tenant-a.test',
                   'users', gen_random_uuid(), NOW())"""
    )
    row = db.execute(
        "SELECT environment, fingerprint IS NOT NULL, occurrences, metadata, context->>'backend_pid' IS NOT NULL "
        "FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'"
    ).fetchone()
    assert row == ("production", True, 1, {}, True)


def test_severity_is_a_closed_set(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO guardian.monitoring_alerts (severity, type, message) VALUES ('URGENT', 'X', 'm')")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT guardian.raise_alert('X', 'urgent', 'm')")
    assert "unknown alert severity 'urgent'" in str(err.value)


def test_alert_type_must_be_an_upper_case_word(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT guardian.raise_alert('bad type!', 'LOW', 'm')")
    assert "invalid alert type 'bad type!'" in str(err.value)


def test_raise_alert_counts_repeats_of_an_open_condition(db: psycopg.Connection) -> None:
    first = scalar(
        db,
        "SELECT guardian.raise_alert('BULK_OPERATION', 'MEDIUM', '60 rows', 'patients', NULL, "
        "'{\"rows\": 60}', 'bulk:patients')",
    )
    again = scalar(
        db,
        "SELECT guardian.raise_alert('BULK_OPERATION', 'HIGH', '80 rows', 'patients', NULL, "
        "'{\"rows\": 80}', 'bulk:patients')",
    )
    assert first == again
    row = db.execute(
        "SELECT occurrences, severity, message, metadata->>'rows' FROM guardian.monitoring_alerts"
    ).fetchone()
    assert row == (2, "HIGH", "80 rows", "80")


def test_resolved_condition_opens_a_new_alert_when_it_returns(db: psycopg.Connection) -> None:
    first = scalar(db, "SELECT guardian.raise_alert('BULK_OPERATION', 'HIGH', 'm', p_fingerprint => 'f')")
    db.execute("SELECT guardian.resolve_alert(%s, 'cleaned up')", (first,))
    second = scalar(db, "SELECT guardian.raise_alert('BULK_OPERATION', 'HIGH', 'm', p_fingerprint => 'f')")
    assert first != second
    row = db.execute(
        "SELECT resolved_by, resolution_note, acknowledged_by FROM guardian.monitoring_alerts WHERE id = %s", (first,)
    ).fetchone()
    assert row == ("postgres", "cleaned up", "postgres")


def test_acknowledge_unknown_alert_is_a_clear_error(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NoDataFound) as err:
        db.execute("SELECT guardian.acknowledge_alert('00000000-0000-0000-0000-000000000001')")
    assert "no alert with id 00000000-0000-0000-0000-000000000001" in str(err.value)


def test_acknowledge_keeps_the_first_acknowledgement(
    db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> None:
    alert = scalar(db, "SELECT guardian.raise_alert('X', 'LOW', 'm')")
    make_role("alice_admin", "guardian_admin")
    alice = connect(db.info.dbname, "alice_admin")
    alice.execute("SELECT guardian.acknowledge_alert(%s)", (alert,))
    db.execute("SELECT guardian.acknowledge_alert(%s)", (alert,))
    assert scalar(db, "SELECT acknowledged_by FROM guardian.monitoring_alerts WHERE id = %s", (alert,)) == "alice_admin"


def test_a_front_end_names_the_person_but_never_hides_the_role(
    db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> None:
    first, second = (scalar(db, "SELECT guardian.raise_alert('X', 'LOW', %s)", (m,)) for m in ("one", "two"))
    make_role("dash_role", "guardian_admin")
    dash = connect(db.info.dbname, "dash_role")
    # A control character cannot forge a second line; a claimed role name is still followed by the real one.
    dash.execute("SELECT set_config('pg_guardian.actor', %s, false)", ("carol@dashboard\n via postgres",))
    dash.execute("SELECT guardian.resolve_alert(%s, 'done')", (first,))
    dash.execute("SELECT set_config('pg_guardian.actor', '  ', false)")
    dash.execute("SELECT guardian.acknowledge_alert(%s)", (second,))
    rows = db.execute(
        "SELECT acknowledged_by, resolved_by FROM guardian.monitoring_alerts WHERE id = ANY(%s) ORDER BY message",
        ([first, second],),
    ).fetchall()
    assert rows == [
        ("carol@dashboard via postgres via dash_role", "carol@dashboard via postgres via dash_role"),
        ("dash_role", None),
    ]


def test_one_notification_per_transaction_that_raises_alerts(
    db: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    listener = connect(db.info.dbname)
    listener.execute("LISTEN guardian_alerts")
    with db.transaction():
        for i in range(5):
            db.execute("SELECT guardian.raise_alert('X', 'LOW', %s)", (f"alert {i}",))
        db.execute(
            "INSERT INTO guardian.monitoring_alerts (severity, type, message) VALUES ('LOW', 'Y', 'plain insert')"
        )
    notes = list(listener.notifies(timeout=1.0))
    assert [n.channel for n in notes] == ["guardian_alerts"]


def test_ordinary_writes_never_notify(db: psycopg.Connection, connect: Callable[..., psycopg.Connection]) -> None:
    db.execute("CREATE TABLE public.t (x int)")  # DDL is a SCHEMA_CHANGE alert; data is not
    listener = connect(db.info.dbname)
    listener.execute("LISTEN guardian_alerts")
    db.execute("INSERT INTO public.t SELECT generate_series(1, 100)")
    assert list(listener.notifies(timeout=0.5)) == []


def test_open_alerts_view_orders_by_severity(db: psycopg.Connection) -> None:
    for sev in ("LOW", "CRITICAL", "MEDIUM"):
        db.execute("SELECT guardian.raise_alert('X', %s, %s)", (sev, sev))
    assert [r[0] for r in db.execute("SELECT severity FROM guardian.open_alerts").fetchall()] == [
        "CRITICAL",
        "MEDIUM",
        "LOW",
    ]
