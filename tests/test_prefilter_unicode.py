"""The prefilter is a superset of the precise rules under Unicode (security review, M2).

The precise rules see guardian._normalize(v): NFKC, lower(), white space runs as one space. A
seeded generator writes Unicode variants of values the rules match (no-break and other spaces,
fullwidth, mathematical, circled, superscript and subscript forms, small forms such as U+FE62,
ligatures, combining marks, İ, case) and checks, for every variant the rules still flag, that
the write path flags it too (the C WHEN-clause prefilter, a finding in warn mode, a rejection in
strict mode) and that guardian.scan() finds it; and that the C _contains_any and its SQL fallback
give the same answer on every variant. GUARDIAN_PROPERTY_SEED picks another seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from support.prefilter import sql_fallback
from support.queries import scalar

SEED = int(os.environ.get("GUARDIAN_PROPERTY_SEED", "20261205"))
VARIANTS_PER_VALUE = 14

# column of public.people -> kind (as watch() maps them)
COLUMNS = {
    "email": "email",
    "full_name": "person_name",
    "phone": "phone",
    "clinic": "organization",
    "notes": "free_text",
}

FLAGGED = {
    "email": [
        "test+123@gmail.com", "jane.doe@example.com", "qa.signup@mailinator.com", "user@tenant-a.test",
        "jane.doe+e2e42@gmail.com", "test@gmail.com", "e2e-run7@yahoo.com", "x@example.org",
        "bob@mail.example.net", "qa_1@proton.me", "someone@yopmail.fr", "ops@sharklasers.com",
    ],
    "full_name": [
        "John Doe", "Test Patient", "Jane Q Public", "Foo Bar", "Lorem Ipsum", "Patient 42", "User_3",
        "Asdfgh Jkl", "Zzz", "Tenant A", "Fake Person", "Mary Testing", "Max Mustermann", "(TEST) Ana Lopez",
        "Dummy", "John Doe Jr", "Test User",
    ],
    "phone": [
        "(415) 555-0123", "+1 415 555 0199", "+44 20 7946 0123", "07700 900123", "0491 570 156",
        "02 5550 1234", "123-456-7890", "000-000-0000", "555-0100",
    ],
    "clinic": [
        "Test Clinic", "Demo Dental", "Fake Clinic", "Tenant Practice", "Bright Smiles (TEST)", "QA", "Example",
        "Tenant B Dental", "DO NOT USE - Smile Co", "Customer 7", "Testing Lab",
    ],
    "notes": [
        "(TEST) do not ship", "not a real patient", "lorem ipsum dolor", "DO NOT USE", "[QA] check",
        "TEST: sample", "tenant_1 notes", "demo - x", "do not use",
    ],
}  # fmt: skip
CLEAN = {
    "email": ["celeste.testa@gmail.com", "ops@examplehealth.com", "jane+newsletter@gmail.com"],
    "full_name": ["Ana Lopez", "Celeste Testa", "Zoë Müller", "John Dobson"],
    "phone": ["+1 415 872 1930", "+44 20 7946 5678"],
    "clinic": ["Greatest Smiles Dental", "Tenants Association of Leeds"],
    "notes": ["Follow-up in May", "Test results normal, follow-up in 6 months"],
}

SPACES = ["\u00a0", "\u2003", "\u3000", "\u2009", "\u202f", "\u1680", "\u2028", "\u205f", "\t", "\n", "  ", " \u00a0 "]
SMALL_FORMS = {
    "+": "\ufe62", "@": "\ufe6b", ".": "\ufe52", "-": "\ufe63", "(": "\ufe59", ")": "\ufe5a", ":": "\ufe55",
    "_": "\ufe4d", "[": "\ufe5d", "]": "\ufe5e",
}  # fmt: skip
LIGATURES = {"ffi": "\ufb03", "ffl": "\ufb04", "ff": "\ufb00", "fi": "\ufb01", "fl": "\ufb02", "st": "\ufb06"}
COMBINING = ["\u0301", "\u0308", "\u0323", "\u0327", "\u0338", "\u0307"]
SUPERSCRIPT = "⁰¹²³⁴⁵⁶⁷⁸⁹"
SUBSCRIPT = "₀₁₂₃₄₅₆₇₈₉"


def _offset(c: str, upper: int, lower: int, digit: int | None) -> str:
    if "A" <= c <= "Z":
        return chr(upper + ord(c) - ord("A"))
    if "a" <= c <= "z":
        return chr(lower + ord(c) - ord("a"))
    if digit is not None and "0" <= c <= "9":
        return chr(digit + ord(c) - ord("0"))
    return c


def _circled(c: str) -> str:
    if c == "0":
        return "\u24ea"
    if "1" <= c <= "9":
        return chr(0x2460 + ord(c) - ord("1"))
    return _offset(c, 0x24B6, 0x24D0, None)


CHARACTER_FORMS: list[Callable[[str], str]] = [
    lambda c: c.swapcase(),
    lambda c: chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c,  # fullwidth
    lambda c: _offset(c, 0x1D400, 0x1D41A, 0x1D7CE),  # mathematical bold
    lambda c: _offset(c, 0x1D5D4, 0x1D5EE, 0x1D7EC),  # mathematical sans-serif bold
    lambda c: _offset(c, 0x1D670, 0x1D68A, 0x1D7F6),  # mathematical monospace
    _circled,
    lambda c: SUPERSCRIPT[int(c)] if c.isdigit() else c,
    lambda c: SUBSCRIPT[int(c)] if c.isdigit() else c,
    lambda c: SMALL_FORMS.get(c, c),
    lambda c: "\u0130" if c in "iI" else c,  # İ, whose lower case is "i" (glibc)
]


def variant(value: str, rng: random.Random) -> str:
    """One Unicode variant of a value: characters in other forms, other spaces, ligatures, marks."""
    rate = rng.choice([0.1, 0.3, 0.6, 1.0])
    out = []
    for c in value:
        if c == " " and rng.random() < rate:
            out.append(rng.choice(SPACES))
            continue
        if rng.random() < rate:
            c = rng.choice(CHARACTER_FORMS)(c)
        out.append(c)
        if c.isalpha() and rng.random() < rate / 8:
            out.append(rng.choice(COMBINING))
    text = "".join(out)
    for plain, ligature in LIGATURES.items():
        if plain in text and rng.random() < 0.5:
            text = text.replace(plain, ligature)
    if rng.random() < 0.2:
        text = rng.choice(SPACES) + text + rng.choice(SPACES)
    if rng.random() < 0.1:
        text = text.upper()
    return text


@dataclass
class Case:
    id: int
    column: str
    value: str
    flagged: bool  # do the precise rules match the value?


def make_cases(db: psycopg.Connection) -> list[Case]:
    rng = random.Random(SEED)
    raw: list[tuple[str, str]] = []
    for column in COLUMNS:
        for value in FLAGGED[column] + CLEAN[column]:
            raw.append((column, value))
            raw.extend((column, variant(value, rng)) for _ in range(VARIANTS_PER_VALUE))
    flags = db.execute(
        "SELECT EXISTS (SELECT FROM guardian._match(k, c, v)) "
        "FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS u(k, c, v, n) ORDER BY n",
        ([COLUMNS[c] for c, _ in raw], [c for c, _ in raw], [v for _, v in raw]),
    ).fetchall()
    return [Case(i + 1, c, v, f) for i, ((c, v), (f,)) in enumerate(zip(raw, flags, strict=True))]


def people_table(db: psycopg.Connection, name: str, *, watch: bool) -> None:
    db.execute(
        f"CREATE TABLE public.{name} "
        "(id int PRIMARY KEY, email text, full_name text, phone text, clinic text, notes text)"
    )
    if watch:
        db.execute("SELECT guardian.watch(%s)", (f"public.{name}",))


def insert_cases(db: psycopg.Connection, table: str, cases: list[Case]) -> None:
    columns = list(COLUMNS)
    db.execute(
        f"INSERT INTO public.{table} (id, {', '.join(columns)}) "
        "SELECT * FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])",
        (
            [c.id for c in cases],
            *([c.value if c.column == column else None for c in cases] for column in columns),
        ),
    )


@pytest.fixture(scope="module")
def cases(module_db: psycopg.Connection) -> Iterator[list[Case]]:
    module_db.execute("SELECT guardian.set_environment('production')")
    made = make_cases(module_db)
    # the generator must reach both sides: variants the rules flag and variants they let through
    assert sum(c.flagged for c in made) > len(made) // 3
    assert sum(not c.flagged and c.value not in CLEAN[c.column] for c in made) > 20
    assert sum(not c.value.isascii() and c.flagged for c in made) > len(made) // 4
    yield made


def missed(cases: list[Case], found: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(c.column, c.value) for c in cases if c.flagged and (str(c.id), c.column) not in found]


def test_the_write_path_flags_every_variant_the_rules_flag(module_db: psycopg.Connection, cases: list[Case]) -> None:
    db = module_db
    people_table(db, "people_written", watch=True)
    insert_cases(db, "people_written", cases)
    # the WHEN clause's prefilter, called as the trigger calls it
    suspect = {r[0] for r in db.execute("SELECT id FROM public.people_written AS p WHERE guardian._suspect(p)")}
    assert [(c.column, c.value) for c in cases if c.flagged and c.id not in suspect] == []
    # and what the trigger made of it: a finding for every flagged value (warn mode)
    found = db.execute(
        "SELECT DISTINCT record_id, column_name FROM guardian.findings WHERE relid = 'public.people_written'::regclass"
    ).fetchall()
    assert missed(cases, set(found)) == []


def test_scan_finds_every_variant_the_rules_flag(module_db: psycopg.Connection, cases: list[Case]) -> None:
    db = module_db
    people_table(db, "people_scanned", watch=False)  # a scan maps the columns as watch() would
    insert_cases(db, "people_scanned", cases)
    found = db.execute("SELECT DISTINCT record_id, column_name FROM guardian.scan('public.people_scanned')").fetchall()
    assert missed(cases, set(found)) == []


def test_strict_mode_rejects_variants_the_rules_flag(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    all_cases = make_cases(db)
    rng = random.Random(SEED + 1)
    sample = rng.sample([c for c in all_cases if c.flagged and not c.value.isascii()], 25)
    sample += rng.sample([c for c in all_cases if not c.flagged and not c.value.isascii()], 5)
    people_table(db, "people_strict", watch=True)
    db.execute("SELECT guardian.set_mode('strict')")
    accepted = []
    for case in sample:
        try:
            insert_cases(db, "people_strict", [case])
            accepted.append((case.column, case.value, case.flagged))
        except psycopg.Error as exc:
            assert exc.sqlstate == "GD001", (case, str(exc))
            assert case.flagged, (case, str(exc))
    assert [a for a in accepted if a[2]] == []
    assert len(accepted) == 5


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("clinic", "Test\u00a0Clinic"),
        ("full_name", "Test\u2003Patient"),
        ("full_name", "John\u00a0Doe"),
        ("email", "jane.doe@\U0001d41example.com"),
        ("email", "test\ufe62123@gmail.com"),
        ("phone", "(415) \u2075\u2075\u2075-0123"),
        ("phone", "(415) \U0001d7d3\U0001d7d3\U0001d7d3-\U0001d7ce\U0001d7cf\U0001d7d0\U0001d7d1"),
        ("notes", "do  not\tuse"),
        ("notes", "not\u2028a real patient"),
        ("full_name", "Fake\u2014Person"),
    ],
)
def test_strict_mode_rejects_the_unicode_forms_the_review_found(
    db: psycopg.Connection, column: str, value: str
) -> None:
    # security review M2: each of these passed strict mode while check_payload flagged it
    people_table(db, "people", watch=True)
    db.execute("SELECT guardian.set_environment('production')")
    assert scalar(db, "SELECT count(*) FROM guardian._match(%s, %s, %s)", (COLUMNS[column], column, value)) > 0
    payload = "SELECT count(*) FROM guardian.check_payload(jsonb_build_object(%s::text, %s::text))"
    assert scalar(db, payload, (column, value)) > 0
    db.execute("SELECT guardian.set_mode('warn')")
    db.execute(f"INSERT INTO public.people (id, {column}) VALUES (1, %s)", (value,))
    assert scalar(db, "SELECT count(*) FROM guardian.scan('public.people')") > 0
    db.execute("DELETE FROM public.people")
    db.execute("SELECT guardian.set_mode('strict')")
    with pytest.raises(psycopg.Error) as err:
        db.execute(f"INSERT INTO public.people (id, {column}) VALUES (2, %s)", (value,))
    assert err.value.sqlstate == "GD001"


def test_c_search_agrees_with_the_sql_fallback(module_db: psycopg.Connection, cases: list[Case]) -> None:
    db = module_db
    fallback = sql_fallback(db)
    needle_sets = {
        kind: db.execute("SELECT guardian._anchors(%s, %s)", (kind, column)).fetchone()[0]  # type: ignore[index]
        for column, kind in COLUMNS.items()
    }
    # needles with non-ASCII characters, marks alone, and white space a folded text never holds
    needle_sets["odd"] = ["^müller$", "ZOË", "^é$", "^", "$", "#", "^$", "a\tb", "do  not", "\u00a0"]
    values = [c.value for c in cases]
    for name, needles in needle_sets.items():
        rows = db.execute(
            f"SELECT guardian._contains_any(v, %s), {fallback}(v, %s) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
            (needles, needles, values),
        ).fetchall()
        assert [v for v, (c, s) in zip(values, rows, strict=True) if c != s] == [], name
