"""Predicting contamination from its sources: test tools writing to production (TEST_TOOL_WRITE)
and sources whose writes brought test data before (CONTAMINATION_RISK)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from support.queries import scalar


@pytest.fixture
def clinic(db: psycopg.Connection, dbname: str) -> psycopg.Connection:
    db.execute("CREATE TABLE public.patients (id serial PRIMARY KEY, full_name text, email text)")
    db.execute("SELECT guardian.watch('public.patients')")
    db.execute("SELECT guardian.set_environment('production')")
    return db


def alerts(db: psycopg.Connection, kind: str) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT message, metadata, occurrences FROM guardian.monitoring_alerts WHERE type = %s ORDER BY created_at",
        (kind,),
    ).fetchall()


def write_as(connect: Callable[..., psycopg.Connection], dbname: str, rows: int = 1, **kwargs: object) -> None:
    conn = connect(dbname, **kwargs)
    for i in range(rows):
        conn.execute("INSERT INTO public.patients (full_name, email) VALUES ('Maria Garcia', %s)", (f"m{i}@gmail.com",))


def test_a_test_runner_writing_to_production_raises_test_tool_write_once_a_day(
    clinic: psycopg.Connection, connect: Callable[..., psycopg.Connection], dbname: str
) -> None:
    write_as(connect, dbname, rows=3, application_name="pytest-xdist gw0")

    found = alerts(clinic, "TEST_TOOL_WRITE")
    assert len(found) == 1  # the day's first write; later ones add nothing
    message, metadata, _ = found[0]
    assert message == (
        "a test tool wrote to production: application 'pytest-xdist gw0' (test source test_runner_application) "
        "inserted 1 row(s) of public.patients"
    )
    assert metadata["source"] == "application" and metadata["test_source"] == "test_runner_application"
    assert metadata["first_table"] == "public.patients" and "scan" in metadata["fix"]
    # the values were clean: no contamination alert, the rows are in
    assert alerts(clinic, "TEST_DATA_CONTAMINATION") == []
    assert scalar(clinic, "SELECT count(*) FROM public.patients") == 3


def test_a_seed_role_is_a_test_source_and_other_environments_are_not_watched(
    clinic: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    dbname: str,
    make_role: Callable[..., str],
) -> None:
    role = make_role("ci_runner")
    clinic.execute(
        f"GRANT INSERT ON public.patients TO {role}; GRANT USAGE ON SEQUENCE public.patients_id_seq TO {role}"
    )
    clinic.execute("SELECT guardian.set_environment('staging')")
    write_as(connect, dbname, user=role)
    assert alerts(clinic, "TEST_TOOL_WRITE") == []

    clinic.execute("SELECT guardian.set_environment('production')")
    write_as(connect, dbname, user=role)

    (message, metadata, _) = alerts(clinic, "TEST_TOOL_WRITE")[0]
    assert "role 'ci_runner' (test source test_role)" in message and metadata["value"] == "ci_runner"


def test_an_ordinary_application_writes_without_an_alert(
    clinic: psycopg.Connection, connect: Callable[..., psycopg.Connection], dbname: str
) -> None:
    for name in ("dental-api", "contest-service", "latest-importer", "psql"):
        write_as(connect, dbname, application_name=name)
    assert alerts(clinic, "TEST_TOOL_WRITE") == [] and alerts(clinic, "CONTAMINATION_RISK") == []


def test_a_new_test_source_applies_to_sessions_already_open(
    clinic: psycopg.Connection, connect: Callable[..., psycopg.Connection], dbname: str
) -> None:
    session = connect(dbname, application_name="nightly-sync")
    session.execute("INSERT INTO public.patients (full_name) VALUES ('Ann Lee')")
    assert alerts(clinic, "TEST_TOOL_WRITE") == []

    clinic.execute(
        "INSERT INTO guardian.test_sources (name, source, pattern, description) "
        "VALUES ('sync_job', 'application', '^nightly-sync$', 'the staging sync job, pointed at prod by mistake')"
    )
    session.execute("INSERT INTO public.patients (full_name) VALUES ('Bo Li')")

    assert [m["test_source"] for _, m, _ in alerts(clinic, "TEST_TOOL_WRITE")] == ["sync_job"]


def test_test_sources_reject_bad_patterns_and_networks(clinic: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidRegularExpression, match="test source bad: invalid regular expression"):
        clinic.execute(
            "INSERT INTO guardian.test_sources (name, source, pattern, description) VALUES ('bad', 'role', '(', 'x')"
        )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"'10\.0\.0\.300/8' is not a network") as err:
        clinic.execute(
            "INSERT INTO guardian.test_sources (name, source, pattern, description) "
            "VALUES ('net', 'client', '10.0.0.300/8', 'x')"
        )
    assert "CIDR" in (err.value.diag.message_hint or "")


def test_a_source_that_brought_test_data_raises_contamination_risk_on_its_first_write_of_the_day(
    clinic: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    dbname: str,
    make_role: Callable[..., str],
) -> None:
    importer = make_role("importer")
    clinic.execute(
        f"GRANT INSERT ON public.patients TO {importer}; GRANT USAGE ON SEQUENCE public.patients_id_seq TO {importer}"
    )
    # Its history: two of its last four days of writes brought test data (cleaned), and the
    # application role wrote every day for a month without any.
    for day, contaminated in ((1, True), (2, False), (3, True), (4, False)):
        clinic.execute(
            "INSERT INTO guardian.activity_windows (relid, minute, inserts, statements, roles) "
            "VALUES ('public.patients', date_trunc('day', now()) - make_interval(days => %s) + interval '9 hours', "
            "10, 10, jsonb_build_object('importer', 10, 'app', 5))",
            (day,),
        )
        if contaminated:
            alert = scalar(
                clinic,
                "INSERT INTO guardian.monitoring_alerts (type, severity, message, table_name, context, created_at, "
                "resolved_at, outcome) VALUES ('TEST_DATA_CONTAMINATION', 'HIGH', 'test data', 'patients', "
                "'{\"session_user\": \"importer\"}', now() - make_interval(days => %s), now(), 'cleaned') RETURNING id",
                (day,),
            )
            assert alert
    for day in range(5, 31):
        clinic.execute(
            "INSERT INTO guardian.activity_windows (relid, minute, inserts, statements, roles) "
            "VALUES ('public.patients', date_trunc('day', now()) - make_interval(days => %s), 5, 5, '{\"app\": 5}')",
            (day,),
        )

    assert scalar(clinic, "SELECT guardian.score_sources()") == 1

    risk = clinic.execute(
        "SELECT source, value, score::float, contaminated_days, write_days FROM guardian.source_risk"
    ).fetchall()
    assert risk == [("role", "importer", pytest.approx(2.1 / 5.1, abs=1e-4), 2, 4)]
    write_as(connect, dbname, rows=2, user=importer)
    write_as(connect, dbname, application_name="dental-api")

    (message, metadata, _) = alerts(clinic, "CONTAMINATION_RISK")[0]
    assert len(alerts(clinic, "CONTAMINATION_RISK")) == 1
    assert message.startswith("role 'importer', whose writes brought test data on 2 of 4 days, inserted 1 row(s)")
    assert metadata["contaminated_days"] == 2 and metadata["write_days"] == 4 and len(metadata["alert_ids"]) == 2
    # a false alarm is not evidence: resolving the alerts as false positives clears the risk
    clinic.execute(
        "UPDATE guardian.monitoring_alerts SET outcome = 'false_positive' WHERE type = 'TEST_DATA_CONTAMINATION'"
    )
    assert scalar(clinic, "SELECT guardian.score_sources()") == 0
