"""Learned contamination detection: labels, pattern induction, accepting and dismissing suggestions."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import learning, response
from pg_guardian.cli import main
from support.queries import scalar
from support.response import TEST_CLINIC, contamination_alert, load_dental, seed_test_clinic

REAL_EMAILS = [
    "maria.garcia@gmail.com",
    "sam.tester@outlook.com",  # a real person called Tester: the hard negative
    "liam.jones@brightsmiles.com",
    "olivia.smith@yahoo.com",
    "noah.brown7@icloud.com",
    "emma.wilson@gmail.com",
]


@pytest.fixture
def people(db: psycopg.Connection) -> psycopg.Connection:
    """A watched table of real people and a few fixture rows no default rule knows."""
    db.execute(
        "CREATE TABLE public.people (id integer PRIMARY KEY, full_name text, email text, phone text, notes text)"
    )
    rows: list[tuple[int, str, str, str | None, str | None]] = [
        (i + 1, e.split("@")[0].replace(".", " ").title(), e, f"+1 628 301 44{i:02d}", "allergic to latex")
        for i, e in enumerate(REAL_EMAILS)
    ]
    for i in range(1, 9):  # fixture rows: a seeding script's numbered users at a fixture domain
        rows.append((100 + i, "Maya Ortiz", f"synth{i:04d}@acme-fixtures.io", f"+1 415 200 01{i:02d}", None))
    for i in range(1, 4):  # and a QA runner's numbered testers
        rows.append((200 + i, "Ravi Patel", f"tester{i}@brightsmiles.com", f"+1 628 555 33{i:02d}", None))
    with db.cursor() as cur:
        cur.executemany("INSERT INTO public.people VALUES (%s, %s, %s, %s, %s)", rows)
    db.execute("SELECT guardian.watch('public.people')")
    return db


def label(db: psycopg.Connection, ids: list[int], what: str) -> int:
    return int(scalar(db, "SELECT guardian.label_records('public.people', %s, %s)", ([str(i) for i in ids], what)))


def suggestions(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT suggestion_id, column_name, match_type, matcher, examples, matches_now, est_precision "
        "FROM guardian.suggest_rules('public.people')"
    ).fetchall()


def test_labels_keep_normalised_values_and_mask_free_text(people: psycopg.Connection) -> None:
    assert label(people, [101], "test") == 1
    rows = dict(
        (r[0], r[1:])
        for r in people.execute(
            "SELECT column_name, kind, label, value, sample FROM guardian.labels WHERE record_id = '101'"
        ).fetchall()
    )
    assert rows["email"] == ("email", "test", "synth0001@acme-fixtures.io", "s********@acme-fixtures.io")
    assert rows["full_name"][:3] == ("person_name", "test", "maya ortiz")
    assert "notes" not in rows  # NULL values are not labels

    label(people, [1], "real")
    note = people.execute("SELECT value, sample FROM guardian.labels WHERE record_id = '1' AND column_name = 'notes'")
    assert note.fetchone() == (None, "a******* t* l****")  # free text is redacted: nothing learned from it


def test_relabelling_a_record_replaces_its_label(people: psycopg.Connection) -> None:
    label(people, [2], "test")
    label(people, [2], "real")
    assert people.execute("SELECT DISTINCT label FROM guardian.labels WHERE record_id = '2'").fetchall() == [("real",)]


def test_label_records_rejects_an_unknown_label(people: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown label 'fixture'") as err:
        label(people, [101], "fixture")
    assert "'test'" in (err.value.diag.message_hint or "")


def test_label_records_names_ids_that_are_not_rows_and_labels_nothing(people: psycopg.Connection) -> None:
    with pytest.raises(
        psycopg.errors.NoDataFound, match=r"2 of 3 record ids are not rows of public.people: '7777', '9999'"
    ):
        label(people, [101, 7777, 9999], "test")
    assert scalar(people, "SELECT count(*) FROM guardian.labels") == 0
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no record ids given"):
        people.execute("SELECT guardian.label_records('public.people', '{}', 'test')")
    people.execute("CREATE TABLE public.uuids (id uuid PRIMARY KEY, email text)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not a valid uuid"):
        people.execute("SELECT guardian.label_records('public.uuids', ARRAY['42'], 'test')")


def test_induction_generalises_digit_runs_and_domains(people: psycopg.Connection) -> None:
    label(people, [101, 102, 103], "test")
    label(people, [1, 2, 3, 4, 5, 6], "real")

    found = {(r[1], r[2], r[3]): r for r in suggestions(people)}

    shape = found[("email", "regex", "^synth[0-9]+@")]
    domain = found[("email", "domains", r"@([^@]*\.)?(acme\-fixtures\.io)[.>]*$")]
    phone = next(r for r in found.values() if r[1] == "phone")
    assert phone[2] == "digits" and str(phone[3]).startswith("415200")
    for suggestion in (shape, domain, phone):
        assert suggestion[5] == 8  # every seeded row matches now, labelled or not
        assert suggestion[6] >= 0.99
    assert set(shape[4]) <= {f"synth{i:04d}@acme-fixtures.io" for i in (1, 2, 3)}


def test_a_hard_negative_keeps_the_rule_from_over_generalising(people: psycopg.Connection) -> None:
    label(people, [201, 202, 203], "test")
    label(people, [2], "real")  # sam.tester@outlook.com

    emails = [r for r in suggestions(people) if r[1] == "email"]

    confident = [r for r in emails if r[6] >= 0.99]
    assert ("regex", "^tester[0-9]+@") in [(r[2], r[3]) for r in confident]
    # the word "tester" anywhere in the local part would flag Sam Tester
    token = [r for r in emails if r[2] == "regex" and "tester([" in str(r[3])]
    assert all(r[6] < 0.99 for r in token)
    for r in confident:
        assert not scalar(people, "SELECT guardian._rule_matches(%s, %s, NULL, 'sam.tester@outlook.com')", (r[2], r[3]))


def test_without_real_labels_unexplained_matches_lower_the_estimate(people: psycopg.Connection) -> None:
    # Only test labels: every match beyond them could be real, so a rule matching five more
    # rows than were labelled is not trusted, and one matching only the labelled rows is.
    label(people, [101, 102, 103], "test")
    assert not [r for r in suggestions(people) if r[1] == "email"]  # estimates under 0.5 are not shown
    label(people, [104, 105, 106, 107, 108], "test")
    shape = {(r[2], r[3]): r for r in suggestions(people)}[("regex", "^synth[0-9]+@")]
    assert shape[6] >= 0.99


def test_accepting_a_suggestion_makes_a_rule_that_catches_new_writes(people: psycopg.Connection) -> None:
    label(people, [101, 102, 103], "test")
    label(people, [1, 2, 3, 4, 5, 6], "real")
    suggestion = {(r[2], r[3]): r[0] for r in suggestions(people)}[("regex", "^synth[0-9]+@")]

    rule = scalar(people, "SELECT guardian.accept_rule_suggestion(%s)", (suggestion,))

    row = people.execute(
        "SELECT pack, kinds, severity, enabled, example_match, example_nonmatch FROM guardian.rules WHERE name = %s",
        (rule,),
    ).fetchone()
    assert rule == f"learned_email_{suggestion}"
    assert row is not None and row[:4] == ("learned", ["email"], "MEDIUM", True)
    assert row[4].startswith("synth") and row[5] is not None and not row[5].startswith("synth")
    people.execute("INSERT INTO public.people VALUES (300, 'Kim Ng', 'synth4242@other-host.io', NULL, NULL)")
    assert scalar(people, "SELECT count(*) FROM guardian.findings WHERE record_id = '300' AND rule = %s", (rule,)) == 1
    assert scalar(people, "SELECT count(*) FROM guardian.scan('public.people') WHERE rule = %s", (rule,)) == 9
    # the same rule is not suggested again, and the accepted suggestion cannot be accepted twice
    assert ("regex", "^synth[0-9]+@") not in {(r[2], r[3]) for r in suggestions(people)}
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"already accepted \\(rule {rule}\\)"):
        people.execute("SELECT guardian.accept_rule_suggestion(%s)", (suggestion,))


def test_a_dismissed_suggestion_is_not_suggested_again(people: psycopg.Connection) -> None:
    label(people, [101, 102, 103], "test")
    label(people, [1, 2, 3, 4, 5, 6], "real")
    domain = {(r[2], r[1]): r[0] for r in suggestions(people)}[("domains", "email")]

    people.execute("SELECT guardian.dismiss_rule_suggestion(%s)", (domain,))

    assert ("domains", "email") not in {(r[2], r[1]) for r in suggestions(people)}
    with pytest.raises(psycopg.errors.NoDataFound, match="no rule suggestion with id 999999"):
        people.execute("SELECT guardian.accept_rule_suggestion(999999)")


def test_resolving_a_contamination_alert_labels_its_records(db: psycopg.Connection) -> None:
    load_dental(db)
    seed_test_clinic(db)
    alert = contamination_alert(db, rule="reserved_example_domain")

    db.execute(response.cleanup_script(db, alert=alert))  # quarantines the clinic, resolves the alert as cleaned

    labels = db.execute(
        "SELECT column_name, label, value, source FROM guardian.labels "
        "WHERE relid = 'dental.clinics'::regclass AND record_id = %s ORDER BY 1",
        (TEST_CLINIC,),
    ).fetchall()
    assert ("email", "test", "front@example.com", "alert") in labels
    assert ("name", "test", "test clinic", "alert") in labels  # from the quarantine: the row is gone
    # the alerts the cleanup resolved (this one and the clinic's other rule's) say where a label came from
    assert (
        scalar(db, "SELECT count(*) FROM guardian.labels WHERE record_id = %s AND alert_id IS NULL", (TEST_CLINIC,))
        == 0
    )

    # an allowlisted finding is a real record: its label comes when someone who reads the table asks
    db.execute(
        "INSERT INTO dental.clinics (id, name, email, phone) "
        "VALUES ('33333333-aaaa-4aaa-8aaa-000000000003', 'Bright Smiles', 'hello@tenant-b.com', NULL)"
    )
    db.execute("SELECT guardian.allow('tenant_fixture', 'dental.clinics', NULL, NULL, 'a real clinic')")
    pending = db.execute(
        "SELECT label, value FROM guardian.labels WHERE record_id = '33333333-aaaa-4aaa-8aaa-000000000003'"
    ).fetchall()
    assert pending and all(r == ("real", None) for r in pending)
    db.execute("SELECT * FROM guardian.suggest_rules('dental.clinics')")
    assert (
        scalar(
            db,
            "SELECT value FROM guardian.labels "
            "WHERE record_id = '33333333-aaaa-4aaa-8aaa-000000000003' AND column_name = 'email'",
        )
        == "hello@tenant-b.com"
    )


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_labels_shows_suggestions_with_sample_matches_and_accepts_them(
    people: psycopg.Connection, dsn: str
) -> None:
    assert run("rules", "label", "public.people", "101", "102", "103", "--test", "--dsn", dsn)[:2] == (
        0,
        "3 record(s) of public.people labelled test\n",
    )
    assert run("rules", "label", "public.people", *map(str, range(1, 7)), "--real", "--dsn", dsn)[0] == 0

    code, out, err = run("rules", "suggest", "public.people", "--dsn", dsn)

    assert code == 1, (
        out,
        err,
        people.execute("SELECT count(*), string_agg(DISTINCT label, ',') FROM guardian.labels").fetchone(),
        suggestions(people),
    )
    assert "domains: acme-fixtures.io" in out and "regex: ^synth[0-9]+@" in out
    assert "examples: synth0001@acme-fixtures.io" in out
    assert "would also flag: synth0004@acme-fixtures.io, synth0005@acme-fixtures.io, synth0006@acme-fixtures.io" in out
    listed = json.loads(run("rules", "suggest", "--format", "json", "--dsn", dsn)[1])
    shape = next(s for s in listed if s["pattern"] == "^synth[0-9]+@")
    code, out, _ = run("rules", "accept", str(shape["suggestion_id"]), "--dsn", dsn)
    assert (code, out) == (
        0,
        f"suggestion {shape['suggestion_id']} is now rule learned_email_{shape['suggestion_id']}\n",
    )
    code, _, err = run("rules", "label", "public.people", "1", "--dsn", dsn)
    assert code == 2 and "--test or --real" in err


def test_rules_update_refreshes_the_disposable_list_from_the_installed_package(
    db: psycopg.Connection, dsn: str
) -> None:
    version, domains = learning.disposable_domains()
    assert "mailinator.com" in domains and "gmail.com" not in domains
    db.execute(
        "UPDATE guardian.rules SET terms = ARRAY['mailinator.com', 'only-here.example'] "
        "WHERE name = 'disposable_mail_domain'"
    )

    code, out, _ = run("rules", "update", "--dry-run", "--dsn", dsn)
    assert code == 0 and f"would update from disposable-email-domains {version}" in out and "-1)" in out
    assert scalar(db, "SELECT cardinality(terms) FROM guardian.rules WHERE name = 'disposable_mail_domain'") == 2

    code, out, _ = run("rules", "update", "--dsn", dsn)

    assert code == 0 and f"updated from disposable-email-domains {version}: {len(domains)} entries" in out
    assert db.execute(
        "SELECT version, entries FROM guardian.rule_lists WHERE rule = 'disposable_mail_domain'"
    ).fetchone() == (
        version,
        len(domains),
    )
    # a lesser-known provider from the list is caught on the write path now
    db.execute("CREATE TABLE public.signups (id int PRIMARY KEY, email text)")
    db.execute("SELECT guardian.watch('public.signups')")
    rare = next(d for d in domains if d.endswith(".com") and d not in ("mailinator.com",))
    db.execute("INSERT INTO public.signups VALUES (1, %s)", (f"someone@{rare}",))
    assert scalar(db, "SELECT rule FROM guardian.findings WHERE record_id = '1'") == "disposable_mail_domain"


def test_a_list_that_breaks_the_rules_examples_changes_nothing(db: psycopg.Connection) -> None:
    before = scalar(db, "SELECT cardinality(terms) FROM guardian.rules WHERE name = 'disposable_mail_domain'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"example_nonmatch 'celeste@mailbox\.org' matches"):
        db.execute(
            "SELECT * FROM guardian.update_rule_list("
            "'disposable_mail_domain', ARRAY['mailinator.com', 'mailbox.org'], 'a bad list')"
        )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="empty or holds a NULL"):
        db.execute("SELECT * FROM guardian.update_rule_list('disposable_mail_domain', '{}', 'x')")
    with pytest.raises(psycopg.errors.UndefinedObject, match="no rule named 'nope'"):
        db.execute("SELECT * FROM guardian.update_rule_list('nope', ARRAY['a.com'], 'x')")
    assert scalar(db, "SELECT cardinality(terms) FROM guardian.rules WHERE name = 'disposable_mail_domain'") == before


def test_nonprod_labels_are_configurable(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.staff (id int PRIMARY KEY, email text)")
    db.execute("SELECT guardian.watch('public.staff')")
    db.execute(
        "INSERT INTO public.staff VALUES (1, 'jane@staging.brightsmiles.com'), (2, 'jane@preview.brightsmiles.com')"
    )
    assert [
        r[0]
        for r in db.execute("SELECT record_id FROM guardian.scan('public.staff') WHERE rule = 'nonprod_mail_subdomain'")
    ] == ["1"]

    assert scalar(db, "SELECT guardian.set_nonprod_labels(ARRAY['Preview', 'staging'])") == "preview, staging"

    assert sorted(
        r[0]
        for r in db.execute("SELECT record_id FROM guardian.scan('public.staff') WHERE rule = 'nonprod_mail_subdomain'")
    ) == ["1", "2"]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"label 'qa\.dev' is not a domain label"):
        db.execute("SELECT guardian.set_nonprod_labels(ARRAY['qa.dev'])")
