"""Watching tables: warn, strict and off modes, every write path, allowlists, rules, scans."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import psycopg
import pytest
from pg_guardian.demo import package_sql
from support.queries import scalar


@pytest.fixture
def dental(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(package_sql("demo_schema.sql"))
    db.execute(package_sql("demo_data.sql"))
    for table in ("dental.clinics", "dental.patients"):
        db.execute("SELECT guardian.watch(%s)", (table,))
    db.execute("SELECT guardian.set_environment('production')")
    return db


def clinic_id(db: psycopg.Connection) -> str:
    return str(scalar(db, "SELECT id FROM dental.clinics ORDER BY name LIMIT 1"))


def contamination_alerts(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT metadata->>'rule', severity, table_name, record_id, (metadata->>'affected_records')::int "
        "FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION' ORDER BY 1"
    ).fetchall()


def test_watch_maps_columns_to_kinds(dental: psycopg.Connection) -> None:
    rows = dental.execute("SELECT * FROM guardian.watch('dental.patients')").fetchall()
    assert ("email", "email", "auto") in rows and ("first_name", "person_name", "auto") in rows
    assert ("phone", "phone", "auto") in rows and ("clinic_id", "identifier", "auto") in rows
    assert not any(r[0] in ("balance", "allergies", "date_of_birth") for r in rows)


def test_warn_mode_lets_the_write_through_and_raises_an_alert(dental: psycopg.Connection) -> None:
    new_id = scalar(
        dental,
        "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) "
        "VALUES (%s, 'Ana', 'Lopez', 'user@tenant-a.test') RETURNING id",
        (clinic_id(dental),),
    )
    assert scalar(dental, "SELECT count(*) FROM dental.patients WHERE id = %s", (new_id,)) == 1
    alert = dental.execute(
        "SELECT severity, type, table_name, record_id, message, metadata->>'rule', context->>'application_name' "
        "FROM guardian.monitoring_alerts WHERE metadata->>'rule' = 'reserved_test_tld'"
    ).fetchone()
    assert alert is not None
    assert alert[:4] == ("CRITICAL", "TEST_DATA_CONTAMINATION", "dental.patients", str(new_id))
    assert "u***@tenant-a.test" in alert[4] and "dental.patients.email" in alert[4]


def test_strict_mode_rejects_with_documented_sqlstate_and_hint(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error) as err:
        dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Test Clinic', 'front@greatsmiles.com')")
    assert err.value.sqlstate == "GD001"
    assert "strict mode rejected test data in dental.clinics.name (rule test_organization)" in str(err.value)
    hint = err.value.diag.message_hint or ""
    assert "guardian.allow('test_organization', 'dental.clinics', 'name', p_value => '<the rejected value>'" in hint
    # the value itself never goes to the client or the server log in a HINT
    assert "Test Clinic" not in hint
    assert scalar(dental, "SELECT count(*) FROM dental.clinics WHERE name = 'Test Clinic'") == 0


def test_strict_rejection_alert_survives_the_rollback(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error), dental.transaction():
        dental.execute("INSERT INTO dental.clinics (name) VALUES ('Harbour Annex')")
        dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Nice Place', 'qa+1@mailinator.com')")
    assert scalar(dental, "SELECT count(*) FROM dental.clinics WHERE name IN ('Harbour Annex', 'Nice Place')") == 0
    row = dental.execute(
        "SELECT severity, table_name, metadata->>'rule', metadata->>'column', metadata->'session'->>'backend_pid' "
        "FROM guardian.monitoring_alerts WHERE type = 'STRICT_MODE_REJECTION'"
    ).fetchone()
    assert row is not None
    assert row[1:4] == ("dental.clinics", "disposable_mail_domain", "email")
    assert int(row[4]) == dental.info.backend_pid


def test_repeated_rejections_are_one_alert_with_a_count(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('strict')")
    for _ in range(3):
        with pytest.raises(psycopg.Error):
            dental.execute("INSERT INTO dental.clinics (name) VALUES ('Fake Clinic')")
    assert dental.execute(
        "SELECT count(*), max(occurrences) FROM guardian.monitoring_alerts WHERE type = 'STRICT_MODE_REJECTION'"
    ).fetchone() == (1, 3)


def test_off_mode_runs_nothing(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('off')")
    assert scalar(dental, "SELECT count(*) FROM guardian._prefilter_spec('dental.clinics')") == 0
    dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Test Clinic', 'a@b.test')")
    assert scalar(dental, "SELECT count(*) FROM guardian.findings") == 0
    assert contamination_alerts(dental) == []


def test_table_mode_overrides_the_environment(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('warn')")
    dental.execute("SELECT guardian.set_table_mode('dental.clinics', 'strict')")
    with pytest.raises(psycopg.Error):
        dental.execute("INSERT INTO dental.clinics (name) VALUES ('Test Clinic')")
    dental.execute(
        "INSERT INTO dental.patients (clinic_id, first_name, last_name) VALUES (%s, 'Test', 'Patient')",
        (clinic_id(dental),),
    )
    assert [r[0] for r in contamination_alerts(dental)] == [
        "placeholder_full_name",
        "placeholder_name_word",
        "test_marker",
    ]


def test_update_checks_only_changed_columns(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('off')")
    pid = scalar(
        dental,
        "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) "
        "VALUES (%s, 'Ana', 'Lopez', 'old@example.com') RETURNING id",
        (clinic_id(dental),),
    )
    dental.execute("SELECT guardian.set_mode('warn')")
    dental.execute("UPDATE dental.patients SET balance = 10, last_name = 'Lopes' WHERE id = %s", (pid,))
    assert scalar(dental, "SELECT count(*) FROM guardian.findings") == 0
    dental.execute("UPDATE dental.patients SET email = 'qa.7@gmail.com' WHERE id = %s", (pid,))
    assert dental.execute("SELECT column_name, rule, operation FROM guardian.findings").fetchall() == [
        ("email", "qa_local_part", "UPDATE")
    ]


def test_copy_is_checked(dental: psycopg.Connection) -> None:
    rows = "Greatest Dental Two\tfront@gds2.com\nTenant B Practice\tadmin@gds3.com\n"
    with dental.cursor().copy("COPY dental.clinics (name, email) FROM STDIN") as copy:
        copy.write(rows)
    assert [r[0] for r in contamination_alerts(dental)] == ["tenant_fixture"]


def test_multi_row_statement_gives_one_alert_per_rule_with_every_record_findable(dental: psycopg.Connection) -> None:
    dental.execute(
        "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) "
        "SELECT %s, 'Pat', 'Lee' || i, 'pat' || i || '@example.com' FROM generate_series(1, 2000) AS i",
        (clinic_id(dental),),
    )
    alerts = contamination_alerts(dental)
    assert len(alerts) == 1
    assert alerts[0][0] == "reserved_example_domain" and alerts[0][4] == 2000
    assert (
        scalar(
            dental,
            "SELECT count(DISTINCT f.record_id) FROM guardian.findings AS f "
            "JOIN dental.patients AS p ON p.id::text = f.record_id",
        )
        == 2000
    )


def test_partitioned_table_is_watched_through_its_root(db: psycopg.Connection) -> None:
    db.execute(
        "CREATE TABLE public.visits (id bigint, region text, email text, PRIMARY KEY (id, region)) "
        "PARTITION BY LIST (region)"
    )
    db.execute("CREATE TABLE public.visits_eu PARTITION OF public.visits FOR VALUES IN ('eu')")
    db.execute("CREATE TABLE public.visits_us PARTITION OF public.visits FOR VALUES IN ('us')")
    db.execute("SELECT guardian.watch('public.visits')")
    db.execute("INSERT INTO public.visits VALUES (1, 'eu', 'a@example.com'), (2, 'us', 'b@x.test')")
    db.execute("INSERT INTO public.visits_us VALUES (3, 'us', 'qa.1@gmail.com')")
    rows = db.execute(
        "SELECT record_id, rule FROM guardian.findings WHERE relid = 'public.visits'::regclass ORDER BY record_id, rule"
    ).fetchall()
    assert rows == [("(1,eu)", "reserved_example_domain"), ("(2,us)", "reserved_test_tld"), ("(3,us)", "qa_local_part")]
    assert scalar(db, "SELECT count(*) FROM guardian.findings WHERE alert_id IS NULL") == 0
    with pytest.raises(psycopg.errors.DuplicateObject) as err:
        db.execute("SELECT guardian.watch('public.visits_eu')")
    assert "already watched" in str(err.value)


def test_table_without_primary_key_is_watched_and_says_so(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.leads (name text, email text)")
    notices: list[str] = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    db.execute("SELECT guardian.watch('public.leads')")
    assert any("has no primary key" in n for n in notices)
    db.execute("INSERT INTO public.leads VALUES ('Test Clinic', 'x@example.org')")
    ids = {r[0] for r in db.execute("SELECT record_id FROM guardian.findings").fetchall()}
    assert len(ids) == 1 and next(iter(ids)).startswith("row:")


def test_allowlist_by_value_column_table_and_rule(dental: psycopg.Connection) -> None:
    cid = clinic_id(dental)
    dental.execute(
        "SELECT guardian.allow('placeholder_full_name', 'dental.patients', NULL, 'John Doe', "
        "p_reason => 'real patient')"
    )
    dental.execute("INSERT INTO dental.patients (clinic_id, first_name, last_name) VALUES (%s, 'John', 'Doe')", (cid,))
    dental.execute("SELECT guardian.allow(NULL, 'dental.patients', 'email', p_reason => 'legacy import column')")
    dental.execute(
        "INSERT INTO dental.patients (clinic_id, first_name, last_name, email) VALUES (%s, 'A', 'B', 'a@x.test')",
        (cid,),
    )
    dental.execute(
        "SELECT guardian.allow('nanp_fictional_phone', p_reason => 'our switchboard', "
        "p_expires_at => now() - interval '1 day')"
    )
    dental.execute(
        "INSERT INTO dental.patients (clinic_id, first_name, last_name, phone) VALUES (%s, 'C', 'D', '(415) 555-0123')",
        (cid,),
    )
    assert [r[0] for r in contamination_alerts(dental)] == ["nanp_fictional_phone"]


def test_allowlist_rejects_unknown_rule_and_missing_reason(dental: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown rule 'nope'"):
        dental.execute("SELECT guardian.allow('nope', p_reason => 'x')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="needs a reason"):
        dental.execute("SELECT guardian.allow('keyboard_mash', 'dental.patients')")
    with pytest.raises(psycopg.errors.UndefinedColumn, match="has no column nope"):
        dental.execute("SELECT guardian.allow('keyboard_mash', 'dental.patients', 'nope', p_reason => 'x')")


def test_a_new_rule_applies_to_the_next_write(dental: psycopg.Connection) -> None:
    dental.execute(
        "INSERT INTO guardian.rules "
        "(name, kinds, match_type, terms, severity, description, example_match, example_nonmatch) "
        "VALUES ('partner_domain', '{email}', 'domains', '{partners.kamdental.com}', 'HIGH', 'partner sandboxes', "
        "'dr@partners.kamdental.com', 'dr@kamdental.com')"
    )
    dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Real', 'ops@partners.kamdental.com')")
    assert [r[0] for r in contamination_alerts(dental)] == ["partner_domain"]
    dental.execute("UPDATE guardian.rules SET enabled = false WHERE name = 'partner_domain'")
    dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Real 2', 'ops2@partners.kamdental.com')")
    assert contamination_alerts(dental)[0][4] == 1


@pytest.mark.parametrize(
    ("columns", "error", "text"),
    [
        (
            "'{email}', 'regex', '(unclosed', NULL",
            psycopg.errors.InvalidRegularExpression,
            "invalid regular expression '(unclosed'",
        ),
        ("'{emails}', 'regex', 'x', NULL", psycopg.errors.InvalidParameterValue, "unknown kind 'emails'"),
        ("'{email}', 'regex', NULL, NULL", psycopg.errors.InvalidParameterValue, "needs a pattern"),
        ("'{email}', 'words', NULL, NULL", psycopg.errors.InvalidParameterValue, "needs terms"),
        ("'{email}', 'sounds_like', 'x', NULL", psycopg.errors.CheckViolation, "rules_match_type_chk"),
    ],
)
def test_invalid_rule_is_rejected_on_insert(db: psycopg.Connection, columns: str, error: type, text: str) -> None:
    with pytest.raises(error) as err:
        db.execute(
            f"INSERT INTO guardian.rules (name, kinds, match_type, pattern, terms, description) "
            f"VALUES ('bad', {columns}, 'x')"
        )
    assert text in str(err.value)


def test_rule_whose_example_contradicts_it_is_rejected(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"example_nonmatch 'tester@x\.com' matches"):
        db.execute(
            "INSERT INTO guardian.rules "
            "(name, kinds, match_type, pattern, description, example_match, example_nonmatch) "
            "VALUES ('naive', '{email}', 'regex', 'test', 'too broad', 'test@x.com', 'tester@x.com')"
        )


@pytest.mark.parametrize(
    ("target", "error", "text"),
    [
        ("'public.nope'", psycopg.errors.UndefinedTable, 'relation "public.nope" does not exist'),
        ("'public.v'", psycopg.errors.WrongObjectType, "public.v is a view"),
        ("'guardian.rules'", psycopg.errors.InsufficientPrivilege, "cannot be watched"),
    ],
)
def test_watch_refuses_what_it_cannot_watch(db: psycopg.Connection, target: str, error: type, text: str) -> None:
    db.execute("CREATE VIEW public.v AS SELECT 1 AS x")
    with pytest.raises(error) as err:
        db.execute(f"SELECT guardian.watch({target})")
    assert text in str(err.value)


def test_watch_rejects_unknown_kind_and_column_overrides(dental: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown kind 'mail' for column email"):
        dental.execute("""SELECT guardian.watch('dental.clinics', '{"email": "mail"}')""")
    with pytest.raises(psycopg.errors.UndefinedColumn, match="has no column mail"):
        dental.execute("""SELECT guardian.watch('dental.clinics', '{"mail": "email"}')""")


def test_watch_is_idempotent(dental: psycopg.Connection) -> None:
    before = dental.execute(
        "SELECT oid FROM pg_trigger WHERE tgrelid = 'dental.clinics'::regclass ORDER BY oid"
    ).fetchall()
    dental.execute("SELECT guardian.watch('dental.clinics')")
    after = dental.execute(
        "SELECT oid FROM pg_trigger WHERE tgrelid = 'dental.clinics'::regclass ORDER BY oid"
    ).fetchall()
    assert before == after
    dental.execute("""SELECT guardian.watch('dental.clinics', '{"phone": null}')""")
    assert scalar(
        dental, "SELECT column_names FROM guardian.watched_tables WHERE relid = 'dental.clinics'::regclass"
    ) == ["id", "name", "email"]


def test_unwatch_removes_the_triggers(dental: psycopg.Connection) -> None:
    assert scalar(dental, "SELECT guardian.unwatch('dental.clinics')") is True
    assert (
        scalar(
            dental,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'dental.clinics'::regclass AND tgname LIKE 'guardian%'",
        )
        == 0
    )
    dental.execute("INSERT INTO dental.clinics (name) VALUES ('Test Clinic')")
    assert scalar(dental, "SELECT count(*) FROM guardian.findings") == 0
    assert scalar(dental, "SELECT guardian.unwatch('dental.clinics')") is False


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        " ",
        "x" * 1_000_000,
        "Zoë 🦷 Ñúñez",
        "ｆｕｌｌｗｉｄｔｈ＠ｍａｉｌ．ｃｏｍ",
        "a\x01b\x7fc",
        "\\xff\\xfe",
    ],
)
def test_odd_values_never_break_the_write(dental: psycopg.Connection, value: str | None) -> None:
    dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Odd', %s)", (value,))
    assert scalar(dental, "SELECT count(*) FROM dental.clinics WHERE name = 'Odd'") == 1


def test_invalid_utf8_from_bytea_is_refused_by_postgres_not_by_the_guardian(dental: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
        dental.execute("INSERT INTO dental.clinics (name) VALUES (convert_from('\\xff'::bytea, 'UTF8'))")
    dental.execute("INSERT INTO dental.clinics (name) VALUES (encode('\\xfffe'::bytea, 'escape'))")
    assert scalar(dental, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'JOB_FAILED'") == 0


def test_fullwidth_test_address_does_not_slip_through(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error, match="rule reserved_example_domain"):
        dental.execute("INSERT INTO dental.clinics (name, email) VALUES ('Odd', 'ｔｅｓｔ＠ｅｘａｍｐｌｅ．ｃｏｍ')")


def test_scan_finds_rows_already_there_in_any_mode(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('off')")
    dental.execute(
        "INSERT INTO dental.clinics (id, name, email) VALUES "
        "('550e8400-e29b-41d4-a716-446655440000', 'Test Clinic', 'user@tenant-a.test')"
    )
    rows = dental.execute("SELECT * FROM guardian.scan('dental.clinics') ORDER BY 3").fetchall()
    assert [r[2] for r in rows] == ["example_uuid", "reserved_test_tld", "tenant_fixture", "test_organization"]
    assert {r[0] for r in rows} == {"550e8400-e29b-41d4-a716-446655440000"}
    assert rows[3][1:] == ("name", "test_organization", "CRITICAL", "Test C*****")
    assert contamination_alerts(dental) == []


def test_scan_can_record_findings_as_alerts(dental: psycopg.Connection) -> None:
    dental.execute("SELECT guardian.set_mode('off')")
    dental.execute("INSERT INTO dental.clinics (name) SELECT 'Demo Dental ' || i FROM generate_series(1, 3) AS i")
    dental.execute("SELECT count(*) FROM guardian.scan('dental.clinics', p_record => true)")
    assert contamination_alerts(dental) == [
        ("test_organization", "CRITICAL", "dental.clinics", contamination_alerts(dental)[0][3], 3)
    ]


def test_scan_of_an_unwatched_table_maps_columns_itself(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.users (id int PRIMARY KEY, email text, full_name text)")
    db.execute("INSERT INTO public.users VALUES (1, 'ok@gmail.com', 'Ana Lopez'), (2, 'a@b.example', 'Test User')")
    rows = db.execute("SELECT record_id, rule FROM guardian.scan('public.users') ORDER BY 2").fetchall()
    assert rows == [("2", "placeholder_full_name"), ("2", "placeholder_name_word"), ("2", "reserved_test_tld")]


def test_scan_does_not_block_writers(dental: psycopg.Connection, connect: Callable[..., psycopg.Connection]) -> None:
    scanner = connect(dental.info.dbname)
    with scanner.transaction():
        scanner.execute("SELECT count(*) FROM guardian.scan('dental.patients')")
        writer = connect(dental.info.dbname, options="-c lock_timeout=2000")
        writer.execute("INSERT INTO dental.clinics (name) VALUES ('Concurrent Clinic')")


def test_check_payload_uses_the_same_rules(db: psycopg.Connection) -> None:
    payload = json.dumps(
        {
            "clinic": {"name": "Test Clinic", "email": "ops@greatsmiles.com"},
            "patients": [{"email": "user@tenant-a.test", "first_name": "Celeste", "last_name": "Testa"}],
            "id": "550e8400-e29b-41d4-a716-446655440000",
        }
    )
    rows = db.execute(
        "SELECT path, kind, rule FROM guardian.check_payload(%s::jsonb) ORDER BY 1, 3", (payload,)
    ).fetchall()
    assert rows == [
        ("$.clinic.name", "organization", "test_organization"),
        ("$.id", "identifier", "example_uuid"),
        ("$.patients[0].email", "email", "reserved_test_tld"),
        ("$.patients[0].email", "email", "tenant_fixture"),
    ]


def test_application_role_may_check_payloads_but_not_see_rules(
    db: psycopg.Connection, make_role: Callable[..., str], connect: Callable[..., psycopg.Connection]
) -> None:
    make_role("app_checker")
    app = connect(db.info.dbname, "app_checker")
    assert app.execute('SELECT count(*) FROM guardian.check_payload(\'{"email": "x@y.test"}\')').fetchone() == (1,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT * FROM guardian.rules")


def test_copy_stream_of_many_rows_is_grouped(dental: psycopg.Connection) -> None:
    buf = io.StringIO()
    for i in range(500):
        buf.write(f"Clinic Smile {i}\tqa.{i}@mailinator.com\n")
    with dental.cursor().copy("COPY dental.clinics (name, email) FROM STDIN") as copy:
        copy.write(buf.getvalue())
    alerts = contamination_alerts(dental)
    assert [(a[0], a[4]) for a in alerts] == [("disposable_mail_domain", 500), ("qa_local_part", 500)]
