"""Activity windows and rules on watched tables: bulk, rapid, off-hours, findings rate, no WHERE."""

from __future__ import annotations

import psycopg
import pytest
from support.queries import scalar


@pytest.fixture
def orders(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(
        "CREATE TABLE public.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text, total numeric)"
    )
    db.execute("SELECT guardian.watch('public.orders')")
    return db


def insert(db: psycopg.Connection, rows: int, note: str = "ok") -> None:
    db.execute("INSERT INTO public.orders (note, total) SELECT %s, i FROM generate_series(1, %s) AS i", (note, rows))


def alerts(db: psycopg.Connection, alert_type: str) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT severity, occurrences, metadata->>'rule', (metadata->>'rows')::int FROM guardian.monitoring_alerts "
        "WHERE type = %s AND resolved_at IS NULL ORDER BY created_at",
        (alert_type,),
    ).fetchall()


def test_statement_of_more_than_fifty_rows_is_a_bulk_operation(orders: psycopg.Connection) -> None:
    insert(orders, 50)
    assert alerts(orders, "BULK_OPERATION") == []
    insert(orders, 51)
    assert alerts(orders, "BULK_OPERATION") == [("HIGH", 1, "bulk_statement", 51)]


def test_ongoing_bulk_writes_are_one_alert_that_counts(orders: psycopg.Connection) -> None:
    for _ in range(3):
        insert(orders, 60)
    assert alerts(orders, "BULK_OPERATION") == [("HIGH", 3, "bulk_statement", 60)]


def test_per_table_threshold_overrides_the_global_one(orders: psycopg.Connection) -> None:
    orders.execute(
        "INSERT INTO guardian.table_activity_rules (relid, name, threshold) "
        "VALUES ('public.orders', 'bulk_statement', 500)"
    )
    insert(orders, 400)
    assert alerts(orders, "BULK_OPERATION") == []


def test_rollup_counts_rows_per_minute_by_role_and_application(orders: psycopg.Connection) -> None:
    orders.execute("SET application_name = 'billing-worker'")
    insert(orders, 3)
    orders.execute("UPDATE public.orders SET total = 0 WHERE id <= 2")
    orders.execute("DELETE FROM public.orders WHERE id = 3")
    assert scalar(orders, "SELECT guardian.rollup_activity()") == 1
    row = orders.execute(
        "SELECT inserts, updates, deletes, statements, roles, applications FROM guardian.activity_windows"
    ).fetchone()
    assert row == (3, 2, 1, 3, {"postgres": 6}, {"billing-worker": 6})
    assert scalar(orders, "SELECT count(*) FROM guardian.activity_log") == 0


def test_more_than_fifty_inserts_in_a_minute_is_a_bulk_operation(orders: psycopg.Connection) -> None:
    for _ in range(6):
        insert(orders, 9)  # 54 rows, no single statement over the threshold
    orders.execute("SELECT guardian.rollup_activity()")
    assert [a[2] for a in alerts(orders, "BULK_OPERATION")] == ["bulk_minute"]


def test_more_than_ten_rows_a_second_is_rapid_creation(orders: psycopg.Connection) -> None:
    for _ in range(2):
        insert(orders, 5)
    orders.execute("SELECT guardian.rollup_activity()")
    assert alerts(orders, "RAPID_CREATION") == []
    insert(orders, 11)
    orders.execute("SELECT guardian.rollup_activity()")
    assert len(alerts(orders, "RAPID_CREATION")) == 1


def test_off_hours_window_is_in_its_own_time_zone(orders: psycopg.Connection) -> None:
    # A window around the current New York time, which is never the same wall clock as UTC.
    start, end = orders.execute(
        "SELECT to_char(now() AT TIME ZONE 'America/New_York' - interval '1 hour', 'HH24:MI'), "
        "       to_char(now() AT TIME ZONE 'America/New_York' + interval '1 hour', 'HH24:MI')"
    ).fetchone()
    orders.execute(
        "UPDATE guardian.activity_rules SET params = jsonb_build_object('start', %s::text, 'end', %s::text, "
        "'timezone', 'America/New_York') WHERE name = 'off_hours'",
        (start, end),
    )
    insert(orders, 1)
    orders.execute("SELECT guardian.rollup_activity()")
    assert len(alerts(orders, "OFF_HOURS_ACTIVITY")) == 1
    # The same window read as UTC does not contain now (New York is 4-5 hours behind).
    orders.execute(
        "SELECT guardian.resolve_alert(id) FROM guardian.monitoring_alerts WHERE type = 'OFF_HOURS_ACTIVITY'"
    )
    orders.execute(
        "UPDATE guardian.activity_rules SET params = params || '{\"timezone\": \"UTC\"}' WHERE name = 'off_hours'"
    )
    insert(orders, 1)
    orders.execute("SELECT guardian.rollup_activity()")
    assert alerts(orders, "OFF_HOURS_ACTIVITY") == []


def test_more_than_five_findings_an_hour_is_a_suspicious_pattern_rate(orders: psycopg.Connection) -> None:
    orders.execute("INSERT INTO public.orders (note) SELECT 'DO NOT USE - seed ' || i FROM generate_series(1, 5) AS i")
    orders.execute("SELECT guardian.rollup_activity()")
    assert alerts(orders, "SUSPICIOUS_PATTERN_RATE") == []
    orders.execute("INSERT INTO public.orders (note) VALUES ('lorem ipsum')")
    orders.execute("SELECT guardian.rollup_activity()")
    assert [a[0] for a in alerts(orders, "SUSPICIOUS_PATTERN_RATE")] == ["HIGH"]


def test_delete_without_where_is_flagged_and_with_where_is_not(orders: psycopg.Connection) -> None:
    insert(orders, 10)
    orders.execute("DELETE FROM public.orders WHERE id < 5")
    assert alerts(orders, "UNFILTERED_WRITE") == []
    orders.execute("UPDATE public.orders SET note = 'x'")
    orders.execute("/* cleanup */ DELETE FROM public.orders")
    rows = orders.execute(
        "SELECT message FROM guardian.monitoring_alerts WHERE type = 'UNFILTERED_WRITE' ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("DELETE without a WHERE clause changed 6 rows of public.orders",),
        ("UPDATE without a WHERE clause changed 6 rows of public.orders",),
    ]


def test_quiet_conditions_close_their_alert(orders: psycopg.Connection) -> None:
    insert(orders, 60)
    orders.execute(
        "UPDATE guardian.monitoring_alerts SET last_seen_at = now() - interval '1 hour' WHERE type = 'BULK_OPERATION'"
    )
    orders.execute("SELECT guardian.rollup_activity()")
    statement_alerts = [a for a in alerts(orders, "BULK_OPERATION") if a[2] == "bulk_statement"]
    assert statement_alerts == []
    insert(orders, 60)
    assert [a for a in alerts(orders, "BULK_OPERATION") if a[2] == "bulk_statement"] == [
        ("HIGH", 1, "bulk_statement", 60)
    ]


@pytest.mark.parametrize(
    ("statement", "text"),
    [
        (
            "UPDATE guardian.activity_rules SET threshold = -1 WHERE name = 'bulk_statement'",
            "threshold must be a whole number >= 0, not -1",
        ),
        ("UPDATE guardian.activity_rules SET threshold = 2.5 WHERE name = 'bulk_statement'", "not 2.5"),
        (
            "UPDATE guardian.activity_rules SET params = "
            '\'{"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus"}\' WHERE name = \'off_hours\'',
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            'UPDATE guardian.activity_rules SET params = \'{"start": "25:00", "end": "06:00"}\' '
            "WHERE name = 'off_hours'",
            "start and end as HH:MM",
        ),
    ],
)
def test_nonsensical_activity_settings_are_refused(db: psycopg.Connection, statement: str, text: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute(statement)
    assert text in str(err.value)
