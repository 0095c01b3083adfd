"""The relay's SQL side: intake triggers, notifications, tokens, retention."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from support.queries import scalar


def test_new_alerts_and_repeats_are_queued_but_acknowledgements_are_not(
    db: psycopg.Connection,
) -> None:
    db.execute("""INSERT INTO guardian.monitoring_alerts (severity, type, message, table_name)
                  VALUES ('CRITICAL', 'TEST_DATA_CONTAMINATION', 'a@tenant-a.test', 'users')""")
    aid = scalar(db, "SELECT guardian.raise_alert('DISK', 'HIGH', 'full', p_fingerprint => 'disk')")
    db.execute("SELECT guardian.raise_alert('DISK', 'HIGH', 'full', p_fingerprint => 'disk')")
    db.execute("SELECT guardian.acknowledge_alert(%s)", (aid,))
    rows = db.execute("SELECT occurrences FROM guardian.relay_intake ORDER BY queued_at").fetchall()
    assert rows == [(1,), (1,), (2,)]


def test_repeats_notify_the_relay_and_ordinary_updates_do_not(
    db: psycopg.Connection, dbname: str, connect: Callable[..., psycopg.Connection]
) -> None:
    listener = connect(dbname)
    listener.execute("LISTEN guardian_alerts")
    aid = scalar(db, "SELECT guardian.raise_alert('DISK', 'HIGH', 'full', p_fingerprint => 'disk')")
    assert len(list(listener.notifies(timeout=1, stop_after=1))) == 1
    db.execute("SELECT guardian.acknowledge_alert(%s)", (aid,))
    assert list(listener.notifies(timeout=0.3)) == []
    db.execute("SELECT guardian.raise_alert('DISK', 'HIGH', 'full', p_fingerprint => 'disk')")
    assert len(list(listener.notifies(timeout=1, stop_after=1))) == 1


def test_claim_refuses_a_token_this_session_does_not_hold(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as err:
        db.execute("SELECT * FROM guardian.relay_claim('slack', 12345, 10, '1 minute')")
    assert err.value.diag.message_primary == "relay token 12345 is not held by this session"
    assert "guardian.relay_register()" in (err.value.diag.message_hint or "")


def test_prune_removes_history_of_resolved_alerts_and_is_a_daily_job(
    db: psycopg.Connection,
) -> None:
    token = scalar(db, "SELECT guardian.relay_register()")
    aid = scalar(db, "SELECT guardian.raise_alert('DISK', 'HIGH', 'full')")
    with db.transaction():
        db.execute("SELECT * FROM guardian.relay_take_intake(10)")
        db.execute(
            "SELECT guardian.relay_enqueue(ARRAY[%s]::uuid[], ARRAY['slack'], ARRAY['g'],"
            " ARRAY['0s']::interval[], ARRAY['1h']::interval[])",
            (aid,),
        )
    (mid,) = db.execute("SELECT message_id FROM guardian.relay_claim('slack', %s, 10, '1 minute')", (token,)).fetchone()  # type: ignore[misc]
    db.execute("SELECT guardian.relay_delivered(ARRAY[%s]::uuid[])", (mid,))
    db.execute("SELECT guardian.resolve_alert(%s)", (aid,))
    assert scalar(db, "SELECT guardian.relay_prune('1 day')") == 0
    db.execute("UPDATE guardian.monitoring_alerts SET resolved_at = now() - '40 days'::interval")
    db.execute("UPDATE guardian.relay_messages SET created_at = now() - '40 days'::interval")
    assert scalar(db, "SELECT guardian.relay_prune()") == 1
    assert scalar(db, "SELECT count(*) FROM guardian.relay_messages") == 0
    assert scalar(db, "SELECT command FROM guardian.jobs WHERE name = 'relay_prune'") == "SELECT guardian.relay_prune()"
