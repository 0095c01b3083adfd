"""The C prefilter: the needle search against a reference written from its documented meaning
(tests/prefilter_reference.py), columns of any type, and scans in parallel workers."""

from __future__ import annotations

import random

import psycopg
import pytest
from support.prefilter import reference_contains_any, sql_fallback
from support.queries import scalar

TOKENS = [
    "test", "Testa", "TEST", "tester", "qa", "QA", "e2e", "demo", "Celeste", "contest", "mail",
    "mailinator", "mailinator.com", "notmailinator.com", "example", "example.com", "gmail.com",
    "tenant-a", "don't", "use", "not", "do", "Zoë", "ü", "555", "0123", "4155550123", "5550",
    "ｔｅｓｔ", "＠", "．", "ｃｏｍ", "１２３", "x", "xx", "xxx",
    "𝐭𝐞𝐬𝐭", "⁵⁵⁵", "﹢", "ﬁxture", "İ", "MÜLLER", "e\u0301", "\u2014", "\t",
]  # fmt: skip
SEPARATORS = [" ", "", ".", "@", "+", "-", "_", "'", "’", "(", ")", "/", "  ", "\u00a0", "\u2003", "\t"]


def random_values(rng: random.Random, count: int) -> list[str]:
    values = []
    for _ in range(count):
        parts = [rng.choice(TOKENS) + rng.choice(SEPARATORS) for _ in range(rng.randint(0, 5))]
        values.append("".join(parts))
    return values


def disagreements(db: psycopg.Connection, function: str, needles: list[str], values: list[str]) -> list[str]:
    """The values on which the function's answer differs from the reference's."""
    got = db.execute(
        f"SELECT {function}(v, %s) FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
        (needles, values),
    ).fetchall()
    return [v for v, (g,) in zip(values, got, strict=True) if g != reference_contains_any(v, needles)]


NEEDLE_SETS = {
    # every kind of needle the search treats differently: word starts, bytes between words,
    # pivots inside unanchored needles, digits, and word-only unanchored needles (dense search)
    "word starts": ["^test$", "^qa", "^tenant", "^demo$", "^xxx"],
    "between words": ["@example$", ".com$", "+test", "^'t use$", ".test$"],
    "pivots": ["mailinator.com", "t use$", "a-a", "l.c"],
    "digits": ["#55501", "#0123", "#5", "#123"],
    "digit patterns": ["#55501??$", "#5?5", "#4?", "#??12", "#0123$", "#1??$"],
    "dense": ["est", "ail", "x", "^mail", "a"],
    "short": ["t", "^q", "e$", "^x$"],
    "mixed": ["^test$", "mailinator.com", "#55501", "@example$", "use"],
    "everything": ["", "^test$"],
    # e-mail domains, looked up rather than searched for
    "domains": ["@=mailinator.com", "@=example.com", "@=COM", "@=a", "^test$", "#5"],
    # needles with non-ASCII characters (also looked for in the lower-cased text), and needles
    # that are only their marks
    "unicode needles": ["^müller$", "zoë", "Ü", "^é$", "^", "$", "#", "^$"],
}


@pytest.mark.parametrize("name", list(NEEDLE_SETS))
def test_search_agrees_with_its_definition(db: psycopg.Connection, name: str) -> None:
    values = random_values(random.Random(name), 1500)
    assert disagreements(db, "guardian._contains_any", NEEDLE_SETS[name], values) == []
    matched = db.execute(
        "SELECT count(*) FILTER (WHERE guardian._contains_any(v, %s)) FROM unnest(%s::text[]) AS v",
        (NEEDLE_SETS[name], values),
    ).fetchone()
    assert matched and (0 < matched[0] < len(values) or name == "everything")


def test_search_agrees_across_its_64_byte_blocks(db: psycopg.Connection) -> None:
    # the search classifies 64 bytes at a time: needles, word starts and pivots that straddle
    # a block boundary (a word running into the next block must not start a word there)
    rng = random.Random(64)
    values = []
    for pad in range(50, 140):
        for token in ("test", "Test Clinic", "x@mailinator.com", "mailinator.com", "a.test", "don't use", "555-0123"):
            for filler in ("a", " ", "ab ", "é"):
                values.append((filler * pad)[:pad] + token + rng.choice(["", " ", "s", ".x"]))
    for name in ("word starts", "between words", "pivots", "digits", "mixed"):
        assert disagreements(db, "guardian._contains_any", NEEDLE_SETS[name], values) == [], name


def test_repeated_values_get_the_answer_a_search_gives(db: psycopg.Connection) -> None:
    # short values are remembered per needle set: a value differing from a remembered one in
    # any single byte, or only in length, must still be searched; unique values pause the memo
    # (4,096 lookups with few hits), and it must answer correctly again when it resumes
    rng = random.Random(3)
    bases = ["Test", "Tesa", "test", "Jane Doe", "Jane Dot", "qa", "q", "Greatest Smiles Dental",
             "Greatest Smiles Denta", "do not use", "do not usE", "x@a.test", "x@a.tesT", "4155550123"]  # fmt: skip
    mutated = []
    for base in bases:
        for at in range(len(base)):
            mutated.append(base[:at] + rng.choice("tTsa .@1") + base[at + 1 :])
        mutated.append(base + "t")
        mutated.append(base[:-1])
    unique = [f"p{n}@proton.me" for n in range(6000)]
    repeated = [rng.choice(bases + mutated) for _ in range(3000)]
    values = repeated + unique + repeated + [rng.choice(bases + mutated) for _ in range(70000)]
    for name in ("mixed", "word starts", "between words"):
        assert disagreements(db, "guardian._contains_any", NEEDLE_SETS[name], values) == [], name


@pytest.mark.parametrize("name", list(NEEDLE_SETS))
def test_sql_fallback_agrees_with_the_same_definition(db: psycopg.Connection, name: str) -> None:
    values = random_values(random.Random(name), 300)
    assert disagreements(db, sql_fallback(db), NEEDLE_SETS[name], values) == []


def test_search_with_the_default_anchors_agrees_with_its_definition(db: psycopg.Connection) -> None:
    rng = random.Random(7)
    values = [*random_values(rng, 1500), "Test Clinic", "user@tenant-a.test", "x@mailinator.com", "(415) 555-0123"]
    for kind in ("email", "person_name", "organization", "phone", "free_text"):
        needles = db.execute("SELECT guardian._anchors(%s, 'c')", (kind,)).fetchone()[0]  # type: ignore[index]
        assert disagreements(db, "guardian._contains_any", needles, values) == [], kind


def test_columns_of_any_type_can_be_watched_as_a_kind(db: psycopg.Connection) -> None:
    # an override may watch a name, bigint or jsonb column; their values are read as text
    db.execute("CREATE TABLE public.contacts (id int PRIMARY KEY, who name, phone bigint, notes jsonb)")
    db.execute(
        'SELECT guardian.watch(\'public.contacts\', \'{"who": "person_name", "phone": "phone", "notes": "free_text"}\')'
    )
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("INSERT INTO public.contacts VALUES (1, 'Ana Lopez', 4158721930, '{\"a\": \"fine\"}')")
    db.execute("INSERT INTO public.contacts VALUES (2, 'John Doe', 4155550123, '{\"a\": \"(TEST) do not use\"}')")
    found = db.execute("SELECT DISTINCT record_id, column_name FROM guardian.findings ORDER BY 1, 2").fetchall()
    assert found == [("2", "notes"), ("2", "phone"), ("2", "who")]
    scanned = db.execute("SELECT DISTINCT record_id, column_name FROM guardian.scan('public.contacts') ORDER BY 1, 2")
    assert scanned.fetchall() == found
    db.execute("UPDATE public.contacts SET phone = 4155550124 WHERE id = 1")
    assert scalar(db, "SELECT count(*) FROM guardian.findings WHERE record_id = '1' AND column_name = 'phone'") == 1
    db.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error, match="rule nanp_fictional_phone"):
        db.execute("INSERT INTO public.contacts VALUES (3, 'Ana Lopez', 4155550155, NULL)")


def test_scan_in_parallel_workers_finds_what_a_serial_scan_finds(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.people (id int PRIMARY KEY, email text, full_name text, phone text)")
    db.execute(
        "INSERT INTO public.people SELECT i,"
        " 'p' || i || CASE WHEN i % 997 = 0 THEN '@example.com' ELSE '@gmail.com' END,"
        " CASE WHEN i % 1499 = 0 THEN 'Test User' ELSE 'Ana Lopez' END,"
        " '+1 415 872 ' || lpad((i % 10000)::text, 4, '0')"
        " FROM generate_series(1, 20000) AS i"
    )
    db.execute("ANALYZE public.people")
    query = "SELECT record_id, rule FROM guardian.scan('public.people') ORDER BY 1, 2"
    db.execute("SET max_parallel_workers_per_gather = 0")
    serial = db.execute(query).fetchall()
    for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
        db.execute(f"SET {setting} = 0")
    db.execute("SET max_parallel_workers_per_gather = 2")
    db.execute("LOAD 'auto_explain'")
    for setting, value in (
        ("log_min_duration", "0"),
        ("log_nested_statements", "on"),
        ("log_analyze", "on"),
        ("log_level", "notice"),
    ):
        db.execute(f"SET auto_explain.{setting} = {value}")
    plans: list[str] = []
    db.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    parallel = db.execute(query).fetchall()
    assert parallel == serial
    assert any("Parallel Seq Scan on people" in p and "Workers Launched: 2" in p for p in plans)
    assert {rule for _, rule in serial} >= {"reserved_example_domain", "placeholder_full_name"}
    assert len({record for record, _ in serial}) == 20000 // 997 + 20000 // 1499


def test_columns_whose_text_the_rules_see_as_json_are_always_checked(db: psycopg.Connection) -> None:
    # an array's value reaches the rules as JSON (["..."]), not as its '{...}' output
    db.execute("CREATE TABLE public.lists (id int PRIMARY KEY, notes text[], seen timestamptz)")
    db.execute('SELECT guardian.watch(\'public.lists\', \'{"notes": "free_text", "seen": "free_text"}\')')
    db.execute("SELECT guardian.set_environment('production')")
    db.execute(
        "INSERT INTO public.lists VALUES (1, '{\"follow-up in May\"}', now()), (2, '{\"(TEST) do not ship\"}', NULL)"
    )
    found = db.execute("SELECT DISTINCT record_id, column_name, rule FROM guardian.findings").fetchall()
    assert found == [("2", "notes", "test_marker")]
    assert [r[0] for r in db.execute("SELECT record_id FROM guardian.scan('public.lists')")] == ["2"]


def test_prefilter_functions_refuse_nothing_they_are_handed(db: psycopg.Connection) -> None:
    # PUBLIC may call them: odd arguments get an answer, never a crashed backend
    db.execute("CREATE TABLE public.people (id int PRIMARY KEY, email text)")
    db.execute("SELECT guardian.watch('public.people')")
    assert scalar(db, "SELECT guardian._suspect(ROW(1, 'a@b.example')::public.people, ROW(1, 2, 3))") is True
    assert scalar(db, "SELECT guardian._suspect(ROW(1, 'a@b.example'))") is False
    # more needle sets than the cache holds, each call site meeting its set again on the next row
    calls = ", ".join(f"guardian._contains_any(v, '{{x{i},a}}')" for i in range(20))
    rows = db.execute(f"SELECT {calls} FROM (VALUES ('a'), ('b'), ('xa')) AS t(v)").fetchall()
    assert rows == [(True,) * 20, (False,) * 20, (True,) * 20]
