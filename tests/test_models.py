"""Column models: trained from a column's own data, scoring values (SUSPECTED_TEST_DATA)."""

from __future__ import annotations

import psycopg
import pytest
from support.queries import scalar

FIRST = ["maria", "james", "olivia", "liam", "emma", "noah", "ava", "lucas", "mia", "ethan", "sofia", "mason"]
LAST = ["garcia", "smith", "jones", "brown", "miller", "davis", "wilson", "moore", "taylor", "anderson", "thomas"]


@pytest.fixture
def people(db: psycopg.Connection) -> psycopg.Connection:
    """1,000 ordinary patients: names and e-mails of one pattern."""
    db.execute("CREATE TABLE public.people (id integer PRIMARY KEY, full_name text, email text)")
    db.execute(
        """INSERT INTO public.people
           SELECT i, initcap(f) || ' ' || initcap(l), f || '.' || l || (i %% 90 + 10) || '@gmail.com'
             FROM generate_series(1, 1000) AS i,
                  LATERAL (SELECT (%s::text[])[1 + i %% 12] AS f, (%s::text[])[1 + (i / 12) %% 11] AS l) AS n""",
        (FIRST, LAST),
    )
    db.execute("SELECT guardian.watch('public.people')")
    return db


def test_training_keeps_an_inspectable_model_of_each_column(people: psycopg.Connection) -> None:
    trained = people.execute(
        "SELECT column_name, kind, rows_seen, grams, cutoff_nll > median_nll "
        "FROM guardian.train_column_models('public.people')"
    ).fetchall()

    assert [(r[0], r[1], r[2], r[4]) for r in trained] == [
        ("full_name", "person_name", 1000, True),
        ("email", "email", 1000, True),
    ]
    assert all(r[3] > 50 for r in trained)
    # the model is plain data: the most frequent trigrams and shapes of the column
    assert (
        scalar(
            people,
            "SELECT n FROM guardian.column_model_grams WHERE relid = 'public.people'::regclass "
            "AND column_name = 'email' AND gram = 'com'",
        )
        == 1000
    )
    assert (
        scalar(people, "SELECT shapes ->> 'a.a9@a.a' FROM guardian.column_models WHERE column_name = 'email'") == "1000"
    )


def test_scoring_a_value_round_trips_through_the_model(people: psycopg.Connection) -> None:
    people.execute("SELECT * FROM guardian.train_column_models('public.people')")

    usual = people.execute(
        "SELECT nll < cutoff_nll, shape_share, suspected FROM guardian.score_value('public.people', 'email', "
        "'olivia.brown42@gmail.com')"
    ).fetchone()
    odd = people.execute(
        "SELECT nll > cutoff_nll, shape_share, suspected, severity FROM guardian.score_value('public.people', "
        "'email', 'zz_q-0000-xk@x9q.zz')"
    ).fetchone()

    assert usual == (True, 1.0, False)
    assert odd == (True, 0.0, True, "LOW")


def test_scan_finds_outliers_no_rule_finds_and_records_them(people: psycopg.Connection) -> None:
    people.execute("SELECT * FROM guardian.train_column_models('public.people')")
    people.execute(
        "INSERT INTO public.people VALUES (2001, 'Xq Zzvk-77', 'zz_q-0000-xk@x9q.zz'), "
        "(2002, 'Test Patient', 'test@example.com'), (2003, 'Noah Smith', 'noah.smith55@gmail.com')"
    )

    found = people.execute(
        "SELECT record_id, column_name, severity FROM guardian.scan_suspects('public.people', p_record => true)"
    ).fetchall()

    # the outlier, in both columns; the rows rules flag are not repeated here; the usual row passes
    assert sorted(found) == [("2001", "email", "LOW"), ("2001", "full_name", "LOW")]
    alert = people.execute(
        "SELECT severity, record_id, metadata ->> 'column', metadata ->> 'fix' FROM guardian.monitoring_alerts "
        "WHERE type = 'SUSPECTED_TEST_DATA' ORDER BY metadata ->> 'column' LIMIT 1"
    ).fetchone()
    assert alert is not None and alert[:3] == ("LOW", "2001", "email") and "label_records" in alert[3]


def test_the_job_looks_at_new_rows_only(people: psycopg.Connection) -> None:
    people.execute("SELECT * FROM guardian.train_column_models('public.people')")
    people.execute("INSERT INTO public.people VALUES (2001, 'Xq Zzvk-77', 'zz_q-0000-xk@x9q.zz')")
    assert scalar(people, "SELECT guardian.run_suspect_scan()") == "2 suspect value(s) in 1 table(s)"
    assert scalar(people, "SELECT guardian.run_suspect_scan()") == "0 suspect value(s) in 1 table(s)"

    people.execute("INSERT INTO public.people VALUES (2002, 'Vv Qqq 0', 'qq-9-9-9@zz.zz9')")

    assert scalar(people, "SELECT guardian.run_suspect_scan()") == "2 suspect value(s) in 1 table(s)"
    assert scalar(people, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'SUSPECTED_TEST_DATA'") == 4


def test_labelled_test_values_are_left_out_of_training(people: psycopg.Connection) -> None:
    people.execute(
        "INSERT INTO public.people SELECT 3000 + i, 'Kk Bot ' || i, 'kkbot-' || i || '@zz.zz' "
        "FROM generate_series(1, 30) AS i"
    )
    people.execute(
        "SELECT guardian.label_records('public.people', "
        "ARRAY(SELECT (3000 + i)::text FROM generate_series(1, 30) AS i), 'test')"
    )

    people.execute("SELECT * FROM guardian.train_column_models('public.people')")

    assert scalar(people, "SELECT rows_seen FROM guardian.column_models WHERE column_name = 'email'") == 1000
    assert scalar(people, "SELECT gram_total FROM guardian.test_models WHERE kind = 'email'") > 0


def test_models_refuse_what_they_cannot_do(people: psycopg.Connection) -> None:
    people.execute("CREATE TABLE public.other (id int PRIMARY KEY, email text)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"public\.other is not watched"):
        people.execute("SELECT * FROM guardian.train_column_models('public.other')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"public\.other is not watched"):
        people.execute("SELECT * FROM guardian.scan_suspects('public.other')")
    with pytest.raises(psycopg.errors.UndefinedObject, match=r"no model of public\.people\.email") as err:
        people.execute("SELECT * FROM guardian.score_value('public.people', 'email', 'x@y.z')")
    assert "train_column_models" in (err.value.diag.message_hint or "")
