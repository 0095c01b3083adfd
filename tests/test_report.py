"""guardian.report() and guardian.alert_timeseries(): every number of a known alert history."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from support.history import FROM, TO, add_alerts, fill_history
from support.queries import scalar


def report(db: psycopg.Connection, *args: Any) -> dict[str, Any]:
    placeholders = ", ".join(["%s"] * len(args))
    value = scalar(db, f"SELECT guardian.report({placeholders})", args)
    assert isinstance(value, dict)
    return value


@pytest.fixture
def history(db: psycopg.Connection) -> psycopg.Connection:
    return fill_history(db)


def test_totals_and_breakdown_against_the_previous_period(history: psycopg.Connection) -> None:
    r = report(history, FROM, TO)
    assert r["period"]["bucket"] == "day" and r["period"]["time_zone"] == "UTC"
    assert r["totals"] == {
        "alerts": 5,
        "occurrences": 5,
        "previous": 2,
        "change": 3,
        "change_pct": 150.0,
        "by_severity": {
            "CRITICAL": {"alerts": 2, "previous": 1},
            "HIGH": {"alerts": 2, "previous": 0},
            "MEDIUM": {"alerts": 0, "previous": 1},
            "LOW": {"alerts": 1, "previous": 0},
            "INFO": {"alerts": 0, "previous": 0},
        },
    }
    assert [(b["severity"], b["type"], b["alerts"], b["previous"], b["change"]) for b in r["breakdown"]] == [
        ("CRITICAL", "TEST_DATA_CONTAMINATION", 2, 1, 1),
        ("HIGH", "BULK_OPERATION", 1, 0, 1),
        ("HIGH", "STRICT_MODE_REJECTION", 1, 0, 1),
        ("MEDIUM", "ENVIRONMENT_DRIFT", 0, 1, -1),
        ("LOW", "LOGIN_FAILED", 1, 0, 1),
    ]


def test_patterns_behind_contamination_and_activity(history: psycopg.Connection) -> None:
    p = report(history, FROM, TO)["patterns"]
    assert p["contamination_alerts"] == 3 and p["contamination_records"] == 5

    def top(name: str) -> list[tuple[str, int, int]]:
        return [(i["value"], i["alerts"], i["records"]) for i in p[name]]

    assert top("rules") == [("reserved_example_domain", 2, 4), ("test_marker", 1, 1)]
    assert top("tables") == [("dental.patients", 2, 4), ("dental.clinics", 1, 1)]
    assert top("columns") == [("dental.patients.email", 2, 4), ("dental.clinics.first_name", 1, 1)]
    # The rejected write is the application's, not the recorder's that wrote the alert.
    assert top("roles") == [("app", 2, 4), ("ci", 1, 1)]
    assert top("applications") == [("web", 2, 4), ("seed", 1, 1)]
    assert top("client_addresses") == [("10.0.0.5", 2, 4), ("10.0.0.9", 1, 1)]
    assert p["activity_tables"] == [{"value": "dental.invoices", "alerts": 1, "types": {"BULK_OPERATION": 1}}]


def test_response_times_interruptions_and_backlog(history: psycopg.Connection) -> None:
    r = report(history, FROM, TO)["response"]
    assert r["by_severity"]["CRITICAL"] == {
        "alerts": 2,
        "acknowledged": 2,
        "resolved": 2,
        "tta_median_s": 360.0,
        "tta_p90_s": 552.0,
        "ttr_median_s": 2700.0,
        "ttr_p90_s": 3420.0,
    }
    # Closed without an acknowledgement: the close counts as the acknowledgement.
    assert r["by_severity"]["HIGH"] == {
        "alerts": 2,
        "acknowledged": 1,
        "resolved": 1,
        "tta_median_s": 300.0,
        "tta_p90_s": 300.0,
        "ttr_median_s": 300.0,
        "ttr_p90_s": 300.0,
    }
    assert r["by_severity"]["LOW"] == {
        "alerts": 1,
        "acknowledged": 0,
        "resolved": 0,
        "tta_median_s": None,
        "tta_p90_s": None,
        "ttr_median_s": None,
        "ttr_p90_s": None,
    }
    assert r["by_severity"]["INFO"]["alerts"] == 0 and r["by_severity"]["INFO"]["tta_median_s"] is None
    assert r["critical_acknowledged_within_5m"] == {"due": 2, "in_time": 1, "share_pct": 50.0}
    assert r["interruptions"] == {"business_hours": 2, "off_hours": 0, "sleep_hours": 2}
    backlog = r["backlog"]
    assert (backlog["open"], backlog["unacknowledged"]) == (2, 2)
    assert backlog["by_severity"] == {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 0, "LOW": 1, "INFO": 0}
    assert (backlog["oldest_age_s"], backlog["median_age_s"]) == (208800.0, 126000.0)


def test_daily_trends(history: psycopg.Connection) -> None:
    t = report(history, FROM, TO)["trends"]
    assert t["labels"] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert t["total"] == [2, 1, 2]
    assert t["by_severity"] == {
        "CRITICAL": [1, 1, 0],
        "HIGH": [1, 0, 1],
        "MEDIUM": [0, 0, 0],
        "LOW": [0, 0, 1],
        "INFO": [0, 0, 0],
    }
    assert t["by_type"] == {
        "TEST_DATA_CONTAMINATION": [1, 1, 0],
        "BULK_OPERATION": [1, 0, 0],
        "STRICT_MODE_REJECTION": [0, 0, 1],
        "LOGIN_FAILED": [0, 0, 1],
    }
    # r1 counts once (the day it was first found), r2 once, the rejected write once.
    assert t["contamination_records"] == [1, 1, 1]
    assert t["schema_changes"] == [0, 2, 0]


def test_success_metrics_and_delivery(history: psycopg.Connection) -> None:
    r = report(history, FROM, TO)
    assert r["delivery"] == {
        "messages": 3,
        "delivered": 2,
        "retried": 1,
        "dead_lettered": 1,
        "undelivered": 0,
        "by_channel": {
            "slack": {"delivered": 2, "retried": 1, "dead_lettered": 0},
            "email": {"delivered": 0, "retried": 0, "dead_lettered": 1},
        },
    }
    metrics = {m["name"]: (m["value"], m["status"]) for m in r["success_metrics"]}
    assert metrics == {
        "contamination_events": (1, "missed"),  # the false positive does not count
        "critical_response": (50.0, "missed"),
        "false_positive_rate": (33.3, "missed"),  # 1 of 3 with an outcome
        "schema_consistency": (83.33, "missed"),  # drift open 12 h of 72
        "alert_delivery": (1, "missed"),
    }
    assert r["met"] is False


def test_an_empty_period_meets_what_it_can_and_knows_what_it_cannot(db: psycopg.Connection) -> None:
    r = report(db, "2020-01-01 00:00+00", "2020-01-08 00:00+00")
    assert r["totals"]["alerts"] == 0 and r["totals"]["change_pct"] is None
    assert r["breakdown"] == [] and r["patterns"]["rules"] == [] and r["patterns"]["activity_tables"] == []
    assert r["trends"]["total"] == [0] * 7 and r["trends"]["by_type"] == {}
    assert r["response"]["critical_acknowledged_within_5m"] == {"due": 0, "in_time": 0, "share_pct": None}
    assert {m["name"]: m["status"] for m in r["success_metrics"]} == {
        "contamination_events": "met",
        "critical_response": "met",
        "false_positive_rate": "unknown",  # no outcomes: not a pass, not a miss
        "schema_consistency": "unknown",  # the drift check never ran here
        "alert_delivery": "met",
    }
    assert r["met"] is True


def test_a_single_alert_over_a_day_is_drawn_by_the_hour(db: psycopg.Connection) -> None:
    add_alerts(db, [("INFO", "X_EVENT", "2026-03-02 13:30+00", None, None, None, None, {}, {})])
    r = report(db, "2026-03-02 00:00+00", "2026-03-03 00:00+00")
    t = r["trends"]
    assert t["bucket"] == "hour" and len(t["labels"]) == 24 and t["labels"][13] == "2026-03-02 13:00"
    assert t["total"] == [0] * 13 + [1] + [0] * 10
    assert r["response"]["by_severity"]["INFO"]["tta_median_s"] is None
    assert r["totals"]["previous"] == 0 and r["totals"]["change"] == 1


def test_days_follow_the_time_zone_across_daylight_saving(db: psycopg.Connection) -> None:
    # New York moves to summer time on 2026-03-08 at 07:00 UTC.
    add_alerts(
        db,
        [
            ("LOW", "X_EVENT", at, None, None, None, None, {}, {})
            for at in ("2026-03-08 04:30+00", "2026-03-09 03:30+00", "2026-03-09 04:30+00")
        ],
    )
    start, end = "2026-03-07 00:00 America/New_York", "2026-03-10 00:00 America/New_York"
    ny = report(db, start, end, None, "America/New_York")["trends"]
    assert ny["labels"] == ["2026-03-07", "2026-03-08", "2026-03-09"]
    assert ny["starts"] == ["2026-03-07T05:00:00+00:00", "2026-03-08T05:00:00+00:00", "2026-03-09T04:00:00+00:00"]
    assert ny["total"] == [1, 1, 1]
    utc = report(db, start, end, None, "UTC")["trends"]
    assert utc["labels"] == ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]
    assert utc["total"] == [0, 1, 2, 0]


def test_an_environment_narrows_the_report(history: psycopg.Connection) -> None:
    add_alerts(
        history,
        [("HIGH", "BULK_OPERATION", "2026-03-03 12:00+00", None, None, None, "s.t", {}, {})],
        environment="staging",
    )
    assert report(history, FROM, TO)["totals"]["alerts"] == 6
    staging = report(history, FROM, TO, "staging")
    assert staging["totals"]["alerts"] == 1 and staging["patterns"]["contamination_alerts"] == 0
    assert {m["name"]: m["status"] for m in staging["success_metrics"]}["contamination_events"] == "not_applicable"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("2026-03-05", "2026-03-02"), "report period from 2026-03-05 00:00:00+00 to 2026-03-02 00:00:00+00 is empty"),
        (("2026-03-02", "2026-03-02"), "is empty: the start must come before the end"),
        ((None, "2026-03-02"), "a report needs a start and an end (got NULL and"),
        (("2026-03-01", "2026-03-02", "nowhere"), "unknown environment 'nowhere'"),
        (("2026-03-01", "2026-03-02", None, "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_input_is_one_clear_error(db: psycopg.Connection, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(psycopg.errors.DatabaseError) as err:
        placeholders = ", ".join(["%s::timestamptz", "%s::timestamptz", "%s", "%s"][: len(args)])
        db.execute(f"SELECT guardian.report({placeholders})", args)
    assert message in str(err.value)
    assert err.value.diag.message_hint


def test_alert_timeseries_fills_empty_buckets(history: psycopg.Connection) -> None:
    rows = history.execute(
        """SELECT bucket_label, severity, type, alerts
             FROM guardian.alert_timeseries(%s, %s, 'day', p_severity => 'critical')""",
        (FROM, "2026-03-06 00:00+00"),
    ).fetchall()
    assert rows == [
        ("2026-03-02", "CRITICAL", "TEST_DATA_CONTAMINATION", 1),
        ("2026-03-03", "CRITICAL", "TEST_DATA_CONTAMINATION", 1),
        ("2026-03-04", None, None, 0),
        ("2026-03-05", None, None, 0),
    ]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown bucket 'fortnight'"):
        history.execute("SELECT * FROM guardian.alert_timeseries(%s, %s, 'fortnight')", (FROM, TO))


def test_a_reader_may_read_the_report(history: psycopg.Connection, make_role: Any, connect: Any) -> None:
    make_role("team_lead", "guardian_reader")
    lead = connect(history.info.dbname, "team_lead")
    assert scalar(lead, "SELECT (guardian.report(%s, %s) -> 'totals' ->> 'alerts')::int", (FROM, TO)) == 5


def test_outcomes_are_checked_and_a_later_one_corrects_the_first(db: psycopg.Connection) -> None:
    alert = scalar(db, "SELECT guardian.raise_alert('X_EVENT', 'LOW', 'm')")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT guardian.resolve_alert(%s, 'n', 'wrong')", (alert,))
    assert "unknown alert outcome 'wrong'" in str(err.value) and "false_positive" in (err.value.diag.message_hint or "")
    db.execute("SELECT guardian.resolve_alert(%s, 'planned load', 'expected')", (alert,))
    db.execute("SELECT guardian.resolve_alert(%s, NULL, 'confirmed')", (alert,))
    row = db.execute(
        "SELECT outcome, resolution_note FROM guardian.monitoring_alerts WHERE id = %s", (alert,)
    ).fetchone()
    assert row == ("confirmed", "planned load")
    plain = scalar(db, "SELECT guardian.raise_alert('X_EVENT', 'LOW', 'other')")
    db.execute("SELECT guardian.resolve_alert(%s)", (plain,))
    assert scalar(db, "SELECT outcome FROM guardian.monitoring_alerts WHERE id = %s", (plain,)) is None


def test_allowlisting_what_an_alert_flagged_makes_it_a_false_positive(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.people (id int PRIMARY KEY, email text)")
    db.execute("SELECT guardian.watch('public.people')")
    db.execute("INSERT INTO public.people VALUES (1, 'user@tenant-a.test')")
    alert, rule = db.execute(
        "SELECT id, metadata ->> 'rule' FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'"
    ).fetchone()
    other = scalar(
        db,
        "SELECT guardian.raise_alert('TEST_DATA_CONTAMINATION', 'HIGH', 'elsewhere', 'public.other', NULL, %s)",
        (psycopg.types.json.Jsonb({"rule": rule, "columns": ["email"]}),),
    )
    db.execute("SELECT guardian.allow(%s, 'public.people', 'email', p_reason => 'our QA inbox is real')", (rule,))
    rows = dict(
        db.execute(
            "SELECT id, outcome FROM guardian.monitoring_alerts WHERE id = ANY(%s)", ([alert, other],)
        ).fetchall()
    )
    assert rows == {alert: "false_positive", other: None}
