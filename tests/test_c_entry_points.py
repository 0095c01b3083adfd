"""Every C function of the extension, called with NULLs and arguments of the wrong kind through
the real server: each call answers or fails with a clean ERROR, and the server never restarts
(security review H2: guardian._suspect(NULL::t, NULL::t) crashed the whole cluster)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import psycopg
import pytest
from support.queries import scalar

# the C functions and their SQL signatures (extension/sql/20_contamination/00_matchers.sql and
# extension/sql/21_activity/10_activity.sql)
C_FUNCTIONS = {
    "guardian._contains_any(text,text[])",
    "guardian._uuid_matches(uuid,uuid[])",
    "guardian._suspect(record)",
    "guardian._suspect(record,record)",
    'guardian._suspect_columns(regclass,"any")',
    "guardian._activity_start()",
    "guardian._activity_end()",
}

SETUP = """
CREATE TABLE public.people (id int PRIMARY KEY, email text, full_name text, external_id uuid, phone bigint);
CREATE TABLE public.people_tree (id int, email text, PRIMARY KEY (id, email)) PARTITION BY HASH (id);
CREATE TABLE public.people_leaf PARTITION OF public.people_tree FOR VALUES WITH (MODULUS 1, REMAINDER 0);
CREATE TABLE public.unwatched (id int PRIMARY KEY, email text);
CREATE TYPE public.pair AS (id int, email text);
CREATE DOMAIN public.pair_d AS public.pair;
CREATE VIEW public.people_view AS SELECT id, email FROM public.people;
-- a view whose INSERTs go through an INSTEAD OF trigger fires its statement triggers
CREATE VIEW public.people_rw AS SELECT id, email FROM public.unwatched;
CREATE FUNCTION public.people_rw_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.unwatched VALUES (NEW.id, NEW.email); RETURN NEW; END $$;
CREATE TRIGGER people_rw_insert INSTEAD OF INSERT ON public.people_rw
    FOR EACH ROW EXECUTE FUNCTION public.people_rw_insert();
CREATE MATERIALIZED VIEW public.people_mv AS SELECT id, email FROM public.people;
SELECT guardian.watch('public.people', '{"phone": "phone"}');
SELECT guardian.watch('public.people_tree');
INSERT INTO public.people VALUES (1, 'ana@gmail.com', 'Ana Lopez', '7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81', 4158721930);
INSERT INTO public.unwatched VALUES (1, 'x@example.com');
"""

# row-valued arguments for _suspect: NULLs, rows of watched and unwatched tables, of a partition,
# a view, a composite type and a domain over it, anonymous rows, a system catalog's row
ROWS = [
    "NULL",
    "NULL::record",
    "NULL::public.people",
    "ROW(1, 'a@b.example', NULL, NULL, NULL)::public.people",
    "ROW(2, 'ana@gmail.com', 'Ana Lopez', NULL, 4155550123)::public.people",
    "ROW(NULL, NULL, NULL, NULL, NULL)::public.people",
    "(SELECT p FROM public.people AS p LIMIT 1)",
    "(SELECT p FROM public.people AS p WHERE false)",
    "ROW(3, 'qa@mailinator.com')::public.people_tree",
    "ROW(3, 'qa@mailinator.com')::public.people_leaf",
    "(SELECT u FROM public.unwatched AS u LIMIT 1)",
    "(SELECT v FROM public.people_view AS v LIMIT 1)",
    "(SELECT m FROM public.people_mv AS m LIMIT 1)",
    "ROW(1, 'test@example.com')::public.pair",
    "ROW(1, 'test@example.com')::public.pair::public.pair_d",
    "ROW(1, 'test@example.com')",
    "ROW()",
    "(1, 2, 3)",
    "(SELECT c FROM pg_catalog.pg_class AS c LIMIT 1)",
    "(SELECT r FROM guardian.rules AS r LIMIT 1)",
]

HAYSTACKS = [
    "NULL",
    "NULL::text",
    "''",
    "'Test Clinic'",
    "'ｔｅｓｔ＠ｅｘａｍｐｌｅ．ｃｏｍ'",
    "repeat('a', 200000) || ' test'",
    "repeat(U&'\\00e9', 50000)",
    "E'\\t\\t  \\x01'",
    "chr(304) || 'NG'",
    "'x'::varchar",
    "'x  '::char(5)",
    "42",
    "'x'::name",
    "ARRAY['test']",
]
NEEDLES = [
    "NULL",
    "NULL::text[]",
    "'{}'::text[]",
    "'{NULL}'::text[]",
    "ARRAY['']",
    "'{{a,b},{c,d}}'::text[]",
    "ARRAY['^test$', NULL, '#55501??$']",
    "ARRAY['^', '$', '#', '^$', '#?', '$$']",
    "ARRAY[repeat('x', 5000), E'a\\tb', 'a  b', U&'\\00a0']",
    "ARRAY['a']::varchar[]",
    "'{1,2}'::int[]",
    "'^test$'",
]
UUIDS = ["NULL", "NULL::uuid", "'00000000-0000-0000-0000-000000000001'::uuid", "'x'", "42"]
BOUNDS = [
    "NULL",
    "NULL::uuid[]",
    "'{}'::uuid[]",
    "ARRAY[NULL, NULL]::uuid[]",
    "ARRAY['00000000-0000-0000-0000-000000000000'::uuid]",
    "ARRAY['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff']::uuid[]",
    "'{{00000000-0000-0000-0000-000000000000,00000000-0000-0000-0000-0000000000ff}}'::uuid[]",
    "ARRAY['00000000-0000-0000-0000-000000000000', NULL]::uuid[]",
    "'{1,2}'::int[]",
]
TABLES = [
    "NULL",
    "NULL::regclass",
    "'public.people'::regclass",
    "'public.people_leaf'::regclass",
    "'public.unwatched'::regclass",
    "'public.people_view'::regclass",
    "'public.people_mv'::regclass",
    "'public.pair'::regclass",
    "'pg_catalog.pg_class_oid_index'::regclass",
    "0::regclass",
    "4294967295::regclass",
    "'people'",
]
PAIRS = [
    "2",
    "2, 'a@b.example'::text",
    "2, 'a@b.example'",
    "2, NULL",
    "2, NULL::text",
    "NULL::int, 'a@b.example'::text",
    "'2'::text, 'a@b.example'::text",
    "2::bigint, 'a@b.example'::text",
    "(random() * 2)::int, 'a@b.example'::text",
    "99, 'a@b.example'::text",
    "-1, 'a@b.example'::text",
    "4, 'a@b.example'::text",
    "4, '550e8400-e29b-41d4-a716-446655440000'::uuid",
    "4, 12345",
    "5, 4155550123",
    "5, 'not a number'::text",
    "2, ROW(1, 2)",
    "2, ARRAY['test@example.com']",
    "2, 'x'::text, 3",
    "VARIADIC ARRAY[2, 3]",
    "VARIADIC NULL::int[]",
    "2, repeat('x', 100000) || '@mailinator.com'",
]

CALLS = (
    [f"guardian._contains_any({h}, {n})" for h, n in itertools.product(HAYSTACKS, NEEDLES)]
    + [f"guardian._uuid_matches({u}, {b})" for u, b in itertools.product(UUIDS, BOUNDS)]
    + [f"guardian._suspect({r})" for r in ROWS]
    + [f"guardian._suspect({a}, {b})" for a, b in itertools.product(ROWS, ROWS)]
    + [f"guardian._suspect_columns({t}, {p})" for t, p in itertools.product(TABLES, PAIRS)]
    + [f"guardian._suspect_columns({t})" for t in TABLES]
    + ["guardian._activity_start()", "guardian._activity_end()"]
)

# answers that are defined, not just "no crash"
EXPECTED = {
    "guardian._suspect(NULL::public.people, NULL::public.people)": False,
    "guardian._suspect(NULL, NULL)": False,
    "guardian._suspect(NULL::public.people)": None,
    "guardian._suspect(ROW(1, 'a@b.example', NULL, NULL, NULL)::public.people, NULL::public.people)": True,
    "guardian._suspect(ROW(1, 'a@b.example', NULL, NULL, NULL)::public.people, (1, 2, 3))": True,
    "guardian._suspect(ROW(2, 'ana@gmail.com', 'Ana Lopez', NULL, 4155550123)::public.people)": True,
    "guardian._suspect((SELECT p FROM public.people AS p LIMIT 1))": False,
    "guardian._suspect(ROW(3, 'qa@mailinator.com')::public.people_leaf)": True,
    "guardian._suspect(ROW(3, 'qa@mailinator.com')::public.people_tree)": True,
    "guardian._suspect((SELECT u FROM public.unwatched AS u LIMIT 1))": False,
    "guardian._suspect(ROW(1, 'test@example.com')::public.pair)": False,
    "guardian._suspect(ROW(1, 'test@example.com')::public.pair::public.pair_d)": False,
    "guardian._suspect(ROW(1, 'test@example.com'))": False,
    "guardian._contains_any(NULL, ARRAY['^test$', NULL, '#55501??$'])": None,
    "guardian._contains_any('Test Clinic', ARRAY['^test$', NULL, '#55501??$'])": True,
    "guardian._contains_any('Test Clinic', '{NULL}'::text[])": False,
    "guardian._contains_any('', ARRAY[''])": True,
    "guardian._contains_any(repeat('a', 200000) || ' test', ARRAY['^test$', NULL, '#55501??$'])": True,
    "guardian._uuid_matches('00000000-0000-0000-0000-000000000001'::uuid, '{}'::uuid[])": False,
    "guardian._suspect_columns(NULL, 2, 'a@b.example'::text)": False,
    "guardian._suspect_columns('public.people'::regclass, 2, 'a@b.example'::text)": True,
    "guardian._suspect_columns('public.people'::regclass, 2, 'a@b.example')": True,
    "guardian._suspect_columns('public.people'::regclass, 2, NULL::text)": False,
    "guardian._suspect_columns('public.people'::regclass, 99, 'a@b.example'::text)": False,
    "guardian._suspect_columns('public.people'::regclass, 4, '550e8400-e29b-41d4-a716-446655440000'::uuid)": True,
    "guardian._suspect_columns('public.people'::regclass, 5, 4155550123)": True,
    "guardian._suspect_columns('public.unwatched'::regclass, 2, 'a@b.example'::text)": True,
}
# clean ERRORs, by SQLSTATE
EXPECTED_ERRORS = {
    "guardian._suspect_columns('public.people'::regclass, 2)": "22023",
    "guardian._suspect_columns('public.people'::regclass, VARIADIC ARRAY[2, 3])": "22023",
    "guardian._suspect_columns('public.people'::regclass, NULL::int, 'a@b.example'::text)": "22023",
    "guardian._suspect_columns('public.people'::regclass, '2'::text, 'a@b.example'::text)": "22023",
    "guardian._suspect_columns('public.people'::regclass, (random() * 2)::int, 'a@b.example'::text)": "22023",
    "guardian._suspect_columns(0::regclass, 2, 'a@b.example'::text)": "42P01",
    "guardian._suspect_columns('public.people_view'::regclass, 2, 'a@b.example'::text)": "42809",
    "guardian._suspect_columns('pg_catalog.pg_class_oid_index'::regclass, 2, 'a@b.example'::text)": "42809",
    "guardian._contains_any('Test Clinic', '{{a,b},{c,d}}'::text[])": "22023",
    "guardian._uuid_matches('00000000-0000-0000-0000-000000000001'::uuid, ARRAY[NULL, NULL]::uuid[])": "22023",
    "guardian._uuid_matches('00000000-0000-0000-0000-000000000001'::uuid, "
    "ARRAY['00000000-0000-0000-0000-000000000000'::uuid])": "22023",
}
# internal errors (XX...) and lost connections are what a fuzz must never see
UNCLEAN_CLASSES = ("XX", "58")


@pytest.fixture
def guarded(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(SETUP)
    db.execute("SELECT guardian.set_environment('production')")
    return db


@pytest.fixture
def app(guarded: psycopg.Connection, dsn: str, make_role: Callable[..., str]) -> Iterator[psycopg.Connection]:
    """A login role with no privileges but SELECT on the test tables: PUBLIC's rights."""
    role = make_role("fuzz_app")
    guarded.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    with psycopg.connect(dsn.replace("user=postgres", f"user={role}"), autocommit=True) as conn:
        yield conn


def postmaster_start(conn: psycopg.Connection) -> object:
    return scalar(conn, "SELECT pg_postmaster_start_time()")


def call(conn: psycopg.Connection, expression: str) -> tuple[str, object]:
    """('ok', result) or ('error', SQLSTATE); a lost connection fails the test at once."""
    try:
        return "ok", scalar(conn, f"SELECT {expression}")
    except psycopg.OperationalError as exc:
        if conn.closed or conn.broken:
            pytest.fail(f"the server dropped the connection on {expression}: {exc}")
        return "error", exc.sqlstate
    except psycopg.Error as exc:
        return "error", exc.sqlstate


def test_the_c_functions_are_the_ones_fuzzed(db: psycopg.Connection) -> None:
    found = {
        r[0].replace(" ", "")
        for r in db.execute(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_language AS l "
            "ON l.oid = p.prolang WHERE p.pronamespace = 'guardian'::regnamespace AND l.lanname = 'c'"
        )
    }
    assert found == {f.replace(" ", "") for f in C_FUNCTIONS}


def test_suspect_with_null_rows_answers_false_instead_of_crashing_the_server(app: psycopg.Connection) -> None:
    # security review H2, as any login role: this was signal 11 and crash recovery
    started = postmaster_start(app)
    assert scalar(app, "SELECT guardian._suspect(NULL::public.people, NULL::public.people)") is False
    assert scalar(app, "SELECT guardian._suspect(NULL::public.people)") is None
    assert scalar(app, "SELECT guardian._suspect(ROW(1, 'a@b.example', NULL, NULL, NULL)::public.people, NULL)") is True
    assert postmaster_start(app) == started


def test_every_c_function_answers_or_fails_cleanly_on_odd_arguments(app: psycopg.Connection) -> None:
    started = postmaster_start(app)
    unclean = []
    wrong = []
    for expression in CALLS:
        kind, outcome = call(app, expression)
        if kind == "error" and (outcome is None or str(outcome).startswith(UNCLEAN_CLASSES)):
            unclean.append((expression, outcome))
        if expression in EXPECTED and (kind, outcome) != ("ok", EXPECTED[expression]):
            wrong.append((expression, kind, outcome, EXPECTED[expression]))
        if expression in EXPECTED_ERRORS and (kind, outcome) != ("error", EXPECTED_ERRORS[expression]):
            wrong.append((expression, kind, outcome, EXPECTED_ERRORS[expression]))
    assert unclean == []
    assert wrong == []
    assert scalar(app, "SELECT 1") == 1
    assert postmaster_start(app) == started


def test_errors_of_the_c_functions_say_what_and_how_to_fix(guarded: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error) as err:
        guarded.execute("SELECT guardian._suspect_columns('public.people'::regclass, 2)")
    assert "takes a table and (attnum, value) pairs" in str(err.value)
    assert "guardian._suspect_columns('public.patients', 2, t.email" in (err.value.diag.message_hint or "")
    with pytest.raises(psycopg.Error) as err:
        guarded.execute("SELECT guardian._suspect_columns('public.people'::regclass, NULL::int, 'x'::text)")
    assert "argument 2 must be a constant integer attnum, not NULL" in str(err.value)
    with pytest.raises(psycopg.Error) as err:
        guarded.execute("SELECT guardian._uuid_matches(gen_random_uuid(), ARRAY[NULL]::uuid[])")
    assert "low/high pairs without NULLs" in str(err.value) and err.value.diag.message_hint
    # called other than as a trigger (the app role above may not even execute them)
    with pytest.raises(psycopg.errors.TriggerProtocolViolated) as err:
        guarded.execute("SELECT guardian._activity_end()")
    assert "guardian._activity_end() must be called as a trigger" in str(err.value)


@pytest.mark.parametrize(
    ("function", "trigger"),
    [
        ("_activity_start", "BEFORE INSERT ON public.unwatched FOR EACH ROW"),
        ("_activity_start", "AFTER INSERT ON public.unwatched FOR EACH STATEMENT"),
        ("_activity_end", "BEFORE INSERT ON public.unwatched FOR EACH STATEMENT"),
        ("_activity_end", "AFTER INSERT ON public.unwatched FOR EACH ROW"),
        ("_activity_end", "AFTER TRUNCATE ON public.unwatched FOR EACH STATEMENT"),
        ("_activity_end", "AFTER INSERT ON public.people_rw FOR EACH STATEMENT"),
        ("_activity_start", "INSTEAD OF INSERT ON public.people_view FOR EACH ROW"),
    ],
)
def test_activity_triggers_refuse_the_wrong_kind_of_trigger(
    guarded: psycopg.Connection, function: str, trigger: str
) -> None:
    started = postmaster_start(guarded)
    guarded.execute(f"CREATE TRIGGER zz_odd {trigger} EXECUTE FUNCTION guardian.{function}()")
    table = trigger.split(" ON ")[1].split(" ")[0]
    statement = (
        f"TRUNCATE {table}" if "TRUNCATE" in trigger else f"INSERT INTO {table} (id, email) VALUES (7, 'x@y.org')"
    )
    with pytest.raises(psycopg.Error) as err:
        guarded.execute(statement)
    assert err.value.sqlstate in ("39P01", "42809"), str(err.value)
    assert f"guardian.{function}()" in str(err.value)
    assert err.value.diag.message_hint
    assert postmaster_start(guarded) == started


def test_a_statement_that_failed_in_a_savepoint_leaves_no_baseline_behind(guarded: psycopg.Connection) -> None:
    # the failed INSERT's BEFORE STATEMENT baseline must not be taken by the next INSERT
    guarded.execute("CREATE TABLE public.bulk (id int PRIMARY KEY, notes text)")
    guarded.execute("SELECT guardian.watch('public.bulk', '{\"notes\": \"free_text\"}')")
    with guarded.transaction():
        guarded.execute("INSERT INTO public.bulk SELECT i, 'fine' FROM generate_series(1, 10) AS i")
        for _ in range(70):  # more than the 64 baselines a backend keeps
            with pytest.raises(psycopg.errors.UniqueViolation), guarded.transaction():
                guarded.execute("INSERT INTO public.bulk SELECT i, 'fine' FROM generate_series(1, 10) AS i")
        guarded.execute("INSERT INTO public.bulk VALUES (11, 'fine')")
    logged = guarded.execute(
        "SELECT rows FROM guardian.activity_log WHERE relid = 'public.bulk'::regclass ORDER BY at"
    ).fetchall()
    assert logged == [(10,), (1,)]
